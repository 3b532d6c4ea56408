"""`ferkeras serve`'s API, in-process through FastAPI's TestClient: real photos, bad bodies, limits,
concurrency. The page in a real browser is tests/test_serve_browser.py's."""

import io
import subprocess
import sys
import threading

import cv2
import matplotlib.cbook
import numpy as np
import pytest
from conftest import assert_stderr_still_goes_to, face_canvas, run_main, run_together, stderr_into
from PIL import Image

pytest.importorskip("fastapi", reason="ferkeras[serve] not installed: the server is not tested")
from fastapi.testclient import TestClient  # noqa: E402

from ferkeras.media.detect import Detector, HaarDetector  # noqa: E402
from ferkeras.predict import FaceRecognizer  # noqa: E402
from ferkeras.runners import load_runner  # noqa: E402
from ferkeras.serve import create_app  # noqa: E402
from ferkeras.service import ServeSettings, Service  # noqa: E402

GRACE_HOPPER = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def service():
    """The shipped model, loaded once for every test here; admission by the queue's length alone
    (a busy machine's slow answers must not turn these tests' requests into 503s)."""
    return Service.load(ServeSettings(model="shipped", max_latency=0))


@pytest.fixture(scope="module")
def client(service):
    with TestClient(create_app(ServeSettings(model="shipped", max_upload_mb=1), service)) as client:
        yield client


@pytest.fixture(scope="module")
def happy_photo(service, fer2013_dir) -> bytes:
    """A PublicTest happy face, upscaled into a photo-sized canvas: the first of the test split's
    happy faces that the shipped model, through the server's own path, labels happy."""
    for path in sorted((fer2013_dir / "test" / "happy").glob("*.jpg"))[:10]:
        canvas = face_canvas(path)
        faces = service.predict(np.repeat(canvas[:, :, None], 3, axis=2))
        if len(faces) == 1 and faces[0]["label"] == "happy":
            return png_bytes(canvas)
    pytest.fail("none of the first 10 PublicTest happy faces is found and labelled happy")


