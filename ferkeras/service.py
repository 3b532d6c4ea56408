"""The workers that answer `ferkeras serve`'s requests: a pool with bounded admission.

The model and detector load once, at start-up, into a pool of workers (one per core by default,
`--workers`), each with its own LiteRT interpreter and detector: neither is safe to call from
two threads at once (one Haar cascade shared by two threads crashes or mixes up boxes), and with
one each no worker waits on another's lock. Threads, not processes: OpenCV's cascade and LiteRT's
invoke release the GIL, so two threads answered 1.95x one thread's photos on this 2-core machine
(bench/serve.py --scaling, at a load average of 0.9), in one process on one port.
OpenCV runs one thread per call: the pool parallelises across requests, and OpenCV's own
threads on top would only contend with the other workers.

Admission is bounded: with every worker busy, a request finding `--queue` requests waiting, or
a wait longer than `--max-latency` allows, gets ServerBusy (503) at once with Retry-After.
Saliency runs in a lane of its own, never in front of live frames. Uploads are parsed and
decoded in the worker. ferkeras.serve puts the HTTP API and the page in front of it.
"""

import base64
import dataclasses
import email.parser
import email.policy
import io
import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

import ferkeras
from ferkeras.config import RUNS_DIR
from ferkeras.cpu import usable_cores
from ferkeras.errors import FerkerasError, first_line, import_tensorflow
from ferkeras.media.detectors import DEFAULT_DETECTOR
from ferkeras.media.faces import Face
from ferkeras.media.images import decode_image
from ferkeras.predict import DEFAULT_TTA, FaceRecognizer
from ferkeras.runners import KerasRunner, Runner, TFLiteRunner, accuracy_record, load_runner

DEFAULT_MAX_UPLOAD_MB = 10.0
DEFAULT_QUEUE = 32  # requests waiting for a worker, beyond those running; more get 503
DEFAULT_MAX_LATENCY = 0.5  # seconds: a request expected to take longer gets 503 (p99 about twice it)
SALIENCY_QUEUE = 2  # saliency requests waiting (each takes seconds); more get 503
MAX_PIXELS = 25_000_000  # larger images (a 99 KB PNG can hold 81 MP) would take a minute and GBs


