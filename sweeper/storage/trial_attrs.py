"""Trial attributes written and read straight in Optuna's tables, many in one statement.

- Optuna's API writes each attribute in a transaction of its own (with an ORM look-up each:
  ~1.5 ms apiece on SQLite), and a trial sets a dozen: here they are one transaction.
- Optuna's API refuses a finished trial's attributes, and a worker's copy of the study (Optuna's
  cache) never reads a finished trial again. So what is added after a trial finished (its
  artifacts, sweeper.pipeline.bookkeeping) is written here and read here, never through a study
  object.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy
from sqlalchemy import text

from sweeper import keys
from sweeper.storage import sqlite


def set_user_attrs(trial, attrs: dict) -> None:
    """Several user attributes of a running trial in one transaction. Refused, as by Optuna's
    API, when the trial has finished (another worker failed it as stale)."""
    from optuna.storages import RDBStorage

    if not isinstance(keys.rdb_of(trial.storage), RDBStorage):
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    write_trial_attrs(trial.storage, keys.trial_id(trial), user=attrs, running_only=True)


def write_trial_attrs(storage, trial_id: int, *, user: dict | None = None,
                      system: dict | None = None, running_only: bool = False) -> None:
    """Sets user and system attributes of a trial (finished or not, unless `running_only`) in
    one transaction, stored as Optuna stores them (each value as JSON)."""
    import json

    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.storages._rdb import models

    with keys.rdb_of(storage).engine.begin() as conn:
        if running_only:
            trials = models.TrialModel.__table__
            state = conn.execute(sqlalchemy.select(trials.c.state)
                                 .where(trials.c.trial_id == trial_id)).scalar_one()
            if state.is_finished():
                raise UpdateFinishedTrialError(f"trial {trial_id} has finished ({state.name}); "
                                               "its attributes can no longer be set")
        for model, attrs in ((models.TrialUserAttributeModel, user or {}),
                             (models.TrialSystemAttributeModel, system or {})):
            if not attrs:
                continue
            table = model.__table__
            conn.execute(table.delete().where(table.c.trial_id == trial_id,
                                              table.c.key.in_(list(attrs))))
            conn.execute(table.insert(), [{"trial_id": trial_id, "key": key,
                                           "value_json": json.dumps(value)}
                                          for key, value in attrs.items()])


@dataclass(frozen=True)
class Marked:
    """A completed trial carrying a user attribute."""

    trial_id: int
    number: int
    value: float  # its first objective's
    attr: object  # the attribute's value

    @property
    def values(self) -> list[float]:  # ranked as trials are (sweeper.trials)
        return [self.value]


_MARKED = text(
    "SELECT t.trial_id, t.number, v.value, v.value_type, a.value_json FROM trials t "
    "JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = :key "
    "JOIN trial_values v ON v.trial_id = t.trial_id AND v.objective = 0 "
    "WHERE t.study_id = :study_id AND t.state = 'COMPLETE'")


def completed_with_user_attr(storage, study_id: int, key: str) -> list[Marked]:
    """The study's completed trials that have the user attribute `key`, as the store holds them
    now."""
    import json

    from optuna.storages._rdb import models

    with sqlite.reading(), keys.rdb_of(storage).engine.connect() as conn:
        rows = list(conn.execute(_MARKED, {"key": key, "study_id": study_id}))
        conn.rollback()
    return [Marked(trial_id, number,
                   models.TrialValueModel.stored_repr_to_value(value, _value_type(kind)),
                   json.loads(attr))
            for trial_id, number, value, kind, attr in rows]


def _value_type(stored):
    """A value's type as read from the table ('FINITE'; some drivers give 'TrialValueType.FINITE')."""
    from optuna.storages._rdb import models

    return models.TrialValueModel.TrialValueType[str(stored).rsplit(".", 1)[-1]]