def test_a_smiling_face_is_one_happy_face(client, happy_photo):
    response = client.post("/api/predict", files={"file": ("smile.png", happy_photo, "image/png")})
    assert response.status_code == 200
    body = response.json()
    assert body["model"].startswith("shipped") and (body["width"], body["height"]) == (400, 400)
    [face] = body["faces"]
    assert face["label"] == "happy" and face["score"] == max(face["probabilities"].values())
    assert set(face["probabilities"]) == {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
    # The shipped int8 model's outputs come in steps of 1/256: 7 of them sum to 1 within 7 half-steps.
    assert abs(sum(face["probabilities"].values()) - 1) <= 7 / 512
    x, y, w, h = (face["box"][k] for k in ("x", "y", "width", "height"))
    assert x < 200 < x + w and y < 200 < y + h  # the face sits in the middle of the canvas


def test_raw_body_and_multipart_give_the_same_record_as_predict(client, service):
    photo = open(GRACE_HOPPER, "rb").read()
    raw = client.post("/api/predict", content=photo, headers={"content-type": "image/jpeg"}).json()
    form = client.post("/api/predict", files={"file": ("g.jpg", photo, "image/jpeg")}).json()
    assert raw == form and len(raw["faces"]) == 1
    expected = service.predict(cv2.cvtColor(cv2.imread(GRACE_HOPPER), cv2.COLOR_BGR2RGB))
    assert raw["faces"] == expected  # the same record as `predict --json` gives per face
    assert raw["faces"][0]["box"]["x"] in range(140, 170)


def test_a_48x48_crop_is_read_as_predict_reads_it(client, fer2013_dir, tmp_path):
    """A 48x48 upload is a face crop, as `predict` takes it: the whole image, read as it is and as
    its landmarks frame it; the record equals predict's."""
    from ferkeras.predict import predict

    path = sorted((fer2013_dir / "test" / "fear").glob("*.jpg"))[0]
    body = client.post("/api/predict", content=path.read_bytes(),
                       headers={"content-type": "image/jpeg"}).json()
    [face] = body["faces"]
    assert face["box"] == {"x": 0, "y": 0, "width": 48, "height": 48}
    [expected] = predict([path], model="shipped")
    assert expected.crop
    assert face == expected.faces[0].to_dict()


def test_an_image_without_a_face_gives_none(client):
    rng = np.random.default_rng(0)
    sky = np.clip(np.linspace(0, 255, 320)[None, :, None] + rng.normal(0, 8, (240, 320, 3)), 0, 255)
    response = client.post("/api/predict", content=png_bytes(sky.astype(np.uint8)))
    assert response.status_code == 200 and response.json()["faces"] == []


@pytest.mark.parametrize("body, content_type, status, message", [
    (b"just some text", "text/plain", 400, "upload: not an image"),
    (b"", "image/png", 400, "empty body"),
    (b"--x\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nhi\r\n--x--\r\n",
     "multipart/form-data; boundary=x", 400, "no field 'file'"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "image/png", 400, "upload: "),
    (b"\0" * (1024 * 1024 + 1), "image/png", 413, "over the limit"),
])
def test_bad_bodies_get_a_4xx_with_one_line_and_the_server_keeps_serving(client, body, content_type,
                                                                         status, message):
    response = client.post("/api/predict", content=body, headers={"content-type": content_type})
    assert response.status_code == status
    detail = response.json()["detail"]
    assert message in detail and "\n" not in detail
    assert client.get("/api/health").status_code == 200


def test_an_image_of_too_many_pixels_is_refused_before_it_is_decoded(client):
    huge = io.BytesIO()
    Image.new("L", (6000, 5000)).save(huge, format="PNG")  # 30 MP in about 30 KB
    assert len(huge.getvalue()) < 1024 * 1024
    response = client.post("/api/predict", content=huge.getvalue(), headers={"content-type": "image/png"})
    assert response.status_code == 413 and "6000x5000" in response.json()["detail"]


def test_an_oversized_chunked_body_is_refused_without_reading_it_all(client):
    def chunks():
        for _ in range(40):
            yield b"\0" * 65536  # 2.5 MB without a Content-Length, over the 1 MB limit
    response = client.post("/api/predict", content=chunks(), headers={"content-type": "image/png"})
    assert response.status_code == 413


def test_health_reports_model_accuracy_and_version(client):
    import ferkeras

    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["version"] == ferkeras.__version__
    assert health["model"].startswith("shipped") and health["detector"] == "blazeface"
    assert 0.6 < health["accuracy"]["accuracy"] < 0.8 and health["accuracy"]["images"] == 3589


def test_openapi_documents_the_api(client):
    schema = client.get("/openapi.json").json()
    assert {"/api/predict", "/api/health"} <= set(schema["paths"])
    body = schema["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/jpeg", "image/png"} <= set(body)


def test_static_files_cannot_be_escaped(client):
    assert client.get("/").status_code == 200 and "getUserMedia" in client.get("/static/app.js").text
    for path in ("/static/../serve.py", "/static/%2e%2e/serve.py", "/static/..%2fserve.py",
                 "/static/%2e%2e/%2e%2e/setup.py"):
        assert client.get(path).status_code == 404, path


@pytest.fixture(scope="module")
def distinct_photos(fer2013_dir) -> dict[str, bytes]:
    """grace_hopper.jpg and the first PublicTest face of each class in a canvas, each face at its
    own place and size: no two photos have the same answer."""
    photos = {"grace": open(GRACE_HOPPER, "rb").read()}
    for shift, folder in enumerate(sorted((fer2013_dir / "test").iterdir())):
        canvas = face_canvas(min(folder.glob("*.jpg")), face=160 + 8 * shift)
        canvas = np.roll(canvas, 12 * shift - 36, axis=1)
        photos[folder.name] = png_bytes(canvas)
    return photos


def test_concurrent_requests_on_every_worker_get_their_own_answers(client, service, distinct_photos):
    assert service.live.workers == ServeSettings().worker_count  # one per core by default
    expected = {name: client.post("/api/predict", content=data).json()
                for name, data in distinct_photos.items()}
    assert len({str(answer["faces"]) for answer in expected.values()}) == len(distinct_photos)
    assert sum(len(answer["faces"]) == 1 for answer in expected.values()) >= 6  # faces, found
    answers, errors = [], []

    def ask(name):
        try:
            response = client.post("/api/predict", content=distinct_photos[name])
            answers.append((name, response.status_code, response.json()))
        except Exception as e:  # noqa: BLE001 (any failure is the test's finding)
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(name,)) for name in list(distinct_photos) * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(answers) == 3 * len(distinct_photos)  # within the queue: no 503
    for name, status, answer in answers:
        assert status == 200 and answer == expected[name], name


