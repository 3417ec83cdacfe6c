"""Seed ensembles: K runs of one config that differ only in their seed, trained together in one process.

``layers`` (ensemble layers over stacked parameters), ``module`` (the ensemble GANModule),
``run`` (members' run folders, callbacks and loggers; what ``repro fit --ensemble K`` calls).
"""
from repro.ensemble.layers import EnsembleError
from repro.ensemble.module import check_supported, make_ensemble

__all__ = ["EnsembleError", "check_supported", "make_ensemble"]
