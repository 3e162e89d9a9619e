"""The command line's argument rules, shared by every command: one-line errors, the validators of
counts, durations and times, and the options every store-reading command takes."""

from __future__ import annotations

import argparse
import math
import re

from sweeper import defaults
from sweeper.text import one_line, shown

# Counts past this are typos; they would also overflow timers and C ints further on.
MAX_COUNT = 10**9


class Parser(argparse.ArgumentParser):
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
        self.exit(2, f"sweeper: error: {one_line(message)} (see '{prog} --help')\n")


def command(commands, name: str, about: str, example: str) -> Parser:
    """A subcommand whose help ends with an example (every command has one)."""
    return commands.add_parser(name, help=about, epilog=example,
                               formatter_class=argparse.RawDescriptionHelpFormatter)


def parse_duration(text: str) -> float:
    """'8h', '30m', '1h30m', '90s', '2d' or plain seconds -> seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([dhms])", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise argparse.ArgumentTypeError(
                f"{shown(text)} is not a duration; write e.g. 8h, 30m, 1h30m")
        factor = {"d": 86400, "h": 3600, "m": 60, "s": 1}
        seconds = sum(float(n) * factor[u] for n, u in parts)
    if not math.isfinite(seconds):  # a few hundred digits read as infinity
        raise argparse.ArgumentTypeError(f"{shown(text)}: a duration must be finite")
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{shown(text)}: a duration must be positive")
    return seconds


def int_between(low: int, high: int):
    """A validator of whole numbers from low to high."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # also more than 4300 digits
            raise argparse.ArgumentTypeError(f"{shown(text)} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{shown(value)} must be at least {low}")
        if value > high:
            raise argparse.ArgumentTypeError(f"{shown(value)} must be at most {high}")
        return value

    return check


positive_int = int_between(1, MAX_COUNT)
non_negative_int = int_between(0, MAX_COUNT)


def unix_time(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a unix time") from None
    if not math.isfinite(value) or value < 0:  # nan would never pass, inf never come
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a unix time")
    return value


def add_space(parser, optional: bool = False) -> None:
    parser.add_argument("space", nargs="?" if optional else None,
                        help="a space name in search_spaces/ (e.g. cnn_lr) or a YAML path")


def add_storage(parser, required_without_env: bool = False) -> None:
    parser.add_argument("--storage", default=None,
                        help="SQLAlchemy URL of the study store (default: $SWEEPER_STORAGE, else "
                             + ("required)" if required_without_env else "storage/SPACE.db)"))


def add_heartbeat(parser) -> None:
    parser.add_argument("--heartbeat", type=positive_int, default=defaults.HEARTBEAT_S,
                        help="seconds between worker heartbeats; a trial silent for 3 is failed "
                             f"and retried (default {defaults.HEARTBEAT_S})")


def add_study(parser) -> None:
    parser.add_argument("--study", default=None, help="study name (default: the space name)")


def add_trials(parser, help_text: str) -> None:
    parser.add_argument("--trials", type=positive_int, default=defaults.TRIALS,
                        help=f"{help_text} (default {defaults.TRIALS})")
