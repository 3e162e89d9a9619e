"""Store trouble: a full disk, a read-only store, an older Optuna schema, an unreachable server and
wrong credentials each end in one line naming the URL (password masked) and exit code 2, and no
finished trial is lost."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from conftest import _server_database, load, run_sweeper

SECRET = "Hunter2pw"


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sweeper: error: "), result.stderr
    assert SECRET not in result.stdout + result.stderr
    return lines[0]


# -- a real small filesystem: full, then read-only -------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB tmpfs mounted for the test: a disk that really fills and can be made read-only."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root with CAP_SYS_ADMIN): "
                    f"{mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def _remount(disk: Path, how: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{how}", str(disk)], check=True)


def _fill(disk: Path, leave_bytes: int) -> Path:
    """Another program takes the disk's free space, leaving `leave_bytes`."""
    stats = os.statvfs(disk)
    filler = disk / "filler"
    with open(filler, "wb") as out:
        out.truncate(0)
        out.write(b"\0" * max(0, stats.f_bavail * stats.f_frsize - leave_bytes))
    return filler


def _logged_finished(log_dir: Path) -> set[int]:
    """Trial numbers that workers logged as finished: each was told to the store first."""
    numbers = set()
    for log in log_dir.glob("*.log"):
        numbers |= {int(n) for n in re.findall(r"trial (\d+) (?:COMPLETE|PRUNED)", log.read_text())}
    return numbers


def _finished(url: str, study: str) -> dict[int, float | None]:
    """Finished trials by number; the store is closed afterwards (the disk gets remounted)."""
    from sweeper.storage.rdb import open_storage

    storage = open_storage(url, create=False)
    try:
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        trials = optuna.load_study(study_name=study, storage=storage).get_trials(states=states)
        return {t.number: t.value for t in trials}
    finally:
        storage.engine.dispose()


@pytest.mark.slow
def test_full_disk_and_read_only_store_stop_cleanly_and_lose_nothing(project, small_disk):
    url = f"sqlite:///{small_disk / 'study.db'}"
    sweep = ("sweep", "tiny_cnn", "--storage", url, "--workers", "2")
    first = run_sweeper(*sweep, "--trials", "2")
    assert first.returncode == 0, first.stderr
    before = _finished(url, "tiny_cnn")
    assert len(before) == 2

    # Read-only: the sweep and a new store under it are refused; what only reads still works.
    _remount(small_disk, "ro")
    line = _one_error_line(run_sweeper(*sweep, "--trials", "12"))
    assert f"study store {url}" in line and "not writable" in line
    line = _one_error_line(run_sweeper("sweep", "tiny_cnn", "--storage",
                                       f"sqlite:///{small_disk / 'new' / 'x.db'}"))
    assert "Read-only file system" in line
    _reads_a_read_only_store(url, before)
    _remount(small_disk, "rw")
    assert _finished(url, "tiny_cnn") == before

    # Full: a filler leaves room for a few trials (4 of the 10 left, measured); the sweep stops
    # at the first failed write.
    filler = _fill(small_disk, leave_bytes=600 * 1024)
    line = _one_error_line(run_sweeper(*sweep, "--trials", "12"))
    assert f"study store {url}: database or disk is full" in line and "free space" in line
    logged = _logged_finished(project / "storage" / "logs" / "tiny_cnn")
    after_full = _finished(url, "tiny_cnn")
    assert logged <= set(after_full), "a trial a worker saw finish is missing from the store"
    assert all(after_full[n] == v for n, v in before.items())

    # Space freed: the same command resumes and ends with exactly the budget.
    filler.unlink()
    last = run_sweeper(*sweep, "--trials", "12")
    assert last.returncode == 0, last.stderr
    assert set(after_full) <= set(_finished(url, "tiny_cnn"))
    assert all(_finished(url, "tiny_cnn")[n] == v for n, v in after_full.items())
    counts = _counts(url, "tiny_cnn")
    assert counts.finished == 12 and counts.running == 0 and counts.waiting == 0, _table(url)


