"""`ferkeras serve`'s page in a real browser: the system's Chromium driven by Playwright against a
server started as a user would (`ferkeras serve --model shipped`), the live camera fed by
Chromium's fake camera playing a clip made from a real photo. The API alone is test_serve.py's."""

import os
import shutil
import sys
from pathlib import Path

import cv2
import matplotlib.cbook
import pytest
from conftest import grace_hopper_bgr, load_bench, pan_and_zoom

from ferkeras.spec import CLASS_NAMES

pytest.importorskip("fastapi", reason="ferkeras[serve] not installed: the server is not tested")
httpx = pytest.importorskip("httpx2", reason="httpx2 not installed: the server cannot be polled")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed: no browser tests")

# Never a downloaded browser (`playwright install`): the system's Chromium, or skip.
CHROMIUM = os.environ.get("FERKERAS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
GRACE_HOPPER = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
FERKERAS = [sys.executable, "-c", "from ferkeras.cli.main import main; main()"]
FAKE_CAMERA = ["--use-fake-device-for-media-stream"]  # a camera that plays --use-file-for-fake-video-capture
GRANT_CAMERA = "--use-fake-ui-for-media-stream"  # accept the permission prompt, as a user would
# Wider than the page sends (app.js SEND_WIDTH, 640): boxes must be scaled back to the video.
CLIP_FRAMES, CLIP_FPS, CLIP_SIZE = 16, 10, (960, 540)
# The overlay's box colour (app.js drawBoxes: #00e000): green well above red and blue.
COUNT_GREEN = """(selector) => {
  const canvas = document.querySelector(selector);
  if (!canvas.width || !canvas.height) return {count: 0};
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let count = 0, left = canvas.width, right = -1, top = canvas.height, bottom = -1;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 1] > 200 && data[i] < 60 && data[i + 2] < 60 && data[i + 3] > 200) {
      const x = (i / 4) % canvas.width, y = Math.floor(i / 4 / canvas.width);
      count++; left = Math.min(left, x); right = Math.max(right, x);
      top = Math.min(top, y); bottom = Math.max(bottom, y);
    }
  }
  return {count, left, top, width: right - left + 1, height: bottom - top + 1, canvas: canvas.width};
}"""
# An <img>'s pixels drawn into a canvas: how many, their spread (0 for a blank image), and the
# share in colour (0 for a gray image: a crop with no heat map over it).
IMAGE_SPREAD = """(img) => {
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let sum = 0, squares = 0, colored = 0;
  for (let i = 0; i < data.length; i += 4) {
    sum += data[i]; squares += data[i] * data[i];
    const rgb = [data[i], data[i + 1], data[i + 2]];
    if (Math.max(...rgb) - Math.min(...rgb) > 20) colored++;
  }
  const n = data.length / 4, mean = sum / n;
  return {pixels: n, std: Math.sqrt(squares / n - mean * mean), colored: colored / n};
}"""


def write_y4m(path: Path, frames_bgr, fps: int) -> Path:
    """BGR frames as a YUV4MPEG2 (4:2:0) file, the format Chromium's fake camera plays."""
    frames = list(frames_bgr)
    height, width = frames[0].shape[:2]
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            # OpenCV's I420 is the Y plane then the quarter-size U and V planes: Y4M's frame layout.
            out.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no system Chromium at {CHROMIUM} (set FERKERAS_CHROMIUM): browser tests skipped")
    return CHROMIUM


@pytest.fixture(scope="module")
def server(chromium, tmp_path_factory) -> str:
    """`ferkeras serve --model shipped` on a free loopback port, in its own process group, killed at
    the end; its base URL."""
    serving = load_bench("serve")  # the load benchmark's own start and stop of the server
    port = serving.free_port()
    with open(tmp_path_factory.mktemp("serve") / "serve.log", "w+b") as log:
        try:
            process = serving.start_server(["--model", "shipped"], port, log)
        except RuntimeError as e:
            pytest.fail(str(e))
        try:
            yield f"http://127.0.0.1:{port}"
        finally:  # the whole process group, so nothing the server started outlives the tests
            serving.stop_server(process)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """1.6 s of 960x540 video panning across Grace Hopper's portrait, for the fake camera."""
    views = pan_and_zoom(grace_hopper_bgr(), CLIP_FRAMES, width=(460, 400), pan=40, size=CLIP_SIZE)
    return write_y4m(tmp_path_factory.mktemp("camera") / "grace_hopper.y4m", views, CLIP_FPS)


@pytest.fixture(scope="module")
def playwright():
    with sync_api.sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright, chromium, clip):
    """Headless Chromium whose camera plays the clip, its permission granted."""
    browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=[
        *FAKE_CAMERA, GRANT_CAMERA, f"--use-file-for-fake-video-capture={clip}"])
    yield browser
    browser.close()


