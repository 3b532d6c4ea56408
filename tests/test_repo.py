"""The repository's promises to a newcomer: CI runs exactly the README's commands."""

import re
import subprocess
import sys

from conftest import REPO


def readme_commands() -> list[str]:
    """The bash blocks of the README's Quick start section, in order."""
    quick_start = REPO.joinpath("README.md").read_text().split("## Quick start", 1)[1]
    quick_start = quick_start.split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", quick_start, re.S)]


def test_readme_gives_two_commands_and_ci_runs_them():
    setup_and_train, run_tests = readme_commands()
    ci = REPO.joinpath(".ci", "run").read_text()
    install = setup_and_train.rsplit(" && ", 1)[0]
    assert setup_and_train.endswith("ferkeras train")
    assert install in ci.splitlines(), "CI must install exactly as the README says"
    assert run_tests in ci.splitlines(), "CI must run the README's test command"


def test_cli_is_not_installed_as_a_top_level_module(tmp_path):
    probe = "import importlib.util as u; print(u.find_spec('cli'), u.find_spec('ferkeras.cli'))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith("None ") and "ferkeras.cli" in out
