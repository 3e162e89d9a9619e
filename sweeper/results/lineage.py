"""Where a warm-started study came from, told in one line: its parent, what changed, what was
seeded. Written by a warm start (sweeper.sweep.warm_start), read by status, report and the study's
note."""

from __future__ import annotations

from sweeper import keys


def describe(lineage: dict) -> str:
    """One line: where the study came from, what changed, which case applied and why, e.g.
    "warm-started from 'cnn_lr' (learning_rate: ...): imported 14 of its 16 finished trials"."""
    changes = lineage.get("changes") or []
    incomparable = lineage.get("incomparable") or []
    if incomparable:
        others = [c for c in changes if c not in incomparable]
        line = (f"warm-started from '{lineage['parent']}': {_listed(incomparable)} changes "
                f"results, so its values are not comparable; queued its best "
                f"{lineage.get('queued', 0)} trials that fit to run again"
                + (f" (also changed: {_listed(others)})" if others else ""))
    else:
        line = (f"warm-started from '{lineage['parent']}' ({_listed(changes) or 'no change'}): "
                f"imported {lineage.get('imported', 0)} of its {lineage.get('finished', 0)} "
                "finished trials (they take no budget slot)")
    if lineage.get("unfit"):
        line += f"; {lineage['unfit']} did not fit (e.g. {lineage.get('unfit_example')})"
    if not lineage.get("done", True):
        line += "; seeding was cut short: the next sweep of this study finishes it"
    return line


def lineage_lines(study) -> list[str]:
    """describe() of the study's lineage, as a list: empty for a study that was not seeded."""
    lineage = study.user_attrs.get(keys.LINEAGE)
    return [describe(lineage)] if lineage else []


def _listed(changes: list[str], most: int = 3) -> str:
    return "; ".join(changes[:most]) + (f"; {len(changes) - most} more" if len(changes) > most
                                        else "")
