"""Load-test `ferkeras serve`: N concurrent clients post real photos to /api/predict for a fixed time.

    python bench/serve.py [--clients 32] [--seconds 30] [--warmup 5] [--model shipped]
                          [--data ../shared/datasets/fer2013] [--max-requests 100000]

The server is started as a user would (`ferkeras serve --model M --port P`) in a subprocess on a
free loopback port, and killed at the end. The photos: matplotlib's grace_hopper.jpg and one
PublicTest face per class, upscaled x4 into a 400x400 gray canvas as JPEG (in memory; skipped when
FER2013 is absent). Each photo is first sent alone; under load every answer must equal that one
(same boxes and labels), so an answer mixed up between concurrent requests counts as an error,
as do non-200 statuses and transport errors. The clients (asyncio, one httpx connection each)
send back to back: --warmup seconds uncounted, then --seconds measured, at most --max-requests.
Printed: requests/s, latency p50/p95/p99, errors, and the server's RSS (VmRSS) at start, after
the warm-up, at the end and its peak. Exit status 1 when any request failed.
"""

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "fer2013"
FERKERAS = [sys.executable, "-c", "from ferkeras.cli.main import main; main()"]
CANVAS, FACE = 400, 192  # a 48x48 face upscaled x4 in a gray canvas: Haar finds it as in a photo


def photos(data: Path) -> dict[str, bytes]:
    """name -> JPEG or PNG bytes: grace_hopper.jpg and one upscaled PublicTest face per class."""
    import cv2
    import matplotlib.cbook

    found = {"grace_hopper.jpg": Path(matplotlib.cbook.get_sample_data(
        "grace_hopper.jpg", asfileobj=False)).read_bytes()}
    for folder in sorted((data / "test").glob("*")) if (data / "test").is_dir() else []:
        face_file = min(folder.glob("*.jpg"), default=None)
        if face_file is None:
            continue
        canvas = np.full((CANVAS, CANVAS), 128, np.uint8)
        top = (CANVAS - FACE) // 2
        face = cv2.imread(str(face_file), cv2.IMREAD_GRAYSCALE)
        canvas[top:top + FACE, top:top + FACE] = cv2.resize(face, (FACE, FACE), interpolation=cv2.INTER_CUBIC)
        found[f"{folder.name}/{face_file.name}"] = cv2.imencode(".jpg", canvas)[1].tobytes()
    return found


