"""Benchmark training speed: ferkeras' pipeline vs the reference's PyTorch model, in one run.

    python bench/train_speed.py [--images 6400] [--epochs 3] [--rounds 2] [--variants ...]
                                [--arch reference|large]

Each contender trains in a fresh process of its own (TensorFlow and PyTorch fix their thread
pools at start-up), in turn, --rounds times; the best round of each is reported, as noise on
a shared machine only ever slows a run down. The first epoch is warm-up and is not timed.

- ferkeras: the real training pipeline, with `ferkeras train`'s defaults (batch 128, light
  augmentation, Adam with cosine decay): tf.data shuffle -> batch -> augment -> prefetch ->
  model.fit. Validation is excluded.
- keras in memory: the same model and optimizer fed from in-memory tensors, no augmentation:
  what the pipeline costs.
- input pipeline: the tf.data pipeline alone, iterated without training. It must be well ahead
  of training so that it never is the bottleneck.
- pytorch reference: the reference's own nn.Sequential (../shared/reference/seed_report.md),
  Adam, the same batch size, random data; only when torch is installed
  (`pip install torch==2.13.0`, a CPU build, kept out of ferkeras' dependencies).
- --variants adds ferkeras with one lever changed: keras_bn (Keras' own, unfused
  BatchNormalization instead of ferkeras' fused one), bf16 (mixed bfloat16), xla (jit_compile),
  spe8 (steps_per_execution=8), batch256, eigen (TensorFlow's Eigen kernels instead of oneDNN:
  TensorFlow's own default on CPUs without AVX-512 VNNI/BF16 or AMX, such as AVX2-only ones,
  which ferkeras overrides), inter1 (one inter-op thread: ops run one after another) and intra1
  (one intra-op thread: each op's kernel on one core).
- --max-isa AVX2 caps oneDNN (ONEDNN_MAX_CPU_ISA) and PyTorch's kernels (ATEN_CPU_CAPABILITY) at
  AVX2 for every contender: an AVX2 CPU's kernels, timed on an AVX-512 one.
- --arch large times ferkeras' large model instead; the PyTorch row, the reference's, is left out.

Images are random 48x48 gray faces: speed does not depend on what the pixels show.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up lines

import numpy as np  # noqa: E402

from ferkeras.config import ARCHITECTURES  # noqa: E402

VARIANTS = ("keras_bn", "bf16", "xla", "spe8", "batch256", "eigen", "inter1", "intra1")

# Environment of one variant's worker, read by TensorFlow when it loads (process_util.cc reads the
# thread counts; 0 or unset: one thread per core in each pool).
VARIANT_ENVIRONMENT = {"eigen": {"TF_ENABLE_ONEDNN_OPTS": "0"},
                       "inter1": {"TF_NUM_INTEROP_THREADS": "1"},
                       "intra1": {"TF_NUM_INTRAOP_THREADS": "1"}}

# --max-isa: the instruction sets that oneDNN (TensorFlow's and PyTorch's) and PyTorch's own kernels
# may use, to time an AVX2 CPU's code paths on a newer CPU.
TORCH_CAPABILITY = {"AVX2": "avx2", "AVX512_CORE": "avx512", "AVX512_CORE_VNNI": "avx512"}


def flops_per_image(arch: str = "reference") -> tuple[float, float]:
    """(forward, training) FLOPs per image of one of ferkeras' CNNs, counted from its layers.

    A conv or dense layer does 2 FLOPs per multiply-add; training is forward plus a backward
    pass of about twice the forward cost (gradients for inputs and for weights).
    """
    from ferkeras.errors import import_tensorflow

    import_tensorflow()  # TensorFlow's C++ start-up lines hidden
    from ferkeras.model import build_model

    layers = build_model(arch=arch).layers
    forward = 0.0
    for layer in layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            h, w, c_out = layer.output.shape[1:]
            k_h, k_w = layer.kernel_size
            forward += 2 * h * w * c_out * k_h * k_w * layer.input.shape[-1]
        elif kind == "Dense":
            forward += 2 * layer.input.shape[-1] * layer.units
    return forward, 3 * forward


def random_faces(n: int, seed: int = 0):
    """n random uint8 faces and labels, as a ferkeras Split."""
    from ferkeras.data import Split

    rng = np.random.default_rng(seed)
    return Split(rng.integers(0, 256, (n, 48, 48), dtype=np.uint8), rng.integers(0, 7, n))


def steady_rate(epoch_seconds: list[float], images: int) -> float:
    """Images per second over the epochs after the first (warm-up)."""
    timed = epoch_seconds[1:] or epoch_seconds
    return images * len(timed) / sum(timed)


def run_ferkeras(images: int, epochs: int, variant: str | None, in_memory: bool,
                 arch: str = "reference") -> float:
    """Train ferkeras' model with its defaults (one lever changed by variant); images/s."""
    import keras

    from ferkeras.config import TrainConfig
    from ferkeras.model import build_model
    from ferkeras.train import compile_model, make_augmenter, make_pipeline

    config = TrainConfig(batch_size=256 if variant == "batch256" else TrainConfig.batch_size)
    if variant == "keras_bn":  # this worker process only: the fused layer trains as Keras' does
        from ferkeras.model import FusedBatchNormalization

        FusedBatchNormalization.call = keras.layers.BatchNormalization.call
    if variant == "bf16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    split = random_faces(images)
    model = build_model(config.channels, arch)
    steps = -(-images // config.batch_size)
    compile_model(model, config, steps * epochs)
    if variant in ("xla", "spe8"):  # compile again with the lever, same optimizer and loss
        model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"],
                      jit_compile=variant == "xla", steps_per_execution=8 if variant == "spe8" else 1)

    seconds: list[float] = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.start)

    if in_memory:
        x = split.images[..., None].astype(np.float32)
        y = np.eye(7, dtype=np.float32)[split.labels]
        model.fit(x, y, batch_size=config.batch_size, epochs=epochs, verbose=0,
                  callbacks=[EpochTimer()])
    else:
        ds = make_pipeline(split, config.batch_size, make_augmenter(config.augment, config.seed),
                           shuffle_seed=config.seed)
        model.fit(ds, epochs=epochs, verbose=0, callbacks=[EpochTimer()])
    return steady_rate(seconds, images)


