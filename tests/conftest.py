"""Shared fixtures: the real FER2013 beside the repo (skipped with a reason where absent)."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import ferkeras  # noqa: F401  before any test module imports keras: it turns oneDNN on (AVX2 CPUs)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
FER2013_DIR = Path(os.environ.get("FER2013_DIR", REPO.parent / "shared" / "datasets" / "fer2013"))


# ---- parallel workers (pytest-xdist: -n and --dist loadscope in pyproject.toml) ---------------
# Each module's tests run on one worker, so a module-scoped fixture (a training, an export) is
# made once. A session fixture is made once for all workers (made_once), and each worker gets
# its own copy of the run, since tests write beside it.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
if WORKER and "TF_NUM_INTRAOP_THREADS" not in os.environ:
    # The cores shared out among the workers: TensorFlow's pools, one per process, would otherwise
    # each take every core and spin against each other.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(max(1, CORES // workers))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """-n auto: one worker more than the cores, so that the cores stay busy while a worker waits
    (on a process it started, a file, a socket): 309 s against 321-341 s with one per core, on 2."""
    return CORES + 1


# Workers are handed modules in collection order (--no-loadscope-reorder), so the longest go
# first: started last, one of them would keep a worker busy long after the other ran out.
LONGEST_FIRST = ["test_train", "test_export", "test_shipped_model", "test_distributed"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest modules first; each module's tests keep their order."""
    def rank(item: pytest.Item) -> int:
        name = item.module.__name__ if getattr(item, "module", None) else ""
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # a stable sort


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    """A folder that make(folder) fills once in a test session, whichever worker asks first; the
    others wait for it. Without workers, a folder of the session's own."""
    shared = tmp_path_factory.getbasetemp()
    if not WORKER:
        folder = shared / name
        if not folder.exists():
            folder.mkdir()
            make(folder)
        return folder
    import fcntl  # POSIX; only the workers need it

    shared = shared.parent  # the base folder that all workers' folders sit in
    folder, done, failed = shared / name, shared / f"{name}.done", shared / f"{name}.failed"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if failed.exists():  # the first worker's try failed: the others fail at once, not again
            pytest.fail(f"{name}: {failed.read_text()}", pytrace=False)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            try:
                make(folder)
            except BaseException as error:
                failed.write_text(f"failed on worker {WORKER}: {type(error).__name__}: {error}"[:2000])
                raise
            done.touch()
    return folder


@pytest.fixture(scope="session")
def trained_synthetic_run(tmp_path_factory) -> Path:
    """A run trained on 3,000 synthetic faces for 5 epochs: 0.923-0.941 validation accuracy over
    seeds 0-2, in about half a minute on 2 CPU cores, enough for its saliency maps to find the
    expression. Each worker gets a copy of its own."""
    from ferkeras.config import TrainConfig
    from ferkeras.train import train

    shared = made_once(tmp_path_factory, "synthetic_run", lambda folder: train(
        TrainConfig(data="synthetic:3000", epochs=5, augment="none", runs_dir=str(folder / "runs"),
                    name="synthetic"), echo=lambda line: None))
    if not WORKER:
        return shared / "runs" / "synthetic"
    mine = tmp_path_factory.mktemp("synthetic_run")
    shutil.copytree(shared / "runs", mine / "runs")
    return mine / "runs" / "synthetic"


