"""Commands that run trials: `sweep` (a controller and its workers), `worker` (one more worker,
on any machine) and `check` (validate a space, write nothing)."""

from __future__ import annotations

import os

from sweeper import defaults
from sweeper.cli.args import (
    add_heartbeat,
    add_space,
    add_storage,
    add_study,
    add_trials,
    command,
    int_between,
    non_negative_int,
    positive_int,
    unix_time,
)

SWEEP_EXAMPLES = f"""examples:
  sweeper sweep cnn_lr                    # defaults: {defaults.TRIALS} trials, every GPU (or CPU workers)
  sweeper sweep cnn_lr --trials 12 --timeout 8h --gpus 0,1 --workers-per-gpu 2
  sweeper sweep mlp_breast_cancer --workers 2 --storage postgresql+psycopg://me@db/sweeps
Rerunning the same command resumes the study until the trial budget is reached.
Changed the space since? --warm-start starts a new study seeded with the old one's trials that fit:
  sweeper sweep cnn_lr --warm-start        # from the study cnn_lr last ran as; or --warm-start NAME
One sweep per study at a time: a second is refused while the first runs; on another machine
sharing a PostgreSQL/MySQL store, add --join to add its workers to the running sweep."""

WORKER_EXAMPLE = """example (on each machine, same store and study; GPUs from CUDA_VISIBLE_DEVICES):
  SWEEPER_STORAGE=postgresql+psycopg://me@db/sweeps sweeper worker --study cnn_lr"""

CHECK_EXAMPLE = """example:
  sweeper check cnn_lr        # validates search_spaces/cnn_lr.yaml, writes nothing"""


def register(commands) -> None:
    _sweep_command(commands)
    _worker_command(commands)
    check = command(commands, "check", "validate a search space; writes nothing", CHECK_EXAMPLE)
    add_space(check)
    check.set_defaults(handler=run_check)
    gpus = command(commands, "gpus", "this machine's GPUs: the sweeps that lease each slot, "
                   "other programs' processes, memory and utilisation",
                   "example:\n  sweeper gpus")
    gpus.set_defaults(handler=run_gpus)


def _sweep_command(commands) -> None:
    from sweeper.cli.args import parse_duration

    sweep = command(commands, "sweep", "run (or resume) a sweep over a search space",
                    SWEEP_EXAMPLES)
    add_space(sweep)
    add_trials(sweep, "finished trials to reach, counted across runs and workers")
    sweep.add_argument("--timeout", type=parse_duration, default=None,
                       help="stop starting trials after this long, e.g. 8h or 45m")
    sweep.add_argument("--gpus", default=None,
                       help="GPU indices to use, e.g. 0,1 (default: CUDA_VISIBLE_DEVICES, else "
                            "nvidia-smi; '' for none)")
    sweep.add_argument("--workers-per-gpu", type=int_between(1, 64),
                       default=defaults.WORKERS_PER_GPU,
                       help=f"worker processes per GPU (default {defaults.WORKERS_PER_GPU})")
    sweep.add_argument("--workers", type=int_between(1, 1024), default=None,
                       help="CPU workers when there is no GPU (default: cores, at most "
                            f"{defaults.MAX_CPU_WORKERS})")
    add_storage(sweep)
    add_heartbeat(sweep)
    add_study(sweep)
    sweep.add_argument("--new-study", action="store_true",
                       help="start a fresh study (NAME-2, NAME-3...) instead of resuming")
    sweep.add_argument("--warm-start", nargs="?", const="", default=None, metavar="STUDY",
                       help="the space changed: start a new study (as --new-study) seeded with "
                            "the trials of STUDY (default: the study this space last ran as) "
                            "that fit the new space")
    sweep.add_argument("--no-wait", action="store_true",
                       help="refuse, instead of waiting, when other sweeps hold every GPU slot")
    sweep.add_argument("--join", action="store_true",
                       help="add this machine's workers to a study another sweep is running "
                            "(its budget stays); without it a second sweep of a study is refused")
    sweep.add_argument("--recycle-after", type=positive_int, default=defaults.RECYCLE_AFTER,
                       help="replace a worker by a fresh process after this many trials "
                            f"(default {defaults.RECYCLE_AFTER})")
    sweep.add_argument("--keep-models", type=non_negative_int, default=defaults.KEEP_MODELS,
                       help="keep the trained model file of the best K trials only "
                            f"(default {defaults.KEEP_MODELS})")
    sweep.add_argument("--max-worker-memory-mb", type=positive_int,
                       default=defaults.MAX_WORKER_MEMORY_MB,
                       help="replace a worker whose memory grows past this "
                            f"(default {defaults.MAX_WORKER_MEMORY_MB})")
    sweep.set_defaults(handler=run_sweep)


