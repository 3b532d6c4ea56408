"""BlazeFace: real photos and FER2013 faces found, boxes mapped back through the letterbox, eyes that
level the crop, no face where there is none, a bad model file refused at start-up; and the one
JSON shape of a face across images, video frames and the API."""

import json
import math
import shutil

import cv2
import matplotlib.cbook
import numpy as np
import pytest
from conftest import run_main

from ferkeras.errors import FerkerasError
from ferkeras.media import blazeface
from ferkeras.media.blazeface import BlazeFaceDetector, tiles, weighted_nms
from ferkeras.media.crop import crop_detection
from ferkeras.media.detect import iou
from ferkeras.media.faces import LANDMARK_NAMES
from ferkeras.media.frames import Frame
from ferkeras.media.images import read_image, to_gray

GRACE_HOPPER = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
GRACE_FACE = (155, 105, 222, 222)  # x, y, w, h of the one face, by eye
TILT = 15  # degrees


@pytest.fixture(scope="module")
def detector() -> BlazeFaceDetector:
    return BlazeFaceDetector()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return read_image(GRACE_HOPPER)


def box_iou(a, b) -> float:
    return float(iou([a], [b])[0, 0])


def test_finds_the_face_and_its_eyes_nose_and_mouth(detector, photo):
    (face,) = detector(photo)
    x, y, w, h = face.box
    assert box_iou(face.box, GRACE_FACE) > 0.5 and face.score > 0.8
    assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
    assert ((face.landmarks >= (x, y)) & (face.landmarks <= (x + w, y + h))).all(), face.landmarks
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0]  # the keypoints' order mapped to left/right as seen
    assert max(left_eye[1], right_eye[1]) < nose[1] < mouth_left[1]
    np.testing.assert_array_equal(mouth_left, mouth_right)  # one mouth point stands for both corners
    # The eyes where a person sees them: about 85 px apart, a third down the box.
    assert 60 < right_eye[0] - left_eye[0] < 110 and abs(left_eye[1] - (y + h * 0.3)) < h * 0.15


@pytest.mark.parametrize("canvas_shape, offset", [((640, 1800), (1200, 20)), ((1500, 540), (14, 800))])
def test_boxes_are_mapped_back_through_the_letterbox(detector, photo, canvas_shape, offset):
    """The photo pasted at a known place in a wide and a tall canvas: the model sees it letterboxed
    to a square, and the face comes back at its place in the canvas's pixels."""
    (alone,) = detector(photo)
    canvas = np.full((*canvas_shape, 3), 90, np.uint8)
    left, top = offset
    canvas[top:top + photo.shape[0], left:left + photo.shape[1]] = photo
    (face,) = detector(canvas)
    expected = (alone.box[0] + left, alone.box[1] + top, alone.box[2], alone.box[3])
    assert box_iou(face.box, expected) > 0.8, (face.box, expected)
    assert np.abs(face.landmarks - (alone.landmarks + offset)).max() < 0.08 * alone.box[2]


