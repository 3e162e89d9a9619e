"""Reading a store after (or during) a sweep: status, reports, the best trial.

Every command here is read-only towards the store: a missing store, study or result is a one-line
error, and no store is ever created.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from sweeper import keys
from sweeper.errors import StorageError, SweeperError
from sweeper.metrics import delivered_test_f1
from sweeper.paths import private_folder, study_folder
from sweeper.results.lineage import lineage_lines
from sweeper.results.occupancy import describe as describe_use
from sweeper.results.occupancy import runs_of, slot_hours, slot_use
from sweeper.storage.counts import study_counts
from sweeper.storage.rdb import open_storage
from sweeper.storage.url import mask_url
from sweeper.text import short
from sweeper.trials import (
    best_trial,
    completed,
    describe_resumed,
    epochs_reached,
    first_value,
    ran_here,
)

REPORTS_DIR = Path("storage") / "reports"


# ---------------------------------------------------------------------------------------------
# Opening


def open_existing(url: str):
    """The store at url, refusing to create one."""
    return open_storage(url, heartbeat_s=None, create=False)


def load_existing_study(url: str, study_name: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_existing(url)
    names = optuna.get_all_study_names(storage)  # not summaries: they load every trial
    if not names:
        raise StorageError(f"no studies in {mask_url(url)}; run a sweep first")
    if study_name not in names:
        raise StorageError(f"no study '{study_name}' in {mask_url(url)}; studies there: "
                           f"{', '.join(sorted(names))} (pick one with --study)")
    return storage, optuna.load_study(study_name=study_name, storage=storage)


# ---------------------------------------------------------------------------------------------
# status


def status_text(url: str) -> str:
    import optuna

    storage = open_existing(url)
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    if not summaries:
        raise StorageError(f"no studies in {mask_url(url)}; run a sweep first")
    lines = [f"studies in {mask_url(url)}:"]
    running_rows: list[str] = []
    hosts: dict[str, set] = {}
    now = time.time()
    for summary in sorted(summaries, key=lambda s: s.study_name):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        counts = study_counts(study)
        top = best_trial(study)
        best = "no completed trial" if top is None else \
            f"best {first_value(top):.4f} (trial {top.number})"
        budget = study.user_attrs.get(keys.BUDGET, "?")
        lines.append(f"  {summary.study_name:<24} {counts.finished}/{budget} done: "
                     f"{counts.describe()}, running {counts.running}, waiting "
                     f"{counts.waiting}; {best}")
        lines += [f"    {line}" for line in lineage_lines(study)]
        if (line := describe_resumed(study.get_trials(deepcopy=False))) is not None:
            lines.append(f"    {line}")
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            host = t.user_attrs.get(keys.HOST, "?")
            hosts.setdefault(host, set()).add(t.user_attrs.get(keys.PID))
            elapsed = now - t.datetime_start.timestamp() if t.datetime_start else 0
            gpu = t.user_attrs.get(keys.CUDA_VISIBLE_DEVICES) or "CPU"
            running_rows.append(f"  {summary.study_name:<16} #{t.number:<5} worker "
                                f"{t.user_attrs.get(keys.WORKER, '?'):<6} {host:<16} GPU "
                                f"{gpu:<6} {elapsed:7.0f}s  epoch {len(t.intermediate_values)}")
    if running_rows:
        lines += ["running trials:", *running_rows, "workers per host: " + ", ".join(
            f"{host}: {len(pids)}" for host, pids in sorted(hosts.items()))]
    else:
        lines.append("no trial running")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# report


@dataclass
class PruningSavings:
    epochs_trained: int
    epochs_unpruned: int
    seconds_trained: float
    seconds_unpruned: float

    @property
    def epochs_saved_fraction(self) -> float:
        return 1 - self.epochs_trained / self.epochs_unpruned if self.epochs_unpruned else 0.0


def pruning_savings(trials: list, max_epochs: int) -> PruningSavings:
    """What the finished trials cost, against training every one of them to max_epochs."""
    epochs = seconds = seconds_full = 0.0
    counted = 0
    for t in trials:
        ran = t.user_attrs.get(keys.EPOCHS_RUN)
        if not ran:
            continue
        counted += 1
        epochs += epochs_reached(t) or ran  # a resumed trial's checkpointed epochs too
        train_s = t.user_attrs.get(keys.SECONDS, {}).get("train", 0.0)
        seconds += train_s + (t.user_attrs.get(keys.RESUMED_FROM) or {}).get("seconds", 0.0)
        seconds_full += train_s / ran * max_epochs
    return PruningSavings(int(epochs), counted * max_epochs, seconds, seconds_full)


def importances(study) -> list[tuple[str, dict[str, float]]]:
    """Hyperparameter importances for each objective, as (its name, {param: importance}); none
    where they cannot be told yet (too few completed trials, a single value per param)."""
    import optuna

    names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    found = []
    for index, name in enumerate(names):
        # Optuna's default evaluator (PED-ANOVA) judges a given target as a loss, lower better
        # (and warns that it does): a maximized objective is handed over negated. A single
        # objective is judged in its own direction, with no target.
        target = None if len(names) == 1 else _as_loss(index, study.directions[index])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*importances of params to achieve low")
            try:
                weights = optuna.importance.get_param_importances(study, target=target)
            except (RuntimeError, ValueError, ZeroDivisionError):
                continue
        if weights:
            found.append((name, weights))
    return found


def _as_loss(index: int, direction):
    """Objective `index` of a trial as a value to minimize."""
    import optuna

    sign = -1.0 if direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return lambda trial: sign * trial.values[index]


def report(url: str, study_name: str, top: int = 10, out_dir: Path | None = None) -> tuple[str, Path]:
    """The terminal report and the folder with report.html and the PNG plots."""
    import optuna

    from sweeper.space import parse_space

    storage, study = load_existing_study(url, study_name)
    ranked = completed(study)
    space = parse_space(study.user_attrs[keys.SPACE_YAML], source=f"study {study_name}")
    counts = study_counts(study)
    finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                        optuna.trial.TrialState.PRUNED))
    savings = pruning_savings([t for t in finished if ran_here(t)], space.max_epochs)

    lines = [f"study '{study_name}' in {mask_url(url)}", *lineage_lines(study),
             f"trials: {counts.describe()}, running {counts.running}, waiting {counts.waiting}",
             "", f"top {min(top, len(ranked))} trials:",
             f"  {'rank':>4} {'trial':>5} {'val F1':>7} {'test F1':>7} {'epochs':>6}  params"]
    for rank, t in enumerate(ranked[:top], 1):
        params = ", ".join(f"{k}={short(v)}" for k, v in t.params.items())
        test_f1 = delivered_test_f1(t)
        lines.append(f"  {rank:>4} {t.number:>5} {first_value(t):>7.4f} "
                     f"{'-' if test_f1 is None else f'{test_f1:.4f}':>7} "
                     f"{epochs_reached(t) or '?'!s:>6}  {params}"
                     + ("" if ran_here(t) else "  (imported: {study} #{trial})".format(
                         **t.user_attrs[keys.IMPORTED_FROM])))
    lines += ["", f"pruning saved {savings.epochs_saved_fraction:.0%} of the epochs: trained "
              f"{savings.epochs_trained} of {savings.epochs_unpruned} epochs, "
              f"{savings.seconds_trained:.0f}s of {savings.seconds_unpruned:.0f}s of training "
              "(finished trials against all of them trained to max_epochs)"]
    if (line := describe_resumed(finished)) is not None:
        lines.append(line)
    lines += usage_lines(study, space.max_epochs)
    if space.is_multi_objective:
        lines += pareto_lines(study, space)
    for objective, weights in importances(study):
        lines += ["", f"hyperparameter importances for {objective}:"]
        lines += [f"  {name:<20} {value:.3f}" for name, value in weights.items()]
    folder = Path(out_dir or study_folder(REPORTS_DIR, study_name))
    private_folder(folder)
    write_figures(study, folder, "\n".join(lines))
    lines += ["", f"report: {folder / 'report.html'} (and PNG plots beside it)"]
    return "\n".join(lines), folder


def usage_lines(study, max_epochs: int) -> list[str]:
    """Slot-hours used and saved by pruning, and how busy each slot was in the last run."""
    import datetime

    trials = study.get_trials(deepcopy=False)
    now = time.time()
    used, saved = slot_hours(trials, max_epochs, now)
    lines = ["", f"slot-hours: {used:.2f} used, {saved:.2f} saved by pruning"]
    try:  # the last run began when its controller recorded it
        since = datetime.datetime.strptime(study.user_attrs[keys.STARTED],
                                           "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except (KeyError, ValueError):
        since = 0.0
    uses = slot_use([r for r in runs_of(trials, now) if r.start >= since])
    if uses:
        lines += ["slots in the last run (each from its first trial to its last):",
                  *describe_use(uses)]
    return lines


def pareto_lines(study, space) -> list[str]:
    """The Pareto front as a table: each point's objectives, the compressed model's test F1 and
    the trained model's validation F1 (what compression cost), its sparsity."""
    from sweeper.metrics import metric_value

    front = sorted(study.best_trials, key=first_value, reverse=True)
    names = space.objectives
    lines = ["", f"Pareto front: {len(front)} trials no other trial beats on every objective "
             f"({', '.join(names)})",
             f"  {'trial':>5} " + " ".join(f"{name:>10}" for name in names)
             + f" {'test F1':>8} {'float F1':>8} {'sparsity':>8}"]
    for t in front:
        cells = [metric_value(name, t) for name in names]
        lines.append(f"  {t.number:>5} " + " ".join(f"{v:>10.4g}" if v is not None else
                                                    f"{'-':>10}" for v in cells)
                     + f" {_cell(t.user_attrs.get(keys.COMPRESSED_TEST_F1))}"
                     f" {_cell(t.user_attrs.get(keys.FLOAT_VAL_F1))}"
                     f" {_cell(t.user_attrs.get(keys.SPARSITY))}")
    study_option = "" if study.study_name == space.name else f" --study {study.study_name}"
    lines.append(f"  pick one: sweeper best {space.name}{study_option} --pick \"max f1 where "
                 f"{names[1]} <= ...\" --export point.yaml")
    return lines


