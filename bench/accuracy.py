"""Benchmark accuracy: the shipped model (or any export folder) on a FER2013 split.

    python bench/accuracy.py [EXPORT_DIR] [--data ../shared/datasets/fer2013] [--split test]
    python bench/accuracy.py --train --force [--record]   # remake the shipped model, measure it

EXPORT_DIR (default: the repo's exported/) holds what `ferkeras export --tflite` writes. Each
model in it (keras: model.keras; float32, int8 and int16x8: TFLite) is evaluated on the split:
accuracy and balanced accuracy (the mean of the per-class recalls), each without and with flip
test-time augmentation and with shifts TTA (10 views: the mirror image and one-pixel shifts of
both); macro F1, the worst class's recall, the expected calibration error (15 bins) and the
negative log-likelihood, and recall per class, without TTA, side by side.
--train trains `ferkeras train --recipe fer2013` on --data, then exports it into EXPORT_DIR;
into the shipped models' folder (the default) only with --force, checked before training.
--record writes the figures into EXPORT_DIR/metadata.json ("accuracy"), which the CI test
tests/test_shipped_model.py holds the shipped files to.
"""

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout

ENGINES = ("keras", "float32", "int8", "int16x8")  # export formats: .keras and TFLite files


def train_and_export(data: str, out: Path, runs_dir: str, force: bool = False) -> dict:
    """Train the fer2013 recipe on data, export it (TFLite float32 and int8) into out; provenance."""
    from ferkeras.config import TrainConfig
    from ferkeras.errors import FerkerasError
    from ferkeras.export import check_out, export
    from ferkeras.exportmeta import portable_path
    from ferkeras.train import train

    check_out(out, force)  # before the hour of training, not after
    start = time.perf_counter()
    run_dir = train(TrainConfig.from_recipe("fer2013", {"data": data, "runs_dir": runs_dir}))
    minutes = (time.perf_counter() - start) / 60
    result = export(run_dir, out, tflite=True, force=force)  # a model that misses the parity bars never ships
    if not result.passed:
        raise FerkerasError(f"{run_dir}: export failed its parity check ({'; '.join(result.failures)}); "
                            f"kept in {result.rejected}/")
    return {"run": portable_path(run_dir, keep=2), "train_minutes": round(minutes, 1)}


def measure(export_dir: Path, data: str, split_name: str) -> dict:
    """Accuracy figures of each model file in export_dir on a split of data."""
    from ferkeras.data import load_dataset
    from ferkeras.errors import FerkerasError
    from ferkeras.evaluate import accuracy_summary
    from ferkeras.export import FORMATS
    from ferkeras.runners import load_runner

    dataset = load_dataset(data)
    split = dataset.splits.get(split_name)
    if split is None or split.labels is None:
        raise FerkerasError(f"--split {split_name}: {dataset.source} has no labelled split of "
                            f"that name ({', '.join(dataset.splits)})")
    engines = {}
    files = {engine: export_dir / FORMATS[engine].file for engine in ENGINES}
    for engine, file in files.items():
        if file.is_file():
            engines[engine] = accuracy_summary(load_runner(file), split)
    if not engines:
        raise FerkerasError(f"{export_dir}: none of {', '.join(f.name for f in files.values())}")
    return {"data": dataset.source, "split": split_name, "images": len(split), "engines": engines}


ROWS = [("accuracy", "accuracy"), ("  with flip TTA", "accuracy_tta"),
        ("  shifts TTA", "accuracy_tta_shifts"),
        ("balanced acc.", "balanced_accuracy"), ("  with flip TTA", "balanced_accuracy_tta"),
        ("  shifts TTA", "balanced_accuracy_tta_shifts"), ("macro F1", "macro_f1"),
        ("worst recall", "worst_recall"), ("ECE (15 bins)", "ece"),
        ("  with flip TTA", "ece_tta"), ("NLL", "nll")]


def print_table(figures: dict) -> None:
    """Accuracy, balanced accuracy, calibration and recall per class of each engine, one column each."""
    engines = figures["engines"]
    names = list(engines)
    print(f"{figures['split']} split of {figures['data']}: {figures['images']:,} images\n")
    print(f"{'':<16}" + "".join(f"{n:>16}" for n in names))
    for title, key in ROWS:
        print(f"{title:<16}" + "".join(f"{engines[n][key]:>16.4f}" for n in names))
    print("recall (no TTA)")
    for label in engines[names[0]]["recall"]:
        print(f"{'  ' + label:<16}" + "".join(f"{engines[n]['recall'][label]:>16.3f}" for n in names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir", nargs="?", default=str(REPO / "exported"))
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "fer2013"))
    parser.add_argument("--split", default="test", help="test = PublicTest (default), train, ...")
    parser.add_argument("--train", action="store_true", help="train the fer2013 recipe and export "
                        "it into EXPORT_DIR first (about 50 minutes on 2 idle cores)")
    parser.add_argument("--runs-dir", default="runs", help="where --train puts its run")
    parser.add_argument("--force", action="store_true", help="let --train export into the folder "
                        "of the models installed with ferkeras (the default EXPORT_DIR), replacing them")
    parser.add_argument("--record", action="store_true",
                        help="write the figures into EXPORT_DIR/metadata.json")
    args = parser.parse_args()

    from ferkeras.errors import FerkerasError
    from ferkeras.exportmeta import portable_command
    from ferkeras.fileio import write_json_atomic

    export_dir = Path(args.export_dir)
    try:
        trained = train_and_export(args.data, export_dir, args.runs_dir, args.force) if args.train else {}
        figures = measure(export_dir, args.data, args.split)
    except FerkerasError as e:
        sys.exit(f"Error: {e}")
    print_table(figures)
    if args.record:
        meta_path = export_dir / "metadata.json"
        meta = json.loads(meta_path.read_text())
        # The data's location is the measuring machine's; the split and count say what it was.
        figures["data"] = Path(figures["data"]).name
        command = " ".join(["python bench/accuracy.py", *sys.argv[1:]])
        meta["accuracy"] = {**figures, **trained, "command": portable_command(command),
                            "measured": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        write_json_atomic(meta_path, meta)
        print(f"\nRecorded in {meta_path}")


if __name__ == "__main__":
    main()
