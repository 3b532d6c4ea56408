"""`ferkeras serve`: a JSON API and a live webcam page, on FastAPI and uvicorn.

The model loads once, in the app's lifespan, and reaches the handlers as a dependency (tests
swap it). Handlers read the upload into memory under a size limit (never to disk), decode it
with Pillow, and run detection and the model in a worker thread, so a slow request never
blocks the event loop. The page (ferkeras/static/) is plain HTML and JavaScript shipped in the
package: no CDN, nothing fetched from the network.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at definition
# time, inside create_app, where its names are imported.

import base64
import email.parser
import email.policy
import io
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

import ferkeras
from ferkeras.config import RUNS_DIR
from ferkeras.errors import FerkerasError, first_line, import_tensorflow
from ferkeras.media.faces import Face
from ferkeras.media.images import ImageTooLarge, decode_image
from ferkeras.predict import DEFAULT_DETECTOR, DEFAULT_TTA, FaceRecognizer
from ferkeras.runners import KerasRunner, Runner, accuracy_record

DEFAULT_HOST = "127.0.0.1"  # only this machine can reach it unless --host says otherwise
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 10.0
MAX_PIXELS = 25_000_000  # larger images (a 99 KB PNG can hold 81 MP) would take a minute and GBs


@dataclass
class ServeSettings:
    """What `ferkeras serve` loads and allows."""

    model: str | None = None  # a model name as load_runner takes it (None: latest run, else shipped)
    detector: str = DEFAULT_DETECTOR
    tta: str = DEFAULT_TTA
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    runs_dir: str = RUNS_DIR

    @property
    def max_upload_bytes(self) -> int:
        """The upload limit in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)


class Service:
    """The loaded model and detector, shared by every request; one inference at a time.

    LiteRT interpreters and OpenCV's cascade are not safe to call from two threads at once,
    so a lock serialises inference; FastAPI's worker threads keep the event loop free.
    """

    def __init__(self, recognizer: FaceRecognizer):
        self.recognizer = recognizer
        self.lock = threading.Lock()
        self._saliency_model = None
        self._saliency_lock = threading.Lock()

    @classmethod
    def load(cls, settings: ServeSettings) -> "Service":
        """Load the model and detector once, at start-up."""
        return cls(FaceRecognizer(settings.model, settings.detector, tta=settings.tta,
                                  runs_dir=settings.runs_dir))

    @property
    def runner(self) -> Runner:
        """The model runner that answers."""
        return self.recognizer.runner

    def health(self) -> dict:
        """Model, its recorded accuracy, detector, TTA and version."""
        record = accuracy_record(self.runner.path)
        return {"status": "ok", "version": ferkeras.__version__, "model": self.runner.name,
                "accuracy": {k: v for k, v in record.items() if k != "recall"} if record else None,
                "detector": self.recognizer.detector.name, "tta": self.recognizer.tta}

    def predict(self, rgb: np.ndarray, saliency: bool = False) -> list[dict]:
        """Face records of an RGB image; with saliency, each carries a SmoothGrad overlay of its crop."""
        if saliency:
            self.saliency_model()  # a first load happens outside the inference lock
        with self.lock:
            found, faces = self.recognizer.recognize(rgb)
            records = [face.to_dict() for face in faces]
            if saliency and faces:
                for record, overlay in zip(records, self._saliency(found.crops, faces), strict=True):
                    record["saliency"] = overlay
        return records

    def _saliency(self, crops: np.ndarray, faces: list[Face]) -> list[str]:
        """PNG data URLs: each crop with the SmoothGrad map of its predicted class over it."""
        from ferkeras.viz import saliency_maps

        classes = [int(np.argmax(face.probabilities)) for face in faces]
        maps = saliency_maps(self.saliency_model(), crops, classes, "smoothgrad")  # each in [0, 1]
        return [_overlay_png(crop, heat) for crop, heat in zip(crops, maps, strict=True)]

    def saliency_model(self):
        """The Keras model that gradients go through: the runner's own, or the .keras file beside it.

        Loaded on first use under its own lock (it imports TensorFlow: seconds), so live
        frames, which take only the inference lock, are not held up meanwhile.
        """
        with self._saliency_lock:
            if self._saliency_model is None:
                if isinstance(self.runner, KerasRunner):
                    self._saliency_model = self.runner.model
                else:
                    beside = self.runner.path.parent / "model.keras"
                    if not beside.is_file():
                        raise FerkerasError(f"saliency needs a Keras model: none beside {self.runner.path}")
                    # TensorFlow's start-up lines kept off the server's terminal; safe while
                    # other requests run (lines they write meanwhile are passed on, not lost).
                    import_tensorflow()
                    from ferkeras.model import load_model

                    self._saliency_model = load_model(beside)
        return self._saliency_model


