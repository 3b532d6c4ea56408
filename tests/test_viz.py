"""Saliency maps, filter images and the `ferkeras viz` commands, checked by their numbers."""


import numpy as np
import pytest
from conftest import run_main

from ferkeras import viz
from ferkeras.errors import FerkerasError
from ferkeras.evaluate import load_source, predict
from ferkeras.model import build_model, load_model
from ferkeras.viz import workflows


@pytest.fixture(scope="module")
def synthetic(trained_synthetic_run):
    """(model, first 48 validation images, their labels, expression masks, predicted classes)."""
    source = load_source(str(trained_synthetic_run))
    model = load_model(source.model_path)
    images, labels, masks = (a[:48] for a in (source.split.images, source.split.labels,
                                              source.split.masks))
    return model, images, labels, masks, predict(model, images).argmax(axis=1)


def mass_ratio(maps, masks):
    """Share of the saliency inside the masks, divided by the masks' share of the image."""
    inside = (maps * masks).sum(axis=(1, 2)) / maps.sum(axis=(1, 2))
    return inside.mean() / masks.mean()


def test_saliency_falls_on_the_expression_regions(synthetic):
    model, images, labels, masks, predicted = synthetic
    assert (predicted == labels).mean() > 0.8
    smooth = viz.saliency_maps(model, images, predicted, "smoothgrad")
    vanilla = viz.saliency_maps(model, images, predicted, "vanilla")
    for maps in (smooth, vanilla):
        assert maps.shape == (48, 48, 48) and np.isfinite(maps).all()
        assert maps.min() >= 0 and np.allclose(maps.max(axis=(1, 2)), 1)
    # The expression lives only in the brows, eyes and mouth (19% of the image).
    assert mass_ratio(smooth, masks) >= 2.0
    # Vanilla gradients carry a pixel-noise floor over the whole face (about 1.9 here; SmoothGrad about 2.4).
    assert mass_ratio(vanilla, masks) >= 1.5
    # The check can fail: maps against another face's masks, transposed or upside down score
    # about 1.4-1.65 (faces are centred, so some overlap remains), a uniform map 1.
    for wrong in (mass_ratio(smooth, np.roll(masks, 1, axis=0)),
                  mass_ratio(smooth.transpose(0, 2, 1), masks), mass_ratio(smooth[:, ::-1], masks)):
        assert wrong < 2.0


def test_maps_explain_the_class_they_are_asked_for(synthetic):
    model, images, labels, masks, predicted = synthetic
    other = (predicted[:8] + 3) % 7
    own, for_other = (viz.saliency_maps(model, images[:8], c, "vanilla") for c in (predicted[:8], other))
    assert np.abs(own - for_other).mean() > 0.02


@pytest.mark.parametrize("method", ["gradcam++", "scorecam"])
def test_class_activation_maps_are_normalised_and_on_the_face(synthetic, method):
    model, images, labels, masks, predicted = synthetic
    maps = viz.saliency_maps(model, images[:16], predicted[:16], method)
    assert maps.shape == (16, 48, 48) and np.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    assert mass_ratio(maps + 1e-9, masks[:16]) > 1.0  # coarse (6x6), but not off the face


def test_saliency_rejects_unknown_methods_and_mismatched_classes(synthetic):
    model, images, *_ = synthetic
    with pytest.raises(FerkerasError, match="--method deconv: must be one of vanilla"):
        viz.saliency_maps(model, images[:2], [0, 1], "deconv")
    with pytest.raises(FerkerasError, match="2 images but 3 target classes"):
        viz.saliency_maps(model, images[:2], [0, 1, 2])


def test_filter_images_are_finite_shaped_and_differ(synthetic, monkeypatch):
    monkeypatch.setenv("TF_KERAS_VIS_MAX_STEPS", "40")  # tf-keras-vis caps the steps
    model = synthetic[0]
    images = viz.maximize_filters(model, "conv4", [0, 1, 2, 3], seed=1)
    assert images.shape == (4, 48, 48) and np.isfinite(images).all()
    assert images.min() >= 0 and images.max() <= 255
    assert images.std(axis=(1, 2)).min() > 1  # not flat gray: the optimisation moved them
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(images[i] - images[j]).mean() > 1, (i, j)
    early = viz.maximize_filters(model, "conv1", [5], viz.ActivationMaximizationSettings(
        objective="mean"))
    assert early.shape == (1, 48, 48) and np.isfinite(early).all()


def test_filter_choice_is_checked_against_the_layer():
    model = build_model()
    assert viz.conv_layers(model) == ["conv1", "conv2", "conv3", "conv4"]
    assert viz.response_layer(model, "conv4") == "bn4" and viz.cam_layer(model) == "relu4"
    assert viz.parse_filters("all", 96) == list(range(96))
    assert viz.parse_filters("0-3, 7,2", 96) == [0, 1, 2, 3, 7]
    with pytest.raises(FerkerasError, match=r"--filters 90-96: filter 96 is outside conv4's 96 "
                                            r"filters \(0..95\)"):
        viz.parse_filters("90-96", 96, "conv4")
    with pytest.raises(FerkerasError, match="--filters a: expected indices"):
        viz.parse_filters("a", 96)
    with pytest.raises(FerkerasError, match=r"--layer fc1: not a convolutional layer \(conv "
                                            r"layers: conv1, conv2, conv3, conv4\)"):
        viz.response_layer(model, "fc1")
    with pytest.raises(FerkerasError, match="--layer conv9: no such layer"):
        viz.filter_count(model, "conv9")


