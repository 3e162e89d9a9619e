"""What makes a study self-describing: how it was run (study attributes) and a short markdown note
that optuna-dashboard shows on the study page."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
import time

from sweeper import keys
from sweeper.metrics import delivered_test_f1
from sweeper.storage.counts import study_counts
from sweeper.storage.url import mask_url
from sweeper.text import short
from sweeper.trials import best_trial, first_value

PACKAGES = ("sweeper", "optuna", "optuna-dashboard", "tensorflow", "jax", "jaxlib", "torch", "keras",
            "numpy", "scikit-learn", "sqlalchemy")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def git_commit(folder=None) -> str | None:
    """The commit checked out in `folder` (default: the current one), if it is a git checkout."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, cwd=folder)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def masked_command(argv: list[str]) -> str:
    return " ".join(mask_url(arg) if "://" in arg else arg for arg in argv)


def record_run(study, slots, gpu_names: dict[str, str]) -> None:
    """Study attributes for this run of the sweep (each run overwrites the previous one's)."""
    study.set_user_attr(keys.COMMAND, masked_command(["sweeper", *sys.argv[1:]]))
    study.set_user_attr(keys.STARTED, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    study.set_user_attr(keys.VERSIONS, package_versions())
    study.set_user_attr(keys.GIT_COMMIT, git_commit())
    study.set_user_attr(keys.HOST, platform.node())
    study.set_user_attr(keys.GPUS, {s.cuda_visible_devices: gpu_names.get(
        s.cuda_visible_devices, "unknown GPU") for s in slots if s.cuda_visible_devices})


def note_markdown(study, space) -> str:
    counts = study_counts(study)
    lines = [f"## {study.study_name}", "", space.config.get("description") or space.name, "",
             f"- budget: {study.user_attrs.get(keys.BUDGET)} trials; done {counts.finished} "
             f"({counts.describe()}), running {counts.running}",
             f"- last run: `{study.user_attrs.get(keys.COMMAND, '')}` at "
             f"{study.user_attrs.get(keys.STARTED, '?')}"]
    from sweeper.results.lineage import lineage_lines

    lines += [f"- {line}" for line in lineage_lines(study)]
    best = best_trial(study)
    if best is None:
        lines.append("- no completed trial yet")
    else:
        test_f1 = delivered_test_f1(best)
        lines += [f"- **best: trial {best.number}, validation F1 {first_value(best):.4f}**"
                  + (f", test F1 {test_f1:.4f}" if test_f1 is not None else ""),
                  "", "| param | value |", "|---|---|"]
        lines += [f"| {k} | {short(v)} |" for k, v in best.params.items()]
        if space.is_multi_objective:
            lines += ["", f"- Pareto front: {len(study.best_trials)} trials over "
                      f"{', '.join(space.objectives)}; `sweeper report` lists them, `sweeper best "
                      f"--pick \"max f1 where {space.objectives[1]} <= ...\"` chooses one"]
    return "\n".join(lines) + "\n"


def write_note(study, space) -> None:
    """The note on the study page. Where optuna-dashboard is not installed (the GPU kit leaves it
    out), there is no note to write: the next sweep of the study where it is installed writes it."""
    try:
        from optuna_dashboard import save_note
    except ImportError:
        return

    save_note(study, note_markdown(study, space))
