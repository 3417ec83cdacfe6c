"""Metrics: the registry of metric families (``registry``: what a run can report, under which keys),
image metrics (FID / KID / IS with pluggable extractors, ``image`` / ``features``), toy and
stacked-MNIST modes, D spectra, generator conditioning, and the MNIST classifier (``classifier``).

Import the submodules themselves: this package imports none of them, so the registry (needed by
``repro tables`` to check a spec) loads without torch."""