def test_finds_fer2013_faces_in_a_mosaic(detector, fer2013_dir):
    """Four PublicTest faces, one per expression folder, each enlarged in its own 288 px tile of a
    576x576 mosaic: each is found in its tile, with nothing else."""
    tiles_ = []
    for name in ("happy", "neutral", "surprise", "sad"):
        face = cv2.imread(str(sorted((fer2013_dir / "test" / name).glob("*.jpg"))[0]), cv2.IMREAD_GRAYSCALE)
        big = cv2.resize(face, (144, 144), interpolation=cv2.INTER_CUBIC)
        tiles_.append(cv2.copyMakeBorder(big, 72, 72, 72, 72, cv2.BORDER_REPLICATE))
    mosaic = np.vstack([np.hstack(tiles_[:2]), np.hstack(tiles_[2:])])
    found = detector(np.repeat(mosaic[:, :, None], 3, axis=2))
    centres = {(int((x + w / 2) // 288), int((y + h / 2) // 288)) for x, y, w, h in (d.box for d in found)}
    assert len(found) == len(centres) >= 3, [d.box for d in found]


def test_finds_no_face_where_there_is_none(detector, photo, monkeypatch, capsys, tmp_path):
    rng = np.random.default_rng(0)
    gradient = np.linspace(0, 255, 320)[None, :, None] * np.ones((240, 1, 3))
    sky = np.clip(gradient + rng.normal(0, 8, gradient.shape), 0, 255).astype(np.uint8)
    assert detector(sky) == []
    assert detector(np.ascontiguousarray(photo[420:])) == []  # her uniform, no face
    assert detector(np.zeros((3, 5, 3), np.uint8)) == []
    cv2.imwrite(str(tmp_path / "sky.png"), sky)
    code, out, err = run_main(["predict", str(tmp_path / "sky.png"), "--detector", "blazeface",
                               "--model", "shipped"], monkeypatch, capsys)
    assert code == 0, err
    assert "no face found (320x240" in out


def test_a_face_crop_of_another_size_is_found_as_predict_searches(detector, fer2013_dir, monkeypatch,
                                                                   capsys, tmp_path):
    """PublicTest faces enlarged to 100 px (RAF-DB's crops), each the whole image: a face that fills
    its image has no margin, which BlazeFace needs. Predict's search (Detector.framed) finds nearly
    every one, boxed inside the image with its eyes inside the box, and answers for it."""
    paths = sorted((fer2013_dir / "test").glob("*/*.jpg"))[::90]  # 40 faces, every class
    grays = [cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), (100, 100),
                        interpolation=cv2.INTER_CUBIC) for path in paths]
    alone, framed = [], []
    for gray in grays:
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
        found = detector(rgb, gray)
        alone.append(bool(found))
        found = found or detector.in_border(rgb, gray)  # what detector.framed answers
        framed.append(bool(found))
        for face in found:
            x, y, w, h = face.box
            assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 100 and y + h <= 100, face.box
            assert ((face.landmarks[:2] >= (x, y)) & (face.landmarks[:2] <= (x + w, y + h))).all()
    assert sum(framed) >= 0.9 * len(paths) and sum(framed) > sum(alone), (sum(alone), sum(framed))
    # One the detector alone misses, through `ferkeras predict`: a face and its label.
    cv2.imwrite(str(tmp_path / "face100.png"), grays[alone.index(False)])
    code, out, err = run_main(["predict", str(tmp_path / "face100.png"), "--model", "shipped", "--json"],
                              monkeypatch, capsys)
    assert code == 0, err
    (image,) = json.loads(out)
    assert len(image["faces"]) == 1 and image["faces"][0]["label"]


@pytest.mark.parametrize("side", [None, 100])
def test_a_tight_crop_of_a_real_face_is_found_framed(detector, photo, side):
    """grace_hopper.jpg's face cropped inside its box (15% off each side), as it is and at 100 px:
    the detector alone finds no face in it, predict's search (Detector.framed) finds the one."""
    x, y, w, h = GRACE_FACE
    cut = int(0.15 * w)
    crop = np.ascontiguousarray(photo[y + cut:y + h - cut, x + cut:x + w - cut])
    if side:
        crop = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    gray = to_gray(crop)
    assert detector(crop, gray) == []
    (face,) = detector.framed(crop, gray)
    fx, fy, fw, fh = face.box
    assert fw > 0.6 * crop.shape[1] and fx + fw <= crop.shape[1] and fy + fh <= crop.shape[0]
    left_eye, right_eye = face.landmarks[:2]
    assert left_eye[0] < right_eye[0] and abs(left_eye[1] - right_eye[1]) < 0.1 * crop.shape[0]


def test_eyes_level_the_crop_of_a_turned_face(detector, photo):
    (upright,) = detector(photo)
    reference = crop_detection(to_gray(photo), upright).astype(np.float32)
    x, y, w, h = GRACE_FACE
    matrix = cv2.getRotationMatrix2D((x + w / 2, y + h / 2), TILT, 1.0)
    tilted = cv2.warpAffine(photo, matrix, photo.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
    (face,) = detector(tilted)
    left_eye, right_eye = face.landmarks[:2]
    roll = math.degrees(math.atan2(right_eye[1] - left_eye[1], right_eye[0] - left_eye[0]))
    assert roll == pytest.approx(-TILT, abs=4)  # turned counter-clockwise: the right eye rises
    gray = to_gray(tilted)
    aligned, unaligned = (crop_detection(gray, face, align).astype(np.float32) for align in (True, False))
    aligned_error, unaligned_error = (np.abs(crop - reference).mean() for crop in (aligned, unaligned))
    assert aligned_error < 0.6 * unaligned_error, (aligned_error, unaligned_error)


def test_a_single_stream_gets_every_core(detector):
    """One photo, video or camera at a time: LiteRT runs each model on every core (serve's workers
    take one thread each, tests/test_serve.py)."""
    from ferkeras.cpu import usable_cores

    assert detector.threads == usable_cores() >= 1
    assert BlazeFaceDetector(threads=1).threads == 1


def test_a_tracked_face_is_found_near_its_box(detector, photo):
    (face,) = detector(photo)
    (near,) = detector.near(photo, to_gray(photo), [face.box])
    assert box_iou(near.box, face.box) > 0.7
    assert detector.near(photo, to_gray(photo), [(0, 440, 100, 100)]) == []  # no face down there


def test_following_takes_the_cheapest_search_that_finds_the_tracked_faces(photo, monkeypatch):
    """follow's steps, counted by model run: a tracked face the short-range model finds again on
    the whole frame costs that one run; a track it does not find adds the full-range pass and a
    search near the track; a frame without a face costs no more (no squares: the full search,
    squares and deeper, is the video's to run every FULL_SEARCH_EVERY frames)."""
    detector = BlazeFaceDetector(threads=1)
    runs = []
    for network in detector.networks:
        run = network.run
        monkeypatch.setattr(network, "run", lambda window, run=run, size=network.model.size:
                            runs.append(size) or run(window))
    gray = to_gray(photo)
    (face,) = detector(photo)
    runs.clear()
    (followed,) = detector.follow(photo, gray, [face.box])
    assert box_iou(followed.box, face.box) > 0.8 and runs == [128]
    runs.clear()
    (followed,) = detector.follow(photo, gray, [face.box, (0, 440, 100, 100)])  # a track gone
    assert box_iou(followed.box, face.box) > 0.8 and runs == [128, 192, 128]
    runs.clear()
    blank = np.full_like(photo, 90)
    assert detector.follow(blank, to_gray(blank), [face.box]) == []
    assert runs == [128, 192, 128]
    runs.clear()
    assert detector(blank, to_gray(blank)) == []
    assert len(runs) > len(tiles(photo.shape[:2], max(0.1 * 600, 48) / blazeface.FACE_FRACTION)) + 1


def test_following_tracks_keeps_a_small_face_without_the_squares(detector, photo, fer2013_dir):
    """A video's whole-frame search between full ones (follow): the photo's large face is found by
    the whole-image pass, a small FER2013 face only by the squares or near its track."""
    canvas = np.full((960, 1280, 3), 90, np.uint8)
    canvas[200:200 + photo.shape[0], 40:40 + photo.shape[1]] = photo
    face = cv2.imread(str(sorted((fer2013_dir / "test" / "happy").glob("*.jpg"))[0]), cv2.IMREAD_GRAYSCALE)
    # 112 px, under a tenth of the canvas: scored 0.89 by the squares (100 px scored 0.74-0.75, at
    # their least score 0.75)
    small = cv2.copyMakeBorder(cv2.resize(face, (112, 112), interpolation=cv2.INTER_CUBIC),
                               44, 44, 44, 44, cv2.BORDER_REPLICATE)
    canvas[300:500, 900:1100] = small[:, :, None]
    gray = to_gray(canvas)
    large_face, small_face = detector(canvas)
    assert small_face.box[2] < 0.1 * canvas.shape[1] < large_face.box[2]
    (alone,) = detector.follow(canvas, gray, [])  # no track: the small face waits for a full search
    assert box_iou(alone.box, large_face.box) > 0.8
    followed = detector.follow(canvas, gray, [large_face.box, small_face.box])
    kept = [box_iou(a.box, b.box) > 0.5 for a, b in zip(followed, (large_face, small_face), strict=True)]
    assert kept == [True, True]
    # where the whole image shows no face, follow leaves the squares to the video's next full search
    canvas[200:200 + photo.shape[0], 40:40 + photo.shape[1]] = 90  # the small face alone
    assert detector.follow(canvas, to_gray(canvas), []) == []
    (only,) = detector(canvas, to_gray(canvas))
    assert box_iou(only.box, small_face.box) > 0.5


def test_the_pyramid_shrinks_by_halves_to_what_one_resize_gives():
    """Each scale's image has the rounded size, is made once, and is nearer one area resize of the
    original than a bilinear (aliased) resize is, by under 3 grey levels on average where the
    halves do not divide evenly (a real photo, halved twice on the way to 0.2)."""
    photo = cv2.cvtColor(cv2.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)),
                         cv2.COLOR_BGR2RGB)
    pyramid = blazeface.Pyramid(photo)
    for scale in (0.2, 0.32, 128 / 300, 1.0, 1.5):
        image = pyramid(scale)
        assert image.shape == (round(600 * scale), round(512 * scale), 3) and pyramid(scale) is image
        direct = cv2.resize(photo, image.shape[1::-1], interpolation=cv2.INTER_AREA if scale < 1 else
                            cv2.INTER_LINEAR)
        error = np.abs(image.astype(int) - direct).mean()
        aliased = np.abs(cv2.resize(photo, image.shape[1::-1]).astype(int) - direct).mean()
        assert error < 3 and (error < aliased or scale >= 1), (scale, error, aliased)
    assert {0.5, 0.25} < set(pyramid.levels)  # the halves it went through


