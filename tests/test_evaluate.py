"""Evaluation: the metrics against scikit-learn and their definitions, the generated analysis, and
`ferkeras evaluate`."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_main
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

from ferkeras.errors import FerkerasError
from ferkeras.evaluate import confusion_csv, load_source, predict
from ferkeras.metrics import (
    answer_shares,
    calibration,
    compute_metrics,
    fit_prior_bias,
    fit_temperature,
    most_confused_pairs,
    rescale,
    row_normalize,
)
from ferkeras.spec import CLASS_NAMES


def confused_predictions(seed=0, n=700):
    """Labels and probabilities where fear is often taken for sad, as in the reference."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, n)
    predicted = np.where(rng.random(n) < 0.75, labels, rng.integers(0, 7, n))
    fear = np.flatnonzero(labels == 2)
    predicted[fear[: len(fear) // 3]] = 4
    probs = rng.random((n, 7)) * 0.5
    probs[np.arange(n), predicted] = 1.0
    return labels, probs / probs.sum(axis=1, keepdims=True)


def test_confusion_matrix_adds_up_and_matches_scikit_learn():
    labels, probs = confused_predictions()
    metrics = compute_metrics(labels, probs)
    counts = np.array(metrics["confusion_matrix"])
    assert counts.sum() == len(labels) == metrics["images"]
    np.testing.assert_array_equal(counts, confusion_matrix(labels, probs.argmax(1), labels=range(7)))
    np.testing.assert_allclose(np.array(metrics["confusion_matrix_normalized"]).sum(axis=1), 1.0)
    precision, recall, f1, support = precision_recall_fscore_support(labels, probs.argmax(1))
    for i, name in enumerate(CLASS_NAMES):
        m = metrics["per_class"][name]
        assert (m["precision"], m["recall"], m["f1"], m["support"]) == pytest.approx(
            (precision[i], recall[i], f1[i], support[i]))
    assert metrics["accuracy"] == pytest.approx(np.trace(counts) / counts.sum())


def test_an_image_without_an_answer_is_wrong_for_its_class_and_left_out_of_the_rest():
    labels, probs = confused_predictions()
    answered = np.ones(len(labels), bool)
    answered[np.flatnonzero(labels == 3)[:50]] = False  # 50 happy photos with no face found
    metrics, full = compute_metrics(labels, probs, answered=answered), compute_metrics(labels, probs)
    right = (probs.argmax(1) == labels) & answered
    assert metrics["unanswered"] == 50 and full["unanswered"] == 0
    assert metrics["accuracy"] == pytest.approx(right.mean()) and right.mean() < full["accuracy"]
    assert metrics["per_class"]["happy"]["recall"] == pytest.approx(right[labels == 3].mean())
    assert metrics["per_class"]["happy"]["support"] == full["per_class"]["happy"]["support"]
    for other in ("angry", "fear", "neutral"):  # other classes' recall stays (precision may not)
        assert metrics["per_class"][other]["recall"] == full["per_class"][other]["recall"]
    assert np.array(metrics["confusion_matrix"]).sum() == answered.sum()  # answers only
    assert metrics["ece"] == pytest.approx(calibration(labels[answered], probs[answered])["ece"])
    assert "No answer for 50 of the" in metrics["analysis"]


def test_analysis_names_the_pair_the_matrix_says_is_most_confused():
    labels, probs = confused_predictions()
    metrics = compute_metrics(labels, probs)
    rates = np.array(metrics["confusion_matrix_normalized"])
    np.fill_diagonal(rates, 0)
    true, predicted = np.unravel_index(rates.argmax(), rates.shape)
    assert (CLASS_NAMES[true], CLASS_NAMES[predicted]) == ("fear", "sad")
    top = metrics["most_confused"][0]
    assert (top["true"], top["predicted"], top["rate"]) == ("fear", "sad", rates.max())
    assert "Most confused: fear taken for sad" in metrics["analysis"]
    recall = {name: m["recall"] for name, m in metrics["per_class"].items()}
    assert f"worst: {min(recall, key=recall.get)} " in metrics["analysis"]
    assert f"Best recognised: {max(recall, key=recall.get)} " in metrics["analysis"]


def test_balanced_accuracy_and_worst_class_weigh_each_class_alike():
    # 90 happy faces all right, 10 disgust faces 2 right: accuracy 0.92 hides a class at 0.2.
    labels = np.array([3] * 90 + [1] * 10)
    predicted = np.array([3] * 90 + [1] * 2 + [3] * 8)
    metrics = compute_metrics(labels, np.eye(7)[predicted])
    assert metrics["accuracy"] == pytest.approx(0.92)
    assert metrics["balanced_accuracy"] == pytest.approx((1.0 + 0.2) / 2)  # classes absent: not counted
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert metrics["worst_class"] == {"name": "disgust", "recall": pytest.approx(0.2)}
    assert "Balanced accuracy (the mean recall) 0.6000" in metrics["analysis"]


def test_calibration_error_and_log_likelihood_match_their_definitions():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 7, 2000)
    # Confidence 0.9 on every image, right on 60% of them: the expected calibration error is the
    # gap, 0.3, in the one bin that holds them all.
    predicted = np.where(rng.random(2000) < 0.6, labels, (labels + 1) % 7)
    probs = np.full((2000, 7), 0.1 / 6)
    probs[np.arange(2000), predicted] = 0.9
    metrics = compute_metrics(labels, probs)
    right = np.mean(predicted == labels)
    assert metrics["ece"] == pytest.approx(abs(0.9 - right))
    filled = [b for b in metrics["calibration_bins"] if b["images"]]
    assert len(metrics["calibration_bins"]) == 15 and len(filled) == 1
    assert filled[0]["low"] <= 0.9 < filled[0]["high"] and filled[0]["images"] == 2000
    assert metrics["nll"] == pytest.approx(-np.mean(np.log(probs[np.arange(2000), labels])))
    # Probabilities that mean what they say: each image's confidence is its chance of being right.
    confidence = rng.uniform(0.3, 1.0, 20000)
    labels = np.zeros(20000, int)
    calibrated = np.zeros((20000, 7))
    right = rng.random(20000) < confidence
    calibrated[np.arange(20000), np.where(right, 0, 1)] = confidence
    calibrated[:, 2:] = (1 - confidence[:, None]) / 5
    assert compute_metrics(labels, calibrated)["ece"] < 0.015
    # A confidence of exactly 1 is counted, in the last bin.
    assert compute_metrics(np.arange(7), np.eye(7))["calibration_bins"][-1]["images"] == 7


def test_fit_temperature_recovers_the_temperature_that_made_the_probabilities():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (6000, 7))
    true = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(7, p=p) for p in true])
    for made in (0.5, 2.0):  # overconfident, then timid: the fit undoes it
        reported = np.exp(logits / made) / np.exp(logits / made).sum(1, keepdims=True)
        assert fit_temperature(labels, reported) == pytest.approx(1 / made, rel=0.08)
    # rescale is the softmax of the rescaled logits: here back to the true probabilities (from
    # the timid ones; the overconfident ones hold probabilities below the 1e-7 floor)
    np.testing.assert_allclose(rescale(reported, 0.5), true, atol=1e-9)
    shift = np.log(np.arange(1, 8))
    shifted = np.exp(logits + shift) / np.exp(logits + shift).sum(1, keepdims=True)
    np.testing.assert_allclose(rescale(true, 1.0, shift), shifted, atol=1e-9)


