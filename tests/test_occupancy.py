"""How busy each slot was, from trials with known times: occupancy, gaps inside a worker and at its
replacement, slot-hours used and saved by pruning; and the same figures in `sweeper report`,
read from a hand-made store."""

from __future__ import annotations

import datetime

import optuna
import pytest

from sweeper.results.occupancy import Run, percentile, slot_hours, slot_use
from sweeper.space import parse_space
from sweeper.sweep.studies import prepare_study

optuna.logging.set_verbosity(optuna.logging.WARNING)
State = optuna.trial.TrialState


def test_busy_share_and_gaps_split_at_replacements():
    runs = [Run("a", 1, 0.0, 10.0), Run("a", 1, 10.2, 20.0),  # same process: a 0.2 s gap
            Run("a", 2, 21.0, 30.0),  # a new process took over: a 1 s gap
            Run("b", 3, 5.0, 30.0)]
    a, b = slot_use(runs)
    assert (a.slot, a.trials, a.window_s) == ("a", 3, 30.0)
    assert a.busy_s == pytest.approx(28.8) and a.occupancy == pytest.approx(0.96)
    assert a.gaps == [pytest.approx(0.2)] and a.replacement_gaps == [pytest.approx(1.0)]
    # By default a slot's window starts at its own first trial: start-up is not idle time.
    assert (b.window_s, b.occupancy, b.all_gaps) == (25.0, 1.0, [])
    # Over a window that includes start-up, the same slot was busy 25 of 30 s.
    assert slot_use(runs, start=0.0, end=30.0)[1].occupancy == pytest.approx(25 / 30)


def test_overlapping_trials_on_one_slot_count_once():
    use, = slot_use([Run("a", 1, 0.0, 10.0), Run("a", 2, 5.0, 12.0)], end=12.0)
    assert use.busy_s == pytest.approx(12.0) and use.replacement_gaps == [0.0]


@pytest.mark.parametrize("values, q, expected", [
    ([], 99, 0.0), ([3.0], 99, 3.0), ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
    ([float(i) for i in range(1, 101)], 99, 99.0), ([0.1, 0.2, 5.0], 100, 5.0),
])
def test_percentiles_are_nearest_rank(values, q, expected):
    assert percentile(values, q) == expected


def _trial(number, start, seconds, state=State.COMPLETE, pid=100, worker="0", epochs=10):
    at = datetime.datetime(2026, 11, 29, 12, 0, 0) + datetime.timedelta(seconds=start)
    return optuna.trial.FrozenTrial(
        number=number, state=state, value=0.5 if state == State.COMPLETE else None,
        values=None, datetime_start=at, datetime_complete=at + datetime.timedelta(seconds=seconds),
        params={"dropout": 0.1},
        distributions={"dropout": optuna.distributions.FloatDistribution(0.0, 0.5)},
        user_attrs={"sweeper.host": "gpu1", "sweeper.worker": worker, "sweeper.pid": pid,
                    "sweeper.cuda_visible_devices": worker, "sweeper.epochs_run": epochs},
        system_attrs={}, intermediate_values={}, trial_id=number)


HAND_MADE = [  # slot 0: a 0.5 s gap, then a 2 s gap at its worker's replacement
    _trial(0, 0, 100), _trial(1, 100.5, 100, state=State.PRUNED, epochs=2),
    _trial(2, 202.5, 97.5, pid=101),
    _trial(3, 0, 300, worker="1", pid=200),  # slot 1: busy all the time
]


def test_slot_hours_used_and_saved_by_pruning():
    used, saved = slot_hours(HAND_MADE, max_epochs=10, now=0.0)
    assert used == pytest.approx((100 + 100 + 97.5 + 300) / 3600)
    # The pruned trial ran 2 of 10 epochs in 100 s: 8 more would have taken 400 s.
    assert saved == pytest.approx(400 / 3600)


SPACE = """
model: {name: mlp}
training: {max_epochs: 10}
params:
  dropout: {type: float, low: 0.0, high: 0.5}
"""


def test_report_shows_the_figures_of_a_hand_made_store(tmp_path, monkeypatch):
    from sweeper.results.report import report

    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    _, study = prepare_study(parse_space(SPACE, name="hand"), url, "hand", 4)
    study.set_user_attr("sweeper.started", "2026-11-29T11:59:00+0000")
    for trial in HAND_MADE:
        study.add_trial(trial)
    text, _ = report(url, "hand", out_dir=tmp_path / "report")
    assert "slot-hours: 0.17 used, 0.11 saved by pruning" in text
    lines = text.splitlines()
    slot0 = next(line for line in lines if line.strip().startswith("gpu1 w0 (GPU 0)"))
    assert "busy  99.2% of 300s, 3 trials" in slot0  # 297.5 of 300 s
    assert "gaps median 0.50s, p99 0.50s, max 0.50s" in slot0
    assert "at replacements median 2.00s, p99 2.00s, max 2.00s" in slot0
    slot1 = next(line for line in lines if line.strip().startswith("gpu1 w1 (GPU 1)"))
    assert "busy 100.0% of 300s, 1 trials; gaps none" in slot1
