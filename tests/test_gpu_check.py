"""The checks of `make gpu-check` (which needs real GPUs) on stores made here by hand, and its
refusal on a machine without GPUs."""

from __future__ import annotations

import subprocess
import sys

import optuna
from conftest import ROOT

from benchmarks.gpu_check import check_trials, memory_share_check, summarise_utilisation


def _store(tmp_path, trials: list[dict]) -> str:
    url = f"sqlite:///{tmp_path / 'gpu.db'}"
    study = optuna.create_study(study_name="gpu", storage=url)
    for attrs in trials:
        trial = study.ask()
        for key, value in attrs.items():
            trial.set_user_attr(f"sweeper.{key}", value)
        study.tell(trial, 0.5)
    return url


def test_pinned_workers_pass(tmp_path):
    url = _store(tmp_path, [
        {"cuda_visible_devices": "0", "devices": ["/device:GPU:0"], "worker": 0, "backend": "jax 0.10"},
        {"cuda_visible_devices": "1", "devices": ["/device:GPU:0"], "worker": 1, "backend": "jax 0.10"},
        {"cuda_visible_devices": "1", "devices": ["/device:GPU:0"], "worker": 1, "backend": "jax 0.10"},
    ])
    result = check_trials(url, "gpu", ["0", "1"], per_gpu=1, backend="jax")
    assert result["problems"] == []
    assert result["workers_by_gpu"] == {"0": ["0"], "1": ["1"]}


def test_unpinned_or_blind_workers_and_idle_gpus_fail(tmp_path):
    url = _store(tmp_path, [
        {"cuda_visible_devices": "0,1", "devices": ["/device:GPU:0", "/device:GPU:1"], "worker": 0,
         "backend": "jax 0.10"},
        {"cuda_visible_devices": "0", "devices": [], "worker": 1, "backend": "jax 0.10"},
        {"cuda_visible_devices": "0", "devices": ["/device:GPU:0"], "worker": 2,
         "backend": "tensorflow 2.21"},
    ])
    problems = check_trials(url, "gpu", ["0", "1", "2"], per_gpu=1, backend="jax")["problems"]
    assert any("'0,1' is not one GPU" in p for p in problems)
    assert any("saw [], not exactly one GPU" in p for p in problems)
    assert any(p == "GPU 1 ran no trial" for p in problems)
    assert any(p == "GPU 2 ran no trial" for p in problems)
    assert any("GPU 0 had workers" in p for p in problems)
    assert any("trial 2: its worker trained with tensorflow, not jax" in p for p in problems)


def test_a_memory_share_not_enforced_is_a_problem():
    """On this machine's CPU nothing caps a worker's memory: the probe's 2 GiB fits, and the check
    says so (on a GPU, 256 MiB fits and 2 GiB is refused)."""
    outcome = memory_share_check("0", 81559)
    assert outcome["256_mib"] == ["fits"] and outcome["2048_mib"] == ["fits"]
    assert outcome["problems"] == ["a worker given 1024 MiB of GPU 0: 256 MiB fits, 2048 MiB "
                                   "fits (want: fits, refused)"]


def test_utilisation_samples_are_summarised_per_gpu(tmp_path):
    path = tmp_path / "util.csv"
    path.write_text("0, 0, 100\n0, 80, 900\n1, 50, 400\n1, [N/A], 400\n2, [N/A], [N/A]\n")
    summary = summarise_utilisation(path)
    assert summary["0"] == {"samples": 2, "mean_util_pct": 40.0, "busy_share": 0.5,
                            "max_memory_mib": 900.0}
    assert summary["1"]["samples"] == 1
    assert "2" not in summary  # a GPU the driver gives no figures for (a MIG instance)


def test_refuses_without_gpus(tmp_path):
    env = {"PATH": str(tmp_path), "PYTHONPATH": str(ROOT)}  # no nvidia-smi on this PATH
    result = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "no NVIDIA GPU found" in result.stderr and "\n" not in result.stderr.strip()
