"""`make gpu-check`: on a machine with NVIDIA GPUs, check pinning and measure GPU utilisation.

Runs a short sweep with one worker per GPU, then two, then four (packed workers each get their
share of the GPU's memory), while nvidia-smi samples utilisation every 0.5 s. Checks that every
trial ran with CUDA_VISIBLE_DEVICES naming exactly one GPU and that its worker's Keras backend saw
exactly one GPU; that every GPU got trials; records utilisation per GPU; and measures trials per
hour at each packing, saying which was fastest. Writes benchmarks/results/gpu-check-<time>.json;
exit 1 if a check fails, 2 if there is no GPU. Works with KERAS_BACKEND=jax (or torch) where
TensorFlow is absent.

    python -m benchmarks.gpu_check [--space cnn_lr] [--trials-per-gpu 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from benchmarks import common

RESULTS = Path(__file__).resolve().parent / "results"
PACKINGS = (1, 2, 4)  # workers per GPU


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
            try:
                samples[parts[0]].append((float(parts[1]), float(parts[2])))
            except ValueError:
                continue
    return {gpu: {"samples": len(v), "mean_util_pct": round(sum(u for u, _ in v) / len(v), 1),
                  "busy_share": round(sum(u > 0 for u, _ in v) / len(v), 3),
                  "max_memory_mib": max(m for _, m in v)} for gpu, v in samples.items()}


def check_trials(url: str, study: str, gpus: list[str], per_gpu: int) -> dict:
    import optuna

    trials = optuna.load_study(study_name=study, storage=url).trials
    problems = []
    by_gpu = defaultdict(set)
    for t in trials:
        cvd = t.user_attrs.get("sweeper.cuda_visible_devices", "")
        devices = t.user_attrs.get("sweeper.devices", [])
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
    from sweeper.gpus import query_nvidia_smi

    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="cnn_lr")
    parser.add_argument("--trials-per-gpu", type=int, default=4)
    args = parser.parse_args(argv)
    gpus = query_nvidia_smi()
    if not gpus:
        print("gpu-check: no NVIDIA GPU found (nvidia-smi lists none); run it on a GPU machine",
              file=sys.stderr)
        return 2
    work = common.workdir("gpu")
    report = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "gpus": gpus, "runs": []}
    for per_gpu in PACKINGS:
        url = f"sqlite:///{work / f'gpu-{per_gpu}.db'}"
        util_path = work / f"util-{per_gpu}.csv"
        sampler = sample_utilisation(util_path)
        cmd = [common.python(), "-m", "sweeper", "sweep", args.space, "--gpus", ",".join(gpus),
               "--workers-per-gpu", str(per_gpu), "--trials",
               str(args.trials_per_gpu * len(gpus) * per_gpu), "--storage", url, "--study", "gpu"]
        env = common.child_env(SWEEPER_CACHE_DIR=str(work / "cache"),
                               SWEEPER_ARTIFACT_DIR=str(work / "artifacts"))
        wall, results = common.run_processes([cmd], env=env, cwd=common.ROOT)
        sampler.terminate()
        sampler.wait()
        run = {"workers_per_gpu": per_gpu, "wall_s": round(wall, 1),
               "trials_per_hour": None,
               "exit_code": results[0].returncode, "output_tail": results[0].stdout[-2000:],
               "utilisation": summarise_utilisation(util_path)}
        if results[0].returncode == 0:
            run.update(check_trials(url, "gpu", gpus, per_gpu))
            run["trials_per_hour"] = round(run["trials"] / wall * 3600, 1)
        else:
            run["problems"] = [f"sweep exited {results[0].returncode}"]
        report["runs"].append(run)
        print(f"{per_gpu} worker(s) per GPU: {run.get('trials', 0)} trials in {wall:.0f}s "
              f"({run['trials_per_hour']} per hour); utilisation {run['utilisation']}; "
              f"problems: {run['problems'] or 'none'}", flush=True)
    measured = [r for r in report["runs"] if r["trials_per_hour"]]
    if measured:
        fastest = max(measured, key=lambda r: r["trials_per_hour"])
        report["fastest_workers_per_gpu"] = fastest["workers_per_gpu"]
        print(f"fastest: {fastest['workers_per_gpu']} worker(s) per GPU, "
              f"{fastest['trials_per_hour']} trials per hour (make sweep WORKERS_PER_GPU="
              f"{fastest['workers_per_gpu']})")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"gpu-check-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"results: {path}")
    return 1 if any(r["problems"] for r in report["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