def test_fit_prior_bias_answers_each_class_for_its_share_of_the_data():
    """A model that answers the frequent classes too often (logits pushed toward them): the fitted
    offsets, label-free, bring every class's share of the answers to the prior, and undo the push."""
    rng = np.random.default_rng(0)
    prior = np.array([0.14, 0.015, 0.14, 0.25, 0.17, 0.11, 0.175])
    prior /= prior.sum()
    labels = rng.choice(7, size=4000, p=prior)
    logits = rng.normal(0, 1, (4000, 7)) + 2.5 * np.eye(7)[labels]
    push = np.array([0.0, -1.5, -0.8, 0.4, 0.5, 0.0, 0.6])  # disgust and fear answered too rarely
    probs = np.exp(logits + push) / np.exp(logits + push).sum(1, keepdims=True)
    assert answer_shares(probs)[1] < prior[1] / 2
    offsets = fit_prior_bias(probs, prior)
    matched = answer_shares(rescale(probs, shift=offsets))
    np.testing.assert_allclose(matched, prior, atol=0.005)
    assert offsets.sum() == pytest.approx(0, abs=1e-9)
    assert set(np.argsort(offsets)[-2:]) == {1, 2}  # disgust and fear raised most, as pushed down
    pushed, matched_answers = probs.argmax(1), rescale(probs, shift=offsets).argmax(1)
    assert balanced_accuracy_score(labels, matched_answers) > balanced_accuracy_score(labels, pushed) + 0.03
    with pytest.raises(FerkerasError, match="no images of disgust"):
        fit_prior_bias(probs, np.array([0.2, 0, 0.2, 0.2, 0.2, 0.1, 0.1]))
    # answers already in the prior's shares are left as they are
    fair = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert np.abs(answer_shares(rescale(fair, shift=fit_prior_bias(fair, answer_shares(fair))))
                  - answer_shares(fair)).sum() == 0


