"""Data: 2-D mixtures, image sets, and the one data module every variant uses."""
from repro.data.images import DataNotFoundError
from repro.data.module import DATASETS, GANDataModule
from repro.data.toy import ToyMixture

__all__ = ["GANDataModule", "DATASETS", "DataNotFoundError", "ToyMixture"]