def _reads_a_read_only_store(url: str, finished: dict[int, float | None]) -> None:
    """status, report, best and the dashboard read a store this machine cannot write."""
    status = run_sweeper("status", "--storage", url)
    assert status.returncode == 0, status.stderr
    assert f"tiny_cnn                 {len(finished)}/" in status.stdout
    best_number, best_value = max(((n, v) for n, v in finished.items() if v is not None),
                                  key=lambda item: item[1])
    best = run_sweeper("best", "tiny_cnn", "--storage", url)
    assert best.returncode == 0, best.stderr
    assert best.stdout.startswith(f"best trial {best_number}: validation F1 {best_value:.4f}")
    report = run_sweeper("report", "tiny_cnn", "--storage", url)
    assert report.returncode == 0, report.stderr
    assert f"{best_value:.4f}" in report.stdout.split("top ", 1)[1]
    assert Path("storage/reports/tiny_cnn/report.html").exists()
    with _dashboard(url) as base:
        studies = _get_json(f"{base}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == ["tiny_cnn"]
        trials = _get_json(f"{base}/api/studies/{studies[0]['study_id']}")["trials"]
        assert {t["number"] for t in trials} == set(finished)


@contextlib.contextmanager
def _dashboard(url: str):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "sweeper", "dashboard", "--storage", url,
                               "--port", str(port)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                _get_json(f"{base}/api/meta")
                break
            except OSError:
                assert server.poll() is None, server.communicate()[0]
                assert time.time() < deadline, "the dashboard did not start"
                time.sleep(0.3)
        yield base
    finally:
        server.terminate()
        server.wait(10)


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_a_read_only_store_left_with_its_write_ahead_log_is_read_whole(project, small_disk):
    """A store whose last writes are still in its -wal file (the disk went read-only mid-sweep)
    is read with them: nothing in the log is skipped."""
    import sqlite3

    from sweeper.storage.rdb import open_storage

    source = project / "live" / "study.db"
    storage = open_storage(f"sqlite:///{source}", heartbeat_s=None)
    keep_open = sqlite3.connect(source)  # holds the log open, so nothing is checkpointed
    keep_open.execute("PRAGMA wal_autocheckpoint=0")
    study = optuna.create_study(study_name="tiny_cnn", storage=storage, direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    logged = [p for p in source.parent.iterdir() if p.name.endswith("-wal")]
    assert logged and logged[0].stat().st_size > 0
    for part in source.parent.iterdir():  # what a crashed sweep leaves on its disk
        shutil.copy(part, small_disk / part.name)
    keep_open.close()
    _remount(small_disk, "ro")
    url = f"sqlite:///{small_disk / 'study.db'}"
    status = run_sweeper("status", "--storage", url)
    assert status.returncode == 0, status.stderr
    assert "tiny_cnn                 3/? done: complete 3" in status.stdout
    _remount(small_disk, "rw")


def _table(url: str) -> str:
    rows = [f"{t.number} {t.state.name} retry-of={t.system_attrs.get('failed_trial')} "
            f"worker={t.user_attrs.get('sweeper.worker')} pid={t.user_attrs.get('sweeper.pid')} "
            f"{t.user_attrs.get('sweeper.fail_reason')}" for t in load(url, "tiny_cnn").trials]
    return "\n".join(rows)


def _counts(url: str, study: str):
    from sweeper.storage.counts import count_trials
    from sweeper.storage.rdb import open_storage

    storage = open_storage(url, create=False)
    return count_trials(storage, storage.get_study_id_from_name(study))


# -- an older Optuna schema -----------------------------------------------------------------

OLD_OPTUNA = "3.1.1"  # its stores carry schema v3.0.0.d, which Optuna 5 refuses until upgraded


@pytest.fixture(scope="session")
def old_optuna(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("optuna-old")
    got = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                          str(target), f"optuna=={OLD_OPTUNA}"], capture_output=True, text=True)
    if got.returncode != 0:
        pytest.skip(f"cannot install optuna {OLD_OPTUNA} from the package index: "
                    f"{(got.stderr.strip().splitlines() or ['?'])[-1]}")
    return target


@pytest.mark.slow
def test_store_of_an_older_optuna_is_left_untouched_with_the_upgrade_command(project, old_optuna):
    path = project / "old.db"
    url = f"sqlite:///{path}"
    make_old = ("import optuna; s = optuna.create_study(storage=%r, study_name='old'); "
                "s.optimize(lambda t: t.suggest_float('x', 0, 1), n_trials=3)" % url)
    subprocess.run([sys.executable, "-c", make_old], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(old_optuna)})
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    for command in (("status", "--storage", url), ("sweep", "tiny_cnn", "--storage", url)):
        line = _one_error_line(run_sweeper(*command))
        assert f"written by an older Optuna ({OLD_OPTUNA})" in line
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, "the old store changed"

    # The suggested command works as printed, and then every old trial is there.
    suggested = line.split("then run: ", 1)[1]
    optuna_cli = str(Path(sys.executable).parent / "optuna")
    subprocess.run([optuna_cli, *shlex.split(suggested)[1:]], check=True, capture_output=True)
    status = run_sweeper("status", "--storage", url)
    assert status.returncode == 0, status.stderr
    assert len(load(url, "old").get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 3


# Optuna 2.4 made its stores without the heartbeat table that later versions add on opening.
OLDEST_OPTUNA = "2.4.0"


@pytest.fixture(scope="session")
def oldest_optuna(tmp_path_factory) -> Path:
    """Optuna 2.4 with the SQLAlchemy, Alembic and PostgreSQL driver of its time, apart from
    this project's packages. Its optional plotting import is hidden: today's matplotlib breaks it."""
    target = tmp_path_factory.mktemp("optuna-2.4")
    got = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                          "--only-binary=:all:", "--target", str(target),
                          f"optuna=={OLDEST_OPTUNA}", "sqlalchemy==1.4.54", "alembic==1.8.1",
                          "psycopg2-binary==2.9.10"], capture_output=True, text=True)
    if got.returncode != 0:
        pytest.skip(f"cannot install optuna {OLDEST_OPTUNA} from the package index: "
                    f"{(got.stderr.strip().splitlines() or ['?'])[-1]}")
    (target / "matplotlib").mkdir()
    (target / "matplotlib" / "__init__.py").write_text("raise ImportError('not for Optuna 2.4')\n")
    return target


