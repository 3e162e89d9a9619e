"""How values appear in messages: on one line, short, and the same everywhere.

Every user-facing error is one line (a log reader greps it, a terminal shows it whole), so text
that comes from users or other libraries is escaped or squeezed before it goes into one.
"""

from __future__ import annotations


def one_line(text: str) -> str:
    """Escapes line breaks and other control characters (from keys, values, file names)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def error_text(error: BaseException) -> str:
    """An exception's text on one line, to quote it inside a one-line message."""
    return " ".join(str(error).split()) or type(error).__name__


def shown(value) -> str:
    """A user's value in a message: its repr, cut short; containers only by their kind (their
    text could be huge, or nested without end through YAML aliases)."""
    if value is None:
        return "nothing"
    if isinstance(value, (dict, list, set)):
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def short(value) -> str:
    """A param's value in a table: 4 significant digits for floats."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
