"""Out-of-fold soft targets for distillation: each training image's probabilities from a teacher
that never saw it.

    python bench/out_of_fold.py [--data /work/shared/datasets/fer2013] [--folds 2] [--epochs 30]
                                [--work /tmp/ferkeras-oof] [--out oof_probs.npy]

Why: a teacher trained on all of train has nearly learned its labels by heart (the shipped model
agrees with 95.0% of them, the large one with 88.9%), so its "soft" targets on those images are
close to the labels themselves and teach the student little. Here train (Kaggle folders) is cut
into --folds stratified parts; teacher k trains (`--recipe fer2013 --epochs E`) on every part
but k, as a folder dataset of symlinks under --work (PublicTest stays its validation split), and
gives part k's probabilities (flip TTA, as `--teacher` does). The rows land in the data's order,
so the file is what `ferkeras train --teacher FILE.npy` reads. Printed: each teacher's agreement
with the labels of the part it never saw and of a fifth of those it trained on, and the student
command.
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np  # noqa: E402


def fold_dataset(root: Path, paths: list[Path], labels: np.ndarray, members: np.ndarray,
                 out: Path) -> Path:
    """A folder dataset of symlinks: train/ holds the member images, test/ is root's test/."""
    from ferkeras.spec import CLASS_NAMES

    out.mkdir(parents=True, exist_ok=True)
    if not (out / "test").exists():
        os.symlink(root / "test", out / "test")
    for i in np.flatnonzero(members):
        folder = out / "train" / CLASS_NAMES[labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / paths[i].name
        if not link.exists():
            os.symlink(paths[i], link)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/datasets/fer2013"))
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=30, help="each teacher's epochs")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ferkeras-oof"),
                        help="the fold datasets and the teachers' runs")
    parser.add_argument("--out", type=Path, default=Path("oof_probs.npy"))
    args = parser.parse_args()

    # after parsing: --help answers without TensorFlow's start-up
    from sklearn.model_selection import StratifiedKFold

    from ferkeras.config import TrainConfig
    from ferkeras.data import load_dataset, split_files
    from ferkeras.runners import load_runner
    from ferkeras.train import train

    paths, labels = split_files(args.data / "train")  # in load_dataset's order
    part = np.zeros(len(paths), dtype=int)
    folds = StratifiedKFold(args.folds, shuffle=True, random_state=0)
    for k, (_, held) in enumerate(folds.split(np.zeros(len(labels)), labels)):
        part[held] = k
    train_split = load_dataset(args.data).splits["train"]

    probs = np.zeros((len(labels), 7), dtype=np.float32)
    for k in range(args.folds):
        held = part == k
        data = fold_dataset(args.data, paths, labels, ~held, args.work / f"fold{k}")
        config = TrainConfig.from_recipe("fer2013", {"data": str(data), "epochs": args.epochs,
                                                     "name": f"teacher{k}",
                                                     "runs_dir": str(args.work / "runs")})
        run = args.work / "runs" / f"teacher{k}"
        if not (run / "model.keras").is_file():
            run = train(config)
        teacher = load_runner(str(run))
        probs[held] = teacher.predict(train_split.images[held], tta="flip")
        seen = np.flatnonzero(~held)[::5]  # a fifth of its own training images
        seen_probs = teacher.predict(train_split.images[seen], tta="flip")
        print(f"teacher {k}: agrees with {np.mean(probs[held].argmax(1) == labels[held]):.4f} of "
              f"the {held.sum():,} labels it never saw, "
              f"{np.mean(seen_probs.argmax(1) == labels[seen]):.4f} of {len(seen):,} it trained on")
    probs /= probs.sum(axis=1, keepdims=True)
    np.save(args.out, probs)
    print(f"out of fold: agrees with {np.mean(probs.argmax(1) == labels):.4f} of the labels; "
          f"wrote {args.out}\nthe student: ferkeras train --recipe fer2013 --data {args.data} "
          f"--teacher {args.out}")


if __name__ == "__main__":
    main()