# What a detector keeps between calls and must not share across threads: BlazeFace's LiteRT
# interpreters, Haar's cascade.
DETECTOR_STATE = {"blazeface": lambda d: d.networks[0].interpreter, "haar": lambda d: d.cascade}


@pytest.mark.parametrize("detector", list(DETECTOR_STATE))
def test_each_worker_has_its_own_interpreter_and_detector(detector):
    loaded = Service.load(ServeSettings(model="shipped", detector=detector, workers=3, queue=0))
    try:
        recognizers = [loaded.live.idle.get() for _ in range(3)] + [loaded.saliency.idle.get()]
        state = DETECTOR_STATE[detector]
        for kind in (lambda r: r.runner.interpreter, lambda r: r.detector, lambda r: state(r.detector)):
            assert len({id(kind(r)) for r in recognizers}) == 4
        assert loaded.health()["workers"] == {"workers": 3, "capacity": 3, "in": 0}
        # one thread each, as many workers as cores: a worker's LiteRT threads would contend with the others'
        assert all(getattr(r.detector, "threads", 1) == 1 for r in recognizers)
    finally:
        loaded.close()


class GatedDetector(Detector):
    """Haar behind a gate: each call says it started, then waits until the test opens the gate,
    so a test holds a worker busy for exactly as long as it needs."""

    name = "haar"

    def __init__(self):
        self.haar, self.gate, self.started = HaarDetector(), threading.Event(), threading.Semaphore(0)

    def __call__(self, rgb, gray=None):
        self.started.release()
        assert self.gate.wait(60)
        return self.haar(rgb, gray)


def gated_service(waiting: int) -> tuple[Service, GatedDetector, GatedDetector]:
    """One live worker and the saliency lane, both on gated detectors; `waiting` may queue."""
    live, saliency = GatedDetector(), GatedDetector()
    service = Service([FaceRecognizer(load_runner("shipped", threads=1), live)],
                      FaceRecognizer(load_runner("shipped", threads=1), saliency), waiting)
    return service, live, saliency


def wait_until(condition, seconds: float = 30) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_flood_beyond_the_queue_gets_503_with_retry_after_and_the_server_keeps_serving(distinct_photos):
    service, live, _ = gated_service(waiting=1)
    photo = distinct_photos["grace"]
    held = []
    with TestClient(create_app(ServeSettings(model="shipped"), service)) as client:
        expected = None

        def ask():
            held.append(client.post("/api/predict", content=photo))

        running, queued = threading.Thread(target=ask), threading.Thread(target=ask)
        running.start()
        assert live.started.acquire(timeout=30)  # the worker is busy with the first
        queued.start()
        wait_until(lambda: service.live.admitted == 2)  # the second waits in the queue: full
        for _ in range(5):
            refused = client.post("/api/predict", content=photo)
            assert refused.status_code == 503, refused.text
            assert int(refused.headers["Retry-After"]) >= 1 and "busy" in refused.json()["detail"]
        # health and the page answer at once while inference is saturated
        health = client.get("/api/health")
        assert health.status_code == 200
        assert health.json()["workers"] == {"workers": 1, "capacity": 2, "in": 2}
        assert client.get("/").status_code == 200 and client.get("/static/app.js").status_code == 200
        assert not live.gate.is_set()  # ... before any inference was let go
        live.gate.set()
        running.join(60)
        queued.join(60)
        expected = service.predict(np.asarray(Image.open(io.BytesIO(photo)).convert("RGB")))
        assert [r.status_code for r in held] == [200, 200]
        assert all(r.json()["faces"] == expected and len(expected) == 1 for r in held)
        after = client.post("/api/predict", content=photo)  # the flood left no slot taken
        assert after.status_code == 200 and after.json()["faces"] == expected
        assert client.get("/api/health").json()["workers"]["in"] == 0
    service.close()


