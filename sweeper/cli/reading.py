"""Commands that read a store, during a sweep or the morning after: `dashboard`, `status` (`ls`),
`report`, `best` and `retrain`. None of them creates or changes a store."""

from __future__ import annotations

import os
import sys

from sweeper import defaults
from sweeper.cli.args import add_storage, add_study, command, int_between, positive_int
from sweeper.errors import SweeperError


def register(commands) -> None:
    dashboard = command(
        commands, "dashboard", "open optuna-dashboard on a study store (with trial artifacts)",
        "examples:\n  sweeper dashboard cnn_lr                  # storage/cnn_lr.db on "
        f"{defaults.DASHBOARD_HOST}:{defaults.DASHBOARD_PORT}\n"
        "  sweeper dashboard --storage postgresql+psycopg://me@db/sweeps --port 9000")
    _read_args(dashboard, study=False)
    dashboard.add_argument("--host", default=defaults.DASHBOARD_HOST,
                           help=f"address to listen on (default {defaults.DASHBOARD_HOST}: this "
                                "machine only)")
    dashboard.add_argument("--port", type=int_between(1, 65535), default=defaults.DASHBOARD_PORT,
                           help=f"default {defaults.DASHBOARD_PORT}")
    dashboard.set_defaults(handler=run_dashboard)

    for name, about in (("status", "studies in a store, their counts and running trials"),
                        ("ls", "the same as status")):
        status = command(commands, name, about, "example:\n  sweeper status cnn_lr")
        _read_args(status, study=False)
        status.set_defaults(handler=run_status)

    report = command(commands, "report",
                     "top trials, pruning savings, importances; HTML and PNG plots",
                     "example:\n  sweeper report cnn_lr --top 5     # also writes "
                     "storage/reports/cnn_lr/")
    _read_args(report)
    report.add_argument("--top", type=positive_int, default=defaults.REPORT_TOP,
                        help=f"trials in the table ({defaults.REPORT_TOP})")
    report.add_argument("--out", default=None, help="folder (default storage/reports/STUDY)")
    report.set_defaults(handler=run_report)

    best = command(commands, "best", "the best trial, or the point --pick chooses; --export "
                   "writes it as YAML",
                   "examples:\n  sweeper best cnn_lr --export best.yaml\n"
                   "  sweeper best cnn_compress --pick \"max f1 where size_kb <= 8\" "
                   "--export point.yaml")
    _read_args(best)
    best.add_argument("--export", default=None, help="write the best params to this YAML file")
    best.add_argument("--pick", default=None,
                      help="choose a trial: 'max|min METRIC [where METRIC <= N [and ...]]'; "
                           "metrics: f1, size_kb, file_kb, latency_ms, params")
    best.set_defaults(handler=run_best)

    retrain = command(
        commands, "retrain", "train the best configuration on train+validation, test it, save it",
        "example:\n  sweeper retrain cnn_lr                 # storage/models/cnn_lr/"
        "best_trial_N.keras + metrics.json\n  sweeper retrain cnn_lr --params best.yaml")
    _read_args(retrain)
    retrain.add_argument("--params", default=None, help="a YAML from 'sweeper best --export'")
    retrain.add_argument("--as-trial", action="store_true",
                         help="train on the training split as the trial did (its seed, epochs "
                              "and schedule), to check its stored figures; default: train on "
                              "train+validation for deployment")
    retrain.add_argument("--out", default=None, help="folder (default storage/models/STUDY)")
    retrain.set_defaults(handler=run_retrain)


def _read_args(parser, study: bool = True) -> None:
    parser.add_argument("space", nargs=None if study else "?",
                        help="the space name (its store is storage/SPACE.db unless --storage)")
    add_storage(parser)
    if study:
        add_study(parser)


def _read_url(args) -> str:
    from sweeper.storage.url import STORAGE_ENV, resolve_storage_url

    if not args.space and not args.storage and not os.environ.get(STORAGE_ENV):
        raise SweeperError(f"which store? give a SPACE, --storage URL or set {STORAGE_ENV}")
    return resolve_storage_url(args.storage, args.space)


def run_dashboard(args) -> int:
    import ipaddress

    from sweeper.errors import StorageError
    from sweeper.pipeline.artifacts import artifact_store
    from sweeper.results.report import open_existing
    from sweeper.storage.url import mask_url

    url = _read_url(args)
    storage = open_existing(url)
    if not storage.get_all_studies():
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


def run_status(args) -> int:
    from sweeper.results.report import status_text

    print(status_text(_read_url(args)))
    return 0


def run_report(args) -> int:
    from pathlib import Path

    from sweeper.results.report import report

    text, _ = report(_read_url(args), args.study or args.space, args.top,
                     Path(args.out) if args.out else None)
    print(text)
    return 0


def run_best(args) -> int:
    from pathlib import Path

    import yaml

    from sweeper.results.report import best_params

    best = best_params(_read_url(args), args.study or args.space, args.pick)
    print(f"{'picked' if args.pick else 'best'} trial {best['trial']}: validation F1 "
          f"{best['validation_f1']:.4f}"
          + (f", test F1 {best['test_f1']:.4f}" if best["test_f1"] is not None else ""))
    for name, value in best.get("metrics", {}).items():
        print(f"  {name}: {value:.4g}")
    for key, value in best["params"].items():
        print(f"  {key}: {value}")
    if args.export:
        Path(args.export).write_text(yaml.safe_dump(best, sort_keys=False))
        print(f"wrote {args.export}")
    return 0


def run_retrain(args) -> int:
    from pathlib import Path

    from sweeper.results.retrain import retrain

    result = retrain(_read_url(args), args.study or args.space,
                     Path(args.params) if args.params else None,
                     Path(args.out) if args.out else None, args.as_trial)
    test = result["test"]
    print(f"trial {result['trial']} retrained on {result['train_rows']} rows for "
          f"{result['epochs']} epochs (seed {result['seed']}): test F1 {test['f1']:.4f}, "
          f"accuracy {test['accuracy']:.4f}")
    compressed = result.get("compressed")
    if compressed:
        print(f"compressed ({compressed['quantize']}): test F1 {compressed['test']['f1']:.4f}, "
              f"{compressed['compressed_bytes']} bytes: {compressed['model']}")
    print(f"model: {result['model']}\nmetrics: {Path(result['model']).parent / 'metrics.json'}")
    return 0
