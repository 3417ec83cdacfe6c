"""Lightning callbacks: sample figures, final evaluation, (later) diagnostics."""
from repro.callbacks.evaluation import FinalEvaluation
from repro.callbacks.samples import SamplePlots

__all__ = ["SamplePlots", "FinalEvaluation"]