def test_a_real_flood_gets_answers_or_503s_never_a_wrong_answer(distinct_photos):
    """Twelve clients at once on one worker and a queue of two: some are refused, every answer is right."""
    service = Service([FaceRecognizer(load_runner("shipped", threads=1))],
                      FaceRecognizer(load_runner("shipped", threads=1)), 2)
    names = [name for name in distinct_photos if name != "grace"][:6] * 2
    with TestClient(create_app(ServeSettings(model="shipped"), service)) as client:
        expected = {name: client.post("/api/predict", content=distinct_photos[name]).json() for name in names}
        start, answers = threading.Barrier(len(names)), []

        def ask(name):
            start.wait(30)
            answers.append((name, client.post("/api/predict", content=distinct_photos[name])))

        run_together(*(lambda name=name: ask(name) for name in names), timeout=60)
        statuses = sorted(response.status_code for _, response in answers)
        assert len(answers) == len(names) and set(statuses) == {200, 503}, statuses
        for name, response in answers:
            assert (response.json() == expected[name] if response.status_code == 200
                    else int(response.headers["Retry-After"]) >= 1), name
        assert client.post("/api/predict", content=distinct_photos["grace"]).status_code == 200
    service.close()


def test_a_request_expected_to_take_over_max_latency_is_refused_at_once():
    import time

    from ferkeras.service import Lane, ServerBusy

    lane = Lane("test", [FaceRecognizer(load_runner("shipped", threads=1))], waiting=10, max_latency=1.0)
    lane.submit(lambda recognizer: time.sleep(0.4)).result()  # a job's measured time: 0.4 s
    gate = threading.Event()
    held = [lane.submit(lambda recognizer: gate.wait(30))]  # the one worker, busy
    held.append(lane.submit(lambda recognizer: None))  # 0.4 s of wait + 0.4 s of its own: admitted
    began = time.monotonic()
    with pytest.raises(ServerBusy) as refused:  # 0.8 s of wait + 0.4 s: over 1 s, though the queue has room
        lane.submit(lambda recognizer: None)
    assert time.monotonic() - began < 0.1 and refused.value.retry_after == 1  # 2 jobs x 0.4 s, rounded up
    assert "the wait would pass 1 s" in str(refused.value)
    gate.set()
    assert [job.result(30) for job in held] == [True, None]
    lane.submit(lambda recognizer: None).result(30)  # drained: admitted again
    lane.close()


def test_bad_requests_free_their_place_in_the_queue():
    service, live, _ = gated_service(waiting=0)
    live.gate.set()
    with TestClient(create_app(ServeSettings(model="shipped", max_upload_mb=1), service)) as client:
        huge = png_bytes(np.zeros((6000, 5000), np.uint8))  # refused by the worker, before decoding
        for body in (b"just some text", b"\x89PNG\r\n\x1a\n" + b"\0" * 100, huge):
            assert client.post("/api/predict", content=body).status_code in (400, 413)
        assert service.live.admitted == 0
        assert client.post("/api/predict", content=open(GRACE_HOPPER, "rb").read()).status_code == 200
    service.close()


def test_saliency_waits_in_its_own_lane_not_in_front_of_live_frames():
    service, live, saliency = gated_service(waiting=0)
    live.gate.set()  # live frames go straight through; the saliency lane is held
    photo = open(GRACE_HOPPER, "rb").read()
    blank = png_bytes(np.full((240, 320), 128, np.uint8))  # no face: no saliency model to load
    with TestClient(create_app(ServeSettings(model="shipped"), service)) as client:
        upload = threading.Thread(target=lambda: client.post("/api/predict?saliency=true", content=blank))
        upload.start()
        assert saliency.started.acquire(timeout=30)
        for _ in range(3):
            response = client.post("/api/predict", content=photo)
            assert response.status_code == 200 and len(response.json()["faces"]) == 1
        saliency.gate.set()
        upload.join(120)
    service.close()


def test_each_of_several_processes_builds_its_app_from_the_settings_serve_leaves(monkeypatch):
    import dataclasses
    import json

    from ferkeras.serve import SETTINGS_VARIABLE, app_from_environment

    settings = ServeSettings(model="shipped", workers=1, queue=3, max_latency=0)
    monkeypatch.setenv(SETTINGS_VARIABLE, json.dumps(dataclasses.asdict(settings)))
    threads = cv2.getNumThreads()
    try:
        with TestClient(app_from_environment()) as client:  # as each uvicorn process does
            assert client.get("/api/health").json()["workers"] == {"workers": 1, "capacity": 4, "in": 0}
            [face] = client.post("/api/predict", content=open(GRACE_HOPPER, "rb").read()).json()["faces"]
            assert face["box"]["x"] in range(140, 170)
    finally:
        cv2.setNumThreads(threads)  # the server's one OpenCV thread a call, not this test process's


