"""Where a training step's time goes: the reference CNN, layer by layer, in TensorFlow with oneDNN,
in TensorFlow with Eigen, and in PyTorch, in one run.

    python bench/train_ops.py [--batch 128] [--repeats 30] [--max-isa AVX2]

Each backend runs in a fresh process of its own (the kernels are picked when the library loads).
Every layer is timed alone on a batch of its real input shape, forward and forward + backward
(gradients for its input and its weights), compiled (tf.function, no XLA) and in training mode,
the median of --repeats calls. `whole step` is a full training step (Adam, cross-entropy) on
the same batch; `rest` is what the layers do not explain: the loss, the optimizer's update, the
framework's own work between kernels. Then inference, as evaluate (a batch) and the Keras runner
(one face) run it. --max-isa AVX2 caps oneDNN and PyTorch at AVX2, so that an
AVX-512 machine runs an AVX2 CPU's kernels (bench/train_speed.py has the same flag).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from train_speed import TORCH_CAPABILITY  # noqa: E402  (bench/, this script's folder)

BACKENDS = {"tf onednn": {"TF_ENABLE_ONEDNN_OPTS": "1"}, "tf eigen": {"TF_ENABLE_ONEDNN_OPTS": "0"},
            "pytorch": {}}
# The reference's layers, grouped as the table shows them; Keras' dense layers carry their ReLU.
GROUPS = ("in, flatten", "conv1", "conv2", "conv3", "conv4", "batch norm", "relu", "max pool", "dense")


def group_of(name: str) -> str:
    """The table row of a layer, by its Keras name (conv1, bn2, relu3, pool4, fc1, ...)."""
    for prefix, group in (("conv", None), ("bn", "batch norm"), ("relu", "relu"), ("pool", "max pool"),
                          ("fc", "dense"), ("predictions", "dense")):
        if name.startswith(prefix):
            return group or name
    return "in, flatten"  # rescale, gray -> RGB, flatten


def median_ms(call, repeats: int) -> float:
    """Median wall time of call() in milliseconds, after three warm-up calls."""
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def time_keras(batch: int, repeats: int) -> dict:
    """Per-layer forward and forward+backward ms of ferkeras' reference model, and a whole step."""
    from ferkeras.errors import import_tensorflow

    tf = import_tensorflow()
    import keras

    from ferkeras.model import build_model

    model = build_model()
    rng = np.random.default_rng(0)
    x = tf.constant(rng.integers(0, 256, (batch, 48, 48, 1)).astype(np.float32))
    rows: dict[str, list[float]] = {}
    for layer in model.layers:
        upstream = tf.constant(rng.standard_normal((batch, *layer.output.shape[1:])).astype(np.float32))
        forward = tf.function(lambda x, layer=layer: layer(x, training=True))

        @tf.function
        def backward(x, upstream, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(y * upstream)
            return tape.gradient(loss, [x, *layer.trainable_variables])

        def run_forward(x=x, forward=forward):
            return forward(x).numpy()

        def run_backward(x=x, upstream=upstream, backward=backward):
            return [g.numpy() for g in backward(x, upstream)]

        timing = rows.setdefault(group_of(layer.name), [0.0, 0.0])
        timing[0] += median_ms(run_forward, repeats)
        timing[1] += median_ms(run_backward, repeats)
        x = forward(x)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    images = rng.integers(0, 256, (batch, 48, 48, 1)).astype(np.float32)
    labels = np.eye(7, dtype=np.float32)[rng.integers(0, 7, batch)]
    step = median_ms(lambda: model.train_on_batch(images, labels), repeats)
    infer = tf.function(lambda x: model(x, training=False))  # what evaluate and the Keras runner run
    one, many = tf.constant(images[:1]), tf.constant(images)
    inference = {"1 face": median_ms(lambda: infer(one).numpy(), repeats),
                 f"{batch} faces": median_ms(lambda: infer(many).numpy(), repeats)}
    return {"rows": rows, "step": step, "inference": inference}


def time_torch(batch: int, repeats: int) -> dict:
    """The same for the reference's own PyTorch model (bench/train_speed.py's)."""
    import torch
    from torch import nn

    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2, 2, 0)]

    model = nn.Sequential(*block(3, 24), *block(24, 48), *block(48, 96), *block(96, 96),
                          nn.Flatten(), nn.Linear(96 * 3 * 3, 192), nn.ReLU(), nn.Linear(192, 96),
                          nn.ReLU(), nn.Linear(96, 7)).train()
    names = [f"{kind}{i}" for i in range(1, 5) for kind in ("conv", "bn", "relu", "pool")]
    names += ["flatten", "fc1", "fc1", "fc2", "fc2", "predictions"]  # flatten; each Linear's ReLU
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, 48, 48, generator=generator)
    rows: dict[str, list[float]] = {}
    for name, module in zip(names, model, strict=True):
        with torch.no_grad():
            out = module(x)
        upstream = torch.randn(out.shape, generator=generator)

        def run_forward(x=x, module=module):
            with torch.no_grad():
                return module(x)

        def run_backward(x=x, module=module, upstream=upstream):
            x = x.detach().requires_grad_(True)
            module.zero_grad(set_to_none=True)
            (module(x) * upstream).sum().backward()

        timing = rows.setdefault(group_of(name), [0.0, 0.0])
        timing[0] += median_ms(run_forward, repeats)
        timing[1] += median_ms(run_backward, repeats)
        x = out
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    images = torch.rand(batch, 3, 48, 48, generator=generator)
    labels = torch.randint(0, 7, (batch,), generator=generator)

    def step():
        optimizer.zero_grad()
        loss_fn(model(images), labels).backward()
        optimizer.step()

    timed_step = median_ms(step, repeats)
    model.eval()
    with torch.no_grad():
        inference = {"1 face": median_ms(lambda: model(images[:1]), repeats),
                     f"{batch} faces": median_ms(lambda: model(images), repeats)}
    return {"rows": rows, "step": timed_step, "inference": inference}