def run_pipeline(images: int, epochs: int) -> float:
    """Iterate ferkeras' training pipeline alone (shuffle, batch, augment, prefetch); images/s."""
    from ferkeras.config import TrainConfig
    from ferkeras.train import make_augmenter, make_pipeline

    config = TrainConfig()
    ds = make_pipeline(random_faces(images), config.batch_size,
                       make_augmenter(config.augment, config.seed), shuffle_seed=config.seed)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for _batch in ds:
            pass
        seconds.append(time.perf_counter() - start)
    return steady_rate(seconds, images)


def run_torch(images: int, epochs: int, batch_size: int = 128) -> float:
    """Train the reference's PyTorch model on random data with Adam; images/s."""
    import torch
    from torch import nn

    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2, 2, 0)]

    model = nn.Sequential(*block(3, 24), *block(24, 48), *block(48, 96), *block(96, 96),
                          nn.Flatten(), nn.Linear(96 * 3 * 3, 192), nn.ReLU(), nn.Linear(192, 96),
                          nn.ReLU(), nn.Linear(96, 7))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(images, 3, 48, 48, generator=generator)
    y = torch.randint(0, 7, (images,), generator=generator)
    model.train()
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for i in range(0, images, batch_size):
            optimizer.zero_grad()
            loss_fn(model(x[i:i + batch_size]), y[i:i + batch_size]).backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)
    return steady_rate(seconds, images)


def worker(contender: str, images: int, epochs: int, arch: str) -> float:
    """Measure one contender in this process."""
    if contender == "pytorch reference":
        return run_torch(images, epochs)
    if contender == "input pipeline":
        return run_pipeline(images, epochs)
    if contender == "keras in memory":
        return run_ferkeras(images, epochs, None, in_memory=True, arch=arch)
    variant = contender.split(" ", 1)[1] if " " in contender else None
    return run_ferkeras(images, epochs, variant, in_memory=False, arch=arch)


