"""Command line: sweep, worker, check, dashboard, status (ls), report, best, retrain.

Imports stay light here (no TensorFlow, no Optuna at import time) so `--help` is instant.
A user error prints one line and exits 2; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import math
import re
import sys

from sweeper.errors import SweeperError

EPILOG_SWEEP = """examples:
  sweeper sweep cnn_lr                         # defaults: 40 trials, every GPU (or CPU workers)
  sweeper sweep cnn_lr --trials 12 --timeout 8h --gpus 0,1 --workers-per-gpu 2
  sweeper sweep mlp_breast_cancer --workers 2 --storage postgresql+psycopg://me@db/sweeps
Rerunning the same command resumes the study until the trial budget is reached.
One sweep per study at a time: a second is refused while the first runs; on another machine
sharing a PostgreSQL/MySQL store, add --join to add its workers to the running sweep."""

EPILOG_WORKER = """example (on each machine, same store and study; GPUs from CUDA_VISIBLE_DEVICES):
  SWEEPER_STORAGE=postgresql+psycopg://me@db/sweeps sweeper worker --study cnn_lr"""

EPILOG_CHECK = """example:
  sweeper check cnn_lr        # validates search_spaces/cnn_lr.yaml, writes nothing"""


# Counts past this are typos; they would also overflow timers and C ints further on.
MAX_COUNT = 10**9


class _Parser(argparse.ArgumentParser):
    """A bad argument is one line and exit code 2, like every other user error (no usage block)."""

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        command = getattr(parsed, "command", None)
        prog = f"{self.prog} {command}" if command else self.prog
        if extras:  # found at the top level: point at the help of the command they came with
            self._exit_with(f"unrecognized arguments: {' '.join(extras)}", prog)
        for dest, value in vars(parsed).items():
            # No option takes a list, but argparse (3.11) reads `--trials=--` as [].
            if isinstance(value, list):
                self._exit_with(f"argument --{dest.replace('_', '-')}: expected one argument",
                                prog)
        return parsed

    def error(self, message: str):
        self._exit_with(message, self.prog)

    def _exit_with(self, message: str, prog: str):
        self.exit(2, f"sweeper: error: {_one_line(message)} (see '{prog} --help')\n")


def _one_line(text: str) -> str:
    """Escapes line breaks and other control characters a user's argument may bring."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _shown(text) -> str:
    """A user's value in a message: quoted, escaped and cut short."""
    text = repr(text)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_duration(text: str) -> float:
    """'8h', '30m', '1h30m', '90s', '2d' or plain seconds -> seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([dhms])", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise argparse.ArgumentTypeError(
                f"{_shown(text)} is not a duration; write e.g. 8h, 30m, 1h30m")
        factor = {"d": 86400, "h": 3600, "m": 60, "s": 1}
        seconds = sum(float(n) * factor[u] for n, u in parts)
    if not math.isfinite(seconds):  # a few hundred digits read as infinity
        raise argparse.ArgumentTypeError(f"{_shown(text)}: a duration must be finite")
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{_shown(text)}: a duration must be positive")
    return seconds


def int_between(low: int, high: int):
    """A validator of whole numbers from low to high."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # also more than 4300 digits
            raise argparse.ArgumentTypeError(f"{_shown(text)} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{_shown(value)} must be at least {low}")
        if value > high:
            raise argparse.ArgumentTypeError(f"{_shown(value)} must be at most {high}")
        return value

    return check


positive_int = int_between(1, MAX_COUNT)
non_negative_int = int_between(0, MAX_COUNT)


