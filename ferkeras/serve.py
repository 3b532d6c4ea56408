"""`ferkeras serve`: a JSON API and a live webcam page, on FastAPI and uvicorn.

The answers come from ferkeras.service's pool of workers, loaded once at start-up. Health and
the page are async and wait on no worker; a request is refused (503, Retry-After) before its body
is read when its lane is full. Uploads are read into memory under a size limit (never to disk).
The Python around the workers (HTTP, JSON, the event loop) stays serial: on more cores,
`--processes` runs several uvicorn processes on the one port, each with its own pool
(bench/README.md has the figures). The page (ferkeras/static/) is plain HTML and JavaScript
shipped in the package: no CDN.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at definition
# time, inside create_app, where its names are imported.

import asyncio
import dataclasses
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import ferkeras
from ferkeras.errors import FerkerasError, first_line, import_tensorflow
from ferkeras.media.images import ImageTooLarge
from ferkeras.service import ServerBusy, ServeSettings, Service, Unprocessable

DEFAULT_HOST = "127.0.0.1"  # only this machine can reach it unless --host says otherwise
DEFAULT_PORT = 8000


def static_dir() -> Path:
    """The page's files, shipped inside the package."""
    return Path(str(resources.files("ferkeras") / "static"))


def create_app(settings: ServeSettings | None = None, service: Service | None = None):
    """The FastAPI app: /api/predict, /api/health, the OpenAPI docs and the page at /.

    service: an already loaded Service (tests); otherwise one is loaded from settings at start-up.
    """
    from typing import Annotated

    from fastapi import Depends, FastAPI, HTTPException, Request
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
        if service is None:  # one it loaded itself; a caller's service is the caller's to close
            app.state.service.close()

    app = FastAPI(title="ferkeras", version=ferkeras.__version__, lifespan=lifespan,
                  description="Facial expressions of the faces in an image, from ferkeras' model.")

    def get_service(request: Request) -> Service:
        return request.app.state.service

    ServiceDep = Annotated[Service, Depends(get_service)]  # noqa: N806 (a type alias)

    @app.exception_handler(FerkerasError)
    async def bad_input(request: Request, error: FerkerasError) -> JSONResponse:
        if isinstance(error, ServerBusy):
            return JSONResponse({"detail": str(error)}, status_code=503,
                                headers={"Retry-After": str(error.retry_after)})
        status = 413 if isinstance(error, ImageTooLarge) else 422 if isinstance(error, Unprocessable) else 400
        return JSONResponse({"detail": first_line(error)}, status_code=status)

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
        return body

    @app.post("/api/predict", response_model=PredictOut, response_model_exclude_none=True,
              summary="Faces and expressions in an image",
              responses={503: {"description": "Every worker busy and the queue full: retry after "
                                              "the Retry-After header's seconds"}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "file": {"type": "string", "format": "binary"}}}},
                  "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                  "image/png": {"schema": {"type": "string", "format": "binary"}}}}})
    async def predict(request: Request, service: ServiceDep, saliency: bool = False) -> dict:
        """An image (multipart field `file`, or raw JPEG/PNG bytes) -> each face's box, label, scores."""
        service.lane(saliency).check()  # full: 503 before the body is read
        data = await read_upload(request)
        # Admitted or refused (503) at once; the parsing, decoding and inference run on a worker.
        job = service.submit(data, request.headers.get("content-type", ""), saliency)
        width, height, faces = await asyncio.wrap_future(job)
        return {"model": service.runner.name, "width": width, "height": height, "faces": faces}

    @app.get("/api/health", summary="The model that answers, its accuracy, the version and the load")
    async def health(service: ServiceDep) -> dict:
        """Model, recorded accuracy, detector, TTA, ferkeras' version, and the workers' load."""
        return service.health()

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(static_dir() / "index.html")

    app.mount("/static", StaticFiles(directory=static_dir()), name="static")
    return app


SETTINGS_VARIABLE = "FERKERAS_SERVE_SETTINGS"  # how `--processes` hands the settings to each process


def app_from_environment():
    """The app of one of `--processes` uvicorn processes, from the settings serve() left for it."""
    import cv2

    from ferkeras.runners import needs_tensorflow

    cv2.setNumThreads(1)  # one OpenCV thread per call: the workers run calls side by side
    settings = ServeSettings(**json.loads(os.environ[SETTINGS_VARIABLE]))
    if needs_tensorflow(settings.model, settings.runs_dir) or settings.detector == "mtcnn":
        import_tensorflow()  # its start-up lines hidden, as the CLI does before the first process
    return create_app(settings)


def serve(settings: ServeSettings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          echo=print, processes: int = 1) -> None:
    """Load the model (a bad one fails here, before the server starts), then serve until Ctrl-C.

    processes: uvicorn processes on the one port, each with its own pool of workers (by default
    the cores shared out among them): the way past one process's event loop on a larger machine.
    """
    import cv2
    import uvicorn

    cv2.setNumThreads(1)  # one OpenCV thread per call: the workers run calls side by side
    if processes > 1 and settings.workers is None:
        settings = dataclasses.replace(settings, workers=max(1, settings.worker_count // processes))
    service = Service.load(settings)
    echo(service.runner.describe())
    echo(f"{processes} process{'es' if processes > 1 else ''} of {service.live.workers} workers, "
         f"{settings.queue} requests queued at most in each (more get 503)")
    echo(f"Serving on http://{host}:{port}/ (API docs at /docs); Ctrl-C stops")
    if processes > 1:  # each process loads its own; this one only checked that it loads
        service.close()
        os.environ[SETTINGS_VARIABLE] = json.dumps(dataclasses.asdict(settings))
        uvicorn.run("ferkeras.serve:app_from_environment", factory=True, workers=processes, host=host,
                    port=port, log_level="warning", timeout_graceful_shutdown=2)
        return
    uvicorn.run(create_app(settings, service), host=host, port=port, log_level="warning",
                timeout_graceful_shutdown=2)
