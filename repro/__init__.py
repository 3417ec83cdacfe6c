"""repro: reproduce GAN papers' results with one command."""
from pathlib import Path

__version__ = "0.1.0"
REPO_ROOT = Path(__file__).resolve().parents[1]  # the folder holding configs/, paper_tables/ and results/
