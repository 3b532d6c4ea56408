"""Face detectors and crops: MTCNN on a real photo, eye alignment, the box crop rule, bad names."""

import json
import math

import matplotlib.cbook
import numpy as np
import pytest
from conftest import run_main

from ferkeras.errors import FerkerasError
from ferkeras.media.crop import (
    EYE_ROW,
    FER2013_LEAST_SHARPNESS,
    FER2013_MEAN_RANGE,
    FER2013_STD_RANGE,
    FaceRange,
    clamp_light,
    clamp_sharpness,
    crop_detection,
    crop_face,
    crop_landmarks,
    face_range,
    sharpness,
)
from ferkeras.media.detect import Detector, HaarDetector, iou
from ferkeras.media.detectors import make_detector
from ferkeras.media.faces import Detection
from ferkeras.media.images import read_image, to_gray
from ferkeras.spec import IMAGE_SIZE

GRACE_HOPPER = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
GRACE_FACE = (155, 105, 222, 222)  # x, y, w, h of the one face, by eye
TILT = 15  # degrees the photo is turned for the alignment checks


@pytest.fixture(scope="module")
def mtcnn():
    """One MTCNN for the module: building it imports TensorFlow and loads three networks."""
    return make_detector("mtcnn")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return read_image(GRACE_HOPPER)


def turned(rgb: np.ndarray, degrees: float) -> np.ndarray:
    """The photo turned counter-clockwise (as seen) about the face's centre, edges repeated."""
    import cv2

    x, y, w, h = GRACE_FACE
    matrix = cv2.getRotationMatrix2D((x + w / 2, y + h / 2), degrees, 1.0)
    return cv2.warpAffine(rgb, matrix, rgb.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)


def box_iou(a, b) -> float:
    """Intersection over union of two x, y, w, h boxes (the tracker's own measure)."""
    return float(iou([a], [b])[0, 0])


def test_mtcnn_finds_the_face_and_its_landmarks(mtcnn, photo):
    detections = mtcnn(photo)
    assert len(detections) == 1
    face = detections[0]
    x, y, w, h = face.box
    assert box_iou(face.box, GRACE_FACE) > 0.5
    assert 0 <= x and 0 <= y and x + w <= photo.shape[1] and y + h <= photo.shape[0]
    assert face.score >= mtcnn.threshold
    assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
    inside = ((face.landmarks[:, 0] >= x) & (face.landmarks[:, 0] <= x + w)
              & (face.landmarks[:, 1] >= y) & (face.landmarks[:, 1] <= y + h))
    assert inside.all(), face.landmarks
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]  # left as seen
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


def test_mtcnn_finds_nothing_in_blank_images(mtcnn):
    assert mtcnn(np.zeros((240, 320, 3), np.uint8)) == []
    assert mtcnn(np.full((240, 320, 3), 128, np.uint8)) == []
    assert mtcnn(np.zeros((8, 8, 3), np.uint8)) == []  # smaller than MTCNN's window


def test_mtcnn_larger_min_face_size_still_finds_faces(mtcnn, photo):
    # mtcnn 1.0 alone finds no face here with min_face_size 40 (its pyramid runs below 12 px).
    large = make_detector("mtcnn", min_face_size=48)
    (face,) = large(photo)
    (reference,) = mtcnn(photo)
    assert box_iou(face.box, reference.box) > 0.7
    assert np.abs(face.landmarks - reference.landmarks).max() < 12
    assert large(photo[:200, :200]) == []  # no whole face there


def test_alignment_levels_a_turned_face(mtcnn, photo):
    (upright,) = mtcnn(photo)
    reference = crop_detection(to_gray(photo), upright).astype(np.float32)
    tilted = turned(photo, TILT)
    (face,) = mtcnn(tilted)
    left_eye, right_eye = face.landmarks[:2]
    roll = math.degrees(math.atan2(right_eye[1] - left_eye[1], right_eye[0] - left_eye[0]))
    assert roll == pytest.approx(-TILT, abs=4)  # turned counter-clockwise: the right eye rises
    gray = to_gray(tilted)
    aligned = crop_detection(gray, face, align=True).astype(np.float32)
    unaligned = crop_detection(gray, face, align=False).astype(np.float32)
    aligned_error, unaligned_error = (np.abs(crop - reference).mean() for crop in (aligned, unaligned))
    assert aligned_error < 0.6 * unaligned_error, (aligned_error, unaligned_error)