def measure(backend: str, batch: int, repeats: int, max_isa: str | None) -> dict | None:
    """One backend's timings from a fresh process; None when it could not run (no PyTorch)."""
    env = dict(os.environ) | BACKENDS[backend]
    if max_isa:
        env |= {"ONEDNN_MAX_CPU_ISA": max_isa, "ATEN_CPU_CAPABILITY": TORCH_CAPABILITY[max_isa]}
    result = subprocess.run([sys.executable, __file__, "--worker", backend, "--batch", str(batch),
                             "--repeats", str(repeats)], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"  {backend}: failed: {result.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128, help="images per step")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per layer (median)")
    parser.add_argument("--max-isa", choices=tuple(TORCH_CAPABILITY),
                        help="cap oneDNN's and PyTorch's kernels at this instruction set")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        timings = (time_torch if args.worker == "pytorch" else time_keras)(args.batch, args.repeats)
        print(json.dumps(timings))
        return

    from ferkeras.cpu import cpu_flags, cpu_model

    print(f"CPU: {cpu_model()} ({' '.join(cpu_flags())}), {os.cpu_count()} cores; batch {args.batch}"
          + (f"; kernels capped at {args.max_isa}" if args.max_isa else ""))
    results = {b: r for b in BACKENDS if (r := measure(b, args.batch, args.repeats, args.max_isa))}
    names = list(results)
    print("\nms per step of", args.batch, "images: forward / forward + backward")
    print(f"{'layers':<12}" + "".join(f"{name:>22}" for name in names))
    for group in GROUPS:
        cells = [results[n]["rows"].get(group, [0.0, 0.0]) for n in names]
        print(f"{group:<12}" + "".join(f"{f:10.2f} / {b:8.2f}" for f, b in cells))
    sums = {n: sum(b for _, b in results[n]["rows"].values()) for n in names}
    print(f"{'layers, sum':<12}" + "".join(f"{'':>13}{sums[n]:9.2f}" for n in names))
    print(f"{'whole step':<12}" + "".join(f"{'':>13}{results[n]['step']:9.2f}" for n in names))
    print(f"{'rest':<12}" + "".join(f"{'':>13}{results[n]['step'] - sums[n]:9.2f}" for n in names))
    print("\ninference (training=False), ms:")
    for row in results[names[0]]["inference"]:
        print(f"{row:<12}" + "".join(f"{'':>13}{results[n]['inference'][row]:9.2f}" for n in names))
    if "pytorch" in results:
        print("\nwhole step, PyTorch's time / each backend's (above 1: faster than PyTorch):")
        for name in names:
            print(f"  {name:<10} {results['pytorch']['step'] / results[name]['step']:.2f}x")


if __name__ == "__main__":
    main()
