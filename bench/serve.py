"""Load-test `ferkeras serve` side by side with the one-lock server it replaced, in one run.

    python bench/serve.py [--clients 32] [--seconds 60] [--warmup 5] [--images photos grace crops]
                          [--baseline cbfcd4a] [--workers N] [--queue Q] [--max-latency S]
                          [--processes P] [--detector NAME] [--rounds 3]
                          [--model shipped] [--data ../shared/datasets/fer2013]

Each arm is a server started as a user would, in its own process group on a free loopback port,
and killed at the end: `today`, the one-lock server of commit --baseline (its ferkeras/, cli/ and
exported/ taken with `git archive` into a temporary folder and run from there; `none` skips it),
and `pool`, this checkout's `ferkeras serve --workers N --queue Q --max-latency S --detector D`
(each its own default unless given), and with --processes, the same with `--processes P` too. The servers
start together and take turns: --seconds is split into --rounds, each server measured in turn in
each round, so a machine that other jobs share loads each about alike.

The images, per --images set, one per client, all distinct real images:
- photos: grace_hopper.jpg (512x600) and PublicTest faces upscaled into 400x400 gray canvases, each
  at its own size and place, kept when Haar finds exactly one face: detection dominates;
- grace: grace_hopper.jpg, whose 8.8 requests/s at 32 clients issue 25 set out from, as windows
  of 464x552 px at different offsets (one face each, each at its own place);
- crops: PublicTest's 48x48 JPEG files as they are: the server takes a 48x48 image as a face crop,
  as predict does (no search for faces in it; one BlazeFace pass on it enlarged, for its landmark
  view), so what is measured is mostly the server's own cost (HTTP, decoding, the pool, JSON).
Each image is first sent alone; under load each client sends its own image back to back, and
every answer must equal that image's answer alone (boxes, labels and probabilities), so an answer
mixed up between requests counts as wrong. A 503 is counted apart, and its client waits the
Retry-After it was given, as a polite client does. The clients are plain asyncio HTTP/1.1
keep-alive connections (a fraction of httpx's CPU: on 2 cores the load generator shares the
machine with the server). --warmup seconds uncounted, then --seconds measured.

First (--scaling seconds), in this process: photos/s through FaceRecognizer on one thread, then on
one thread per core with a recognizer each, as the pool runs them (OpenCV at one thread a call).
Then, per arm and set: answered requests/s, latency p50/p99 of the answered, wrong answers,
503s, other errors, the server's CPU (cores busy, and CPU ms per answer) and its RSS (all its
processes) after the first warm-up, at the end and at the peak; then each arm's ratio to the
first's requests/s. Exit status 1 on a wrong answer or an error.
"""

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "fer2013"
DEFAULT_BASELINE = "cbfcd4a"  # the last commit of the one-lock server (before issue 25)
FERKERAS = ["-c", "from ferkeras.cli.main import main; main()"]
CANVAS = 400


def photos(data: Path, count: int) -> dict[str, bytes]:
    """name -> JPEG bytes: grace_hopper.jpg, then PublicTest faces in canvases, classes in turn."""
    import cv2
    import matplotlib.cbook

    found = {"grace_hopper.jpg": Path(matplotlib.cbook.get_sample_data(
        "grace_hopper.jpg", asfileobj=False)).read_bytes()}
    for index, path in enumerate(publictest(data, count * 2)):  # spares: Haar misses some
        size = 160 + 8 * (index % 6)
        left, top = 40 + 13 * (index % 7), 40 + 11 * (index % 5)
        canvas = np.full((CANVAS, CANVAS), 128, np.uint8)
        face = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        face = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
        canvas[top:top + size, left:left + size] = face
        found[f"{path.parent.name}/{path.name}"] = cv2.imencode(".jpg", canvas)[1].tobytes()
    return found


