"""What a sweep shows, from hand-made snapshots and a hand-made store, in milliseconds: the time
left (the budget's pace or the time limit, whichever comes first), plain lines for logs, the live
view on a terminal, and the end-of-sweep summary."""

from __future__ import annotations

import io

import optuna
import pytest

from sweeper.storage.counts import TrialCounts, study_counts
from sweeper.storage.rdb import open_storage
from sweeper.sweep.progress import ProgressView, RunningTrial, Snapshot, summary_lines, time_left

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize("elapsed, done, remaining, until_deadline, expected", [
    (100, 4, 6, None, (150, False)),  # at the pace so far
    (100, 0, 6, None, None),  # nothing finished yet, no time limit: unknown
    (100, 0, 6, 300, (300, True)),  # nothing finished: the time limit is all we know
    (60, 1, 100, 120, (120, True)),  # a 2-minute limit ends it long before the budget would
    (100, 4, 6, 1000, (150, False)),  # the budget comes first
    (100, 4, 6, -5, (0, True)),  # past the time limit
])
def test_time_left_is_the_budget_or_the_time_limit_whichever_comes_first(
        elapsed, done, remaining, until_deadline, expected):
    assert time_left(elapsed, done, remaining, until_deadline) == expected


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


SNAPSHOT = Snapshot(TrialCounts(complete=3, pruned=2, failed=2, running=2, retries=1),
                    best=(0.91234, 4),
                    running=(RunningTrial("0", 7, 3), RunningTrial("1", 8, 1)))


def test_a_plain_line_says_everything_and_its_eta_respects_the_time_limit():
    clock = Clock()
    out = io.StringIO()
    view = ProgressView(budget=10, finished_at_start=0, deadline=clock.now + 120, out=out,
                        live=False, clock_fn=clock)
    clock.now += 60
    assert view.line(SNAPSHOT) == (
        "[00:01:00] 6/10 done (complete 3, pruned 2, failed 1) | running 2 | best F1 0.9123 "
        "(trial 4) | ETA 00:00:40 | w0:t7@e3 w1:t8@e1")
    costly = Snapshot(SNAPSHOT.counts, SNAPSHOT.best, (), slot_hours=(1.25, 0.5))
    assert view.line(costly).endswith("| ETA 00:00:40 | 1.25 slot-h, pruning saved 0.50")
    view.deadline = clock.now + 30  # the time limit now comes first
    assert "| ETA 00:00:30 (time limit) |" in view.line(SNAPSHOT)


def test_plain_lines_only_when_something_changed_and_not_too_often():
    clock = Clock()
    out = io.StringIO()
    view = ProgressView(budget=10, finished_at_start=0, out=out, live=False, every_s=5,
                        clock_fn=clock)
    clock.now += 5
    view.show(SNAPSHOT)
    clock.now += 1
    view.show(Snapshot(TrialCounts(complete=9)))  # within 5 s: not shown
    clock.now += 5
    view.show(SNAPSHOT)
    view.show(SNAPSHOT, final=True)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("[00:00:05] 6/10 done")
    assert lines[1].startswith("[00:00:11] 6/10 done") and lines[2] == lines[1]


def test_on_a_terminal_the_view_redraws_in_place_with_a_bar_and_a_row_per_trial(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    out = io.StringIO()
    view = ProgressView(budget=10, finished_at_start=0, out=out, live=True, clock_fn=Clock())
    view.show(SNAPSHOT)
    view.say("worker 1 exited with code -9: killed; restarting")
    view.show(Snapshot(TrialCounts(complete=10)))
    view.close()
    text = out.getvalue()
    assert "\x1b[" in text  # drawn with terminal control codes, not appended lines
    assert "6/10 done" in text and "complete 3, pruned 2, failed 1 | running 2 | best F1 " \
        "0.9123 (trial 4)" in text
    assert "━" in text  # the budget bar
    assert "worker" in text and "epoch" in text
    assert "worker 1 exited with code -9: killed; restarting" in text
    assert "10/10 done" in text


def test_a_snapshot_of_a_hand_made_store(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_s=None)
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    for value in (0.5, 0.8):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        study.tell(trial, value)
    running = study.ask()
    storage.set_trial_user_attr(running._trial_id, "sweeper.worker", "1")
    running.report(0.4, 1)
    running.report(0.5, 2)
    snapshot = Snapshot.of(study, study_counts(study), max_epochs=10)
    assert snapshot.best == (0.8, 1)
    assert snapshot.running == (RunningTrial("1", 2, 2),)
    assert (snapshot.counts.complete, snapshot.counts.running) == (2, 1)
    assert snapshot.slot_hours[0] > 0 and snapshot.slot_hours[1] == 0.0  # nothing pruned


def test_the_summary_names_the_best_trials_and_how_to_look_at_them(tmp_path):
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.create_trial(
        value=0.93, params={"learning_rate": 0.0012345, "filters": 16},
        distributions={"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-1),
                       "filters": optuna.distributions.CategoricalDistribution([8, 16])},
        user_attrs={"sweeper.test_f1": 0.9, "sweeper.epochs_run": 12}))
    lines = summary_lines(study.trials, "/data/storage/cnn_lr.db", "cnn_lr", "cnn_lr-2")
    assert lines[1] == "  #0    0.9300  0.9000   12  learning_rate=0.001234, filters=16"
    assert "study 'cnn_lr-2' is in /data/storage/cnn_lr.db" in lines[2]
    assert lines[3].startswith("inspect it: sweeper dashboard cnn_lr --study cnn_lr-2")
    assert lines[4] == "report:     sweeper report cnn_lr --study cnn_lr-2"