def test_top_activating_images_are_the_strongest(synthetic):
    model, images = synthetic[:2]
    top = viz.top_activating_images(model, images, "conv4", [0, 5, 95], k=4)
    assert top.indices.shape == top.values.shape == (3, 4) and top.maps.shape == (3, 4, 6, 6)
    responses = viz.filter_responses(model, images, "conv4")
    for row, f in enumerate([0, 5, 95]):
        peaks = responses[..., f].max(axis=(1, 2))
        np.testing.assert_allclose(top.values[row], np.sort(peaks)[::-1][:4], rtol=1e-5)
        np.testing.assert_allclose(top.maps[row, 0], responses[top.indices[row, 0], :, :, f])


def test_image_choice_and_class_names():
    labels = np.array([0, 1, 2, 2, 2, 3])
    assert workflows.class_index("Fear") == 2 and workflows.class_index("6") == 6
    assert workflows.class_index("Anger") == 0 and workflows.class_index("sadness") == 4  # CK+'s names
    with pytest.raises(FerkerasError, match="--class happyy: unknown class; did you mean 'happy'"):
        workflows.class_index("happyy")
    chosen = workflows.pick_images(labels, 2, class_name="fear")
    assert len(set(chosen)) == 2 and set(labels[chosen]) == {2}
    assert workflows.pick_images(labels, indices=[5, 0]).tolist() == [5, 0]
    with pytest.raises(FerkerasError, match="--n 0: must be at least 1"):
        workflows.pick_images(labels, 0)
    with pytest.raises(FerkerasError, match="--n 4: the val split's class fear has only 3 images"):
        workflows.pick_images(labels, 4, class_name="fear")
    with pytest.raises(FerkerasError, match=r"--index 6: the val split has 6 images \(0..5\)"):
        workflows.pick_images(labels, indices=[6])


def test_viz_commands_end_to_end(trained_synthetic_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TF_KERAS_VIS_MAX_STEPS", "8")
    run = str(trained_synthetic_run)
    code, out, err = run_main(["viz", "history", run], monkeypatch, capsys)
    assert code == 0, err
    assert out.strip() == f"Wrote {trained_synthetic_run / 'viz' / 'history.png'}"
    code, out, err = run_main(["viz", "saliency", run, "--n", "3", "--seed", "2", "--method",
                               "smoothgrad", "--target", "happy", "--out", str(tmp_path)],
                              monkeypatch, capsys)
    assert code == 0, err
    assert out.strip() == f"Wrote {tmp_path / 'saliency_smoothgrad.png'}"
    code, out, err = run_main(["viz", "filters", run, "--filters", "0-3", "--top-k", "2", "--out",
                               str(tmp_path)], monkeypatch, capsys)
    assert code == 0, err
    for name in ("filters_conv4.png", "filters_conv4_topk.png"):
        assert str(tmp_path / name) in out and (tmp_path / name).stat().st_size > 10_000
    assert not list(tmp_path.glob(".*"))  # figures are renamed into place, no temp files left


def test_saliency_of_image_files_uses_their_class_folders(trained_synthetic_run, tmp_path):
    from PIL import Image

    source = load_source(str(trained_synthetic_run))
    paths = []
    for i in range(2):
        folder = tmp_path / "faces" / ["angry", "happy"][i]
        folder.mkdir(parents=True)
        Image.fromarray(source.split.images[i]).resize((96, 96)).save(folder / f"{i}.png")
        paths.append(str(folder / f"{i}.png"))
    images, labels = workflows.read_image_files(paths)
    assert images.shape == (2, 48, 48) and labels.tolist() == [0, 3]
    path = workflows.explain_saliency(str(trained_synthetic_run), image_files=paths, out=tmp_path)
    assert path == tmp_path / "saliency_vanilla.png" and path.stat().st_size > 10_000


@pytest.mark.parametrize("args, message", [
    (["saliency", "--n", "0"], "Error: --n 0: must be at least 1"),
    (["saliency", "--class", "happyy"], "Error: --class happyy: unknown class; did you mean 'happy'?"),
    (["filters", "--filters", "0,96"], "Error: --filters 0,96: filter 96 is outside conv4's 96"),
    (["filters", "--layer", "fc1"], "Error: --layer fc1: not a convolutional layer"),
    (["filters", "--layer", "convv4"], "Error: --layer convv4: no such layer"),
    (["filters", "--steps", "0"], "Error: --steps 0: must be at least 1"),
    (["history", "nosuch"], "Error: run 'nosuch' not found"),
])
def test_bad_flags_are_one_line_with_exit_code_2(trained_synthetic_run, monkeypatch, capsys,
                                                args, message):
    runs_dir = str(trained_synthetic_run.parent)  # RUN left out: the latest run there
    code, out, err = run_main(["viz", *args, "--runs-dir", runs_dir], monkeypatch, capsys)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1, err


def test_history_figure_needs_a_finished_epoch():
    with pytest.raises(FerkerasError, match="no history yet"):
        viz.history_figure([], title="runs/x")


def test_saliency_of_a_photo_explains_its_face_as_predict_crops_it():
    import matplotlib.cbook

    from ferkeras.media.images import read_image
    from ferkeras.predict import FaceRecognizer

    photo = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    images, labels = workflows.read_image_files([photo])
    found = FaceRecognizer("shipped").find(read_image(photo))
    (detection,) = found.detections
    assert labels is None and detection.box[2] < 512 / 2  # the face, not the whole photo
    np.testing.assert_array_equal(images[0], found.crops[0])
