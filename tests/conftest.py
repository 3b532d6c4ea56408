"""Shared fixtures: the real FER2013 beside the repo (skipped with a reason where absent)."""

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
FER2013_DIR = Path(os.environ.get("FER2013_DIR", REPO.parent / "shared" / "datasets" / "fer2013"))


@pytest.fixture(scope="session")
def trained_synthetic_run(tmp_path_factory) -> Path:
    """A run trained on 3,000 synthetic faces for 5 epochs: about 0.93 validation accuracy in
    about a minute on 2 CPU cores, enough for its saliency maps to find the expression."""
    from ferkeras.config import TrainConfig
    from ferkeras.train import train

    runs = tmp_path_factory.mktemp("runs")
    return train(TrainConfig(data="synthetic:3000", epochs=5, augment="none", runs_dir=str(runs),
                             name="synthetic"), echo=lambda line: None)


@pytest.fixture(scope="session")
def exported_synthetic_run(trained_synthetic_run, tmp_path_factory) -> Path:
    """That run exported as `ferkeras export --tflite` does (SavedModel, float32 and int8 TFLite),
    parity-checked; the export folder."""
    from ferkeras.export import export

    result = export(trained_synthetic_run, tmp_path_factory.mktemp("export") / "exported",
                    tflite=True, echo=lambda line: None)
    assert result.passed, result.failures
    return result.out


@pytest.fixture(scope="session")
def fer2013_dir() -> Path:
    """The shared FER2013 folders; CI always has them, a user's machine usually not."""
    if not (FER2013_DIR / "train").is_dir():
        pytest.skip(f"FER2013 not found at {FER2013_DIR} (set FER2013_DIR, or place the "
                    "Kaggle folders at ../shared/datasets/fer2013): real-data test skipped")
    return FER2013_DIR


def run_main(args, monkeypatch, capsys):
    """Run the console entry point in-process: (exit code, stdout, stderr)."""
    from ferkeras.cli.main import main

    monkeypatch.setattr(sys, "argv", ["ferkeras", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err