@pytest.mark.parametrize("flags, message", [(["--workers", "0"], "--workers"),
                                            (["--queue", "-1"], "--queue")])
def test_bad_worker_flags_fail_in_one_line(flags, message, monkeypatch, capsys):
    code, _, err = run_main(["serve", "--model", "shipped", *flags], monkeypatch, capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_saliency_overlay_per_face(client):
    body = client.post("/api/predict?saliency=true", content=open(GRACE_HOPPER, "rb").read()).json()
    [face] = body["faces"]
    assert face["saliency"].startswith("data:image/png;base64,")
    import base64

    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(face["saliency"].split(",", 1)[1]))))
    assert overlay.shape == (144, 144, 3)
    colored = (overlay.max(axis=2).astype(int) - overlay.min(axis=2)) > 20  # the map's colour, not gray
    assert 0.02 < colored.mean() < 0.98


def test_saliency_maps_the_crop_as_the_model_read_it(service, monkeypatch):
    """A face lit darker than any training face is brightened before the model reads it; its
    saliency map is of that crop, not of the dark one the model never saw."""
    from ferkeras.media.crop import FER2013_MEAN_RANGE

    dark = np.rint(np.asarray(Image.open(GRACE_HOPPER).convert("RGB")) * 0.15).astype(np.uint8)
    [raw] = FaceRecognizer(load_runner("shipped")).find(dark).crops
    assert raw.mean() < FER2013_MEAN_RANGE[0] - 20
    mapped = []
    monkeypatch.setattr(service, "_saliency", lambda crops, faces: mapped.append(crops) or ["-"] * len(faces))
    [face] = service.predict(dark, saliency=True)
    [[crop]] = mapped
    assert crop.shape == raw.shape and abs(crop.mean() - FER2013_MEAN_RANGE[0]) < 1
    assert np.corrcoef(crop.ravel(), raw.ravel())[0, 1] > 0.97  # the same face, lit as training faces are


def test_a_saliency_load_overlapping_an_interpreter_resize_leaves_stderr_working(tmp_path, monkeypatch):
    """The interleaving that lost the server's stderr: an upload loads the saliency model (outside
    the inference lock) while a live frame resizes the interpreter, and the resize ends last."""

    import ferkeras.model

    fresh = Service.load(ServeSettings(model="shipped", workers=1))  # its saliency model not loaded yet
    loading, resizing, loaded = threading.Event(), threading.Event(), threading.Event()
    load_model, saliency_model = ferkeras.model.load_model, fresh.saliency_model

    def slow_load(path):
        loading.set()
        assert resizing.wait(30)
        return load_model(path)

    def saliency_model_then_say_so():
        model = saliency_model()
        loaded.set()
        return model

    class SlowInterpreter:
        """The runner's interpreter, holding its allocation open until the saliency model has loaded."""

        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def allocate_tensors(self):
            resizing.set()
            assert loaded.wait(30)
            return self.inner.allocate_tensors()

    monkeypatch.setattr(ferkeras.model, "load_model", slow_load)
    monkeypatch.setattr(fresh, "saliency_model", saliency_model_then_say_so)
    fresh.runner.interpreter = SlowInterpreter(fresh.runner.interpreter)
    fresh.runner._batch = 0  # the next frame resizes the interpreter
    photo = np.asarray(Image.open(GRACE_HOPPER).convert("RGB"))
    answers = {}

    def live_frame():
        assert loading.wait(30)
        answers["frame"] = fresh.predict(photo)

    def upload():
        answers["upload"] = fresh.predict(photo, saliency=True)

    with stderr_into(tmp_path / "stderr") as path:
        run_together(upload, live_frame, timeout=180)
        assert_stderr_still_goes_to(path)
    [frame], [uploaded] = answers["frame"], answers["upload"]
    assert uploaded["label"] == frame["label"] and uploaded["saliency"].startswith("data:image/png")


def test_a_bad_model_fails_at_start_with_one_line(tmp_path):
    not_a_model = tmp_path / "model.tflite"
    not_a_model.write_text("nope")
    result = subprocess.run([sys.executable, "-c", "from ferkeras.cli.main import main; main()", "serve",
                             "--model", str(not_a_model), "--port", "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"Error: {not_a_model}: not a TFLite model "
                                                  f"({result.stderr.split('(', 1)[1].strip()}"]
    assert "Traceback" not in result.stderr
