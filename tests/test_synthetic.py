"""Tests of the synthetic face generator: format, determinism, balance, masks, flip symmetry."""

import numpy as np
import pytest

from ferkeras import synthetic
from ferkeras.spec import IMAGE_SIZE as SIZE
from ferkeras.spec import NUM_CLASSES
from ferkeras.synthetic import generate

N = 2100  # 300 per class; more than one render chunk
F_999 = 3.74  # 99.9% quantile of F(6, large): chi2(6) 0.999 quantile 22.46 / 6


@pytest.fixture(scope="module")
def batch():
    return generate(N, seed=0)


def _anova_f(images, labels, where):
    """Per-pixel one-way ANOVA F of gray value on class, using only the samples where `where` is True.

    Only pixels with at least 30 such samples in every class are returned. With no class
    information F is about 1 and exceeds F_999 at about 0.1% of the pixels.
    """
    means, variances, counts = [], [], []
    for c in range(NUM_CLASSES):
        sel, x = where[labels == c], images[labels == c]
        count = sel.sum(0)
        mean = (x * sel).sum(0) / np.maximum(count, 1)
        means.append(mean)
        variances.append(((x - mean) ** 2 * sel).sum(0) / np.maximum(count - 1, 1))
        counts.append(count)
    means, variances, counts = np.array(means), np.array(variances), np.array(counts)
    enough = (counts >= 30).all(0)
    grand_mean = (means * counts).sum(0) / np.maximum(counts.sum(0), 1)
    between = (counts * (means - grand_mean) ** 2).sum(0) / (NUM_CLASSES - 1)
    within = ((counts - 1) * variances).sum(0) / np.maximum(counts.sum(0) - NUM_CLASSES, 1)
    return (between / np.maximum(within, 1e-9))[enough]


def _recentre(stack, masks):
    """Shift each image horizontally so that its mask's centroid is in the middle column.

    This removes the random face position, whose chance imbalance in a finite sample would
    otherwise swamp the asymmetries the flip test looks for.
    """
    cols = np.arange(SIZE)
    centroid = (masks * cols).sum((1, 2)) / masks.sum((1, 2))
    shift = np.rint(centroid - (SIZE - 1) / 2).astype(int)
    index = (cols[None, :] + shift[:, None]) % SIZE
    return np.take_along_axis(stack, np.repeat(index[:, None, :], SIZE, axis=1), axis=2)


def _mirror_z2(stack):
    """Mean squared z-score of the mean left-right difference image (about 1 or less if symmetric)."""
    diff = stack - stack[:, :, ::-1]
    z = diff.mean(0) / (diff.std(0, ddof=1) / np.sqrt(len(diff)) + 1e-9)
    return np.mean(z[:, : SIZE // 2] ** 2)


def test_shapes_dtypes_and_ranges(batch):
    images, labels, masks = batch
    assert images.shape == (N, SIZE, SIZE) and images.dtype == np.uint8
    assert labels.shape == (N,) and labels.dtype == np.int64
    assert masks.shape == (N, SIZE, SIZE) and masks.dtype == bool
    assert labels.min() == 0 and labels.max() == NUM_CLASSES - 1
    # Every image is a real picture, not blank or saturated (catches an unfilled chunk).
    flat = images.reshape(N, -1).astype(int)
    assert (flat.max(1) - flat.min(1) > 60).all()
    assert 60 < images.mean() < 200


def test_zero_images():
    images, labels, masks = generate(0)
    assert images.shape == (0, SIZE, SIZE) and labels.shape == (0,) and masks.shape == (0, SIZE, SIZE)


def test_same_seed_is_identical_and_other_seed_differs():
    first, second, other = generate(40, seed=3), generate(40, seed=3), generate(40, seed=4)
    for a, b in zip(first, second, strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[1], other[1])


def test_all_classes_in_proportion_and_shuffled(batch):
    labels = batch[1]
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    assert len(counts) == NUM_CLASSES
    assert np.abs(counts - N / NUM_CLASSES).max() <= 0.05 * N / NUM_CLASSES
    assert (np.diff(labels) == 1).mean() < 0.5  # not blocks or a fixed cycle


def test_mask_share_and_every_mask_nonempty(batch):
    share = batch[2].mean(axis=(1, 2))
    assert 0.10 <= share.mean() <= 0.25
    assert share.min() > 0.05 and share.max() < 0.40


def test_pixels_outside_the_masks_do_not_depend_on_the_expression():
    # Render the same faces (same nuisances and noise) twice, the second time with the
    # expressions of other faces of mostly other classes: outside both masks nothing may change.
    rng = np.random.default_rng(0)
    labels = np.arange(700) % NUM_CLASSES
    params = synthetic._draw_params(labels, rng)
    swapped = dict(params)
    other = rng.permutation(len(labels))
    for name in (*synthetic.PARAM_NAMES, "lip_side"):
        swapped[name] = params[name][other]
    noise = rng.standard_normal((len(labels), SIZE, SIZE), dtype=np.float32)
    first, first_mask = synthetic._render(params, noise)
    second, second_mask = synthetic._render(swapped, noise)
    outside = ~(first_mask | second_mask)
    assert outside.mean() > 0.5
    assert np.array_equal(first[outside], second[outside])
    assert np.abs(first - second)[~outside].mean() > 0.02  # the expressions did change


def test_class_information_lives_inside_the_masks(batch):
    images, labels, masks = batch
    images = images.astype(np.float64)
    inside = _anova_f(images, labels, masks)
    outside = _anova_f(images, labels, ~masks)
    assert len(inside) > 500 and len(outside) > 2000
    # Inside, class means differ far beyond sampling noise; outside, no more than noise
    # (label-dependent head shape, skin or lighting would light up many pixels).
    assert inside.mean() > 3.0 and (inside > F_999).mean() > 0.3
    assert outside.mean() < 1.3 and (outside > F_999).mean() < 0.005


def test_each_class_is_left_right_symmetric_on_average(batch):
    images, labels, masks = batch
    centred_masks = _recentre(masks.astype(np.float64), masks)
    centred_images = _recentre(images.astype(np.float64), masks)
    for c in range(NUM_CLASSES):
        # Feature geometry: a one-sided cue always on the same side (e.g. disgust's lip) gives ~2.5.
        assert _mirror_z2(centred_masks[labels == c]) < 1.6, f"class {c} masks"
        # Whole image, looser (lighting and noise): a face with one eye and brow gives ~30.
        assert _mirror_z2(centred_images[labels == c]) < 10.0, f"class {c} images"
