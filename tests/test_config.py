"""Run options, run folders and the files in them (no TensorFlow needed)."""

import json

import pytest

from ferkeras.config import TrainConfig, did_you_mean, resume_options
from ferkeras.errors import FerkerasError
from ferkeras.fileio import read_json, write_json_atomic, write_text_atomic
from ferkeras.runs import find_model, find_run, new_run_dir, read_history, read_run_config, run_of_model


def test_unknown_option_is_an_error_with_a_suggestion():
    with pytest.raises(FerkerasError, match="unknown option 'epoch'; did you mean 'epochs'"):
        TrainConfig.from_dict({"epoch": 3})


@pytest.mark.parametrize("values, flag", [
    ({"epochs": 0}, "--epochs"),
    ({"batch_size": 0}, "--batch-size"),
    ({"lr": -1.0}, "--lr"),
    ({"label_smoothing": 1.0}, "--label-smoothing"),
    ({"channels": 2}, "--channels"),
    ({"optimizer": "rmsprop"}, "--optimizer"),
    ({"name": "../x"}, "--name"),
])
def test_out_of_range_values_name_their_flag(values, flag):
    with pytest.raises(FerkerasError, match=flag):
        TrainConfig.from_dict(values)


def test_default_epochs_depend_on_the_data():
    assert TrainConfig().resolved_epochs(synthetic=False) == 30
    assert TrainConfig().resolved_epochs(synthetic=True) < 30
    assert TrainConfig(epochs=5).resolved_epochs(synthetic=True) == 5


def test_run_folders_never_reuse_a_name(tmp_path):
    names = [new_run_dir(tmp_path, "exp").name for _ in range(3)]
    assert names == ["exp", "exp2", "exp3"]


def test_find_run_latest_by_name_and_with_suggestion(tmp_path):
    with pytest.raises(FerkerasError, match="no runs"):
        find_run(None, tmp_path)
    for name in ("alpha", "beta"):
        run = new_run_dir(tmp_path, name)
        write_json_atomic(run / "config.json", {"options": {}})
    assert find_run(None, tmp_path).name == "beta"
    assert find_run("alpha", tmp_path).name == "alpha"
    assert find_run(str(tmp_path / "alpha"), tmp_path).name == "alpha"
    with pytest.raises(FerkerasError, match="did you mean 'alpha'"):
        find_run("alpah", tmp_path)
    with pytest.raises(FerkerasError, match="no model.keras"):
        find_model("alpha", tmp_path)


def test_atomic_json_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "h.json"
    write_json_atomic(path, [1, 2])
    with pytest.raises(UnicodeEncodeError):  # fails while writing, after the temp file exists
        write_text_atomic(path, "half\ud800")
    assert json.loads(path.read_text()) == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["h.json"]


def test_run_config_and_the_run_of_a_model(tmp_path):
    run = new_run_dir(tmp_path, "r")
    assert run_of_model(run / "model.keras") is None  # no config.json yet: a bare file
    (run / "config.json").write_text("{broken")
    with pytest.raises(FerkerasError, match="config.json: cannot read"):
        read_run_config(run)
    write_json_atomic(run / "config.json", {"epochs": 3})
    with pytest.raises(FerkerasError, match="not a ferkeras run config"):
        read_run_config(run)
    write_json_atomic(run / "config.json", {"options": {"seed": 1}})
    assert read_run_config(run)["options"] == {"seed": 1}
    assert run_of_model(run / "model.keras") == run


def test_recipe_gives_its_options_and_given_flags_override_them(tmp_path):
    from ferkeras.config import RECIPES

    config = TrainConfig.from_recipe("fer2013", {"data": "synthetic", "epochs": 3})
    for key, value in RECIPES["fer2013"].items():
        if key != "epochs":
            assert getattr(config, key) == value, key
    assert config.epochs == 3 and config.data == "synthetic"

    recipe = tmp_path / "mine.json"
    recipe.write_text(json.dumps({"augment": "strong", "erase": 0.5}))
    config = TrainConfig.from_recipe(str(recipe), {"erase": 0.25})
    assert (config.augment, config.erase) == ("strong", 0.25)


@pytest.mark.parametrize("content, message", [
    (None, "not one of fer2013 nor a .json file"),
    ("[1, 2]", "expected a JSON object of options"),
    ("{oops", "not a readable JSON file"),
    ('{"erasse": 0.5}', "unknown option 'erasse'; did you mean 'erase'"),
    ('{"warmup_epochs": 3, "epochs": 3}', "--warmup-epochs 3: must be fewer than --epochs"),
])
def test_bad_recipe_is_one_clear_error(tmp_path, content, message):
    recipe = "fer2014"
    if content is not None:
        recipe = str(tmp_path / "recipe.json")
        (tmp_path / "recipe.json").write_text(content)
    with pytest.raises(FerkerasError, match=message.replace("(", r"\(").replace("[", r"\[")):
        TrainConfig.from_recipe(recipe, {})


def test_command_line_names_the_program_without_its_folder(monkeypatch):
    from ferkeras.config import command_line

    monkeypatch.setattr("sys.argv", ["/home/me/.venv/bin/ferkeras", "train", "--epochs", "3"])
    assert command_line() == "ferkeras train --epochs 3"


def test_resume_takes_only_epochs_and_the_runs_folder():
    assert resume_options({"epochs": 12, "runs_dir": "elsewhere"}) == {"epochs": 12, "runs_dir": "elsewhere"}
    assert resume_options({}) == {}
    with pytest.raises(FerkerasError, match=r"--resume: --lr, --batch-size cannot change when resuming"):
        resume_options({"lr": 0.1, "epochs": 3, "batch_size": 64})
    with pytest.raises(FerkerasError, match=r"--resume: --recipe cannot change"):
        resume_options({"epochs": 3}, recipe="fer2013")


def test_did_you_mean_names_the_closest_choice_or_nothing():
    assert did_you_mean("alpah", ["alpha", "beta"]) == "; did you mean 'alpha'?"
    assert did_you_mean("zzz", ["alpha", "beta"]) == ""


def test_json_files_read_back_with_a_default_or_a_one_line_error(tmp_path):
    path = tmp_path / "m.json"
    assert read_json(path, None) is None and read_history(tmp_path) == []
    path.write_text("{half")
    assert read_json(path, {}) == {}
    with pytest.raises(FerkerasError, match=r"m.json: cannot read it \(Expecting"):
        read_json(path)
    (tmp_path / "history.json").write_text("[{\"epoch\": 1")
    with pytest.raises(FerkerasError, match="history.json: cannot read the run's history"):
        read_history(tmp_path)
    write_json_atomic(tmp_path / "history.json", [{"epoch": 1}])
    assert read_history(tmp_path) == [{"epoch": 1}]
