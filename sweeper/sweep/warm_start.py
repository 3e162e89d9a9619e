"""Warm starts: a new study seeded from an earlier one whose space has since changed
(`sweeper sweep SPACE --warm-start [STUDY]`), and the lineage it records.

Design rules:
- Which past trials fit the new space is sweeper.space.changes's job; this module moves them.
- Values comparable (no setting that changes results changed): every finished trial (complete or
  pruned) that fits is imported with its values, per-epoch values, constraints and measurements,
  under the new space's distributions, so the sampler and the pruner learn from it. Imported
  trials are marked keys.IMPORTED_FROM and take no slot of the budget: the budget is what this
  study runs (sweeper.storage.counts).
- Not comparable: the RERUN_BEST best complete trials that fit are queued to run again under the
  new settings, as WAITING trials marked keys.RERUN_OF. A worker takes a waiting trial in one
  guarded write (WAITING -> RUNNING, under a row lock or SQLite's write lock), so each runs once
  however many workers and machines race for it; each takes a budget slot like any trial here.
- Seeding can be cut short and resumed: the lineage is written first with done: false, and a sweep
  that finds it so finishes the job, skipping the trials already imported or queued.
- The parent's model files stay the parent's: imported trials do not link to them, so nothing
  this study keeps or evicts touches them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sweeper import keys
from sweeper.errors import StorageError
from sweeper.results.lineage import describe
from sweeper.space import SearchSpace, parse_space
from sweeper.space.changes import fit, ran_with, result_changes, space_changes
from sweeper.storage.locks import budget_lock
from sweeper.storage.url import mask_url
from sweeper.trials import best_first

RERUN_BEST = 5  # configurations queued to run again when past values are not comparable

# What describes the parent's own run of a trial, not its result: not carried over.
_NOT_CARRIED = (keys.MODEL_ARTIFACT, keys.REQUEUE, keys.FAIL_REASON)


@dataclass
class Plan:
    """What a warm start from `parent` will do. `chosen` are (parent trial, params as the new
    space has them): to import when `comparable`, else to queue."""

    parent: str
    changes: list[str]
    incomparable: list[str]  # the changed settings that change results
    finished: int  # the parent's finished trials
    chosen: list[tuple] = field(default_factory=list)
    unfit: list[str] = field(default_factory=list)  # why each trial that did not fit does not

    @property
    def comparable(self) -> bool:
        return not self.incomparable

    def lineage(self) -> dict:
        """The study attribute keys.LINEAGE, before seeding (done: false)."""
        return {"parent": self.parent, "changes": self.changes,
                "comparable": self.comparable, "incomparable": self.incomparable,
                "finished": self.finished, "fit": len(self.chosen), "unfit": len(self.unfit),
                "unfit_example": self.unfit[0] if self.unfit else None,
                "imported": 0, "queued": 0, "done": False}


def find_parent(storage, storage_url: str, space: SearchSpace, name: str | None):
    """The study to warm-start from (a FrozenStudy): `name`, or else the study this space was
    last run as. One line when there is none."""
    studies = storage.get_all_studies()
    where = mask_url(storage_url)
    if name:
        found = [s for s in studies if s.study_name == name]
        if not found:
            known = ", ".join(sorted(s.study_name for s in studies)) or "none"
            raise StorageError(f"no study '{name}' in {where} to warm-start from; studies there: "
                               f"{known} (give one of them to --warm-start)")
        if keys.SPACE_YAML not in found[0].user_attrs:
            raise StorageError(f"study '{name}' in {where} was not made by sweeper, so its space "
                               "is unknown; warm-start from a study sweeper made")
        return found[0]
    same = [s for s in studies if s.user_attrs.get(keys.SPACE_NAME) == space.name
            and keys.SPACE_YAML in s.user_attrs]
    if not same:
        raise StorageError(f"no earlier study of space '{space.name}' in {where} to warm-start "
                           f"from; give one with --warm-start STUDY, or sweep without it")
    return max(same, key=lambda s: (str(s.user_attrs.get(keys.STARTED)
                                        or s.user_attrs.get(keys.CREATED) or ""), keys.study_id(s)))


def choose_study(storage_url: str, space: SearchSpace, base: str, parent_name: str | None,
                 say) -> tuple[str, object | None]:
    """(the study to sweep, the parent to seed it from). A new name, as --new-study picks it;
    or, when the space has not changed since the parent, the parent itself, resumed (no seed)."""
    from sweeper.storage.rdb import open_storage
    from sweeper.sweep.studies import free_study_name

    storage = open_storage(storage_url, heartbeat_s=None, create=False)
    parent = find_parent(storage, storage_url, space, parent_name)
    if parent.user_attrs.get(keys.SPACE_HASH) == space.fingerprint:
        say(f"{space.source} has not changed since study '{parent.study_name}': resuming it, "
            "nothing to import")
        return parent.study_name, None
    return free_study_name(base, [s.study_name for s in storage.get_all_studies()]), parent


def seed_study(study, storage_url: str, space: SearchSpace, budget: int, parent, say) -> None:
    """Seed the study from `parent`, or finish a seeding an earlier run was cut short in."""
    storage = keys.storage_of(study)
    lineage = study.user_attrs.get(keys.LINEAGE)
    if parent is None and lineage and not lineage.get("done"):
        parent = find_parent(storage, storage_url, space, lineage["parent"])
    if parent is None:
        return
    trials = storage.get_all_trials(keys.study_id(parent), deepcopy=False)
    say(describe(seed(study, space, plan(parent, trials, space, budget))))


def parent_space(parent) -> SearchSpace:
    """The space the parent study was made from, as stored in it."""
    from sweeper.errors import SweeperError

    try:
        return parse_space(parent.user_attrs[keys.SPACE_YAML], source=f"study '{parent.study_name}'",
                           name=parent.user_attrs.get(keys.SPACE_NAME, parent.study_name))
    except SweeperError as e:
        raise StorageError(f"study '{parent.study_name}': its stored space no longer loads ({e}); "
                           "warm-start from another study") from None


def plan(parent, trials: list, space: SearchSpace, budget: int) -> Plan:
    """Which of the parent's `trials` (FrozenTrials) seed a study of `space`, and how."""
    import optuna

    old = parent_space(parent)
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                 optuna.trial.TrialState.PRUNED)]
    result = Plan(parent.study_name, space_changes(old, space), result_changes(old, space),
                  len(finished))
    fitting = []
    for trial in finished:
        params, why = fit(trial.params, space, ran_with(old, trial.params))
        if params is None:
            result.unfit.append(f"trial {trial.number}: {why}")
        else:
            fitting.append((trial, params))
    if result.comparable:
        result.chosen = fitting
    else:  # only results measured as this space measures them rank: run the best again
        complete = {t.number: p for t, p in fitting if t.state == optuna.trial.TrialState.COMPLETE}
        best = best_first([t for t, _ in fitting if t.number in complete], old.direction)
        result.chosen = [(t, complete[t.number]) for t in best[:min(RERUN_BEST, budget)]]
    return result


