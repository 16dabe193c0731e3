"""The CLI as a user runs it: happy paths and one-line errors (exit 2, no traceback)."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_cli
from PIL import Image

from dltoolkit.cli.app import main
from dltoolkit.core.callbacks import read_history
from dltoolkit.core.runlock import LOCK_FILE


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def assert_user_error(code, out, err, *fragments):
    assert code == 2, (out, err)
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith("error:"), err
    for fragment in fragments:
        assert fragment in message, message


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    proc = run_cli("classify", "--epochs", "3", "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["run"] == str(out) and summary["metrics"]["accuracy"] > 0.8
    return out


def test_classify_wrote_run_and_export(run_dir):
    assert (run_dir / "export" / "run" / "1" / "saved_model.pb").is_file()
    assert (run_dir / "report.html").is_file()


def test_predict_evaluate_export_report(run_dir, digit_folder, capsys):
    code, out, _ = cli(
        capsys,
        "predict",
        run_dir,
        digit_folder / "1",
        "--json",
        "--output",
        run_dir.parent / "pred.csv",
    )
    assert code == 0
    results = json.loads(out)
    assert len(results) == 40 and results[0]["top_k"]
    lines = (run_dir.parent / "pred.csv").read_text().splitlines()
    assert lines[0] == "input,label,probability,top_k" and len(lines) == 41
    code, out, _ = cli(capsys, "predict", run_dir, digit_folder / "2" / "2_0.png")
    assert code == 0 and "Predictions (1)" in out
    code, out, _ = cli(capsys, "evaluate", run_dir, "--data", digit_folder)
    assert code == 0 and "Confusion matrix" in out and "accuracy" in out
    code, out, _ = cli(capsys, "export", run_dir, "--format", "tflite", "--json")
    assert code == 0 and json.loads(out)["export"].endswith("model.tflite")
    code, out, _ = cli(capsys, "report", run_dir)
    assert code == 0 and "report.html" in out


def test_devices_and_datasets(capsys):
    code, out, _ = cli(capsys, "devices", "--json")
    info = json.loads(out)
    assert code == 0 and info["strategy"] == "cpu" and info["devices"][0]["type"] == "CPU"
    code, out, _ = cli(capsys, "datasets")
    assert code == 0 and "digits" in out


def test_run_recipe_file_with_overrides(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text('task = "classify"\ndata = "digits"\n[params]\nepochs = 5\n')
    code, out, err = cli(
        capsys,
        "run",
        recipe,
        "--set",
        "epochs=1",
        "--set",
        "augment=none",
        "--out",
        tmp_path / "run",
        "--json",
    )
    assert code == 0, err
    rows = read_history(tmp_path / "run" / "history.csv")
    assert len(rows) == 1
    code, _, _ = cli(
        capsys, "run", tmp_path / "run" / "recipe.toml", "--out", tmp_path / "again", "--quiet"
    )
    assert code == 0 and (tmp_path / "again" / "model.keras").is_file()


def test_bad_inputs_are_one_line_errors(tmp_path, capsys, run_dir):
    assert_user_error(*cli(capsys, "classify", "--data", tmp_path / "nope"), "does not exist")
    (tmp_path / "empty").mkdir()
    assert_user_error(*cli(capsys, "classify", "--data", tmp_path / "empty"))
    one = tmp_path / "one" / "cats"
    one.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8)).save(one / f"{i}.png")
    assert_user_error(*cli(capsys, "classify", "--data", tmp_path / "one"), "class")
    csv = tmp_path / "labels.csv"
    csv.write_text("filename,kind\na.png,x\n")
    assert_user_error(*cli(capsys, "classify", "--data", csv), "--path-col")
    assert_user_error(*cli(capsys, "classify", "--backbone", "resnet5000"), "small-cnn")
    assert_user_error(*cli(capsys, "classify", "--set", "epoch=3"), "did you mean 'epochs'")
    assert_user_error(*cli(capsys, "predict", tmp_path / "no_run", "x.png"), "does not exist")
    before = sorted(p.name for p in run_dir.iterdir())
    model_bytes = (run_dir / "model.keras").read_bytes()
    assert_user_error(*cli(capsys, "classify", "--out", run_dir), "--resume", "--overwrite")
    assert sorted(p.name for p in run_dir.iterdir()) == before
    assert (run_dir / "model.keras").read_bytes() == model_bytes


def lock_holder(out) -> int | None:
    """The pid recorded in a run directory's lock file (None while there is none)."""
    try:
        return json.loads((out / LOCK_FILE).read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.slow  # 25-50 s in the fast suite's CI run (2026-12-06)
def test_killed_run_resumes_from_last_completed_epoch(tmp_path, capsys):
    """Kill a run, resume it while a second job tries the same --out, resume it again."""
    out = tmp_path / "run"
    exe = [
        sys.executable,
        "-m",
        "dltoolkit",
        "classify",
        "--out",
        str(out),
        "--quiet",
    ]
    train = ["--epochs", "12", "--set", "early_stopping_patience=0", "--set", "augment=none"]
    proc = subprocess.Popen([*exe, *train], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and len(read_history(out / "history.csv")) < 3:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    done_before = len(read_history(out / "history.csv"))
    assert 3 <= done_before < 12, "the run must be killed mid-training"
    assert not (out / "model.keras").exists()
    assert lock_holder(out) == proc.pid  # the killed process's lock is stale, not in the way

    resumed = subprocess.Popen(
        [*exe, "--resume", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and lock_holder(out) != resumed.pid:
        time.sleep(0.05)
    for second_job in ([], ["--overwrite"]):
        code, stdout, err = cli(capsys, "classify", "--out", out, *second_job)
        assert_user_error(code, stdout, err, f"'{out}' is in use", f"pid {resumed.pid} on ")
    stdout, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    with open(out / "history.csv", newline="") as fh:
        assert [row["epoch"] for row in csv.DictReader(fh)] == [str(e) for e in range(1, 13)]
    assert json.loads(stdout)["metrics"]["accuracy"] > 0.9
    assert (out / "export" / "run" / "1" / "saved_model.pb").is_file()

    written = {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.name != LOCK_FILE}
    code, stdout, err = cli(capsys, "classify", "--out", out, "--resume", "--quiet")
    assert code == 0 and f"'{out}' is a finished run: nothing to resume" in err
    assert "accuracy" in stdout
    assert {
        path: path.stat().st_mtime_ns for path in out.rglob("*") if path.name != LOCK_FILE
    } == written


def test_an_unknown_option_is_a_usage_error_without_traceback(capsys):
    code, out, err = cli(capsys, "classify", "--no-such-option")
    assert code == 2 and "Traceback" not in err
    assert "No such option" in err and "--no-such-option" in err
