"""The model shipped in exported/: complete, loadable, and as accurate as its metadata says."""

import json

import pytest
from conftest import REPO

EXPORTED = REPO / "exported"
TOLERANCE = 0.005  # the half a point


@pytest.fixture(scope="module")
def metadata() -> dict:
    return json.loads((EXPORTED / "metadata.json").read_text())


def test_shipped_files_and_provenance(metadata):
    for entry in metadata["artifacts"].values():
        assert (EXPORTED / entry["file"]).exists(), entry["file"]
    assert {"keras", "saved_model", "float32", "int8"} <= set(metadata["artifacts"])
    source = metadata["source"]
    assert source["options"]["data"] and source["command"] and source["trained"]
    assert source["seed"] == source["options"]["seed"]
    recorded = metadata["accuracy"]
    assert recorded["split"] == "test" and recorded["images"] == 3589  # PublicTest
    assert {"keras", "float32", "int8"} <= set(recorded["engines"]) <= set(metadata["artifacts"])


def test_shipped_model_is_as_accurate_as_recorded_on_publictest(metadata, fer2013_dir):
    from ferkeras.data import load_dataset
    from ferkeras.evaluate import accuracy_summary
    from ferkeras.runners import load_runner

    public_test = load_dataset(fer2013_dir).splits["test"]
    for engine, recorded in metadata["accuracy"]["engines"].items():
        file = EXPORTED / metadata["artifacts"][engine]["file"]
        measured = accuracy_summary(load_runner(file), public_test)
        for key in ("accuracy", "accuracy_tta", "accuracy_tta_shifts"):
            assert measured[key] >= recorded[key] - TOLERANCE, (engine, key, measured[key], recorded[key])
