"""Command line: sweep, worker, check, dashboard, status (ls), report, best, retrain, slurm.

Each command's options sit with its handler (`run`, `reading`, `cluster`); their defaults come
from sweeper.defaults. Imports stay light here (no TensorFlow, no Optuna at import time) so
`--help` is instant. A user error prints one line and exits 2; bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import sys

from sweeper.cli import cluster, reading, run
from sweeper.cli.args import Parser
from sweeper.errors import SweeperError


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="sweeper",
        description="Hyperparameter sweeps of Keras models on every GPU, in an Optuna study store.",
        epilog="example:\n  sweeper sweep cnn_lr --trials 12\nrun 'sweeper COMMAND --help' for more",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for group in (run, reading, cluster):
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if argv is None and any("://" in arg for arg in sys.argv):
        from sweeper.cli.process_title import hide_passwords

        hide_passwords(sys.argv)
    try:
        return args.handler(args)
    except SweeperError as e:
        print(f"sweeper: error: {e}", file=sys.stderr)
        return e.exit_code
