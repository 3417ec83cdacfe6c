"""repro: reproduce GAN papers' results with one command."""
__version__ = "0.1.0"