def seed(study, space: SearchSpace, plan_: Plan) -> dict:
    """Import or queue the plan's trials into `study` (made from `space`), skipping those already
    there, and record the lineage. Returns the lineage."""
    lineage = plan_.lineage()
    study.set_user_attr(keys.LINEAGE, lineage)
    mark = keys.IMPORTED_FROM if plan_.comparable else keys.RERUN_OF
    there = {t.user_attrs[mark]["trial"] for t in study.get_trials(deepcopy=False)
             if isinstance(t.user_attrs.get(mark), dict)}
    todo = [(t, p) for t, p in plan_.chosen if t.number not in there]
    if plan_.comparable:
        for trial, params in todo:
            study.add_trial(_imported(trial, params, space, plan_.parent))
    else:
        storage = keys.storage_of(study)
        lock = budget_lock(keys.rdb_of(storage), study.study_name)
        lock.acquire()  # a worker of a joined sweep counts waiting trials as taken slots
        try:
            for trial, params in todo:
                study.enqueue_trial(params, user_attrs={
                    keys.RERUN_OF: {"study": plan_.parent, "trial": trial.number}})
        finally:
            lock.release()
    count = len(there) + len(todo)
    lineage.update({"imported" if plan_.comparable else "queued": count, "done": True})
    study.set_user_attr(keys.LINEAGE, lineage)
    return lineage


def _imported(trial, params: dict, space: SearchSpace, parent: str):
    """The parent's finished trial as a trial of the new study: the new space's distributions,
    the same values, per-epoch values, measurements and times."""
    import optuna

    attrs = {k: v for k, v in trial.user_attrs.items() if k not in _NOT_CARRIED}
    attrs[keys.IMPORTED_FROM] = {"study": parent, "trial": trial.number}
    by_name = {p.name: p for p in space.params}
    complete = trial.state == optuna.trial.TrialState.COMPLETE
    new = optuna.trial.create_trial(
        state=trial.state, values=trial.values, params=params,  # a pruned one's: its last F1
        distributions={name: by_name[name].distribution() for name in params},
        user_attrs=attrs, intermediate_values=dict(trial.intermediate_values),
        constraints=space.constraints_of(trial) if complete and space.constraints else None)
    # Its own times: the new study's time charts and pace estimates read them.
    new.datetime_start, new.datetime_complete = trial.datetime_start, trial.datetime_complete
    return new