def unix_time(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a unix time") from None
    if not math.isfinite(value) or value < 0:  # nan would never pass, inf never come
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a unix time")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sweeper",
        description="Hyperparameter sweeps of Keras models on every GPU, in an Optuna study store.",
        epilog="example:\n  sweeper sweep cnn_lr --trials 12\nrun 'sweeper COMMAND --help' for more",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    sweep = commands.add_parser("sweep", help="run (or resume) a sweep over a search space",
                                epilog=EPILOG_SWEEP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep.add_argument("space", help="a space name in search_spaces/ (e.g. cnn_lr) or a YAML path")
    sweep.add_argument("--trials", type=positive_int, default=40,
                       help="finished trials to reach, counted across runs and workers (default 40)")
    sweep.add_argument("--timeout", type=parse_duration, default=None,
                       help="stop starting trials after this long, e.g. 8h or 45m")
    sweep.add_argument("--gpus", default=None,
                       help="GPU indices to use, e.g. 0,1 (default: CUDA_VISIBLE_DEVICES, else "
                            "nvidia-smi; '' for none)")
    sweep.add_argument("--workers-per-gpu", type=int_between(1, 64), default=1,
                       help="worker processes per GPU (default 1)")
    sweep.add_argument("--workers", type=int_between(1, 1024), default=None,
                       help="CPU workers when there is no GPU (default: cores, at most 8)")
    _storage_args(sweep)
    sweep.add_argument("--study", default=None, help="study name (default: the space name)")
    sweep.add_argument("--new-study", action="store_true",
                       help="start a fresh study (NAME-2, NAME-3...) instead of resuming")
    sweep.add_argument("--join", action="store_true",
                       help="add this machine's workers to a study another sweep is running "
                            "(its budget stays); without it a second sweep of a study is refused")
    sweep.add_argument("--recycle-after", type=positive_int, default=25,
                       help="replace a worker by a fresh process after this many trials (default 25)")
    sweep.add_argument("--keep-models", type=non_negative_int, default=3,
                       help="keep the trained model file of the best K trials only (default 3)")
    sweep.add_argument("--max-worker-memory-mb", type=positive_int, default=8192,
                       help="replace a worker whose memory grows past this (default 8192)")

    worker = commands.add_parser("worker", help="run trials of an existing study (any machine)",
                                 epilog=EPILOG_WORKER,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    worker.add_argument("--study", required=True, help="study name")
    _storage_args(worker, space_default=False)
    worker.add_argument("--worker-id", default=None, help="a name for this worker in the store")
    worker.add_argument("--trials", type=positive_int, default=None,
                        help="budget (default: the one stored by 'sweeper sweep')")
    worker.add_argument("--deadline", type=unix_time, default=None,
                        help="unix time after which no trial is started")
    worker.add_argument("--recycle-after", type=positive_int, default=25,
                        help="exit (code 3) after this many trials so a fresh process takes over")
    worker.add_argument("--max-memory-mb", type=positive_int, default=None,
                        help="exit (code 3) once resident memory passes this")
    worker.add_argument("--threads", type=int_between(1, 1024), default=None,
                        help="CPU threads for TensorFlow (default: all)")

    dashboard = commands.add_parser(
        "dashboard", help="open optuna-dashboard on a study store (with trial artifacts)",
        epilog="examples:\n  sweeper dashboard cnn_lr                  # storage/cnn_lr.db on "
               "127.0.0.1:8080\n  sweeper dashboard --storage postgresql+psycopg://me@db/sweeps "
               "--port 9000",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _read_args(dashboard, study=False)
    dashboard.add_argument("--host", default="127.0.0.1",
                           help="address to listen on (default 127.0.0.1: this machine only)")
    dashboard.add_argument("--port", type=int_between(1, 65535), default=8080,
                           help="default 8080")

    for name, about in (("status", "studies in a store, their counts and running trials"),
                        ("ls", "the same as status")):
        status = commands.add_parser(name, help=about,
                                     epilog="example:\n  sweeper status cnn_lr",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
        _read_args(status, study=False)

    report = commands.add_parser(
        "report", help="top trials, pruning savings, importances; HTML and PNG plots",
        epilog="example:\n  sweeper report cnn_lr --top 5     # also writes storage/reports/cnn_lr/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _read_args(report)
    report.add_argument("--top", type=positive_int, default=10, help="trials in the table (10)")
    report.add_argument("--out", default=None, help="folder (default storage/reports/STUDY)")

    best = commands.add_parser("best", help="the best trial; --export writes it as YAML",
                               epilog="example:\n  sweeper best cnn_lr --export best.yaml",
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    _read_args(best)
    best.add_argument("--export", default=None, help="write the best params to this YAML file")

    retrain = commands.add_parser(
        "retrain", help="train the best configuration on train+validation, test it, save it",
        epilog="example:\n  sweeper retrain cnn_lr                 # storage/models/cnn_lr/"
               "best_trial_N.keras + metrics.json\n  sweeper retrain cnn_lr --params best.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _read_args(retrain)
    retrain.add_argument("--params", default=None, help="a YAML from 'sweeper best --export'")
    retrain.add_argument("--out", default=None, help="folder (default storage/models/STUDY)")

    slurm = commands.add_parser(
        "slurm", help="write (and --submit) a Slurm job array of workers on a shared store",
        epilog="example:\n  export SWEEPER_STORAGE=postgresql+psycopg://me@db/sweeps\n"
               "  sweeper slurm cnn_lr --nodes 4 --gpus-per-node 8 --time 10:00:00 --submit",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    slurm.add_argument("space", help="a space name in search_spaces/ or a YAML path")
    slurm.add_argument("--nodes", type=positive_int, default=1, help="array tasks, one per node")
    slurm.add_argument("--gpus-per-node", type=positive_int, default=1,
                       help="GPUs per task (one worker each)")
    slurm.add_argument("--workers-per-gpu", type=int_between(1, 64), default=1)
    slurm.add_argument("--time", default="10:00:00", help="Slurm time limit (default 10:00:00)")
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--trials", type=positive_int, default=40,
                       help="the study's budget of finished trials (default 40)")
    _storage_args(slurm)
    slurm.add_argument("--study", default=None, help="study name (default: the space name)")
    slurm.add_argument("--submit", action="store_true", help="call sbatch and print the job id")

    check = commands.add_parser("check", help="validate a search space; writes nothing",
                                epilog=EPILOG_CHECK,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("space", help="a space name in search_spaces/ or a YAML path")
    return parser


def _storage_args(parser, space_default: bool = True) -> None:
    parser.add_argument("--storage", default=None,
                        help="SQLAlchemy URL of the study store (default: $SWEEPER_STORAGE, else "
                             + ("storage/SPACE.db)" if space_default else "required)"))
    parser.add_argument("--heartbeat", type=positive_int, default=20,
                        help="seconds between worker heartbeats; a trial silent for 3 is failed "
                             "and retried (default 20)")


def _read_args(parser, study: bool = True) -> None:
    parser.add_argument("space", nargs="?" if not study else None,
                        help="the space name (its store is storage/SPACE.db unless --storage)")
    parser.add_argument("--storage", default=None,
                        help="SQLAlchemy URL of the study store (default: $SWEEPER_STORAGE, else "
                             "storage/SPACE.db)")
    if study:
        parser.add_argument("--study", default=None, help="study name (default: the space name)")


def _read_url(args) -> str:
    import os

    from sweeper.storage import STORAGE_ENV, resolve_storage_url

    if not args.space and not args.storage and not os.environ.get(STORAGE_ENV):
        raise SweeperError(f"which store? give a SPACE, --storage URL or set {STORAGE_ENV}")
    return resolve_storage_url(args.storage, args.space)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if argv is None and any("://" in arg for arg in sys.argv):
        from sweeper.process_title import hide_passwords

        hide_passwords(sys.argv)
    try:
        return COMMANDS[args.command](args)
    except SweeperError as e:
        print(f"sweeper: error: {e}", file=sys.stderr)
        return e.exit_code


def cmd_sweep(args) -> int:
    from sweeper.controller import Controller, SweepOptions
    from sweeper.gpus import discover_gpus, make_slots
    from sweeper.space import load_space
    from sweeper.storage import resolve_storage_url

    space = load_space(args.space)  # validated before anything is written
    url = resolve_storage_url(args.storage, space.name)
    slots = make_slots(discover_gpus(args.gpus), args.workers_per_gpu, args.workers)
    # Bad data is a user error like a bad space: found here, before the study is written, and
    # prepared once into the cache that every worker then reads.
    from sweeper.pipeline.data import load_dataset

    load_dataset(space.config["dataset"], space.config["preprocess"])
    options = SweepOptions(trials=args.trials, timeout_s=args.timeout, heartbeat_s=args.heartbeat,
                           recycle_after=args.recycle_after,
                           max_worker_memory_mb=args.max_worker_memory_mb,
                           keep_models=args.keep_models,
                           new_study=args.new_study, join=args.join)
    return Controller(space, url, args.study or space.name, slots, options).run()


def cmd_worker(args) -> int:
    import os

    from sweeper.errors import StorageError
    from sweeper.storage import STORAGE_ENV
    from sweeper.worker import run_worker

    url = args.storage or os.environ.get(STORAGE_ENV)
    if not url:
        raise StorageError(f"no study store given; pass --storage URL or set {STORAGE_ENV}")
    from sweeper.storage import resolve_storage_url

    return run_worker(resolve_storage_url(url, args.study), args.study,
                      worker_id=args.worker_id, budget=args.trials, deadline=args.deadline,
                      recycle_after=args.recycle_after, max_memory_mb=args.max_memory_mb,
                      heartbeat_s=args.heartbeat, threads=args.threads)


def cmd_check(args) -> int:
    from sweeper.space import load_space

    space = load_space(args.space)
    print(f"{space.source}: ok ({len(space.params)} params: "
          f"{', '.join(p.name for p in space.params)}; fingerprint {space.fingerprint})")
    return 0


def cmd_dashboard(args) -> int:
    import ipaddress

    from sweeper.artifacts import artifact_store
    from sweeper.report import open_existing
    from sweeper.storage import mask_url

    url = _read_url(args)
    storage = open_existing(url)
    if not storage.get_all_studies():
        from sweeper.errors import StorageError

        raise StorageError(f"no studies in {mask_url(url)}; run a sweep first")
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        print(f"warning: listening on {args.host}: anyone who can reach this machine can read "
              "and edit the studies", file=sys.stderr)
    print(f"optuna-dashboard for {mask_url(url)}: http://{args.host}:{args.port}/dashboard/ "
          "(Ctrl-C to stop)", flush=True)
    import optuna_dashboard

    optuna_dashboard.run_server(storage, host=args.host, port=args.port,
                                artifact_store=artifact_store())
    return 0


def cmd_status(args) -> int:
    from sweeper.report import status_text

    print(status_text(_read_url(args)))
    return 0


def cmd_report(args) -> int:
    from pathlib import Path

    from sweeper.report import report

    text, _ = report(_read_url(args), args.study or args.space, args.top,
                     Path(args.out) if args.out else None)
    print(text)
    return 0


def cmd_best(args) -> int:
    from pathlib import Path

    import yaml

    from sweeper.report import best_params

    best = best_params(_read_url(args), args.study or args.space)
    print(f"best trial {best['trial']}: validation F1 {best['validation_f1']:.4f}"
          + (f", test F1 {best['test_f1']:.4f}" if best["test_f1"] is not None else ""))
    for key, value in best["params"].items():
        print(f"  {key}: {value}")
    if args.export:
        Path(args.export).write_text(yaml.safe_dump(best, sort_keys=False))
        print(f"wrote {args.export}")
    return 0


def cmd_retrain(args) -> int:
    from pathlib import Path

    from sweeper.report import retrain

    result = retrain(_read_url(args), args.study or args.space,
                     Path(args.params) if args.params else None,
                     Path(args.out) if args.out else None)
    test = result["test"]
    print(f"trial {result['trial']} retrained on {result['train_rows']} rows for "
          f"{result['epochs']} epochs (seed {result['seed']}): test F1 {test['f1']:.4f}, "
          f"accuracy {test['accuracy']:.4f}")
    print(f"model: {result['model']}\nmetrics: {Path(result['model']).parent / 'metrics.json'}")
    return 0


def cmd_slurm(args) -> int:
    from sweeper.controller import prepare_study
    from sweeper.errors import StorageError
    from sweeper.slurm import SlurmJob, check_time_limit, submit, write_script
    from sweeper.space import load_space
    from sweeper.storage import mask_url, resolve_storage_url, sqlite_path

    space = load_space(args.space)
    url = resolve_storage_url(args.storage, space.name)
    check_time_limit(args.time)
    if sqlite_path(url) is not None:
        if args.nodes > 1:  # before anything is written
            raise StorageError(
                f"--nodes {args.nodes} with the SQLite store {mask_url(url)}: SQLite on a file "
                "system shared by several nodes corrupts (optuna#815); use a PostgreSQL or MySQL "
                "store (--storage or SWEEPER_STORAGE), or --nodes 1")
        print("warning: a SQLite store serves one machine; for several nodes use PostgreSQL or "
              "MySQL (--storage or SWEEPER_STORAGE)", file=sys.stderr)
    _, study = prepare_study(space, url, args.study or space.name, args.trials)
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


COMMANDS = {"slurm": cmd_slurm, "sweep": cmd_sweep, "worker": cmd_worker, "check": cmd_check,
            "dashboard": cmd_dashboard, "status": cmd_status, "ls": cmd_status,
            "report": cmd_report, "best": cmd_best, "retrain": cmd_retrain}
