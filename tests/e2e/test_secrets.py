"""Secrets and doors: a store password never shows (output, logs, reports, study attributes, Slurm
script, any process's command line while the sweep runs); folders sweeper creates are private;
study names cannot lead files out of their folders."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
import time

import optuna
import psutil
import pytest
from conftest import _server_database, run_sweeper
from sqlalchemy.engine import make_url

pytestmark = pytest.mark.slow
SECRET = "S3cret-Pw-4711"


@pytest.fixture
def secret_url():
    """A PostgreSQL store whose URL carries a password (the test server trusts any password)."""
    url, drop = _server_database("postgres")
    yield make_url(url).set(password=SECRET).render_as_string(hide_password=False)
    drop()


def _command_lines_with(secret: str) -> list[str]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        line = " ".join(process.info["cmdline"] or [])
        if secret in line:
            found.append(f"{process.pid}: {line}")
    return found


def test_a_store_password_shows_nowhere(project, secret_url, monkeypatch):
    monkeypatch.setenv("SWEEPER_CACHE_DIR", str(project / "private" / "cache"))
    sweep = subprocess.Popen(
        [sys.executable, "-m", "sweeper", "sweep", "tiny_cnn", "--trials", "3", "--workers", "2",
         "--storage", secret_url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started, seen, looks = time.time(), [], 0
    while sweep.poll() is None:  # watch `ps` for the whole sweep
        time.sleep(0.3)
        if time.time() - started > 3:  # the controller masks its own title once it has started
            seen += _command_lines_with(SECRET)
            looks += 1
    output = sweep.stdout.read()
    assert sweep.returncode == 0, output
    assert looks > 10 and not seen, seen
    assert SECRET not in output and ":***@" in output

    texts = [output]
    for command in (("status",), ("report", "tiny_cnn"), ("best", "tiny_cnn", "--export", "b.yaml"),
                    ("slurm", "tiny_cnn", "--trials", "3")):
        result = run_sweeper(*command, "--storage", secret_url)
        assert result.returncode == 0, result.stderr
        texts += [result.stdout, result.stderr]
    leaks = [str(p) for p in project.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaks, f"the password is written in {leaks}"
    assert not [t for t in texts if SECRET in t]

    study = optuna.load_study(study_name="tiny_cnn", storage=secret_url)
    stored = json.dumps([study.user_attrs, study._storage.get_study_system_attrs(study._study_id),
                         [(t.user_attrs, t.system_attrs) for t in study.trials]], default=str)
    assert SECRET not in stored
    assert ":***@" in study.user_attrs["sweeper.command"]

    # Every folder sweeper made is its owner's only (what joblib makes inside the private cache
    # folder is out of reach through it).
    storage = project / "storage"
    made = [storage, storage / "logs", storage / "logs" / "tiny_cnn", storage / "artifacts",
            storage / "reports", storage / "reports" / "tiny_cnn", storage / "slurm",
            storage / "slurm" / "tiny_cnn", project / "private" / "cache", project / "private"]
    open_ones = [f"{p} {stat.filemode(p.stat().st_mode)}" for p in made if p.stat().st_mode & 0o077]
    assert not open_ones, open_ones


def test_study_names_cannot_leave_their_folders(project):
    for name in ("../../escape", "a/b", "x\n#SBATCH --wrap=id", ".hidden"):
        result = run_sweeper("sweep", "tiny_cnn", "--study", name, "--workers", "1")
        assert result.returncode == 2, (name, result.stderr)
        assert "study name" in result.stderr and len(result.stderr.strip().splitlines()) == 1
        result = run_sweeper("slurm", "tiny_cnn", "--study", name)
        assert result.returncode == 2, (name, result.stderr)
    assert not list(project.parent.glob("escape*")) and not (project / "storage").exists()

    from sweeper.paths import study_folder

    base = project / "storage" / "reports"
    for name in ("../../escape", "a/b", "..", "x\ny", "made elsewhere"):
        folder = study_folder(base, name)
        assert folder.parent == base and folder.name not in (".", "..")


def _listening(pid: int, timeout: float = 30) -> set[str]:
    """Addresses the process listens on, once it does."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        addresses = {c.laddr.ip for c in psutil.Process(pid).net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN}
        if addresses:
            return addresses
        time.sleep(0.3)
    return set()


@pytest.mark.parametrize("host, warned", [(None, False), ("0.0.0.0", True)])
def test_dashboard_listens_on_this_machine_only_unless_asked(project, host, warned):
    url = f"sqlite:///{project / 'store.db'}"
    optuna.create_study(study_name="seen", storage=url)
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "sweeper", "dashboard", "--storage", url, "--port", str(port)]
    dashboard = subprocess.Popen(command + (["--host", host] if host else []),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        addresses = _listening(dashboard.pid)
    finally:
        dashboard.terminate()
        _, errors = dashboard.communicate(timeout=20)
    assert addresses == {host or "127.0.0.1"}, (addresses, errors)
    assert ("warning: listening on 0.0.0.0" in errors) == warned, errors


def test_artifact_ids_cannot_leave_the_artifact_folder(tmp_path):
    import io

    from sweeper.pipeline.artifacts import artifact_store

    store = artifact_store(tmp_path / "artifacts")
    assert stat.S_IMODE((tmp_path / "artifacts").stat().st_mode) == 0o700
    for bad in ("../escape", "/tmp/escape", "a/../../escape", ".."):
        with pytest.raises(ValueError):
            store.write(bad, io.BytesIO(b"x"))
        with pytest.raises(ValueError):
            store.open_reader(bad)
    assert not list(tmp_path.rglob("escape"))