def grace(count: int) -> dict[str, bytes]:
    """name -> JPEG bytes: grace_hopper.jpg (512x600), the photo of the issue's 8.8 requests/s, as
    count windows of 464x552 at different offsets, so that each answer's box is its own."""
    import cv2
    import matplotlib.cbook

    photo = cv2.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    windows = {}
    for index in range(count):
        left, top = 6 * (index % 8), 6 * (index // 8 % 8) + index // 64  # distinct up to 512
        window = photo[top:top + 552, left:left + 464]
        windows[f"grace_hopper.jpg at {left},{top}"] = cv2.imencode(".jpg", window)[1].tobytes()
    return windows


def crops(data: Path, count: int) -> dict[str, bytes]:
    """name -> the JPEG bytes of PublicTest's 48x48 face files, classes in turn."""
    return {f"{path.parent.name}/{path.name}": path.read_bytes() for path in publictest(data, count)}


def publictest(data: Path, count: int) -> list[Path]:
    """count PublicTest files, taking each class's next file in turn."""
    folders = [sorted(folder.glob("*.jpg")) for folder in sorted((data / "test").iterdir())]
    longest = max(map(len, folders), default=0)
    taken = [files[i] for i in range(longest) for files in folders if i < len(files)]
    return taken[:count]


def thread_scaling(images: list[tuple[str, bytes]], workers: int, seconds: float) -> tuple[float, float]:
    """Images/s through FaceRecognizer.recognize (decode, Haar, classify) in this process: one
    thread, then `workers` threads each with its own recognizer, as serve's pool runs them."""
    import threading

    import cv2

    from ferkeras.media.images import decode_image
    from ferkeras.predict import FaceRecognizer
    from ferkeras.runners import load_runner

    cv2.setNumThreads(1)  # as `ferkeras serve` runs OpenCV
    recognizers = [FaceRecognizer(load_runner("shipped", threads=1)) for _ in range(workers)]

    def rate(threads: int) -> float:
        done, end = [0] * threads, time.monotonic() + seconds

        def work(index: int) -> None:
            while time.monotonic() < end:
                recognizers[index].recognize(decode_image(images[done[index] % len(images)][1]))
                done[index] += 1

        pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        return sum(done) / seconds

    return rate(1), rate(workers)


def process_group(session: int) -> list[int]:
    """The ids of every process in a session (a server and its uvicorn workers)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[3]) == session:
            pids.append(int(stat.parent.name))
    return pids


def rss_mb(session: int) -> float:
    """The resident memory (VmRSS) of a session's processes together, in MiB."""
    total = 0
    for pid in process_group(session):
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
    return total / 1024


def cpu_seconds(session: int) -> float:
    """User + system CPU time of a session's processes so far, in seconds."""
    total = 0
    for pid in process_group(session):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free on the loopback interface."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def baseline_tree(revision: str, folder: Path) -> Path:
    """Commit revision's ferkeras package (with its cli/ and exported/ inside, as installed) in folder."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "ferkeras", "cli", "exported"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    (folder / "cli").rename(folder / "ferkeras" / "cli")
    (folder / "exported").rename(folder / "ferkeras" / "exported")
    return folder


def start_server(args: list[str], port: int, log, pythonpath: str | None = None) -> subprocess.Popen:
    """A server in its own session, answering /api/health; RuntimeError if it does not in 120 s."""
    env = dict(os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {}))
    process = subprocess.Popen([sys.executable, *FERKERAS, "serve", *args, "--port", str(port)], env=env,
                               cwd=pythonpath or REPO, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"server exited with {process.returncode}: {log.read().decode()}")
        try:  # blocking, not asyncio.run: a caller may be inside an event loop (Playwright's)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as health:
                if health.status == 200:
                    return process
        except OSError:  # refused while it starts; urllib's errors are OSErrors
            pass
        time.sleep(0.25)
    stop_server(process)
    raise RuntimeError("the server did not answer /api/health in 120 s")


def stop_server(process: subprocess.Popen) -> None:
    """The server's whole process group: SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


class Connection:
    """One keep-alive HTTP/1.1 connection to the server: a request, then its whole answer."""

    def __init__(self, port: int):
        self.port, self.reader, self.writer = port, None, None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, dict, bytes]:
        """(status, lower-cased headers, body); reconnects when the server closed the connection."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            self.writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                              f"image/jpeg\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            await self.writer.drain()
            head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = dict(line.lower().split(": ", 1) for line in head[1:] if ": " in line)
            content = await self.reader.readexactly(int(headers.get("content-length", 0)))
        except (OSError, asyncio.IncompleteReadError):
            self.close()
            raise
        if headers.get("connection") == "close":
            self.close()
        return int(head[0].split()[1]), headers, content

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def request_once(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, dict, bytes]:
    """One request on a connection of its own."""
    connection = Connection(port)
    try:
        return await connection.request(method, path, body)
    finally:
        connection.close()


def answer(body: bytes) -> list[tuple]:
    """What must not change between an image's answers: each face's box, label and probabilities."""
    faces = json.loads(body)["faces"]
    return [(tuple(face["box"].values()), face["label"],
             tuple(round(p, 6) for p in face["probabilities"].values())) for face in faces]


async def load(port: int, images: list[tuple[str, bytes]], expected: dict[str, list], clients: int,
               warmup: float, seconds: float, session: int) -> dict:
    """Each client sends its own image back to back; latencies of the answers that end in the
    measured window, wrong answers, 503s and errors throughout, the server's RSS and CPU."""
    start = time.monotonic()
    measure_from, end = start + warmup, start + warmup + seconds
    latencies: list[float] = []
    wrong: list[str] = []
    errors: list[str] = []
    busy = [0]
    marks = {"rss peak": rss_mb(session)}

    async def client(index: int) -> None:
        name, data = images[index % len(images)]
        connection = Connection(port)
        while time.monotonic() < end:
            began = time.monotonic()
            try:
                status, headers, body = await connection.request("POST", "/api/predict", data)
            except (OSError, asyncio.IncompleteReadError) as error:
                errors.append(f"{name}: {type(error).__name__}: {error}")
                await asyncio.sleep(0.1)
                continue
            done = time.monotonic()
            if status == 503:
                busy[0] += measure_from <= done <= end
                await asyncio.sleep(float(headers.get("retry-after", 1)))
            elif status != 200:
                errors.append(f"{name}: HTTP {status}: {body[:200]!r}")
            elif answer(body) != expected[name]:
                wrong.append(f"{name}: {answer(body)} instead of {expected[name]}")
            elif measure_from <= done <= end:
                latencies.append(done - began)
        connection.close()

    async def watch() -> None:
        await asyncio.sleep(warmup)
        marks["rss after warm-up"], marks["cpu from"] = rss_mb(session), cpu_seconds(session)
        while time.monotonic() < end:
            await asyncio.sleep(0.5)
            marks["rss peak"] = max(marks["rss peak"], rss_mb(session))
        marks["cpu to"], marks["rss end"] = cpu_seconds(session), rss_mb(session)

    await asyncio.gather(watch(), *(client(i) for i in range(clients)))
    return {"latencies": np.array(latencies), "wrong": wrong, "errors": errors, "503": busy[0],
            "seconds": seconds, "cores": (marks["cpu to"] - marks["cpu from"]) / seconds, "rss": marks}


