"""Benchmark loading a dataset: first load (empty cache) vs cached load, and threaded decoding.

    python bench/data_load.py [PATH] [--repeats 3]

PATH defaults to the shared FER2013 folders (../shared/datasets/fer2013 beside the repo).
The cache goes to a temporary folder, so the user's cache is neither used nor touched.
For image folders it also times decoding every image with one thread (the loader's default)
vs a thread pool of one thread per core (best of --repeats, alternating, so a busy machine
penalises both alike).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from ferkeras import data  # noqa: E402
from ferkeras.data import folders  # noqa: E402

FER2013 = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "fer2013"


def timed(function, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def image_paths(root: Path) -> list[str]:
    """The visible files in split/class/ (or class/) folders, as the loader lists them."""
    def visible(pattern: str) -> list[str]:
        return sorted(str(p) for p in root.glob(pattern) if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(root).parts))
    return visible("*/*/*") or visible("*/*")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(FER2013))
    parser.add_argument("--repeats", type=int, default=3, help="decode timings: best of N")
    args = parser.parse_args()
    if not Path(args.path).exists():
        sys.exit(f"{args.path}: not found (pass a dataset path)")

    with tempfile.TemporaryDirectory(prefix="ferkeras-bench-") as cache:
        os.environ["FERKERAS_CACHE_DIR"] = cache
        first, dataset = timed(data.load_dataset, args.path)
        cached, _ = timed(data.load_dataset, args.path)
        cache_mb = sum(f.stat().st_size for f in Path(cache).iterdir()) / 1e6
    sizes = ", ".join(f"{name} {len(split):,}" for name, split in dataset.splits.items())
    print(f"data: {dataset.source} ({dataset.format}: {sizes})")
    print(f"first load (empty cache):  {first:7.2f} s")
    print(f"cached load:               {cached:7.2f} s  ({cache_mb:.0f} MB .npz)")
    print(f"speed-up from the cache:   {first / cached:7.1f}x")

    if dataset.format != "folders":
        return
    paths = image_paths(Path(dataset.source))
    cores = os.cpu_count() or 1
    best = {1: float("inf"), cores: float("inf")}
    for _ in range(args.repeats):
        for threads in best:
            best[threads] = min(best[threads], timed(folders._decode_images, paths, threads)[0])
    print(f"decode {len(paths):,} images, 1 thread:  {best[1]:7.2f} s "
          f"({best[1] / len(paths) * 1e6:.0f} us/image)")
    if cores > 1:
        print(f"decode {len(paths):,} images, {cores} threads: {best[cores]:7.2f} s "
              f"({best[1] / best[cores]:.2f}x the speed of one thread)")


if __name__ == "__main__":
    main()