def test_most_confused_pairs_rank_by_rate_and_skip_empty_rows():
    counts = np.zeros((7, 7), dtype=int)
    counts[0, 0], counts[0, 6] = 90, 10  # angry -> neutral 10%
    counts[1, 1], counts[1, 0] = 6, 4  # disgust -> angry 40%, few images but the highest rate
    counts[3, 3] = 50  # happy: never confused; rows 2, 4-6 empty
    pairs = most_confused_pairs(counts)
    assert [(p["true"], p["predicted"]) for p in pairs] == [("disgust", "angry"), ("angry", "neutral")]
    assert pairs[0]["reverse_rate"] == 0.0 and pairs[0]["count"] == 4 and pairs[0]["support"] == 10
    assert row_normalize(counts)[2].tolist() == [0.0] * 7
    perfect = compute_metrics(np.arange(7), np.eye(7))
    assert perfect["most_confused"] == [] and "No confusions" in perfect["analysis"]


def test_confusion_csv_has_class_names_on_both_axes():
    text = confusion_csv(np.eye(7, dtype=int) * 3)
    lines = text.splitlines()
    assert lines[0] == "true\\predicted," + ",".join(CLASS_NAMES)
    assert lines[4] == "happy,0,0,0,3,0,0,0"
    assert confusion_csv(row_normalize(np.eye(7))).splitlines()[1].startswith("angry,1.000000,0.0")


def test_flip_tta_averages_the_image_and_its_mirror():
    from ferkeras.model import build_model

    model = build_model()
    images = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    plain, mirrored = predict(model, images), predict(model, images[:, :, ::-1])
    np.testing.assert_allclose(predict(model, images, tta=True), (plain + mirrored) / 2, atol=1e-6)


def test_shift_tta_averages_ten_views_of_one_pixel_shifts():
    from ferkeras.model import build_model
    from ferkeras.runners import shift_images

    ramp = np.tile(np.arange(48, dtype=np.uint8), (1, 48, 1))  # pixel value = column
    shifted = shift_images(ramp, 1, -1)
    assert shifted.shape == ramp.shape
    np.testing.assert_array_equal(shifted[0, 5, :4], [1, 2, 3, 4])  # content moved left
    np.testing.assert_array_equal(shifted[0, 5, -2:], [47, 46])  # the gap mirrors the edge
    np.testing.assert_array_equal(shift_images(ramp, 0, 0), ramp)

    model = build_model()
    images = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    views = [shift_images(images, r, c) for r, c in ((0, 0), (1, 1), (1, -1), (-1, 1), (-1, -1))]
    expected = np.mean([predict(model, v) for v in views + [v[:, :, ::-1] for v in views]], axis=0)
    np.testing.assert_allclose(predict(model, images, tta="shifts"), expected, atol=1e-6)
    with pytest.raises(FerkerasError, match="--tta shift: not one of none, flip, shifts"):
        predict(model, images, tta="shift")


