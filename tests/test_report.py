"""`ferkeras report`: six answers from a synthetic run, one self-contained HTML page and its Markdown twin."""

import base64
import contextlib
import io
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_main
from PIL import Image

from ferkeras.gradients import GRADIENTS, TOLERANCE
from ferkeras.model import load_model
from ferkeras.report import tex_to_html

QUESTIONS = ("1. Model architecture", "2. Training and validation history", "3. Confusion matrix",
             "4. Saliency maps", "5. What activates the filters", "6. Math")
EMBEDDED_PNG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def report(trained_synthetic_run):
    """`ferkeras report` on the synthetic run, kept cheap (8 filters, 8 ascent steps): (stdout, run)."""
    from ferkeras.cli.main import main

    argv = ["ferkeras", "report", str(trained_synthetic_run), "--filters", "0-7", "--steps", "8"]
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()) as out:
        patch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exit_info:
            main()
    assert exit_info.value.code == 0, out.getvalue()
    return out.getvalue(), trained_synthetic_run


def test_report_prints_where_it_wrote(report):
    out, run = report
    lines = out.strip().splitlines()
    assert lines[0] == f"Report on {run} (figures in {run / 'report'}/)"
    assert [line.split()[0] for line in lines[1:7]] == ["1", "2", "3", "4", "5", "6"]
    assert lines[-2].startswith(f"Wrote {run / 'report.html'} (") and "7 figures embedded" in lines[-2]
    assert lines[-1] == f"Wrote {run / 'report.md'} (figures linked from {run / 'report'}/)"
    assert not list(run.glob(".*")) and not list((run / "report").glob(".*"))  # atomic writes


def test_html_answers_six_questions_with_embedded_figures(report):
    _, run = report
    page = (run / "report.html").read_text()
    headings = re.findall(r'<h2 id="q(\d)">([^<]+)</h2>', page)
    assert [n for n, _ in headings] == list("123456")
    for (_, text), question in zip(headings, QUESTIONS, strict=True):
        assert text.startswith(question)
    figures = EMBEDDED_PNG.findall(page)
    assert len(figures) >= 5
    for data in figures:
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        assert image.format == "PNG" and min(image.size) > 200
    # Self-contained: nothing to fetch, nothing to run.
    for outside in ("<script", "<link", "src=\"http", "href=\"http", "url(", "@import"):
        assert outside not in page, outside


def test_answers_come_from_the_run(report):
    _, run = report
    page = (run / "report.html").read_text()
    for layer in load_model(run / "model.keras").layers:  # question 1: every layer
        assert f"<td>{layer.name}</td>" in page
    assert "322,039" in page and "528 non-trainable" in page
    history = json.loads((run / "history.json").read_text())  # question 2: one row per epoch
    for row in history:
        assert f"<td class=num>{row['val_accuracy']:.4f}</td>" in page
        assert f"<td class=num>{row['seconds']:.2f}</td>" in page
    metrics = json.loads((run / "report" / "metrics_val.json").read_text())  # question 3
    for line in metrics["analysis"].splitlines():
        assert line.replace("'", "&#x27;") in page
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["images"]
    assert "<figcaption>Vanilla saliency" in page and "<figcaption>SmoothGrad" in page  # question 4
    for f in range(8):  # question 5
        assert f"<td>#{f}</td>" in page
    # Question 6: the formulas, and every gradient's measured error below the bar.
    assert page.count('<div class="formula">') == 12
    math = page.split('id="q6"', 1)[1]
    errors = re.findall(r"<td class=num>(\d\.\de[-+]\d+)</td><td>(yes|NO)</td>", math)
    assert len(errors) == len(GRADIENTS) + 1  # and the forward pass
    assert all(float(e) < TOLERANCE and ok == "yes" for e, ok in errors)


def test_markdown_twin_links_the_same_figures(report):
    _, run = report
    text = (run / "report.md").read_text()
    assert re.findall(r"^## (\d)\. ", text, re.M) == list("123456")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == len(EMBEDDED_PNG.findall((run / "report.html").read_text()))
    for link in links:
        assert link.startswith("report/") and (run / link).is_file()
    assert text.count("$$") == 2 * 12 and r"\frac{\partial l}{\partial \mu}" in text


def test_html_opens_in_headless_chromium(report, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium not installed (apt-get install chromium): page rendering not checked")
    _, run = report
    screenshot = tmp_path / "page.png"
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         f"--screenshot={screenshot}", "--window-size=1200,3000", (run / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # Console messages (script errors among them) are logged as CONSOLE lines; the page has none.
    assert not [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    pixels = np.asarray(Image.open(screenshot).convert("RGB"))
    assert pixels.shape == (3000, 1200, 3)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500  # not blank


def test_formulas_become_html_without_markup_left():
    assert tex_to_html(r"\frac{\partial l}{\partial \hat{x}_i}") == (
        '<span class="frac"><span>∂<i>l</i></span><span>∂<i>x\u0302</i><sub><i>i</i></sub></span></span>')
    assert tex_to_html(r"-\sum_{i=1}^{m} -2 x").startswith("−<span class=\"sum\">∑")
    assert "−2" in tex_to_html(r"\sum_{i} -2 x")  # a minus after a sum is a sign, not a subtraction
    with pytest.raises(ValueError, match=r"unsupported TeX command \\int"):
        tex_to_html(r"\int x")


@pytest.mark.parametrize("args, message", [
    (["nosuch"], "Error: run 'nosuch' not found"),
    (["empty"], "Error: run {runs}/empty has no model.keras yet"),
    (["empty", "--steps", "0"], "Error: --steps 0: must be at least 1"),
    (["empty", "--format", "pdf"], "Error: Invalid value for '--format'"),
])
def test_bad_input_is_one_line_with_exit_code_2(tmp_path, monkeypatch, capsys, args, message):
    runs = tmp_path / "runs"
    (runs / "empty").mkdir(parents=True)
    (runs / "empty" / "config.json").write_text('{"options": {}}')
    code, out, err = run_main(["report", *args, "--runs-dir", str(runs)], monkeypatch, capsys)
    assert code == 2 and err.startswith(message.format(runs=runs)) and err.count("\n") == 1, err


def test_bad_filters_fail_before_the_slow_work(trained_synthetic_run, monkeypatch, capsys):
    code, out, err = run_main(["report", str(trained_synthetic_run), "--filters", "0,200"],
                              monkeypatch, capsys)
    assert code == 2 and err == "Error: --filters 0,200: filter 200 is outside conv4's 96 filters (0..95)\n"
    assert "1 architecture" not in out
