"""Helpers shared by the benchmark rows: stores, child processes, timing, memory."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER_URL_ENV = {"postgresql": "SWEEPER_TEST_POSTGRES_URL", "mysql": "SWEEPER_TEST_MYSQL_URL"}
DEFAULT_SERVER_URLS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/test",
}


@dataclass
class Row:
    """One line of the table: what was measured, against what, the ratio and the target."""

    number: int
    what: str
    ours: str
    baseline: str
    ratio: str
    target: str
    met: bool | None  # None: not judged (could not be measured here, or why_unjudged)
    details: dict = field(default_factory=dict)
    why_unjudged: str = ""  # shown instead of "n/a" when met is None, e.g. "not judged (quick)"


def python() -> str:
    return sys.executable


def child_env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.update(extra)
    return env


def run_processes(commands: list[list[str]], env: dict | None = None, cwd: Path | None = None,
                  timeout: float = 1800) -> tuple[float, list[subprocess.CompletedProcess]]:
    """Start every command at once, wait for all; returns (wall seconds, results)."""
    started = time.perf_counter()
    procs = [subprocess.Popen(cmd, env=env or child_env(), cwd=cwd, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for cmd in commands]
    results = []
    for cmd, proc in zip(commands, procs):
        out, _ = proc.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(cmd, proc.returncode, out, ""))
    return time.perf_counter() - started, results


def check(results: list[subprocess.CompletedProcess], what: str) -> None:
    for r in results:
        if r.returncode != 0:
            raise RuntimeError(f"{what}: {' '.join(map(str, r.args[:4]))}... exited {r.returncode}:\n"
                               f"{r.stdout[-3000:]}")


def sweep(work: Path, name: str, space_text: str, trials: int) -> tuple[float, object, Path, str]:
    """The real `sweeper sweep` of a space written to work/NAME.yaml, 2 CPU workers, a SQLite
    store beside it, no models kept: (wall seconds, the study, the space's path, the store URL)."""
    import optuna

    space = work / f"{name}.yaml"
    space.write_text(space_text)
    url = f"sqlite:///{work / (name + '.db')}"
    cmd = [python(), "-m", "sweeper", "sweep", str(space), "--workers", "2", "--trials",
           str(trials), "--storage", url, "--keep-models", "0"]
    wall, results = run_processes([cmd], env=child_env(SWEEPER_CACHE_DIR=str(work / "cache")),
                                  cwd=work)
    check(results, f"sweep {name}")
    return wall, optuna.load_study(study_name=name, storage=url), space, url


@contextlib.contextmanager
def store(kind: str, workdir: Path):
    """A fresh empty store: a SQLite file in workdir, or a new database on the local server."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / f'store-{uuid.uuid4().hex[:8]}.db'}"
        return
    import sqlalchemy
    from sqlalchemy.engine import make_url

    base = os.environ.get(SERVER_URL_ENV[kind], DEFAULT_SERVER_URLS[kind])
    name = f"sweeper_bench_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if kind == "postgresql" else ""
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")
        admin.dispose()


def server_available(kind: str) -> str | None:
    """None when the server answers, else why not."""
    if kind == "sqlite":
        return None
    import sqlalchemy

    base = os.environ.get(SERVER_URL_ENV[kind], DEFAULT_SERVER_URLS[kind])
    try:
        engine = sqlalchemy.create_engine(base)
        with engine.connect():
            pass
        engine.dispose()
        return None
    except Exception as e:
        return str(e).splitlines()[0]


def workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"sweeper-bench-{prefix}-"))


def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"
