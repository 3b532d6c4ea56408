"""Ensembles (ferkeras/ensemble.py): the members as one model answer the geometric mean of their
probabilities, a logit adjustment moves the answers toward the rare classes by exactly its prior,
`ferkeras ensemble` makes a run that exports and evaluates like a trained one, and bad members or
flags fail in one line."""

import json

import numpy as np
import pytest
from conftest import run_main
from test_export import machine_paths

from ferkeras.ensemble import build_ensemble
from ferkeras.model import build_model, fold_logit_adjustment

RNG = np.random.default_rng(0)
FACES = RNG.uniform(0, 255, (16, 48, 48, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def members():
    """Two untrained models of different architectures, their last layers made confident enough
    that their answers differ."""
    import keras

    keras.utils.set_random_seed(1)
    models = [build_model(arch="reference"), build_model(arch="large")]
    for model in models:
        kernel, bias = model.layers[-1].get_weights()
        model.layers[-1].set_weights([kernel * 20, RNG.normal(0, 1, bias.shape).astype(bias.dtype)])
    return models


def probabilities(model, faces=FACES) -> np.ndarray:
    return np.asarray(model(faces, training=False), np.float64)


def test_the_ensemble_answers_the_geometric_mean_of_its_members(members):
    each = [probabilities(m) for m in members]
    geometric = np.sqrt(each[0] * each[1])
    geometric /= geometric.sum(axis=1, keepdims=True)
    assert min(np.abs(geometric - p).max() for p in each) > 0.05  # neither member alone
    np.testing.assert_allclose(probabilities(build_ensemble(members)), geometric, atol=1e-5)


def test_logit_adjustment_divides_by_the_prior_to_the_power_tau(members):
    ensemble = build_ensemble(members)
    before = probabilities(ensemble)
    prior = np.array([0.14, 0.015, 0.14, 0.25, 0.17, 0.11, 0.175])
    fold_logit_adjustment(ensemble, 0.0, prior)  # tau 0: nothing moves
    np.testing.assert_allclose(probabilities(ensemble), before, atol=1e-6)
    fold_logit_adjustment(ensemble, 0.5, prior)
    expected = before / prior ** 0.5
    expected /= expected.sum(axis=1, keepdims=True)
    after = probabilities(ensemble)
    np.testing.assert_allclose(after, expected, atol=1e-5)
    assert after[:, 1].mean() > before[:, 1].mean()  # disgust, the rarest, gains


@pytest.mark.parametrize("prior, message", [(np.full(6, 1 / 6), "each of the 7 classes"),
                                            (np.array([0.5, 0, 0.1, 0.1, 0.1, 0.1, 0.1]), "above 0")])
def test_a_bad_prior_is_refused(members, prior, message):
    from ferkeras.errors import FerkerasError

    with pytest.raises(FerkerasError, match=message):
        fold_logit_adjustment(build_ensemble(members), 0.5, prior)


def test_an_ensemble_of_models_trained_on_differently_lit_faces_keeps_each_ones_faces(trained_synthetic_run,
                                                                                      tmp_path):
    """Members whose training faces span different light: the ensemble's range spans them all, so
    a crop that any member's faces are like is read as it is."""
    from ferkeras.ensemble import make_ensemble
    from ferkeras.media.crop import FaceRange
    from ferkeras.runs import training_face_range

    own = training_face_range(trained_synthetic_run / "model.keras")
    dim = tmp_path / "dim"  # the same model, as if trained on darker, flatter, blurrier faces
    dim.mkdir()
    (dim / "model.keras").write_bytes((trained_synthetic_run / "model.keras").read_bytes())
    config = json.loads((trained_synthetic_run / "config.json").read_text())
    dim_range = FaceRange((20.0, 150.0), (10.0, 60.0), 0.3)
    (dim / "config.json").write_text(json.dumps({**config, "face_range": dim_range.to_dict()}))
    run = make_ensemble([str(trained_synthetic_run), str(dim)], name="lights", runs_dir=tmp_path / "runs",
                        echo=lambda line: None)
    spanned = training_face_range(run / "model.keras")
    assert spanned == FaceRange((20.0, own.mean[1]), (10.0, own.std[1]), 0.3)
    assert spanned == FaceRange.spanning([dim_range, own]) != own


def test_ensemble_command_makes_a_run_that_exports(trained_synthetic_run, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    members = [str(trained_synthetic_run), str(trained_synthetic_run / "model.keras")]  # a run, a file
    code, out, err = run_main(["ensemble", *members, "--name", "pair", "--logit-adjust", "0.5",
                               "--runs-dir", str(runs)], monkeypatch, capsys)
    assert code in (0, None), err
    config = json.loads((runs / "pair" / "config.json").read_text())
    trained = json.loads((trained_synthetic_run / "config.json").read_text())["options"]
    # The members' data and split, so that export and evaluate rebuild the same validation images.
    assert {k: config["options"][k] for k in ("data", "val_split", "seed")} == \
        {k: trained[k] for k in ("data", "val_split", "seed")}
    assert config["options"]["arch"] == "ensemble" and config["options"]["logit_adjust"] == 0.5
    assert len(config["prior"]) == 7 and abs(sum(config["prior"]) - 1) < 1e-6
    # the light its members trained on, which recognition clamps crops to, not FER2013's
    member_range = json.loads((trained_synthetic_run / "config.json").read_text())["face_range"]
    assert config["face_range"] == member_range
    assert "Wrote" in out and "logit adjustment tau 0.5" in out

    code, out, err = run_main(["export", "pair", "--runs-dir", str(runs), "--calibrate", "--quantize",
                               "int8", "--no-saved-model"], monkeypatch, capsys)
    assert code in (0, None), err + out
    metadata = json.loads((runs / "pair" / "exported" / "metadata.json").read_text())
    assert metadata["artifacts"]["int8"]["parity"]["passed"]
    # The members as given, each path cut to its last part: no folder of this machine ships.
    assert metadata["source"]["options"]["members"] == ["synthetic", "model.keras"]
    assert machine_paths(metadata) == []
    assert metadata["face_range"] == member_range

    # Evaluated on the member's own validation images: the same model twice, shifted a little
    # toward the rarer classes, answers about as it alone did.
    code, out, err = run_main(["evaluate", "pair", "--runs-dir", str(runs)], monkeypatch, capsys)
    assert code in (0, None), err + out
    ensemble = json.loads((runs / "pair" / "viz" / "metrics_val.json").read_text())
    alone = json.loads((trained_synthetic_run / "metrics.json").read_text())
    assert ensemble["images"] == json.loads((trained_synthetic_run / "config.json").read_text())["val_images"]
    assert abs(ensemble["accuracy"] - alone["best_val_accuracy"]) < 0.05


@pytest.mark.parametrize("args, message", [
    (["shipped"], "at least 2 models, got 1"),
    (["shipped", "nosuchrun"], "run 'nosuchrun' not found"),
    (["shipped", "large", "--logit-adjust", "3"], "--logit-adjust 3.0: must be between 0 and 2"),
    (["shipped", "large", "--name", "large"], "--name large: the name of a model installed with ferkeras"),
])
def test_bad_members_and_flags_fail_in_one_line(args, message, tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    code, out, err = run_main(["ensemble", *args, "--runs-dir", str(runs)], monkeypatch, capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not runs.exists()  # no run folder left behind


@pytest.mark.parametrize("method", ["gradcam++", "scorecam"])
def test_class_maps_of_an_ensemble_say_to_explain_a_member(members, method):
    """Grad-CAM++ and Score-CAM need the model's own last convolution; an ensemble's are inside its
    members: one line that says so, where vanilla and SmoothGrad saliency work as they are."""
    from ferkeras.errors import FerkerasError
    from ferkeras.viz import saliency_maps

    ensemble = build_ensemble(members)
    assert saliency_maps(ensemble, FACES[:2], [0, 1], "vanilla").shape[0] == 2
    with pytest.raises(FerkerasError, match="no convolutional layers of its own .* explain one of its"):
        saliency_maps(ensemble, FACES[:2], [0, 1], method)
