"""Slurm job arrays: one array task per node, each running the sweep controller over the GPUs Slurm
gives it (Slurm sets CUDA_VISIBLE_DEVICES), all sharing one study in a server store.

The study is created (or resumed) in the store before submitting, so every task joins the same
study and budget. The store URL never goes into the script: tasks read SWEEPER_STORAGE from the
environment sbatch passes on.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sweeper import defaults
from sweeper.errors import SweeperError
from sweeper.paths import private_folder, study_folder
from sweeper.storage.url import STORAGE_ENV, mask_url

SLURM_DIR = Path("storage") / "slurm"
# SIGUSR1 this long before the limit: workers checkpoint the trials they are in and leave.
WARN_BEFORE_END_S = 300


@dataclass
class SlurmJob:
    space: str
    study: str
    storage_url: str
    nodes: int
    gpus_per_node: int
    time_limit: str
    trials: int
    partition: str | None = None
    workers_per_gpu: int = 1
    heartbeat_s: int = defaults.HEARTBEAT_S


def check_time_limit(text: str) -> str:
    """Slurm's forms: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS."""
    if not re.fullmatch(r"(\d+-)?\d+(:\d{2}){0,2}", text):
        raise SweeperError(f"--time {text!r} is not a Slurm time limit; write e.g. 10:00:00 or 1-00:00:00")
    return text


def limit_seconds(text: str) -> int:
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:
        parts += [0] * (3 - len(parts))
        hours, minutes, seconds = parts
        return int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


def render_script(job: SlurmJob, project_dir: Path, log_dir: Path) -> str:
    warn = min(WARN_BEFORE_END_S, max(30, limit_seconds(job.time_limit) // 10))
    lines = [
        "#!/bin/bash",
        f"# sweeper: {job.nodes} node(s) x {job.gpus_per_node} GPU(s) on study '{job.study}' in",
        f"# {mask_url(job.storage_url)} (the URL itself comes from ${STORAGE_ENV} at submit time).",
        f"#SBATCH --job-name=sweeper-{job.study}",
        f"#SBATCH --array=0-{job.nodes - 1}",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        f"#SBATCH --gres=gpu:{job.gpus_per_node}",
        f"#SBATCH --time={job.time_limit}",
        # A warning signal before the limit, to the batch shell, which forwards it: workers
        # checkpoint the trial they are in and leave; the next job resumes it.
        f"#SBATCH --signal=B:USR1@{warn}",
        # A task preempted (its SIGTERM is a stop request too: the trials checkpoint) is put
        # back in the queue, and goes on from the checkpoints when it starts again.
        "#SBATCH --requeue",
        f"#SBATCH --output={log_dir}/%A_%a.log",
    ]
    if job.partition:
        lines.append(f"#SBATCH --partition={job.partition}")
    command = [sys.executable, "-m", "sweeper", "sweep", job.space, "--study", job.study,
               "--trials", str(job.trials), "--workers-per-gpu", str(job.workers_per_gpu),
               "--heartbeat", str(job.heartbeat_s), "--join"]  # array tasks share the study
    lines += [
        "",
        "set -u",
        f'if [ -z "${{{STORAGE_ENV}:-}}" ]; then echo "{STORAGE_ENV} is not set" >&2; exit 2; fi',
        f"cd {shlex.quote(str(project_dir))}",
        'echo "task $SLURM_ARRAY_TASK_ID on $(hostname): CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-}"',
        "# The controller runs in the background so this shell can pass Slurm's signals on.",
        " ".join(shlex.quote(part) for part in command) + " &",
        "controller=$!",
        "trap 'kill -USR1 $controller' USR1",
        "trap 'kill -TERM $controller' TERM",
        "wait $controller; code=$?",
        "while kill -0 $controller 2>/dev/null; do wait $controller; code=$?; done",
        "exit $code",
    ]
    return "\n".join(lines) + "\n"


def write_script(job: SlurmJob, project_dir: Path | None = None) -> Path:
    project_dir = (project_dir or Path.cwd()).resolve()
    folder = study_folder(SLURM_DIR, job.study).resolve()
    private_folder(folder)
    path = folder / "sweep.sbatch"
    path.write_text(render_script(job, project_dir, folder))
    path.chmod(0o700)
    return path


def submit(script: Path, storage_url: str) -> str:
    """sbatch the script with the store URL in the environment only. Returns the job id."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise SweeperError("sbatch not found: run this on a Slurm login node, or drop --submit "
                           f"and submit {script} yourself")
    env = {**os.environ, STORAGE_ENV: storage_url}
    result = subprocess.run([sbatch, "--parsable", str(script)], capture_output=True, text=True,
                            env=env, timeout=60)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise SweeperError(f"sbatch refused {script}: {reason}")
    return result.stdout.strip().split(";")[0]