def worker_environment(contender: str, max_isa: str | None) -> dict[str, str]:
    """The environment a contender's process starts with: its variant's and --max-isa's settings."""
    environment = dict(os.environ)
    variant = contender.split(" ", 1)[1] if contender.startswith("ferkeras ") else None
    environment.update(VARIANT_ENVIRONMENT.get(variant, {}))
    if max_isa:
        environment["ONEDNN_MAX_CPU_ISA"] = max_isa
        environment["ATEN_CPU_CAPABILITY"] = TORCH_CAPABILITY.get(max_isa, "default")
    return environment


def measure(contender: str, images: int, epochs: int, arch: str,
            max_isa: str | None = None) -> float | None:
    """Run a contender in a fresh process; images/s, or None when it could not run."""
    result = subprocess.run(
        [sys.executable, __file__, "--worker", contender, "--images", str(images),
         "--epochs", str(epochs), "--arch", arch], capture_output=True, text=True,
        env=worker_environment(contender, max_isa))
    if result.returncode != 0:
        print(f"  {contender}: failed: {result.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])["images_per_second"]


def torch_available() -> bool:
    """Whether PyTorch imports here (it is not a ferkeras dependency)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6_400, help="images per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is warm-up")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each contender, best kept")
    parser.add_argument("--variants", nargs="*", default=[], choices=VARIANTS,
                        help="ferkeras with one lever changed")
    parser.add_argument("--arch", default="reference", choices=ARCHITECTURES,
                        help="which ferkeras architecture to time")
    parser.add_argument("--max-isa", choices=tuple(TORCH_CAPABILITY),
                        help="cap oneDNN's and PyTorch's kernels at this instruction set")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        rate = worker(args.worker, args.images, args.epochs, args.arch)
        print(json.dumps({"images_per_second": rate}))
        return

    contenders = ["ferkeras", *[f"ferkeras {v}" for v in args.variants], "keras in memory",
                  "input pipeline"]
    if args.arch != "reference":
        pass  # the PyTorch row is the reference's model only
    elif torch_available():
        contenders.append("pytorch reference")
    else:
        print("PyTorch is not installed (pip install torch==2.13.0): the reference is left out.")
    print(f"{args.images:,} random faces per epoch, {args.epochs} epochs (first = warm-up), "
          f"best of {args.rounds} rounds, {os.cpu_count()} CPU cores"
          + (f", kernels capped at {args.max_isa}" if args.max_isa else ""))
    rates: dict[str, float] = {}
    rounds: list[dict[str, float]] = []  # each round's rates, for ratios within a round
    for round_number in range(1, args.rounds + 1):
        rounds.append({})
        for contender in contenders:  # interleaved, so a slow spell hits every contender
            rate = measure(contender, args.images, args.epochs, args.arch, args.max_isa)
            print(f"  round {round_number}: {contender:<22} "
                  + (f"{rate:8.0f} images/s" if rate else "failed"), flush=True)
            if rate:
                rates[contender] = max(rates.get(contender, 0.0), rate)
                rounds[-1][contender] = rate

    forward, training = flops_per_image(args.arch)
    print(f"\n{args.arch} CNN: {forward / 1e6:.1f} MFLOP forward, about {training / 1e6:.0f} MFLOP "
          "per training image (forward + backward)")
    base = rates.get("pytorch reference")
    # Best against best, and the median of each round's own ratio: on a shared machine the same
    # process ran 780 or 1,090 images/s from one round to the next, and a round's neighbours
    # share its spell.
    print(f"{'contender':<22} {'images/s':>9} {'GFLOP/s':>8} {'vs pytorch':>11} {'in a round, median':>19}")
    for contender, rate in rates.items():
        gflops = rate * (forward if contender == "input pipeline" else training) / 1e9
        if contender == "input pipeline":
            gflops_text = "-"
        else:
            gflops_text = f"{gflops:.0f}"
        ratio = f"{rate / base:.2f}x" if base else "-"
        paired = [r[contender] / r["pytorch reference"] for r in rounds
                  if contender in r and "pytorch reference" in r]
        in_round = f"{float(np.median(paired)):.2f}x" if paired else "-"
        print(f"{contender:<22} {rate:9.0f} {gflops_text:>8} {ratio:>11} {in_round:>19}")
    if "ferkeras" in rates and "input pipeline" in rates:
        print(f"\ninput pipeline / ferkeras training: {rates['input pipeline'] / rates['ferkeras']:.1f}x")


if __name__ == "__main__":
    main()