def _everything_in(url: str) -> dict:
    """Every table of the database with all its rows: what 'untouched' means."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            return {table: sorted(map(repr, conn.execute(sqlalchemy.text(
                        f"SELECT * FROM {table}")).fetchall()))
                    for table in sqlalchemy.inspect(conn).get_table_names()}
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_a_server_store_of_an_older_optuna_gets_nothing_added(project, oldest_optuna, kind):
    from sqlalchemy.engine import make_url

    url, drop = _server_database(kind)
    try:
        # The old stack talks to PostgreSQL through psycopg2, this one through psycopg 3.
        old_url = make_url(url).set(drivername="postgresql") if kind == "postgres" else \
            make_url(url)
        make_old = ("import optuna; s = optuna.create_study(storage=%r, study_name='old'); "
                    "s.optimize(lambda t: t.suggest_float('x', 0, 1), n_trials=3)"
                    % old_url.render_as_string(hide_password=False))
        subprocess.run([sys.executable, "-c", make_old], check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(oldest_optuna)})
        before = _everything_in(url)
        assert "trial_heartbeats" not in before  # what opening it as usual would add

        for command in (("sweep", "tiny_cnn", "--study", "old"), ("status",)):
            line = _one_error_line(run_sweeper(*command, "--storage", url))
            assert f"written by an older Optuna ({OLDEST_OPTUNA})" in line
            assert "optuna storage upgrade --storage" in line
            assert _everything_in(url) == before, "the old store changed"

        suggested = line.split("then run: ", 1)[1]
        optuna_cli = str(Path(sys.executable).parent / "optuna")
        subprocess.run([optuna_cli, *shlex.split(suggested)[1:]], check=True, capture_output=True)
        assert len(load(url, "old").get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 3
    finally:
        drop()


# -- servers: unreachable, wrong credentials, no such database --------------------------------


@pytest.mark.parametrize("url, expect", [
    (f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:1/test", "is the database server running"),
    (f"postgresql+psycopg://postgres:{SECRET}@no-such-host.invalid/test",
     "is the database server running"),
    (f"mysql+pymysql://root:{SECRET}@127.0.0.1:1/test", "is the database server running"),
])
def test_unreachable_server_is_one_line(project, url, expect):
    for command in (("sweep", "tiny_cnn"), ("status",), ("report", "tiny_cnn")):
        line = _one_error_line(run_sweeper(*command, "--storage", url))
        assert ":***@" in line and expect in line, line
    assert not (project / "storage").exists()


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_wrong_credentials_are_one_line_and_the_study_stays(project, kind):
    from sqlalchemy.engine import make_url

    url, drop = _server_database(kind)
    try:
        study = optuna.create_study(study_name="kept", storage=url)
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
        good = make_url(url)
        # PostgreSQL here trusts any password, so a wrong user; MariaDB checks the password.
        bad = (good.set(username="no_such_user", password=SECRET) if kind == "postgres"
               else good.set(password=SECRET))
        bad_url = bad.render_as_string(hide_password=False)
        for command in (("sweep", "tiny_cnn", "--study", "kept"), ("status",)):
            line = _one_error_line(run_sweeper(*command, "--storage", bad_url))
            assert "check the user name and password" in line and ":***@" in line
        assert len(optuna.load_study(study_name="kept", storage=url).trials) == 3
    finally:
        drop()
