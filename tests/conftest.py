"""Shared fixtures: the real FER2013 beside the repo (skipped with a reason where absent)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
FER2013_DIR = Path(os.environ.get("FER2013_DIR", REPO.parent / "shared" / "datasets" / "fer2013"))


@pytest.fixture(scope="session")
def fer2013_dir() -> Path:
    """The shared FER2013 folders; CI always has them, a user's machine usually not."""
    if not (FER2013_DIR / "train").is_dir():
        pytest.skip(f"FER2013 not found at {FER2013_DIR} (set FER2013_DIR, or place the "
                    "Kaggle folders at ../shared/datasets/fer2013): real-data test skipped")
    return FER2013_DIR
