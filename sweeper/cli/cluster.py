"""`slurm`: write (and submit) a Slurm job array whose tasks sweep one study on a shared store."""

from __future__ import annotations

import sys

from sweeper import defaults
from sweeper.cli.args import (
    add_heartbeat,
    add_space,
    add_storage,
    add_study,
    add_trials,
    command,
    int_between,
    positive_int,
)


def register(commands) -> None:
    slurm = command(commands, "slurm",
                    "write (and --submit) a Slurm job array of workers on a shared store",
                    "example:\n  export SWEEPER_STORAGE=postgresql+psycopg://me@db/sweeps\n"
                    "  sweeper slurm cnn_lr --nodes 4 --gpus-per-node 8 --time 10:00:00 --submit")
    add_space(slurm)
    slurm.add_argument("--nodes", type=positive_int, default=1, help="array tasks, one per node")
    slurm.add_argument("--gpus-per-node", type=positive_int, default=1,
                       help="GPUs per task (one worker each)")
    slurm.add_argument("--workers-per-gpu", type=int_between(1, 64),
                       default=defaults.WORKERS_PER_GPU)
    slurm.add_argument("--time", default=defaults.SLURM_TIME,
                       help=f"Slurm time limit (default {defaults.SLURM_TIME})")
    slurm.add_argument("--partition", default=None)
    add_trials(slurm, "the study's budget of finished trials")
    add_storage(slurm)
    add_heartbeat(slurm)
    add_study(slurm)
    slurm.add_argument("--warm-start", nargs="?", const="", default=None, metavar="STUDY",
                       help="the space changed: the tasks sweep a new study seeded with the "
                            "trials of STUDY (default: the study this space last ran as) that fit")
    slurm.add_argument("--submit", action="store_true", help="call sbatch and print the job id")
    slurm.set_defaults(handler=run_slurm)


def run_slurm(args) -> int:
    from sweeper.space import load_space
    from sweeper.storage.url import mask_url, resolve_storage_url
    from sweeper.sweep.slurm import SlurmJob, check_time_limit, submit, write_script
    from sweeper.sweep.studies import prepare_study
    from sweeper.sweep.warm_start import choose_study, seed_study

    space = load_space(args.space)
    url = resolve_storage_url(args.storage, space.name)
    check_time_limit(args.time)
    _check_store_fits(url, args.nodes)  # before anything is written
    name, parent = args.study or space.name, None
    if args.warm_start is not None:
        name, parent = choose_study(url, space, name, args.warm_start or None, print)
    _, study = prepare_study(space, url, name, args.trials)
    seed_study(study, url, space, args.trials, parent, print)
    job = SlurmJob(space=args.space, study=study.study_name, storage_url=url, nodes=args.nodes,
                   gpus_per_node=args.gpus_per_node, time_limit=args.time, trials=args.trials,
                   partition=args.partition, workers_per_gpu=args.workers_per_gpu,
                   heartbeat_s=args.heartbeat)
    script = write_script(job)
    print(f"wrote {script} ({args.nodes} task(s) x {args.gpus_per_node} GPU(s), study "
          f"'{study.study_name}' in {mask_url(url)})")
    if args.submit:
        job_id = submit(script, url)
        print(f"submitted job {job_id}\nwatch it:  squeue -j {job_id}   and   sweeper status "
              f"{space.name}" + ("" if args.storage is None else " --storage URL")
              + f"\nlogs:      {script.parent}/{job_id}_*.log\n"
              "resume it: run the same command again (same study, same budget)")
    else:
        print(f"submit it: SWEEPER_STORAGE=... sbatch {script}")
    return 0


def _check_store_fits(url: str, nodes: int) -> None:
    """SQLite serves one machine: on a file system shared by several nodes it corrupts."""
    from sweeper.errors import StorageError
    from sweeper.storage.url import mask_url, sqlite_path

    if sqlite_path(url) is None:
        return
    if nodes > 1:
        raise StorageError(
            f"--nodes {nodes} with the SQLite store {mask_url(url)}: SQLite on a file system "
            "shared by several nodes corrupts (optuna#815); use a PostgreSQL or MySQL store "
            "(--storage or SWEEPER_STORAGE), or --nodes 1")
    print("warning: a SQLite store serves one machine; for several nodes use PostgreSQL or "
          "MySQL (--storage or SWEEPER_STORAGE)", file=sys.stderr)