def _cell(value) -> str:
    return f"{value:>8.4f}" if isinstance(value, (int, float)) else f"{'-':>8}"


FIGURES = ("pareto_front", "optimization_history", "intermediate_values", "parallel_coordinate",
           "param_importances", "slice")
# Figures that plot one value per trial: in a multi-objective study, they plot F1.
ONE_TARGET = ("optimization_history", "parallel_coordinate", "param_importances", "slice")


def _figure_args(name: str, study) -> dict | None:
    """Keyword arguments of Optuna's plot_NAME for this study, or None to leave it out."""
    if len(study.directions) == 1:
        return None if name == "pareto_front" else {}
    if name == "pareto_front":  # infeasible points are drawn apart: Optuna reads the constraints
        return {"target_names": study.metric_names}
    if name == "param_importances":  # see importances(): a target is judged as a loss
        return {"target": _as_loss(0, study.directions[0]), "target_name": study.metric_names[0]}
    if name in ONE_TARGET:
        return {"target": first_value, "target_name": study.metric_names[0]}
    return {}


def write_figures(study, folder: Path, summary: str) -> None:
    """report.html with Optuna's interactive figures, and one PNG per figure for pasting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as vis_png

    html = ["<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>sweeper report: {study.study_name}</title></head><body>",
            f"<h1>{study.study_name}</h1><pre>{_escape(summary)}</pre>"]
    first = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # matplotlib plots are 'experimental' in Optuna
        for name in FIGURES:
            args = _figure_args(name, study)
            if args is None:
                continue
            try:
                figure = getattr(vis, f"plot_{name}")(study, **args)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # e.g. importances need two completed trials
            # The plotly library goes inline once, so the report opens offline.
            html.append(f"<h2>{name.replace('_', ' ')}</h2>")
            html.append(figure.to_html(full_html=False, include_plotlyjs=first))
            first = False
            try:
                axes = getattr(vis_png, f"plot_{name}")(study, **args)
                fig = axes.ravel()[0].figure if hasattr(axes, "ravel") else axes.figure
                fig.set_size_inches(10, 6)
                fig.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
                plt.close(fig)
            except (ValueError, RuntimeError, ZeroDivisionError):
                pass
    html.append("</body></html>")
    (folder / "report.html").write_text("\n".join(html), encoding="utf-8")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---------------------------------------------------------------------------------------------
# best and retrain


def best_params(url: str, study_name: str, pick: str | None = None) -> dict:
    """The best trial, or the one `pick` chooses (`max f1 where size_kb <= 64`), as a plain
    mapping: what `best --export` writes and `retrain` reads."""
    from sweeper.metrics import BoundError, measures, parse_pick
    from sweeper.space import parse_space

    try:  # before the store is read: a typo costs nothing
        chosen = parse_pick(pick) if pick is not None else None
    except BoundError as e:
        raise SweeperError(f"--pick: {e}") from None
    _, study = load_existing_study(url, study_name)
    ranked = completed(study)
    space = parse_space(study.user_attrs[keys.SPACE_YAML], source=f"study {study_name}")
    best = ranked[0]
    if chosen is not None:
        measured = measures(best)
        for name in (chosen.metric, *(b.metric for b in chosen.bounds)):
            if name not in measured:
                raise SweeperError(f"--pick: study '{study_name}' has no {name} on its trials "
                                   f"(it measures: {', '.join(measured)}); pick by one of those")
        best = chosen.choose(ranked)
        if best is None:
            raise SweeperError(f"--pick: no completed trial of '{study_name}' meets "
                               f"'{chosen}'; loosen the bound (sweeper report shows the "
                               "Pareto front)")
    return {
        "study": study_name,
        "space": space.name if space.name != "space" else study.user_attrs.get(keys.SPACE_NAME),
        "space_hash": study.user_attrs.get(keys.SPACE_HASH),
        "trial": best.number,
        "validation_f1": first_value(best),
        "test_f1": delivered_test_f1(best),
        "seed": best.user_attrs.get(keys.SEED),
        "threads": best.user_attrs.get(keys.THREADS),
        "epochs": epochs_reached(best) or space.max_epochs,
        "params": dict(best.params),
        "hyperparameters": space.hyperparameters(dict(best.params)),
        **({"metrics": measures(best),
            "compressed_test_f1": best.user_attrs.get(keys.COMPRESSED_TEST_F1)}
           if space.compress is not None else {}),
    }
