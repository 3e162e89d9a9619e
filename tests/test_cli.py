"""The command line: help, one-line errors with exit code 2, nothing written on bad input."""

from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_sweeper

from sweeper.cli import main
from sweeper.cli.args import parse_duration


@pytest.mark.parametrize("text, seconds", [
    ("8h", 28800), ("45m", 2700), ("1h30m", 5400), ("90s", 90), ("90", 90), ("2d", 172800),
    ("0.5h", 1800),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["8x", "h", "-5", "0", "1h 30", "inf", "nan", "1e400", "9" * 400])
def test_bad_durations(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: COMMAND (see 'sweeper --help')"),
    (["sweep"], "the following arguments are required: space (see 'sweeper sweep --help')"),
    (["sweep", "cnn_lr", "--trials", "0"],
     "argument --trials: 0 must be at least 1 (see 'sweeper sweep --help')"),
    (["sweep", "cnn_lr", "--bogus"],
     "unrecognized arguments: --bogus (see 'sweeper sweep --help')"),
    (["sweep", "cnn_lr", "a\nb"], "unrecognized arguments: a\\nb (see 'sweeper sweep --help')"),
    (["sweep", "cnn_lr", "--workers", "100000"],
     "argument --workers: 100000 must be at most 1024 (see 'sweeper sweep --help')"),
    (["sweep", "cnn_lr", "--keep-models", "-1"],
     "argument --keep-models: -1 must be at least 0 (see 'sweeper sweep --help')"),
    (["worker", "--study", "x", "--deadline", "nan"],
     "argument --deadline: 'nan' is not a unix time (see 'sweeper worker --help')"),
    (["dashboard", "--port", "70000"],
     "argument --port: 70000 must be at most 65535 (see 'sweeper dashboard --help')"),
    (["nope"], "argument COMMAND: invalid choice: 'nope'"),
    (["dashboard", "--port=--"], "argument --port: expected one argument"),  # argparse gave []
    (["sweep", "cnn_lr", "--study=--"], "argument --study: expected one argument"),
])
def test_bad_arguments_are_one_line_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    captured = capsys.readouterr()
    assert len(captured.err.splitlines()) == 1 and not captured.out
    assert captured.err.startswith(f"sweeper: error: {message}")


@pytest.mark.parametrize("command", [[], ["sweep"], ["worker"], ["check"]])
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    assert "example" in capsys.readouterr().out


def test_cli_and_controller_do_not_import_tensorflow():
    code = ("import sys, sweeper.cli, sweeper.sweep.controller, sweeper.worker.loop; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bad_space_is_one_line_exit_2_and_writes_nothing(project):
    (project / "search_spaces" / "bad.yaml").write_text(
        "model: {name: cnn}\nparams: {learning_rate: {type: float, low: 0, high: 1, log: true}}\n")
    store = project / "fresh" / "study.db"
    result = run_sweeper("sweep", "bad", "--storage", f"sqlite:///{store}", "--workers", "1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["sweeper: error: search_spaces/bad.yaml: params.learning_rate.low: must be > 0 "
                     "when log is true, got 0; use a positive low or log: false"]
    assert not store.parent.exists()
    assert not (project / "storage").exists()


@pytest.mark.parametrize("section, told", [
    ("objectives: [f1, size_kb]\n", "objectives: size_kb is measured by the compress stage"),
    ("compress: {}\nconstraints: [size_kb <= 64]\nsampler: random\n",
     "sampler.name: random cannot honour constraints"),
    ("compress: {quantize: fp16}\n", "compress.quantize: unknown value 'fp16'"),
])
def test_bad_objectives_constraints_and_compression_exit_2_and_write_nothing(project, section,
                                                                               told):
    (project / "search_spaces" / "bad.yaml").write_text(
        "model: {name: cnn}\nparams: {learning_rate: {type: float, low: 0.001, high: 0.1}}\n"
        + section)
    result = run_sweeper("sweep", "bad", "--workers", "1")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"search_spaces/bad.yaml: {told}" in result.stderr
    assert not (project / "storage").exists()


def test_unknown_space_exit_2(project):
    result = run_sweeper("sweep", "nope", "--workers", "1")
    assert result.returncode == 2
    assert "no such search space 'nope'" in result.stderr and "cnn_lr" in result.stderr
    assert not (project / "storage").exists()


def test_bad_gpu_list_exit_2(project):
    result = run_sweeper("sweep", "cnn_lr", "--gpus", "0,zero")
    assert result.returncode == 2 and "'zero' is not a GPU index" in result.stderr
    assert not (project / "storage").exists()


def test_worker_on_a_missing_store_creates_nothing(project):
    store = project / "none.db"
    result = run_sweeper("worker", "--study", "x", "--storage", f"sqlite:///{store}")
    assert result.returncode == 2 and "no study store" in result.stderr
    assert not store.exists()


def test_check_command(project, capsys):
    assert main(["check", "mlp_breast_cancer"]) == 0
    assert "ok (7 params" in capsys.readouterr().out


def test_bad_dataset_is_one_line_exit_2_before_the_store_is_written(project):
    np.savez(project / "data.npz", x_train=np.zeros((20, 3)), y_train=np.arange(19))
    (project / "search_spaces" / "npz.yaml").write_text(
        f"dataset: {{path: {project / 'data.npz'}}}\nmodel: {{name: mlp}}\n"
        "params: {learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}}\n")
    store = project / "fresh" / "study.db"
    result = run_sweeper("sweep", "npz", "--storage", f"sqlite:///{store}", "--workers", "1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "data.npz" in lines[0] and "x_train has 20 rows" in lines[0], lines
    assert not store.parent.exists()