def _overlay_png(crop: np.ndarray, heat: np.ndarray, size: int = 144) -> str:
    """A PNG data URL of a gray 48x48 crop with a 0-1 heat map blended over it, upscaled."""
    from matplotlib import colormaps
    from PIL import Image

    from ferkeras.viz.figures import MAP_CMAP

    gray = np.repeat(crop[:, :, None].astype(np.float32) / 255, 3, axis=2)
    heat = np.clip(heat, 0, 1)[:, :, None]
    colored = colormaps[MAP_CMAP](heat[:, :, 0])[:, :, :3]
    weight = 0.8 * heat  # opaque where the map is high, clear where it is 0, as viz's overlays
    blend = (gray * (1 - weight) + colored * weight) * 255
    image = Image.fromarray(blend.astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def multipart_file(body: bytes, content_type: str, field: str = "file") -> bytes:
    """The bytes of one file field of a multipart/form-data body, parsed in memory."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise FerkerasError("multipart body could not be parsed")
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == field:
            return part.get_payload(decode=True) or b""
    raise FerkerasError(f"multipart body has no field {field!r}")


def static_dir() -> Path:
    """The page's files, shipped inside the package."""
    return Path(str(resources.files("ferkeras") / "static"))


def create_app(settings: ServeSettings | None = None, service: Service | None = None):
    """The FastAPI app: /api/predict, /api/health, the OpenAPI docs and the page at /.

    service: an already loaded Service (tests); otherwise one is loaded from settings at start-up.
    """
    from typing import Annotated

    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel

    settings = settings or ServeSettings()

    class BoxOut(BaseModel):
        x: int
        y: int
        width: int
        height: int

    class FaceOut(BaseModel):
        box: BoxOut
        label: str
        score: float
        probabilities: dict[str, float]
        landmarks: dict[str, list[float]] | None = None  # when the detector gives them
        saliency: str | None = None  # PNG data URL, when asked for

    class PredictOut(BaseModel):
        model: str
        width: int
        height: int
        faces: list[FaceOut]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.service = service or Service.load(settings)
        yield

    app = FastAPI(title="ferkeras", version=ferkeras.__version__, lifespan=lifespan,
                  description="Facial expressions of the faces in an image, from ferkeras' model.")

    def get_service(request: Request) -> Service:
        return request.app.state.service

    ServiceDep = Annotated[Service, Depends(get_service)]  # noqa: N806 (a type alias)

    @app.exception_handler(FerkerasError)
    async def bad_input(request: Request, error: FerkerasError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=400)

    async def read_upload(request: Request) -> bytes:
        limit = settings.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPException(413, f"upload of {int(declared):,} bytes is over the limit of {limit:,}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"upload is over the limit of {limit:,} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        if not body:
            raise HTTPException(400, "empty body: send an image (multipart field 'file', or raw bytes)")
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/"):
            return await run_in_threadpool(multipart_file, body, content_type)
        return body

    @app.post("/api/predict", response_model=PredictOut, response_model_exclude_none=True,
              summary="Faces and expressions in an image",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "file": {"type": "string", "format": "binary"}}}},
                  "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                  "image/png": {"schema": {"type": "string", "format": "binary"}}}}})
    async def predict(request: Request, service: ServiceDep, saliency: bool = False) -> dict:
        """An image (multipart field `file`, or raw JPEG/PNG bytes) -> each face's box, label, scores."""
        data = await read_upload(request)
        try:  # decoding takes a while for large photos: off the event loop too
            rgb = await run_in_threadpool(decode_image, data, "upload", MAX_PIXELS)
        except ImageTooLarge as e:
            raise HTTPException(413, str(e)) from None
        try:
            faces = await run_in_threadpool(service.predict, rgb, saliency)
        except FerkerasError as e:
            raise HTTPException(422, first_line(e)) from None
        return {"model": service.runner.name, "width": rgb.shape[1], "height": rgb.shape[0],
                "faces": faces}

    @app.get("/api/health", summary="The model that answers, its accuracy and the version")
    def health(service: ServiceDep) -> dict:
        """Model, recorded accuracy, detector, TTA and ferkeras' version."""
        return service.health()

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(static_dir() / "index.html")

    app.mount("/static", StaticFiles(directory=static_dir()), name="static")
    return app


def serve(settings: ServeSettings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          echo=print) -> None:
    """Load the model (a bad one fails here, before the server starts), then serve until Ctrl-C."""
    import uvicorn

    service = Service.load(settings)
    echo(service.runner.describe())
    echo(f"Serving on http://{host}:{port}/ (API docs at /docs); Ctrl-C stops")
    uvicorn.run(create_app(settings, service), host=host, port=port, log_level="warning",
                timeout_graceful_shutdown=2)