def test_no_align_crops_the_same_square_unturned(mtcnn, photo):
    from ferkeras.predict import FaceRecognizer

    tilted = turned(photo, TILT)
    found = {align: FaceRecognizer("shipped", mtcnn, align=align).find(tilted) for align in (True, False)}
    (face,) = found[False].detections
    np.testing.assert_array_equal(found[False].crops[0],
                                  crop_landmarks(to_gray(tilted), face.landmarks, align=False))
    assert np.abs(found[True].crops[0].astype(int) - found[False].crops[0]).mean() > 5


def test_aligned_crop_puts_the_eyes_level_at_the_measured_row():
    # Two dark eyes and a mouth on a light image, the face turned by 20 degrees.
    import cv2

    gray = np.full((300, 300), 220, np.uint8)
    centre, turn = np.array([150.0, 150.0]), math.radians(20)
    rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    points = np.array([[-30, -20], [30, -20], [0, 5], [-20, 30], [20, 30]], np.float64) @ rotation.T + centre
    for px, py in points[:2]:
        cv2.circle(gray, (int(round(px)), int(round(py))), 5, 0, -1)
    crop = crop_landmarks(gray, points.astype(np.float32), align=True)
    assert crop.shape == (IMAGE_SIZE, IMAGE_SIZE)
    dark_rows, dark_columns = np.nonzero(crop < 110)
    left, right = dark_columns < IMAGE_SIZE / 2, dark_columns >= IMAGE_SIZE / 2
    assert left.any() and right.any()
    assert dark_rows[left].mean() == pytest.approx(dark_rows[right].mean(), abs=0.5)  # level
    assert (dark_rows.mean() + 0.5) / IMAGE_SIZE == pytest.approx(EYE_ROW, abs=0.03)
    unaligned = crop_landmarks(gray, points.astype(np.float32), align=False)
    rows, columns = np.nonzero(unaligned < 110)
    assert rows[columns >= IMAGE_SIZE / 2].mean() - rows[columns < IMAGE_SIZE / 2].mean() > 3