def rss_mb(pid: int) -> float:
    """A process's resident memory (VmRSS) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def free_port() -> int:
    """A TCP port free on the loopback interface."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: str, port: int, log) -> subprocess.Popen:
    """`ferkeras serve` in its own process group, answering /api/health; RuntimeError if it does not."""
    import httpx

    process = subprocess.Popen([*FERKERAS, "serve", "--model", model, "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"ferkeras serve exited with {process.returncode}: {log.read().decode()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    stop_server(process)
    raise RuntimeError("ferkeras serve did not answer /api/health in 120 s")


def stop_server(process: subprocess.Popen) -> None:
    """The server's whole process group: SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def answer(body: dict) -> list[tuple]:
    """What must not change between a photo's answers: each face's box and label."""
    return [(tuple(face["box"].values()), face["label"]) for face in body["faces"]]


async def load(url: str, payloads: list[tuple[str, bytes]], expected: dict[str, list], clients: int,
               warmup: float, seconds: float, max_requests: int, pid: int) -> dict:
    """Run the clients: the latencies of the requests that end in the measured window, every
    error (warm-up and the last requests' drain included), the server's RSS and CPU time."""
    import httpx

    start = time.monotonic()
    measure_from, end = start + warmup, start + warmup + seconds
    latencies: list[float] = []
    errors: list[str] = []
    sent = 0
    marks = {"rss peak": rss_mb(pid)}

    async def client(index: int, http: httpx.AsyncClient) -> None:
        nonlocal sent
        turn = index
        while time.monotonic() < end and sent < max_requests:
            name, data = payloads[turn % len(payloads)]
            turn += 1
            sent += 1
            began = time.monotonic()
            try:
                response = await http.post(url, content=data, headers={"Content-Type": "image/jpeg"})
                problem = (f"HTTP {response.status_code}: {response.text[:200]}"
                           if response.status_code != 200 else
                           None if answer(response.json()) == expected[name] else
                           f"answer differs from the solo one: {answer(response.json())}")
            except httpx.HTTPError as error:
                problem = f"{type(error).__name__}: {error!r}"
            done = time.monotonic()
            if problem:
                errors.append(f"{name} at {done - start:.1f} s: {problem}")
            elif measure_from <= done <= end:
                latencies.append(done - began)

    async def watch_server() -> None:
        await asyncio.sleep(warmup)
        marks["rss after warm-up"], marks["cpu from"] = rss_mb(pid), cpu_seconds(pid)
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        marks["cpu to"] = cpu_seconds(pid)

    async def watch_memory() -> None:
        while time.monotonic() < end:
            await asyncio.sleep(0.5)
            marks["rss peak"] = max(marks["rss peak"], rss_mb(pid))

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(watch_server(), watch_memory(), *(client(i, http) for i in range(clients)))
    return {"latencies": np.array(latencies), "errors": errors, "seconds": seconds,
            "cpu": marks["cpu to"] - marks["cpu from"], "rss": marks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=30, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of load before measuring")
    parser.add_argument("--max-requests", type=int, default=100_000, help="stop after this many requests")
    parser.add_argument("--model", default="shipped", help="what `ferkeras serve --model` gets")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="FER2013 (Kaggle folders)")
    args = parser.parse_args()
    if args.clients < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--clients must be >= 1, --seconds > 0 and --warmup >= 0")

    import httpx

    payloads = list(photos(args.data).items())
    print(f"{len(payloads)} photos: " + ", ".join(name for name, _ in payloads)
          + ("" if len(payloads) > 1 else f" (no FER2013 at {args.data})"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/predict"
    with tempfile.TemporaryFile() as log:
        try:
            process = start_server(args.model, port, log)
        except RuntimeError as e:
            sys.exit(str(e))
        try:
            rss_start = rss_mb(process.pid)
            expected = {}
            for name, data in payloads:  # each photo alone: the answer load must reproduce
                response = httpx.post(url, content=data, headers={"Content-Type": "image/jpeg"}, timeout=60)
                response.raise_for_status()
                expected[name] = answer(response.json())
            print("alone: " + ", ".join(f"{name} {[label for _, label in faces] or 'no face'}"
                                        for name, faces in expected.items()))
            print(f"{args.clients} clients, {args.warmup:g} s warm-up, {args.seconds:g} s measured ...")
            result = asyncio.run(load(url, payloads, expected, args.clients, args.warmup, args.seconds,
                                      args.max_requests, process.pid))
            rss_end = rss_mb(process.pid)
            health = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=10)
            alive = process.poll() is None and health.is_success
        finally:
            stop_server(process)
        if not alive:
            log.seek(0)
            print(f"server log:\n{log.read().decode()}")
    report(result, rss_start, rss_end, alive)
    sys.exit(1 if result["errors"] or not alive else 0)


def report(result: dict, rss_start: float, rss_end: float, alive: bool) -> None:
    """Print throughput, latency percentiles, errors and the server's memory and CPU."""
    latencies, errors, rss = result["latencies"] * 1000, result["errors"], result["rss"]
    p50, p95, p99, most = np.percentile(latencies, [50, 95, 99, 100]) if len(latencies) else [np.nan] * 4
    print(f"requests: {len(latencies)} answered in {result['seconds']:g} s = "
          f"{len(latencies) / result['seconds']:.1f} requests/s; "
          f"latency ms p50 {p50:.0f}, p95 {p95:.0f}, p99 {p99:.0f}, max {most:.0f}")
    print(f"errors: {len(errors)}" + "".join(f"\n  {error}" for error in errors[:10]))
    per_request = result["cpu"] / len(latencies) * 1000 if len(latencies) else np.nan
    print(f"server CPU: {result['cpu'] / result['seconds']:.2f} cores busy, {per_request:.0f} ms a request")
    print(f"server RSS MiB: start {rss_start:.0f}, after warm-up {rss['rss after warm-up']:.0f}, "
          f"end {rss_end:.0f}, peak {rss['rss peak']:.0f}; answers /api/health after: {alive}")


if __name__ == "__main__":
    main()