class Console:
    """A page's console errors and uncaught exceptions, and its /api/predict requests in flight."""

    def __init__(self, page):
        self.errors: list[str] = []
        self.in_flight = self.most_in_flight = self.predicts = 0
        page.on("console", lambda message: message.type == "error" and self.errors.append(
            f"{message.text} ({message.location.get('url')})"))
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("request", self._sent)
        page.on("requestfinished", self._done)
        page.on("requestfailed", self._done)

    def _sent(self, request) -> None:
        if "/api/predict" in request.url:
            self.predicts += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)

    def _done(self, request) -> None:
        if "/api/predict" in request.url:
            self.in_flight -= 1


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.console = Console(page)
    page.goto(server + "/")
    yield page
    context.close()


def test_live_camera_draws_labelled_boxes_one_frame_at_a_time(page):
    page.click("#start")
    page.wait_for_selector("#live-faces li.face[data-label]", timeout=15_000)
    label = page.get_attribute("#live-faces li.face", "data-label")
    assert label in CLASS_NAMES
    frames = int(page.get_attribute("#live-section", "data-frames"))
    # Frames keep going: the loop asks for the next one when an answer comes.
    page.wait_for_function(f"+document.querySelector('#live-section').dataset.frames >= {frames + 3}",
                           timeout=15_000)
    # The overlay has the green box where the face is: the clip keeps the face about 0.5 of the
    # frame wide (222 px of a 400-460 px window), centred within +-48 px across, in its upper half.
    page.wait_for_function(f"({COUNT_GREEN})('#live-overlay').count > 1000", timeout=10_000)
    green = page.evaluate(COUNT_GREEN, "#live-overlay")
    width, height = CLIP_SIZE
    assert green["canvas"] == width, green
    assert 0.4 * width <= green["width"] <= 0.65 * width, green
    assert abs(green["left"] + green["width"] / 2 - width / 2) < 0.1 * width, green
    assert "frames/s" in page.text_content("#stats") and "ms round trip" in page.text_content("#stats")
    page.click("#stop")
    console = page.console
    assert console.predicts >= frames + 3
    assert console.most_in_flight == 1, f"{console.most_in_flight} frames in flight at once"
    assert console.errors == []


def test_an_uploaded_photo_shows_its_label_and_saliency(page, server):
    page.set_input_files("#file", GRACE_HOPPER)
    # The first saliency request loads TensorFlow and the Keras model in the server: slow here.
    page.wait_for_selector("#upload-faces li.face img.saliency", timeout=90_000)
    [face] = page.query_selector_all("#upload-faces li.face")
    expected = httpx.post(server + "/api/predict", content=GRACE_HOPPER.read_bytes(),
                          headers={"Content-Type": "image/jpeg"}, timeout=30).json()["faces"]
    assert face.get_attribute("data-label") == expected[0]["label"] and len(expected) == 1
    saliency = face.query_selector("img.saliency")
    assert saliency.get_attribute("src").startswith("data:image/png;base64,")
    overlay = saliency.evaluate(IMAGE_SPREAD)
    assert overlay["pixels"] == 144 * 144 and overlay["std"] > 10 and overlay["colored"] > 0.02, overlay
    green = page.evaluate(COUNT_GREEN, "#upload-canvas")
    assert green["canvas"] == 512 and green["width"] >= 200, green  # the face is about 222 px wide
    assert page.text_content("#upload-status") == "1 face in 512x600"
    assert page.console.errors == []


def test_a_refused_camera_says_so(playwright, chromium, clip, server):
    # No GRANT_CAMERA and no permission granted: headless Chromium refuses the camera, as a user would.
    browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=[
        *FAKE_CAMERA, f"--use-file-for-fake-video-capture={clip}"])
    try:
        page = browser.new_page()
        console = Console(page)
        page.goto(server + "/")
        page.click("#start")
        message = page.wait_for_selector("#camera-message", state="visible", timeout=10_000)
        assert "camera was refused" in message.text_content()
        assert page.is_enabled("#start") and not page.is_enabled("#stop") and console.predicts == 0
        assert console.errors == []
    finally:
        browser.close()