def test_crop_without_landmarks_is_the_box_resized():
    import cv2

    gray = np.random.default_rng(0).integers(0, 256, (200, 300), np.uint8)
    box = (40, 30, 120, 120)
    expected = cv2.resize(gray[30:150, 40:160], (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
    for align in (True, False):
        np.testing.assert_array_equal(crop_detection(gray, Detection(box), align), expected)
    np.testing.assert_array_equal(crop_detection(gray, Detection(box)), crop_face(gray, box))


def test_clamp_light_brings_only_faces_lit_outside_the_training_range_to_its_edge():
    """grace_hopper.jpg's face as it is lit stays byte for byte; flattened, darkened or blank, it
    gets the nearest brightness and contrast that training faces have, its pattern kept."""
    face = crop_face(to_gray(read_image(GRACE_HOPPER)), GRACE_FACE)
    assert FER2013_MEAN_RANGE[0] < face.mean() < FER2013_MEAN_RANGE[1]
    assert FER2013_STD_RANGE[0] < face.std() < FER2013_STD_RANGE[1]
    flat = np.rint(128 + 0.2 * (face - 128.0)).astype(np.uint8)
    dark = np.rint(face * 0.15).astype(np.uint8)
    batch = np.stack([face, flat, dark, np.zeros_like(face)])
    light = clamp_light(batch)
    assert light.dtype == np.uint8 and light.shape == batch.shape
    np.testing.assert_array_equal(light[0], face)
    # flattened: its brightness kept, its contrast raised to the least of the training faces'
    assert abs(light[1].mean() - flat.mean()) < 0.5 and abs(light[1].std() - FER2013_STD_RANGE[0]) < 0.5
    # darkened: both raised to the range's edge
    assert abs(light[2].mean() - FER2013_MEAN_RANGE[0]) < 0.5
    assert abs(light[2].std() - FER2013_STD_RANGE[0]) < 0.5
    for moved in light[1:3]:  # the face itself kept: a linear change of its gray levels
        assert np.corrcoef(moved.ravel(), face.ravel())[0, 1] > 0.97
    assert set(np.unique(light[3])) == {round(FER2013_MEAN_RANGE[0])}  # blank: flat gray, no division by 0
    np.testing.assert_array_equal(clamp_light(batch[..., None])[..., 0], light)  # (N, 48, 48, 1) alike
    assert clamp_light(batch[:0]).shape == (0, IMAGE_SIZE, IMAGE_SIZE)


def test_clamp_sharpness_sharpens_only_faces_blurrier_than_any_training_face():
    """grace_hopper.jpg's face as it is stays byte for byte; blurred, it is unsharp-masked up to
    the training faces' least sharpness, which brings it nearer the face it was."""
    import cv2

    face = crop_face(to_gray(read_image(GRACE_HOPPER)), GRACE_FACE)
    blurred = cv2.GaussianBlur(face, (0, 0), 1.2)
    assert sharpness(blurred[None])[0] < FER2013_LEAST_SHARPNESS < sharpness(face[None])[0]
    batch = np.stack([face, blurred])
    sharp = clamp_sharpness(batch)
    assert sharp.dtype == np.uint8 and sharp.shape == batch.shape
    np.testing.assert_array_equal(sharp[0], face)
    assert sharpness(sharp[1:])[0] == pytest.approx(FER2013_LEAST_SHARPNESS, abs=0.03)
    assert np.abs(sharp[1].astype(int) - face).mean() < np.abs(blurred.astype(int) - face).mean()
    np.testing.assert_array_equal(clamp_sharpness(batch[..., None])[..., 0], sharp)  # (N, 48, 48, 1)
    assert clamp_sharpness(batch[:0]).shape == (0, IMAGE_SIZE, IMAGE_SIZE)
    assert np.all(clamp_sharpness(np.zeros_like(batch)) == 0)  # blank: nothing to sharpen


def test_the_default_face_range_is_fer2013_trains(fer2013_dir):
    """FaceRange() (FER2013_MEAN_RANGE, FER2013_STD_RANGE): the 1st and 99th percentiles of FER2013
    train's faces' mean gray level and standard deviation; FER2013_LEAST_SHARPNESS the 1st of their
    sharpness; face_range() of those faces, as a FER2013 run records it, is that default."""
    from ferkeras.data import load_dataset

    images = load_dataset(str(fer2013_dir)).splits["train"].images
    faces = images.reshape(-1, IMAGE_SIZE * IMAGE_SIZE)
    means, stds = faces.mean(axis=1), faces.std(axis=1)
    np.testing.assert_allclose(np.percentile(means, [1, 99]), FER2013_MEAN_RANGE, atol=0.01)
    np.testing.assert_allclose(np.percentile(stds, [1, 99]), FER2013_STD_RANGE, atol=0.01)
    assert np.percentile(sharpness(images), 1) == pytest.approx(FER2013_LEAST_SHARPNESS, abs=0.001)
    assert face_range(images) == FaceRange()


def test_a_face_range_is_read_back_as_written_and_a_malformed_one_is_none():
    """to_dict / from_dict round trip (as config.json and metadata.json hold it); a record with a
    field missing, reversed or not a number reads as None, never as a range that clamps wrongly."""
    dim = np.full((20, IMAGE_SIZE, IMAGE_SIZE), 30, np.uint8)
    dim[:, ::2] += np.arange(20, dtype=np.uint8)[:, None, None]  # stripes: contrast 0-9.5, sharp
    measured = face_range(dim)
    assert measured.mean[1] < FER2013_MEAN_RANGE[0] and measured.std[1] < FER2013_STD_RANGE[0]
    record = json.loads(json.dumps(measured.to_dict()))
    assert FaceRange.from_dict(record) == measured and record["percentiles"] == [1, 99]
    for broken in ({**record, "mean": [200, 50]}, {**record, "std": "wide"}, {"mean": [1, 2]}, None, [],
                   {**record, "least_sharpness": -1}):
        assert FaceRange.from_dict(broken) is None


def test_unknown_detector_and_bad_options_are_one_line_errors():
    with pytest.raises(FerkerasError, match=r"^--detector nope: not one of haar, mtcnn, blazeface$"):
        make_detector("nope")
    with pytest.raises(FerkerasError, match="min_face_size 5") as error:
        make_detector("mtcnn", min_face_size=5)
    assert "\n" not in str(error.value)
    with pytest.raises(FerkerasError, match="threshold 1.5"):
        make_detector("mtcnn", threshold=1.5)


def test_cli_predict_with_mtcnn(mtcnn, monkeypatch, capsys):
    code, out, err = run_main(["predict", GRACE_HOPPER, "--detector", "mtcnn", "--model", "shipped",
                               "--json"], monkeypatch, capsys)
    assert code == 0, err
    (image,) = json.loads(out)
    (face,) = image["faces"]
    box = face["box"]
    assert box_iou((box["x"], box["y"], box["width"], box["height"]), GRACE_FACE) > 0.5


def test_framed_searches_again_in_a_border_and_maps_the_faces_back():
    """Detector.framed, predict's search: where the image shows no face, the image again in a
    border of its mean colour, FRAME_MARGIN of its longer side wide; the faces found come back in
    the image's pixels, clipped to it, and one centred in the border is dropped."""
    from ferkeras.media.detect import FRAME_MARGIN, Detector

    seen = []

    class InBorderOnly(Detector):
        """Finds two faces, but only in an image larger than the test's: framed's border."""

        def __call__(self, rgb, gray=None):
            seen.append((rgb.copy(), gray.copy()))
            if gray.shape[0] <= 100:
                return []
            eyes = np.array([[30, 40], [60, 40], [45, 55], [45, 70], [45, 70]], np.float32)
            return [Detection((10, 20, 80, 70), 0.9, eyes), Detection((0, 0, 20, 20), 0.8)]

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (100, 80, 3), dtype=np.uint8)
    gray = to_gray(rgb)
    (face,) = InBorderOnly().framed(rgb, gray)
    pad = round(FRAME_MARGIN * 100)  # 25
    assert [g.shape for _, g in seen] == [(100, 80), (100 + 2 * pad, 80 + 2 * pad)]
    framed_rgb, framed_gray = seen[1]
    np.testing.assert_array_equal(framed_rgb[pad:-pad, pad:-pad], rgb)  # the image, untouched
    np.testing.assert_allclose(framed_rgb[0, 0], rgb.reshape(-1, 3).mean(axis=0), atol=0.5)
    assert abs(int(framed_gray[-1, -1]) - gray.mean()) <= 0.5
    # (10, 20, 80, 70) in the framed image is (-15, -5, 80, 70) in this one: clipped to (0, 0, 65, 65)
    assert face.box == (0, 0, 65, 65) and face.score == 0.9
    np.testing.assert_allclose(face.landmarks[0], (5, 15))
    # A face found in the image itself is the answer: no second search.
    seen.clear()
    assert InBorderOnly().framed(np.zeros((120, 120, 3), np.uint8), np.zeros((120, 120), np.uint8))
    assert len(seen) == 1


class FixedDetector(Detector):
    """Answers the same detections for every image, and counts its calls."""

    def __init__(self, found: list[Detection]):
        self.found, self.calls = found, 0

    def __call__(self, rgb, gray=None):
        self.calls += 1
        return list(self.found)


def test_a_still_image_with_no_face_found_is_searched_by_the_fallback_and_no_other_search_is():
    image = np.zeros((200, 200, 3), np.uint8)
    gray = to_gray(image)
    second = FixedDetector([Detection((50, 60, 80, 80))])
    first = FixedDetector([])
    first.fallback = second
    assert first.framed(image, gray) == second.found  # the whole image, in a border, then the fallback
    assert first(image, gray) == []  # a video frame's search (not framed) never falls back
    assert first.near(image, gray, [(50, 60, 80, 80)]) == [] and second.calls == 1
    found = FixedDetector([Detection((10, 10, 40, 40))])
    found.fallback = second
    assert found.framed(image, gray) == found.found and second.calls == 1  # found: not asked


def test_blazeface_falls_back_on_haar_unless_told_not_to():
    default = make_detector()
    assert default.name == "blazeface" and isinstance(default.fallback, HaarDetector)
    assert default.fallback.fallback is None
    assert make_detector("blazeface", min_face=60).fallback.min_size == 60
    assert make_detector("blazeface", fallback=None).fallback is None
    assert make_detector("haar").fallback is None
