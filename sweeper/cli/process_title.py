"""A password typed on the command line (--storage URL) is visible to every user in `ps`. Once
started, sweeper rewrites its process title with the password masked. (SWEEPER_STORAGE, which
`make ... STORAGE=URL` sets, avoids even the moment before.)"""

from __future__ import annotations

from sweeper.storage.url import mask_url


def hide_passwords(argv: list[str]) -> bool:
    """Masks URL passwords in this process's title (what `ps` and /proc/PID/cmdline show).
    True if there was one to hide."""
    masked = [mask_url(arg) if "://" in arg else arg for arg in argv]
    if masked == argv:
        return False
    import setproctitle

    setproctitle.setproctitle(" ".join(masked))
    return True
