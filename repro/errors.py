"""The exceptions the ``repro`` command turns into exit codes. Dependency-free, so the command line can
catch them without importing Lightning (``repro --help`` and ``repro tables`` start in well under a second)."""
from __future__ import annotations

__all__ = ["UserError", "TrainingDiverged", "DIVERGED_EXIT_CODE", "USER_ERROR_EXIT_CODE", "RUNS_FAILED_EXIT_CODE"]

USER_ERROR_EXIT_CODE = 2
DIVERGED_EXIT_CODE = 3
RUNS_FAILED_EXIT_CODE = 4  # `repro reproduce`: some run of the table failed or stopped short (each cause is printed)


class UserError(Exception):
    """A problem with the user's input: reported as one paragraph, no traceback."""


class TrainingDiverged(RuntimeError):
    """Raised on every rank when a run diverged; ``repro fit`` exits with ``DIVERGED_EXIT_CODE``."""