@pytest.fixture(scope="session")
def synthetic_export(trained_synthetic_run, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """That run exported as a user exports it, `ferkeras export RUN --tflite --out DIR` in a process
    of its own (SavedModel, float32 and int8 TFLite, parity-checked), once for all workers (tests
    only read it): (the folder, the process)."""
    def export(folder: Path) -> None:
        """The export, and what the process printed, into folder."""
        result = subprocess.run([sys.executable, "-c", "from ferkeras.cli.main import main; main()",
                                 "export", str(trained_synthetic_run), "--tflite", "--out",
                                 str(folder / "exported")], capture_output=True, text=True,
                                timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        assert result.returncode == 0, result.stdout + result.stderr  # 1: a parity check failed
        (folder / "process.json").write_text(json.dumps({"args": result.args, "stdout": result.stdout,
                                                         "stderr": result.stderr}))

    folder = made_once(tmp_path_factory, "synthetic_export", export)
    process = json.loads((folder / "process.json").read_text())
    return folder / "exported", subprocess.CompletedProcess(process["args"], 0, process["stdout"],
                                                            process["stderr"])


@pytest.fixture(scope="session")
def exported_synthetic_run(synthetic_export) -> Path:
    """The export folder of that run."""
    return synthetic_export[0]


# ---- real data and the release gate (FERKERAS_REQUIRE_DATA) ----------------------------------
# CI sets FERKERAS_REQUIRE_DATA=1 (.ci/run): there a missing FER2013 fails every real-data test
# instead of skipping it, so a release is never passed on tests that did not run.
REQUIRE_DATA = "FERKERAS_REQUIRE_DATA"


def require_fer2013(folder: Path = FER2013_DIR) -> Path:
    """folder if it holds FER2013 (train/); else skip with the reason, or fail under FERKERAS_REQUIRE_DATA."""
    if (Path(folder) / "train").is_dir():
        return Path(folder)
    reason = (f"FER2013 not found at {folder} (set FER2013_DIR, or place the Kaggle folders at "
              "../shared/datasets/fer2013)")
    if os.environ.get(REQUIRE_DATA, "").strip() not in ("", "0"):
        pytest.fail(f"{REQUIRE_DATA}={os.environ[REQUIRE_DATA]}: {reason}; real-data tests must run",
                    pytrace=False)
    pytest.skip(f"{reason}: real-data test skipped")


@pytest.fixture(scope="session")
def fer2013_dir() -> Path:
    """The shared FER2013 folders; CI always has them, a user's machine usually not."""
    return require_fer2013()
def real_class_folders(fer2013: Path, folder: Path, per_class: int) -> Path:
    """folder/<class>/*.jpg: the first per_class FER2013 training faces of each class, as a user's
    own photos sorted into class folders would be."""
    from ferkeras.spec import CLASS_NAMES

    for name in CLASS_NAMES:
        (folder / name).mkdir(parents=True)
        for path in sorted((fer2013 / "train" / name).glob("*.jpg"))[:per_class]:
            (folder / name / path.name).write_bytes(path.read_bytes())
    return folder
# ---- end of the real-data block ---------------------------------------------------------------


def load_bench(name):
    """A bench/ script as a module (bench/ is scripts, not a package), to test its helpers."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(args, monkeypatch, capsys):
    """Run the console entry point in-process: (exit code, stdout, stderr)."""
    from ferkeras.cli.main import main

    monkeypatch.setattr(sys, "argv", ["ferkeras", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err



# ---- video clips made from a real photo (test_video.py) --------------------------------------
CLIP_FPS = 15
CLIP_SIZE = (320, 240)  # width, height


def grace_hopper_bgr():
    """matplotlib's Grace Hopper portrait (512x600, face at about x 155-377, y 105-327), as BGR."""
    import cv2
    import matplotlib.cbook

    return cv2.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def pan_and_zoom(photo, frames: int, center=(266, 216), width=(440, 320), pan=60, size=CLIP_SIZE):
    """frames views of a photo at size, the window panning pan px right and narrowing from
    width[0] to width[1] px (zooming in) while it bobs up and down."""
    import cv2
    import numpy as np

    for i in range(frames):
        t = i / max(1, frames - 1)
        crop_w = int(width[0] + (width[1] - width[0]) * t)
        crop_h = crop_w * size[1] // size[0]
        cx = center[0] - pan // 2 + int(pan * t)
        cy = center[1] + int(20 * np.sin(np.pi * t))
        x0, y0 = cx - crop_w // 2, cy - crop_h // 2
        yield cv2.resize(photo[y0:y0 + crop_h, x0:x0 + crop_w], size, interpolation=cv2.INTER_AREA)


def write_clip(path: Path, frames, fps: float = CLIP_FPS, size=CLIP_SIZE) -> Path:
    """BGR frames as an mp4v video, as a phone or OpenCV would write it."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="session")
def grace_hopper_clip(tmp_path_factory) -> Path:
    """45 frames (3 s at 15 fps, 320x240) panning and zooming across Grace Hopper's portrait."""
    return write_clip(tmp_path_factory.mktemp("clips") / "grace_hopper.mp4",
                      pan_and_zoom(grace_hopper_bgr(), 45))
# ---- end of the video block --------------------------------------------------------------------


# ---- real faces in photo-sized images ----------------------------------------------------------
def face_canvas(face_file: Path, size: int = 400, face: int = 192):
    """A FER2013 face (48x48 gray) upscaled into the middle of a gray canvas, so that a detector
    finds it as in a photo: gray uint8 (size, size)."""
    import cv2
    import numpy as np

    canvas = np.full((size, size), 128, np.uint8)
    top = (size - face) // 2
    pixels = cv2.imread(str(face_file), cv2.IMREAD_GRAYSCALE)
    canvas[top:top + face, top:top + face] = cv2.resize(pixels, (face, face), interpolation=cv2.INTER_CUBIC)
    return canvas
# ---- end of real faces --------------------------------------------------------------------------


# ---- file descriptor 2 and threads (test_reliability.py, test_serve.py) ------------------------
@contextlib.contextmanager
def stderr_into(path: Path) -> Iterator[Path]:
    """File descriptor 2 pointed at a new file for the block, and put back after, whatever happened."""
    sys.stderr.flush()
    original = os.dup(2)
    with open(path, "wb") as target:
        os.dup2(target.fileno(), 2)
    try:
        yield path
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)
        os.close(original)


def assert_stderr_still_goes_to(path: Path) -> None:
    """fd 2 is still that file, and a line written to it now lands there."""
    now, expected = os.fstat(2), os.stat(path)
    assert (now.st_dev, now.st_ino) == (expected.st_dev, expected.st_ino), "fd 2 left on another file"
    os.write(2, b"a later line\n")
    assert path.read_bytes().endswith(b"a later line\n")


def run_together(*targets: Callable[[], None], timeout: float = 30) -> None:
    """Each target in a thread of its own, all started, then all joined."""
    import threading

    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
# ---- end of fd 2 and threads -------------------------------------------------------------------