def expected_answers(port: int, images: list[tuple[str, bytes]], label: str) -> dict[str, list]:
    """Each image's answer when it is sent alone: the answer under load must reproduce it."""
    expected = {}
    for name, data in images:
        status, _, body = asyncio.run(request_once(port, "POST", "/api/predict", data))
        if status != 200:
            raise RuntimeError(f"{label}: {name} alone got HTTP {status}: {body[:200]!r}")
        expected[name] = answer(body)
    return expected


def merge(windows: list[dict]) -> dict:
    """One arm's measured windows as one result: RSS after the first warm-up, at the last end, peak."""
    first, last = windows[0], windows[-1]
    seconds = sum(w["seconds"] for w in windows)
    return {"latencies": np.concatenate([w["latencies"] for w in windows]), "seconds": seconds,
            "wrong": sum((w["wrong"] for w in windows), []),
            "errors": sum((w["errors"] for w in windows), []), "503": sum(w["503"] for w in windows),
            "cores": sum(w["cores"] * w["seconds"] for w in windows) / seconds,
            "rss": {"rss after warm-up": first["rss"]["rss after warm-up"], "rss end": last["rss"]["rss end"],
                    "rss peak": max(w["rss"]["rss peak"] for w in windows)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=60, help="measured seconds per server and image set")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds the seconds are split in, servers taking turns (fair on a busy machine)")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of load before each measured round")
    parser.add_argument("--images", nargs="+", choices=("photos", "grace", "crops"),
                        default=["photos", "crops"])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="commit of the one-lock server, or none")
    parser.add_argument("--workers", type=int, help="the pool's --workers (default: its own, one per core)")
    parser.add_argument("--queue", type=int, help="the pool's --queue (default: its own)")
    parser.add_argument("--max-latency", type=float, help="the pool's --max-latency (default: its own)")
    parser.add_argument("--processes", type=int, help="also a pool of this many uvicorn processes")
    parser.add_argument("--model", default="shipped", help="what each server's --model gets")
    parser.add_argument("--scaling", type=float, default=10,
                        help="seconds of the in-process check: one thread vs one per core (0: skip)")
    parser.add_argument("--detector", help="the pool's --detector (today's server keeps Haar)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="FER2013 (Kaggle folders)")
    args = parser.parse_args()
    if args.clients < 1 or args.seconds <= 0 or args.warmup < 0 or args.rounds < 1:
        parser.error("--clients and --rounds must be >= 1, --seconds > 0 and --warmup >= 0")
    if not (args.data / "test").is_dir():
        sys.exit(f"--data {args.data}: no FER2013 test/ folder (the images are PublicTest faces)")

    makers = {"photos": lambda: photos(args.data, args.clients), "grace": lambda: grace(args.clients),
              "crops": lambda: crops(args.data, args.clients)}
    image_sets = {name: list(makers[name]().items()) for name in args.images}
    pool = ["--model", args.model]
    for flag in ("workers", "queue", "max_latency", "detector"):
        value = getattr(args, flag)
        pool += [f"--{flag.replace('_', '-')}", str(value)] if value is not None else []
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        servers = {}  # label -> (port, process, log)
        configs = [("pool", pool, None)]
        if args.baseline != "none":
            tree = str(baseline_tree(args.baseline, Path(folder)))
            configs.insert(0, (f"today ({args.baseline})", ["--model", args.model], tree))
        if args.processes:
            processes = ["--processes", str(args.processes)]
            configs.append((f"pool x{args.processes} proc", pool + processes, None))
        for label, server_args, pythonpath in configs:
            port, log = free_port(), stack.enter_context(tempfile.TemporaryFile())
            process = start_server(server_args, port, log, pythonpath)
            stack.callback(stop_server, process)
            servers[label] = (port, process, log)
        print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
        if "photos" in image_sets and args.scaling:
            one, many = thread_scaling(image_sets["photos"], os.cpu_count() or 1, args.scaling)
            print(f"in-process, photos: 1 thread {one:.1f}/s, {os.cpu_count()} threads with a "
                  f"recognizer each {many:.1f}/s: {many / one:.2f}x", flush=True)
        if "photos" in image_sets:  # the photos in which the first server finds exactly one face
            port = next(iter(servers.values()))[0]
            found = expected_answers(port, image_sets["photos"], "photos")
            one_face = [(name, data) for name, data in image_sets["photos"] if len(found[name]) == 1]
            image_sets["photos"] = one_face[:args.clients]
        windows = {label: {set_name: [] for set_name in image_sets} for label in servers}
        for set_name, images in image_sets.items():
            expected = {label: expected_answers(port, images, label)
                        for label, (port, _, _) in servers.items()}
            for round_ in range(args.rounds):
                for label, (port, process, _) in servers.items():
                    print(f"{set_name}, round {round_ + 1}/{args.rounds}: {label} ...", flush=True)
                    windows[label][set_name].append(asyncio.run(load(
                        port, images, expected[label], args.clients, args.warmup,
                        args.seconds / args.rounds, process.pid)))
        print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        arms = {}
        for label, (port, process, log) in servers.items():
            status, _, _ = asyncio.run(request_once(port, "GET", "/api/health"))
            alive = process.poll() is None and status == 200
            if not alive:
                log.seek(0)
                print(f"{label} server log:\n{log.read().decode()}")
            arms[label] = {set_name: dict(merge(w), alive=alive) for set_name, w in windows[label].items()}
    report(arms, image_sets, args)
    failed = any(r["wrong"] or r["errors"] or not r["alive"] for arm in arms.values() for r in arm.values())
    sys.exit(1 if failed else 0)


def report(arms: dict, image_sets: dict, args) -> None:
    """One line per arm and image set, then the pool's ratios to today's."""
    print(f"\n{args.clients} clients, {args.seconds:g} s measured each; CPU: {cpu_name()}")
    for set_name, images in image_sets.items():
        print(f"\n{set_name}: {len(images)} distinct images")
        print(f"{'server':<18} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'wrong':>5} {'503':>5} {'503 %':>6} "
              f"{'errors':>6} {'cores':>5} {'CPU ms':>6}  RSS MiB warm/end/peak")
        for label, results in arms.items():
            r = results[set_name]
            answered = len(r["latencies"])
            p50, p99 = np.percentile(r["latencies"] * 1000, [50, 99]) if answered else (np.nan, np.nan)
            share = 100 * r["503"] / max(1, answered + r["503"])
            rss = r["rss"]
            print(f"{label:<18} {answered / r['seconds']:>7.1f} {p50:>7.0f} {p99:>7.0f} {len(r['wrong']):>5} "
                  f"{r['503']:>5} {share:>6.2f} {len(r['errors']):>6} {r['cores']:>5.2f} "
                  f"{1000 * r['cores'] * r['seconds'] / max(1, answered):>6.1f}  "
                  f"{rss['rss after warm-up']:.0f}/{rss['rss end']:.0f}/{rss['rss peak']:.0f}"
                  + ("" if r["alive"] else "  (stopped answering /api/health)"))
            for problem in (r["wrong"] + r["errors"])[:5]:
                print(f"    {problem}")
        (base_label, base), *others = arms.items()
        for label, results in others:
            ratio = len(results[set_name]["latencies"]) / max(1, len(base[set_name]["latencies"]))
            print(f"{label} / {base_label}: {ratio:.2f}x requests/s")


def cpu_name() -> str:
    """The CPU's model name, and whether it has AVX-512."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    name = names[0] if names else "unknown"
    return f"{name}, {os.cpu_count()} cores, " + ("AVX-512" if " avx512f" in info else "no AVX-512")


if __name__ == "__main__":
    main()