def _worker_command(commands) -> None:
    worker = command(commands, "worker", "run trials of an existing study (any machine)",
                     WORKER_EXAMPLE)
    worker.add_argument("--study", required=True, help="study name")
    add_storage(worker, required_without_env=True)
    add_heartbeat(worker)
    worker.add_argument("--worker-id", default=None, help="a name for this worker in the store")
    worker.add_argument("--trials", type=positive_int, default=None,
                        help="budget (default: the one stored by 'sweeper sweep')")
    worker.add_argument("--deadline", type=unix_time, default=None,
                        help="unix time after which no trial is started")
    worker.add_argument("--recycle-after", type=positive_int, default=defaults.RECYCLE_AFTER,
                        help="exit (code 3) after this many trials so a fresh process takes over")
    worker.add_argument("--max-memory-mb", type=positive_int, default=None,
                        help="exit (code 3) once resident memory passes this")
    worker.add_argument("--threads", type=int_between(1, 1024), default=None,
                        help="CPU threads for TensorFlow (default: all)")
    worker.set_defaults(handler=run_worker)


def run_sweep(args) -> int:
    from sweeper.errors import SweeperError
    from sweeper.gpus import discover_gpus, gpu_memory_mb, make_slots
    from sweeper.keras_backend import require_backend
    from sweeper.space import load_space
    from sweeper.storage.url import resolve_storage_url
    from sweeper.sweep.controller import Controller, SweepOptions

    space = load_space(args.space)  # validated before anything is written
    require_backend(space)  # the workers can train it here
    if args.join and args.warm_start is not None:
        raise SweeperError("--warm-start seeds a new study, and --join adds workers to a running "
                           "one; warm-start first, then --join that study")
    url = resolve_storage_url(args.storage, space.name)
    gpus = discover_gpus(args.gpus)
    packed = bool(gpus) and args.workers_per_gpu > 1  # each worker gets its share of memory
    slots = make_slots(gpus, args.workers_per_gpu, args.workers,
                       memory_mb=gpu_memory_mb() if packed else None)
    # Bad data is a user error like a bad space: found here, before the study is written, and
    # prepared once into the cache that every worker then reads.
    from sweeper.pipeline.data import load_dataset

    load_dataset(space.config["dataset"], space.config["preprocess"])
    from sweeper.sweep.gpu_share import share_gpus

    # GPUs named by the user (or by Slurm, through CUDA_VISIBLE_DEVICES) are used even where
    # another program computes; a lease another sweep holds is never doubled.
    named = args.gpus is not None or "CUDA_VISIBLE_DEVICES" in os.environ
    slots = share_gpus(slots, named, args.no_wait, lambda line: print(line, flush=True))
    options = SweepOptions(trials=args.trials, timeout_s=args.timeout, heartbeat_s=args.heartbeat,
                           recycle_after=args.recycle_after,
                           max_worker_memory_mb=args.max_worker_memory_mb,
                           keep_models=args.keep_models,
                           new_study=args.new_study, join=args.join,
                           warm_start=args.warm_start)
    return Controller(space, url, args.study or space.name, slots, options).run()


def run_worker(args) -> int:
    from sweeper.errors import StorageError
    from sweeper.storage.url import STORAGE_ENV, resolve_storage_url
    from sweeper.worker.loop import run_worker as work

    url = args.storage or os.environ.get(STORAGE_ENV)
    if not url:
        raise StorageError(f"no study store given; pass --storage URL or set {STORAGE_ENV}")
    return work(resolve_storage_url(url, args.study), args.study,
                worker_id=args.worker_id, budget=args.trials, deadline=args.deadline,
                recycle_after=args.recycle_after, max_memory_mb=args.max_memory_mb,
                heartbeat_s=args.heartbeat, threads=args.threads)


def run_check(args) -> int:
    from sweeper.keras_backend import require_backend
    from sweeper.space import load_space

    space = load_space(args.space)
    backend = require_backend(space)
    print(f"{space.source}: ok ({len(space.params)} params: "
          f"{', '.join(p.name for p in space.params)}; fingerprint {space.fingerprint}; "
          f"Keras backend {backend})")
    return 0


def run_gpus(args) -> int:
    from sweeper.sweep.gpu_share import describe_gpus

    print("\n".join(describe_gpus()))
    return 0