def test_small_faces_are_searched_for_in_squares_that_cover_the_image():
    height, width = 1080, 1920
    squares = tiles((height, width), 48 / blazeface.FACE_FRACTION)
    assert squares[0] == (0, 0, width, height)
    for x, y, w, h in squares:
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height
    smallest = min(w for _, _, w, _ in squares)
    # A face up to half the smallest square's side lies whole inside one square, wherever it is.
    rng = np.random.default_rng(0)
    side = smallest // 2
    for fx, fy in zip(rng.integers(0, width - side, 200), rng.integers(0, height - side, 200), strict=True):
        assert any(x <= fx and y <= fy and fx + side <= x + w and fy + side <= y + h
                   for x, y, w, h in squares), (fx, fy)
    assert tiles((480, 640), 10_000) == [(0, 0, 640, 480)]


def test_anchors_follow_mediapipes_options():
    short, full = blazeface.SHORT_RANGE.anchors(), blazeface.FULL_RANGE.anchors()
    assert short.shape == (896, 2) and full.shape == (2304, 2)  # MediaPipe's num_boxes
    # short range: a 16x16 grid of 2 anchors a cell (stride 8), then 8x8 of 6 (three stride-16 layers)
    np.testing.assert_allclose(short[:2], [[1 / 32, 1 / 32]] * 2)
    np.testing.assert_allclose(short[511], [31 / 32, 31 / 32])
    np.testing.assert_allclose(short[512:518], [[1 / 16, 1 / 16]] * 6)
    np.testing.assert_allclose(full[[0, 1, 2303]], [[1 / 96, 1 / 96], [3 / 96, 1 / 96], [95 / 96, 95 / 96]])


