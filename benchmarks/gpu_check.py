"""`make gpu-check`: on a machine with NVIDIA GPUs, check pinning, the backend and GPU memory
shares, and measure which packing of workers per GPU is fastest. Sized for a short GPU job (a debug
queue, a reserved half hour): about 8 minutes whatever the GPU count.

Runs the real sweep with one worker per GPU, then two, then four, each for --seconds-per-packing
of trials (no trial starts after that; running ones finish) while nvidia-smi samples utilisation
every 0.5 s. Checks that every trial ran with CUDA_VISIBLE_DEVICES naming exactly one GPU, that
its worker's Keras backend saw exactly one GPU and was the backend asked for, that every GPU got
trials and none more workers than the packing; and, before the sweeps, that a worker given a
memory share (as packed workers are) cannot take more than it, in the backend's own terms.
Measures trials per hour at each packing and says which was fastest. Writes
benchmarks/results/gpu-check-<time>.json; exit 1 if a check fails, 2 if there is no GPU. Runs
with TensorFlow, or with KERAS_BACKEND=jax or torch where TensorFlow is absent (the GPU kit).

    python -m benchmarks.gpu_check [--space cnn_lr] [--seconds-per-packing 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from benchmarks import common

RESULTS = Path(__file__).resolve().parent / "results"
PACKINGS = (1, 2, 4)  # workers per GPU
SHARE_MIB = 1024  # the memory share the probe gives a worker

# In a worker's environment with a 1024 MiB share: 256 MiB must fit, 2 GiB must be refused.
MEMORY_PROBE = """
import sys
from sweeper.pipeline.backend import configure_backend
configure_backend(None)
import keras
backend = keras.backend.backend()
def take(mib):
    n = mib * 2**20 // 4
    try:
        if backend == "tensorflow":
            import tensorflow as tf
            with tf.device("/GPU:0"):
                x = tf.zeros((n,), tf.float32); float(tf.reduce_sum(x))
        elif backend == "jax":
            import jax.numpy as jnp
            x = jnp.zeros((n,), jnp.float32); x.block_until_ready()
        else:
            import torch
            x = torch.zeros((n,), device="cuda"); torch.cuda.synchronize()
        return "fits"
    except Exception as e:
        text = f"{type(e).__name__} {e}"
        if any(w in text for w in ("ResourceExhausted", "RESOURCE_EXHAUSTED", "OutOfMemory",
                                   "out of memory", "Out of memory")):
            return "refused"
        return f"error: {text.splitlines()[0][:200]}"
