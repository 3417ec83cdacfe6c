"""Lightning callbacks: sample figures, final evaluation, divergence stop, spectra and conditioning diagnostics."""
from repro.callbacks.conditioning import ConditioningTrace
from repro.callbacks.ddp import RankSyncCheck
from repro.callbacks.divergence import DivergenceStop
from repro.callbacks.evaluation import FinalEvaluation
from repro.callbacks.resumable import ResumableCheckpoint
from repro.callbacks.samples import SamplePlots
from repro.callbacks.spectra import SpectraPlots

__all__ = ["SamplePlots", "FinalEvaluation", "DivergenceStop", "SpectraPlots", "ConditioningTrace", "RankSyncCheck",
           "ResumableCheckpoint"]