def test_weighted_nms_averages_overlapping_candidates_by_score():
    def candidate(x0: float) -> np.ndarray:
        return np.array([[x0, 0], [x0 + 10, 10]] + [[x0 + 5, 5]] * 6, np.float32)

    points = np.stack([candidate(0), candidate(1), candidate(50)])
    merged, scores = weighted_nms(points, np.array([0.6, 0.9, 0.7], np.float32))
    assert scores.tolist() == pytest.approx([0.9, 0.7])
    assert merged[0, 0, 0] == pytest.approx((0 * 0.6 + 1 * 0.9) / 1.5)  # pulled towards the better
    assert merged[1, 0, 0] == pytest.approx(50)


def test_a_truncated_model_file_fails_at_start_up_in_one_line(tmp_path, monkeypatch, capsys):
    for model in (blazeface.SHORT_RANGE, blazeface.FULL_RANGE):
        shutil.copy(blazeface.model_path(model), tmp_path / model.file)
    short = tmp_path / blazeface.SHORT_RANGE.file
    short.write_bytes(short.read_bytes()[:5000])
    with pytest.raises(FerkerasError, match=f"^{short}: not a BlazeFace model") as error:
        BlazeFaceDetector(model_dir=tmp_path)
    assert "\n" not in str(error.value)
    # The CLI: exit 2, one line, before any image is read.
    monkeypatch.setattr(blazeface, "model_path", lambda model: tmp_path / model.file)
    code, out, err = run_main(["predict", GRACE_HOPPER, "--detector", "blazeface", "--model", "shipped"],
                              monkeypatch, capsys)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"Error: {error.value}"]
    short.write_bytes(b"")
    with pytest.raises(FerkerasError, match="not a BlazeFace model"):
        BlazeFaceDetector(model_dir=tmp_path)


