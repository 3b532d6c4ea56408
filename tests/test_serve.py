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
from conftest import assert_stderr_still_goes_to, face_canvas, run_together, stderr_into
from PIL import Image

pytest.importorskip("fastapi", reason="ferkeras[serve] not installed: the server is not tested")
from fastapi.testclient import TestClient  # noqa: E402

from ferkeras.serve import ServeSettings, Service, create_app  # noqa: E402

GRACE_HOPPER = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def service():
    """The shipped model, loaded once for every test here."""
    return Service.load(ServeSettings(model="shipped"))


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


def test_concurrent_requests_get_their_own_answers(client, happy_photo):
    photos = {"grace": open(GRACE_HOPPER, "rb").read(), "happy": happy_photo}
    expected = {name: client.post("/api/predict", content=data).json() for name, data in photos.items()}
    answers, errors = [], []

    def ask(name):
        try:
            answers.append((name, client.post("/api/predict", content=photos[name]).json()))
        except Exception as e:  # noqa: BLE001 (any failure is the test's finding)
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(name,)) for name in ["grace", "happy"] * 8]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(answers) == 16
    for name, answer in answers:
        assert answer == expected[name]


def test_saliency_overlay_per_face(client):
    body = client.post("/api/predict?saliency=true", content=open(GRACE_HOPPER, "rb").read()).json()
    [face] = body["faces"]
    assert face["saliency"].startswith("data:image/png;base64,")
    import base64

    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(face["saliency"].split(",", 1)[1]))))
    assert overlay.shape == (144, 144, 3)
    colored = (overlay.max(axis=2).astype(int) - overlay.min(axis=2)) > 20  # the map's colour, not gray
    assert 0.02 < colored.mean() < 0.98


def test_a_saliency_load_overlapping_an_interpreter_resize_leaves_stderr_working(tmp_path, monkeypatch):
    """The interleaving that lost the server's stderr: an upload loads the saliency model (outside
    the inference lock) while a live frame resizes the interpreter, and the resize ends last."""

    import ferkeras.model

    fresh = Service.load(ServeSettings(model="shipped"))  # its saliency model not loaded yet
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