def test_evaluate_reproduces_the_runs_validation_accuracy(trained_synthetic_run, monkeypatch, capsys):
    run = trained_synthetic_run
    train_metrics = (run / "metrics.json").read_text()
    code, out, err = run_main(["evaluate", str(run), "--tta"], monkeypatch, capsys)
    assert code == 0, err
    result = json.loads((run / "viz" / "metrics_val.json").read_text())
    config = json.loads((run / "config.json").read_text())
    # The same images that training validated on, found again from config.json alone.
    assert result["images"] == config["val_images"] == np.array(result["confusion_matrix"]).sum()
    assert result["accuracy"] == pytest.approx(json.loads(train_metrics)["best_val_accuracy"],
                                               abs=1e-6)
    assert (run / "metrics.json").read_text() == train_metrics  # the run's own file is untouched
    assert "tta" in result and 0 < result["tta"]["accuracy"] <= 1
    pair = result["most_confused"][0]
    assert f"Most confused: {pair['true']} taken for {pair['predicted']}" in out
    assert "With flip TTA: accuracy" in out
    assert f"Balanced accuracy (the mean recall) {result['balanced_accuracy']:.4f}" in out
    assert 0 <= result["ece"] <= 1 and result["nll"] > 0 and len(result["calibration_bins"]) == 15
    assert config["cpu"]["onednn"] is True and config["cpu"]["model"]  # what trained it, recorded
    for name in ("confusion_matrix_val.png", "confusion_matrix_val.csv",
                 "confusion_matrix_val_normalized.csv", "confusion_matrix_val_tta.png",
                 "reliability_val.png", "reliability_val_tta.png"):
        assert (run / "viz" / name).stat().st_size > 0 and str(run / "viz" / name) in out
    counts = np.loadtxt(run / "viz" / "confusion_matrix_val.csv", delimiter=",", skiprows=1,
                        usecols=range(1, 8))
    np.testing.assert_array_equal(counts, result["confusion_matrix"])
    assert not list((run / "viz").glob(".*"))  # no temporary files left behind

    out_dir = run.parent / "shift_tta"
    code, out, err = run_main(["evaluate", str(run), "--tta-shifts", "--out", str(out_dir)],
                              monkeypatch, capsys)
    shifted = json.loads((out_dir / "metrics_val.json").read_text())["tta"]
    assert code == 0 and shifted["name"] == "shifts" and "10 views" in shifted["method"]
    assert f"With shifts TTA: accuracy {shifted['accuracy']:.4f}" in out


def test_source_on_another_split_and_bad_requests(trained_synthetic_run, tmp_path):
    run = trained_synthetic_run
    train = load_source(str(run), split="train")
    assert train.split_name == "train" and len(train.split) == 3000
    assert train.split.masks is not None  # synthetic data brings its expression masks
    with pytest.raises(FerkerasError, match=r"--split nope: .* no split 'nope' \(labelled splits: "
                                            r"train, test; or val"):
        load_source(str(run), split="nope")
    bare = tmp_path / "model.keras"
    bare.write_bytes((run / "model.keras").read_bytes())
    with pytest.raises(FerkerasError, match="bare model file .* give --data"):
        load_source(str(bare))
    assert load_source(str(bare), data="synthetic:280").out_dir == tmp_path / "model_viz"
    # the shipped models' figures go to a folder each, here, never into the installed package
    assert [load_source(name, data="synthetic:280").out_dir for name in ("shipped", "large", "ensemble")] \
        == [Path("shipped_viz"), Path("large_viz"), Path("ensemble_viz")]
    # Other data than the run's own: its results must not replace those of the run's data.
    assert load_source(str(run)).out_dir == run / "viz"
    assert load_source(str(run), data="synthetic:280").out_dir == run / "viz" / "synthetic_280"
    with pytest.raises(FerkerasError, match="run 'nosuch' not found"):
        load_source("nosuch", runs_dir=str(run.parent))


def test_evaluate_errors_are_one_line_with_exit_code_2(trained_synthetic_run, monkeypatch, capsys):
    code, out, err = run_main(["evaluate", "nosuch", "--runs-dir", str(trained_synthetic_run.parent)],
                              monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "run 'nosuch' not found" in err