def test_one_face_has_one_json_shape_in_images_video_and_the_api(photo, monkeypatch, capsys):
    """predict --json, a video's JSON lines and the API give a face the same record: box, label, score,
    probabilities and landmarks (and the track id in a video)."""
    from ferkeras.predict import FaceRecognizer
    from ferkeras.video import analyze_video, json_lines

    code, out, err = run_main(["predict", GRACE_HOPPER, "--detector", "blazeface", "--model", "shipped",
                               "--json"], monkeypatch, capsys)
    assert code == 0, err
    (image,) = json.loads(out)
    (face,) = image["faces"]
    assert list(face) == ["box", "label", "score", "probabilities", "landmarks"]
    assert list(face["box"]) == ["x", "y", "width", "height"]
    assert list(face["landmarks"]) == list(LANDMARK_NAMES)
    assert box_iou(tuple(face["box"].values()), GRACE_FACE) > 0.5

    recognizer = FaceRecognizer("shipped", "blazeface")
    frame = Frame(0, 0.0, np.ascontiguousarray(photo[:, :, ::-1]))
    (result,) = analyze_video([frame], recognizer, smooth=1.0)
    (line,) = json_lines(result).splitlines()
    record = json.loads(line)
    assert list(record) == ["frame", "time_s", *face, "track_id"] and record["track_id"] == 1
    assert {k: record[k] for k in face} == face  # the same face, value for value

    pytest.importorskip("fastapi", reason="ferkeras[serve] not installed")
    from fastapi.testclient import TestClient

    from ferkeras.serve import create_app
    from ferkeras.service import ServeSettings, Service

    with TestClient(create_app(ServeSettings(model="shipped"), Service([recognizer], recognizer))) as client:
        answer = client.post("/api/predict", content=open(GRACE_HOPPER, "rb").read(),
                             headers={"content-type": "image/jpeg"})
    assert answer.status_code == 200
    (api_face,) = answer.json()["faces"]
    assert api_face == face


def test_min_face_finds_a_crowd_of_small_faces(fer2013_dir, tmp_path, monkeypatch, capsys):
    """Twelve PublicTest faces of 64 px in a 1280x720 frame, one per 320x240 tile. Alone, the
    default search finds none at its depth (faces down to a tenth of the longer side) and so
    searches deeper, to 48 px: most are found (10 of 12 measured, as many as Haar). Below a large
    face, the default answers that face alone; `--min-face 48` finds the crowd too."""
    names = ("happy", "neutral", "surprise", "sad", "angry", "fear")
    files = [sorted((fer2013_dir / "test" / name).glob("*.jpg"))[i] for i in range(2) for name in names]
    tiles_ = []
    for file in files:
        face = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
        face = cv2.resize(face, (64, 64), interpolation=cv2.INTER_CUBIC)
        tiles_.append(cv2.copyMakeBorder(face, 88, 88, 128, 128, cv2.BORDER_REPLICATE))
    crowd = np.vstack([np.hstack(tiles_[r * 4:r * 4 + 4]) for r in range(3)])
    big = cv2.imread(str(files[0]), cv2.IMREAD_GRAYSCALE)
    big = cv2.resize(big, (360, 360), interpolation=cv2.INTER_CUBIC)
    band = cv2.copyMakeBorder(big, 60, 60, 460, 460, cv2.BORDER_REPLICATE)  # 1280x480, below the crowd
    cv2.imwrite(str(tmp_path / "crowd.png"), crowd)
    cv2.imwrite(str(tmp_path / "crowd_and_one.png"), np.vstack([crowd, band]))

    def faces(name: str, *flags: str) -> list[dict]:
        code, out, err = run_main(["predict", str(tmp_path / name), "--model", "shipped", "--json",
                                   *flags], monkeypatch, capsys)
        assert code == 0, err
        return json.loads(out)[0]["faces"]

    def tiles_of(found: list[dict]) -> set[tuple[int, int]]:
        return {(int((f["box"]["x"] + f["box"]["width"] / 2) // 320),
                 int((f["box"]["y"] + f["box"]["height"] / 2) // 240)) for f in found}

    rgb = np.repeat(crowd[:, :, None], 3, axis=2)
    assert BlazeFaceDetector(search_deeper=False)(rgb) == []  # none at the default depth
    alone = faces("crowd.png")
    assert len(alone) == len(tiles_of(alone)) >= 8, [f["box"] for f in alone]
    found = faces("crowd.png", "--min-face", "48")
    assert len(found) == len(tiles_of(found)) >= 8, [f["box"] for f in found]
    with_big = faces("crowd_and_one.png")
    assert [f["box"]["width"] > 300 for f in with_big] == [True]  # the large face, not the crowd
    found = faces("crowd_and_one.png", "--min-face", "48")
    assert len(found) >= 9 and max(f["box"]["width"] for f in found) > 300
    code, _, err = run_main(["predict", str(tmp_path / "crowd.png"), "--min-face", "0"], monkeypatch, capsys)
    assert code == 2 and "--min-face 0: must be at least 1 pixel" in err, err
    assert len(err.strip().splitlines()) == 1, err
