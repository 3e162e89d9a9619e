"""Creating a study or resuming it: a study is tied to the meaning of its search space, keeps its
budget across runs, and names its objective for optuna-dashboard."""

from __future__ import annotations

import time
import warnings

from sweeper import defaults, keys
from sweeper.errors import StorageError
from sweeper.paths import check_study_name
from sweeper.space import SearchSpace
from sweeper.storage.rdb import open_storage
from sweeper.storage.url import mask_url


def prepare_study(space: SearchSpace, storage_url: str, study_name: str, trials: int,
                  keep_models: int = defaults.KEEP_MODELS, join: bool = False):
    """Create the study or resume it. A study made from a different space is refused (the
    controller's --new-study picks a free name first). Joining keeps the budget the study
    already has. Returns (storage, study)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    check_study_name(study_name)
    storage = open_storage(storage_url)
    # Names only: summaries would load every trial of every study in a shared store.
    existing = set(optuna.get_all_study_names(storage))
    if study_name in existing:
        stored = storage.get_study_user_attrs(
            storage.get_study_id_from_name(study_name)).get(keys.SPACE_HASH)
        if stored is None:
            raise StorageError(f"study '{study_name}' in {mask_url(storage_url)} was not made by "
                               "sweeper; pick another name with --study")
        if stored != space.fingerprint:
            raise StorageError(
                f"{space.source} changed since study '{study_name}' was created, so its trials "
                f"are not comparable; pass --warm-start (make sweep ... WARM=1) to start a new "
                f"study seeded with its trials that fit, --new-study (NEW=1) to start afresh, "
                f"--study NAME to pick another, or restore the file")
    study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True,
                                directions=space.directions)
    if study.user_attrs.get(keys.SPACE_YAML) != space.text:
        # Same meaning (the fingerprint), other text: comments, or how trials run (such as the
        # checkpoint cadence), which workers read from here.
        study.set_user_attr(keys.SPACE_YAML, space.text)
    if study_name not in existing:
        study.set_user_attr(keys.SPACE_HASH, space.fingerprint)
        study.set_user_attr(keys.SPACE_NAME, space.name)
        study.set_user_attr(keys.CREATED, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    if study.metric_names != metric_names(space):  # the dashboard's labels for the values
        study.set_metric_names(metric_names(space))
    if not (join and keys.BUDGET in study.user_attrs):
        study.set_user_attr(keys.BUDGET, trials)
        study.set_user_attr(keys.KEEP_MODELS, keep_models)
    return storage, study


def metric_name(space: SearchSpace) -> str:
    """What the (first) objective value is, e.g. 'val F1 (macro)'."""
    objective = space.config["objective"]
    return f"val {objective['metric'].upper()} ({objective['average']})"


def metric_names(space: SearchSpace) -> list[str]:
    """One label per objective, e.g. ['val F1 (macro)', 'size KiB (gzipped)']: optuna-dashboard
    names the axes of its Pareto-front plot with them."""
    from sweeper.metrics import METRICS

    return [metric_name(space)] + [METRICS[name].label for name in space.objectives[1:]]


def free_study_name(base: str, existing) -> str:
    """base, else the first of base-2, base-3... not in `existing`."""
    name, n = base, 2
    while name in existing:
        name, n = f"{base}-{n}", n + 1
    return name


def study_names(storage_url: str) -> list[str]:
    import optuna

    return optuna.get_all_study_names(open_storage(storage_url))
