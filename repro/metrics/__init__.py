"""Metrics: image (FID / KID / IS with pluggable extractors), toy and stacked-MNIST modes, D spectra,
generator conditioning. Extractors are looked up by name in ``EXTRACTORS``."""
from repro.metrics.conditioning import condition_numbers, generator_jacobian, log_condition_stats
from repro.metrics.features import EXTRACTORS, make_extractor
from repro.metrics.image import ImageProtocol, evaluate_images, frechet_distance, reference_features, to_uint8
from repro.metrics.spectra import layer_spectra, normalized_spectrum
from repro.metrics.stacked import digit_triples, stacked_mode_metrics
from repro.metrics.toy import mode_metrics

__all__ = [
    "EXTRACTORS",
    "make_extractor",
    "ImageProtocol",
    "evaluate_images",
    "frechet_distance",
    "reference_features",
    "to_uint8",
    "mode_metrics",
    "digit_triples",
    "stacked_mode_metrics",
    "layer_spectra",
    "normalized_spectrum",
    "generator_jacobian",
    "condition_numbers",
    "log_condition_stats",
]