print(backend, take(256), take(2048))
"""


def memory_share_check(gpu: str, total_mib: int | None) -> dict:
    """A worker given a 1024 MiB share of `gpu`, as a packed worker is given its share."""
    if not total_mib:
        return {"problems": [f"nvidia-smi gave no memory total for GPU {gpu}"]}
    env = common.child_env(CUDA_VISIBLE_DEVICES=gpu, SWEEPER_GPU_MEMORY_MB=str(SHARE_MIB),
                           SWEEPER_GPU_MEMORY_FRACTION=f"{SHARE_MIB / total_mib:.6f}")
    result = subprocess.run([common.python(), "-c", MEMORY_PROBE], capture_output=True, text=True,
                            env=env, cwd=common.ROOT, timeout=300)
    words = (result.stdout.strip().splitlines() or ["?"])[-1].split(maxsplit=2)
    outcome = {"share_mib": SHARE_MIB, "backend": words[0], "256_mib": words[1:2],
               "2048_mib": words[2:3], "problems": []}
    if result.returncode != 0 or len(words) < 3:
        outcome["problems"].append(f"the memory probe failed: {result.stderr.strip()[-300:]}")
    elif words[1:] != ["fits", "refused"]:
        outcome["problems"].append(f"a worker given {SHARE_MIB} MiB of GPU {gpu}: 256 MiB "
                                   f"{words[1]}, 2048 MiB {words[2]} (want: fits, refused)")
    return outcome


def sample_utilisation(path: Path) -> subprocess.Popen:
    with open(path, "w") as out:  # the child keeps its own copy of the file descriptor
        return subprocess.Popen(
            ["nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used",
             "--format=csv,noheader,nounits", "-lms", "500"], stdout=out, stderr=subprocess.DEVNULL)


def summarise_utilisation(path: Path) -> dict:
    samples = defaultdict(list)
    for line in path.read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3 and parts[0].isdigit():
            try:  # '[N/A]' where the driver does not say (MIG instances: always)
                sample = (float(parts[1]), float(parts[2]))
            except ValueError:
                continue
            samples[parts[0]].append(sample)
    return {gpu: {"samples": len(v), "mean_util_pct": round(sum(u for u, _ in v) / len(v), 1),
                  "busy_share": round(sum(u > 0 for u, _ in v) / len(v), 3),
                  "max_memory_mib": max(m for _, m in v)} for gpu, v in samples.items()}


def check_trials(url: str, study: str, gpus: list[str], per_gpu: int, backend: str) -> dict:
    import optuna

    trials = [t for t in optuna.load_study(study_name=study, storage=url).trials
              if t.state.is_finished()]
    problems = []
    by_gpu = defaultdict(set)
    for t in trials:
        cvd = t.user_attrs.get("sweeper.cuda_visible_devices", "")
        devices = t.user_attrs.get("sweeper.devices", [])
        ran_on = (t.user_attrs.get("sweeper.backend") or "?").split()[0]
        if ran_on != backend:
            problems.append(f"trial {t.number}: its worker trained with {ran_on}, not {backend}")
        if cvd not in gpus:
            problems.append(f"trial {t.number}: CUDA_VISIBLE_DEVICES={cvd!r} is not one GPU of {gpus}")
        if len(devices) != 1:
            problems.append(f"trial {t.number}: its worker saw {devices!r}, not exactly one GPU")
        by_gpu[cvd].add(t.user_attrs.get("sweeper.worker"))
    for gpu in gpus:
        if not by_gpu.get(gpu):
            problems.append(f"GPU {gpu} ran no trial")
        elif len(by_gpu[gpu]) > per_gpu:
            problems.append(f"GPU {gpu} had workers {sorted(by_gpu[gpu])}, more than {per_gpu}")
    return {"trials": len(trials), "workers_by_gpu": {g: sorted(map(str, w)) for g, w in by_gpu.items()},
            "problems": problems}


def main(argv=None) -> int:
    from sweeper.errors import SweeperError
    from sweeper.gpus import discover_gpus, gpu_memory_mb
    from sweeper.keras_backend import require_backend
    from sweeper.space import load_space

    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="cnn_lr")
    parser.add_argument("--seconds-per-packing", type=float, default=100,
                        help="how long each packing starts trials (default 100)")
    args = parser.parse_args(argv)
    gpus = discover_gpus(None)  # CUDA_VISIBLE_DEVICES where set (a Slurm job), else nvidia-smi
    if not gpus:
        print("gpu-check: no NVIDIA GPU found (CUDA_VISIBLE_DEVICES and nvidia-smi list none); "
              "run it on a GPU machine", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        backend = require_backend(load_space(args.space))
    except SweeperError as e:
        print(f"gpu-check: error: {e}", file=sys.stderr)
        return 2
    work = common.workdir("gpu")
    report: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "gpus": gpus, "backend": backend,
                    "space": args.space, "seconds_per_packing": args.seconds_per_packing,
                    "runs": []}
    totals = gpu_memory_mb()
    # By index; a GPU named by UUID is given the smallest total, which is never too generous.
    total = totals.get(gpus[0]) or min(totals.values(), default=None)
    report["memory_share"] = memory_share_check(gpus[0], total)
    print(f"memory share ({backend}): {report['memory_share']}", flush=True)
    for per_gpu in PACKINGS:
        run = sweep_packing(args.space, gpus, per_gpu, args.seconds_per_packing, backend, work)
        report["runs"].append(run)
        print(f"{per_gpu} worker(s) per GPU: {run.get('trials', 0)} trials in {run['wall_s']:.0f}s "
              f"({run['trials_per_hour']} per hour); utilisation {run['utilisation']}; "
              f"problems: {run['problems'] or 'none'}", flush=True)
    measured = [r for r in report["runs"] if r["trials_per_hour"]]
    if measured:
        fastest = max(measured, key=lambda r: r["trials_per_hour"])
        report["fastest_workers_per_gpu"] = fastest["workers_per_gpu"]
        print(f"fastest: {fastest['workers_per_gpu']} worker(s) per GPU, "
              f"{fastest['trials_per_hour']} trials per hour (make sweep WORKERS_PER_GPU="
              f"{fastest['workers_per_gpu']})")
    report["wall_s"] = round(time.monotonic() - started, 1)
    problems = report["memory_share"]["problems"] + [p for r in report["runs"] for p in r["problems"]]
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"gpu-check-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"{'passed' if not problems else f'{len(problems)} problem(s)'} in "
          f"{report['wall_s'] / 60:.1f} minutes, backend {backend}; results: {path}")
    return 1 if problems else 0


def sweep_packing(space: str, gpus: list[str], per_gpu: int, seconds: float, backend: str,
                  work: Path) -> dict:
    """The real sweep with per_gpu workers on each GPU, starting trials for `seconds`."""
    url = f"sqlite:///{work / f'gpu-{per_gpu}.db'}"
    util_path = work / f"util-{per_gpu}.csv"
    sampler = sample_utilisation(util_path)
    cmd = [common.python(), "-m", "sweeper", "sweep", space, "--gpus", ",".join(gpus),
           "--workers-per-gpu", str(per_gpu), "--trials", "100000", "--timeout", f"{seconds:g}s",
           "--storage", url, "--study", "gpu", "--keep-models", "0"]
    env = common.child_env(SWEEPER_CACHE_DIR=str(work / "cache"),
                           SWEEPER_ARTIFACT_DIR=str(work / "artifacts"),
                           KERAS_BACKEND=os.environ.get("KERAS_BACKEND", backend))
    wall, results = common.run_processes([cmd], env=env, cwd=common.ROOT)
    sampler.terminate()
    sampler.wait()
    run = {"workers_per_gpu": per_gpu, "wall_s": round(wall, 1), "trials_per_hour": None,
           "exit_code": results[0].returncode, "output_tail": results[0].stdout[-2000:],
           "utilisation": summarise_utilisation(util_path)}
    if results[0].returncode == 0:
        run.update(check_trials(url, "gpu", gpus, per_gpu, backend))
        run["trials_per_hour"] = round(run["trials"] / wall * 3600, 1)
    else:
        run["problems"] = [f"sweep exited {results[0].returncode}"]
    return run


if __name__ == "__main__":
    sys.exit(main())