@dataclasses.dataclass
class ServeSettings:
    """What `ferkeras serve` loads and allows."""

    # a model name as load_runner takes it (None: the latest run on real faces, else ensemble)
    model: str | None = None
    detector: str = DEFAULT_DETECTOR
    min_face: int | None = None  # the smallest face searched for, in pixels (None: the detector's)
    tta: str = DEFAULT_TTA
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    runs_dir: str = RUNS_DIR
    workers: int | None = None  # inference threads (None: one per core)
    queue: int = DEFAULT_QUEUE
    max_latency: float = DEFAULT_MAX_LATENCY  # 0: only the queue's length bounds admission

    @property
    def max_upload_bytes(self) -> int:
        """The upload limit in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def worker_count(self) -> int:
        """The number of inference workers: workers, else one per core this process may use."""
        if self.workers is not None:
            return self.workers
        return usable_cores()


class ServerBusy(FerkerasError):
    """Every worker busy and no room to wait: answered 503, with when to try again."""

    def __init__(self, retry_after: int, why: str = "the queue is full"):
        super().__init__(f"server busy: every worker is busy and {why}; retry in {retry_after} s")
        self.retry_after = retry_after


class Unprocessable(FerkerasError):
    """A readable image that the model cannot answer for (saliency without a Keras model): 422."""


class Lane:
    """Threads that each own one FaceRecognizer, behind a bounded admission: at most
    len(recognizers) + waiting requests at once, and with max_latency none expected to take
    longer (the jobs ahead of it shared among the workers, then its own, by the moving average
    of a job's time). A full lane raises ServerBusy at once."""

    def __init__(self, name: str, recognizers: list[FaceRecognizer], waiting: int,
                 max_latency: float | None = None):
        self.workers, self.capacity = len(recognizers), len(recognizers) + waiting
        self.max_latency = max_latency or None
        self.idle: queue.SimpleQueue = queue.SimpleQueue()
        for recognizer in recognizers:
            self.idle.put(recognizer)
        self.executor = ThreadPoolExecutor(self.workers, thread_name_prefix=f"ferkeras-{name}")
        self.lock = threading.Lock()
        self.admitted = 0
        self.seconds = 0.0  # moving average of a job's time (0: none done yet)

    def submit(self, job: Callable[..., object], *args) -> Future:
        """Run job(recognizer, *args) on a worker; ServerBusy (at once) when the lane is full."""
        with self.lock:
            self._check()
            self.admitted += 1
        future = self.executor.submit(self._run, job, args)  # RuntimeError once closed
        future.add_done_callback(self._release)  # also when cancelled at shutdown
        return future

    def check(self) -> None:
        """ServerBusy if a job submitted now would be refused (a request's body is then not read)."""
        with self.lock:
            self._check()

    def _check(self) -> None:
        ahead = self.admitted - self.workers + 1  # jobs to finish before a worker is free for it
        expected = max(0, ahead) * self.seconds / self.workers + self.seconds
        if self.admitted >= self.capacity:
            raise ServerBusy(self.retry_after())
        if self.max_latency and ahead > 0 and expected > self.max_latency:
            raise ServerBusy(self.retry_after(), f"the wait would pass {self.max_latency:g} s")

    def _run(self, job: Callable[..., object], args: tuple) -> object:
        recognizer = self.idle.get()  # never waits: as many threads as recognizers
        started = time.monotonic()
        try:
            return job(recognizer, *args)
        finally:
            self.idle.put(recognizer)
            took = time.monotonic() - started
            with self.lock:
                self.seconds = took if not self.seconds else 0.9 * self.seconds + 0.1 * took

    def _release(self, _future) -> None:
        with self.lock:
            self.admitted -= 1

    def retry_after(self) -> int:
        """Whole seconds the admitted requests take to drain through the workers, at least 1."""
        return max(1, math.ceil(self.admitted * self.seconds / self.workers))

    def state(self) -> dict:
        """Workers, capacity and how many requests are in (running or waiting) now."""
        return {"workers": self.workers, "capacity": self.capacity, "in": self.admitted}

    def close(self) -> None:
        """Stop taking jobs; the waiting ones are cancelled, the running ones finish."""
        self.executor.shutdown(wait=False, cancel_futures=True)


class Service:
    """The workers that answer, shared by every request: a live lane and a saliency lane."""

    def __init__(self, recognizers: list[FaceRecognizer], saliency_recognizer: FaceRecognizer,
                 waiting: int = DEFAULT_QUEUE, max_latency: float | None = None):
        self.recognizer = recognizers[0]  # what health describes; every worker runs the same
        self.live = Lane("worker", recognizers, waiting, max_latency)
        self.saliency = Lane("saliency", [saliency_recognizer], SALIENCY_QUEUE)
        self._saliency_model = None
        self._saliency_lock = threading.Lock()
        self._accuracy = accuracy_record(self.runner.path)  # read once: health reads no file

    @classmethod
    def load(cls, settings: ServeSettings) -> "Service":
        """Load a recognizer per worker, and one for saliency, once, at start-up."""
        if settings.worker_count < 1 or settings.queue < 0 or settings.max_latency < 0:
            raise FerkerasError(f"--workers {settings.workers}, --queue {settings.queue}, --max-latency "
                                f"{settings.max_latency}: must be at least 1, 0 and 0")
        # A TFLite interpreter per worker (and one for saliency), each on one thread, as each
        # worker's detector: the pool runs one per core. A TensorFlow model is safe to share, and
        # uses every core itself.
        runners = [load_runner(settings.model, settings.runs_dir, threads=1)]
        for _ in range(settings.worker_count):
            runners.append(load_runner(settings.model, settings.runs_dir, threads=1)
                           if isinstance(runners[0], TFLiteRunner) else runners[0])
        recognizers = [FaceRecognizer(runner, settings.detector, tta=settings.tta, min_face=settings.min_face,
                                      threads=1) for runner in runners]
        return cls(recognizers[:-1], recognizers[-1], settings.queue, settings.max_latency)

    @property
    def runner(self) -> Runner:
        """The model runner that answers."""
        return self.recognizer.runner

    def health(self) -> dict:
        """Model, its recorded accuracy, detector, TTA, version, and the live lane's load."""
        record = self._accuracy
        return {"status": "ok", "version": ferkeras.__version__, "model": self.runner.name,
                "accuracy": {k: v for k, v in record.items() if k != "recall"} if record else None,
                "detector": self.recognizer.detector.name, "tta": self.recognizer.tta,
                "workers": self.live.state()}

    def lane(self, saliency: bool) -> Lane:
        """The lane a request runs in: saliency's own, or the live one."""
        return self.saliency if saliency else self.live

    def submit(self, data: bytes, content_type: str = "", saliency: bool = False) -> Future:
        """A Future of an upload's (width, height, face records); ServerBusy at once if its lane is full."""
        return self.lane(saliency).submit(self._answer, data, content_type, saliency)

    def predict(self, rgb: np.ndarray, saliency: bool = False) -> list[dict]:
        """Face records of an RGB image, on a worker; with saliency, each carries a SmoothGrad overlay."""
        return self.lane(saliency).submit(self._recognize, rgb, saliency).result()

    def _answer(self, recognizer: FaceRecognizer, data: bytes, content_type: str,
                saliency: bool) -> tuple[int, int, list[dict]]:
        if content_type.startswith("multipart/"):
            data = multipart_file(data, content_type)
        rgb = decode_image(data, "upload", MAX_PIXELS)  # ImageTooLarge or FerkerasError: the upload's fault
        return rgb.shape[1], rgb.shape[0], self._recognize(recognizer, rgb, saliency)

    def _recognize(self, recognizer: FaceRecognizer, rgb: np.ndarray, saliency: bool) -> list[dict]:
        try:
            found, faces = recognizer.recognize(rgb, detect=None)  # predict's rule: 48x48 is a crop
            records = [face.to_dict() for face in faces]
            if saliency and faces:
                # the map of what the model read: each crop as classify hands it over
                overlays = self._saliency(recognizer.model_input(found.crops), faces)
                for record, overlay in zip(records, overlays, strict=True):
                    record["saliency"] = overlay
        except FerkerasError as e:
            raise Unprocessable(first_line(e)) from None
        return records

    def _saliency(self, crops: np.ndarray, faces: list[Face]) -> list[str]:
        """PNG data URLs: each crop with the SmoothGrad map of its predicted class over it."""
        from ferkeras.viz import saliency_maps

        classes = [int(np.argmax(face.probabilities)) for face in faces]
        maps = saliency_maps(self.saliency_model(), crops, classes, "smoothgrad")  # each in [0, 1]
        return [_overlay_png(crop, heat) for crop, heat in zip(crops, maps, strict=True)]

    def saliency_model(self):
        """The Keras model that gradients go through: the runner's own, or the .keras file beside it,
        loaded on first use in the saliency lane (it imports TensorFlow: seconds) and kept."""
        with self._saliency_lock:
            if self._saliency_model is None:
                if isinstance(self.runner, KerasRunner):
                    self._saliency_model = self.runner.model
                else:
                    beside = self.runner.path.parent / "model.keras"
                    if not beside.is_file():
                        raise FerkerasError(f"saliency needs a Keras model: none beside {self.runner.path}")
                    # TensorFlow's start-up lines kept off the server's terminal, once per process
                    # (quiet_stderr's one redirect: lines other threads write meanwhile are passed on).
                    import_tensorflow()
                    from ferkeras.model import load_model

                    self._saliency_model = load_model(beside)
        return self._saliency_model

    def close(self) -> None:
        """Stop both lanes."""
        self.live.close()
        self.saliency.close()


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
