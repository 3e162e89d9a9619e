"""Two sweeps of different studies on one machine's two (fake) GPUs: host-wide leases keep every
GPU slot to one trial at a time across both, judged from each trial's recorded GPU and times; the
second sweep, started while the first trains on both, waits naming it, then takes the GPUs as the
first lets go; both budgets exact."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import load, wait_for_running

pytestmark = pytest.mark.slow
State = optuna.trial.TrialState


def _intervals(url: str, study: str) -> list[tuple[str, float, float, str]]:
    return [(t.user_attrs["sweeper.cuda_visible_devices"], t.datetime_start.timestamp(),
             t.datetime_complete.timestamp(), f"{study}#{t.number}")
            for t in load(url, study).trials if t.datetime_complete is not None]


def test_two_sweeps_never_share_a_gpu_slot_and_the_second_grows(project, fake_nvidia_smi,
                                                                 monkeypatch, tmp_path):
    monkeypatch.setenv("SWEEPER_LEASE_DIR", str(tmp_path / "leases"))
    sweeps = {}
    for study, trials in (("long_cnn", 4), ("tiny_cnn", 4)):
        sweeps[study] = subprocess.Popen(
            [sys.executable, "-m", "sweeper", "sweep", study, "--gpus", "0,1", "--trials",
             str(trials), "--storage", f"sqlite:///{project / 'storage' / study}.db"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if study == "long_cnn":  # the second starts while the first trains on both GPUs
            wait_for_running(f"sqlite:///{project / 'storage' / study}.db", study, 2,
                             sweeps[study])
    outputs = {study: sweep.communicate(timeout=600)[0] for study, sweep in sweeps.items()}
    for study, sweep in sweeps.items():
        assert sweep.returncode == 0, outputs[study][-3000:]
    runs = []
    for study, trials in (("long_cnn", 4), ("tiny_cnn", 4)):
        url = f"sqlite:///{project / 'storage' / study}.db"
        states = [t.state for t in load(url, study).trials]
        assert sum(s in (State.COMPLETE, State.PRUNED) for s in states) == trials  # exact budget
        runs += _intervals(url, study)
    for gpu in ("0", "1"):
        on_gpu = sorted(r for r in runs if r[0] == gpu)
        overlaps = [(a[3], b[3]) for a, b in zip(on_gpu, on_gpu[1:]) if b[1] < a[2]]
        assert overlaps == [], "\n".join(outputs.values())[-3000:]
    # The second waited for the GPUs, named who held them, and took both as they came free.
    second = outputs["tiny_cnn"]
    assert "waiting for GPU 0: held by study long_cnn (user " in second, second[-3000:]
    assert "now free" in second, second[-3000:]
    assert {r[0] for r in runs if r[3].startswith("tiny_cnn")} == {"0", "1"}


def test_another_programs_gpu_is_left_out_and_no_wait_refuses_when_all_are_held(
        project, fake_nvidia_smi, monkeypatch, tmp_path):
    """A program computing on GPU 1 (as nvidia-smi tells it): a sweep without GPUS leaves that GPU
    out with one line and trains on GPU 0. While it holds GPU 0, a second sweep told --no-wait
    refuses with one line naming the holder, exit 2, nothing written."""
    monkeypatch.setenv("SWEEPER_LEASE_DIR", str(tmp_path / "leases"))
    monkeypatch.setenv("FAKE_GPU_APPS", "GPU-fake-1, 999999999, 1200")
    url = f"sqlite:///{project / 'storage' / 'long_cnn.db'}"
    first = subprocess.Popen([sys.executable, "-m", "sweeper", "sweep", "long_cnn", "--trials",
                              "2", "--storage", url],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        running = wait_for_running(url, "long_cnn", 1, first)
        assert {t.user_attrs["sweeper.cuda_visible_devices"] for t in running} == {"0"}
        refused = subprocess.run(
            [sys.executable, "-m", "sweeper", "sweep", "tiny_cnn", "--no-wait", "--trials", "1",
             "--storage", f"sqlite:///{project / 'storage' / 'tiny.db'}"],
            capture_output=True, text=True, timeout=300)
        output = first.communicate(timeout=300)[0]
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, output[-3000:]
    assert "left out GPU 1: process 999999999 of user ? using 1200 MiB" in output, output[-3000:]
    assert refused.returncode == 2, refused.stdout + refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert "no free GPU slot" in line and "held by study long_cnn" in line, line
    assert not (project / "storage" / "tiny.db").exists()


def test_a_killed_sweep_frees_its_gpus_to_a_waiting_one(project, fake_nvidia_smi, monkeypatch,
                                                        tmp_path):
    """The first sweep SIGKILLed, controller and workers alike: the kernel drops its leases, and
    the sweep waiting for its GPUs takes them and finishes its budget."""
    import psutil

    monkeypatch.setenv("SWEEPER_LEASE_DIR", str(tmp_path / "leases"))
    url = f"sqlite:///{project / 'storage' / 'long_cnn.db'}"
    first = subprocess.Popen([sys.executable, "-m", "sweeper", "sweep", "long_cnn", "--gpus",
                              "0,1", "--trials", "20", "--storage", url],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    second = None
    try:
        wait_for_running(url, "long_cnn", 2, first)
        second = subprocess.Popen(
            [sys.executable, "-m", "sweeper", "sweep", "tiny_cnn", "--gpus", "0,1", "--trials",
             "2", "--storage", f"sqlite:///{project / 'storage' / 'tiny.db'}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        said = []
        while sum("waits for GPU" in line for line in said) < 2:  # both its slots wait
            line = second.stdout.readline()
            assert line, "".join(said)[-3000:]
            said.append(line)
        workers = psutil.Process(first.pid).children()
        for process in [psutil.Process(first.pid), *workers]:
            process.kill()
        killed = time.time()
        output = "".join(said) + second.communicate(timeout=300)[0]
    finally:
        for sweep in (first, second):
            if sweep is not None and sweep.poll() is None:
                sweep.kill()
    assert second.returncode == 0, output[-3000:]
    trials = load(f"sqlite:///{project / 'storage' / 'tiny.db'}", "tiny_cnn").trials
    assert len(trials) == 2 and all(t.state in (State.COMPLETE, State.PRUNED) for t in trials)
    assert all(t.datetime_start.timestamp() >= killed for t in trials)  # only once it was free
    assert output.count("now free") == 2, output[-3000:]  # both slots, taken as they freed


def test_a_sweep_of_another_user_waits_for_the_gpus_and_never_doubles_a_slot(
        project, fake_nvidia_smi, monkeypatch):
    """The same machine, two users: root's sweep trains on both GPUs; nobody's sweep, started
    meanwhile from its own folder, waits naming root's study, then takes the GPUs as they free;
    no GPU ever runs two trials at once, across both users' studies."""
    import os
    import shutil
    import stat
    import tempfile

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("running a sweep as another user needs root and setpriv (util-linux)")
    shared = Path(tempfile.mkdtemp(prefix="sweeper-two-users-"))
    # The other user must reach this checkout (a fresh clone may sit in a private temporary
    # folder): its folders above get search permission for others while the test runs.
    opened = [p for p in Path(__file__).resolve().parents
              if not stat.S_IMODE(os.stat(p).st_mode) & stat.S_IXOTH]
    for folder in opened:
        os.chmod(folder, stat.S_IMODE(os.stat(folder).st_mode) | stat.S_IXOTH)
    try:
        os.chmod(shared, 0o777)
        monkeypatch.setenv("SWEEPER_LEASE_DIR", str(shared / "leases"))
        theirs = shared / "nobody"
        shutil.copytree(project / "search_spaces", theirs / "search_spaces")
        shutil.copy(fake_nvidia_smi, shared / "nvidia-smi")
        os.chmod(shared / "nvidia-smi", 0o755)
        for path in [theirs, *theirs.rglob("*")]:
            os.chown(path, 65534, 65534)
        url = f"sqlite:///{project / 'storage' / 'long_cnn.db'}"
        first = subprocess.Popen([sys.executable, "-m", "sweeper", "sweep", "long_cnn", "--gpus",
                                  "0,1", "--trials", "4", "--storage", url],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for_running(url, "long_cnn", 2, first)
        env = {**os.environ, "HOME": str(theirs), "SWEEPER_CACHE_DIR": str(theirs / "cache"),
               "MPLCONFIGDIR": str(theirs / "mpl"),
               "PATH": f"{shared}{os.pathsep}{os.environ['PATH']}"}
        second = subprocess.run(
            # nobody, allowed only to read and search (the interpreter may live under /root):
            # its files are its own, and its leases those of another user.
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", sys.executable,
             "-m", "sweeper", "sweep", "tiny_cnn", "--gpus", "0,1", "--trials", "3"],
            cwd=theirs, env=env, capture_output=True, text=True, timeout=600)
        output = first.communicate(timeout=600)[0]
        assert first.returncode == 0, output[-3000:]
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert "held by study long_cnn (user root" in second.stdout, second.stdout[-3000:]
        runs = _intervals(url, "long_cnn") + _intervals(
            f"sqlite:///{theirs / 'storage' / 'tiny_cnn.db'}", "tiny_cnn")
        for gpu in ("0", "1"):
            on_gpu = sorted(r for r in runs if r[0] == gpu)
            assert not [(a[3], b[3]) for a, b in zip(on_gpu, on_gpu[1:]) if b[1] < a[2]]
        assert stat.S_IMODE(os.lstat(shared / "leases").st_mode) == 0o1777
    finally:
        shutil.rmtree(shared, ignore_errors=True)
        for folder in opened:
            os.chmod(folder, stat.S_IMODE(os.stat(folder).st_mode) & ~stat.S_IXOTH)
