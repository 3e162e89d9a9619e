"""The sbatch script: array size, GPUs, time limit, warning signal, and no password in it."""

from __future__ import annotations

import pytest

from sweeper.errors import SweeperError
from sweeper.sweep.slurm import SlurmJob, check_time_limit, limit_seconds, render_script


@pytest.mark.parametrize("text, seconds", [
    ("30", 1800), ("10:00", 600), ("10:00:00", 36000), ("1-00:00:00", 86400), ("2-12", 216000),
])
def test_time_limits(text, seconds):
    assert limit_seconds(check_time_limit(text)) == seconds


@pytest.mark.parametrize("text", ["10h", "ten", "1:2:3:4", ""])
def test_bad_time_limit(text):
    with pytest.raises(SweeperError, match="--time"):
        check_time_limit(text)


def test_script_asks_for_gpus_and_a_warning_and_hides_the_password(tmp_path):
    job = SlurmJob(space="cnn_lr", study="cnn_lr", nodes=4, gpus_per_node=8,
                   storage_url="postgresql+psycopg://alice:s3cret@db:5432/sweeps",
                   time_limit="10:00:00", trials=400, partition="gpu")
    script = render_script(job, tmp_path, tmp_path / "logs")
    assert "#SBATCH --array=0-3" in script
    assert "#SBATCH --gres=gpu:8" in script
    assert "#SBATCH --time=10:00:00" in script
    assert "#SBATCH --signal=B:USR1@300" in script
    assert "#SBATCH --partition=gpu" in script
    assert "--trials 400" in script and "--study cnn_lr" in script
    assert "s3cret" not in script and "alice:***@db" in script


def test_several_nodes_on_a_sqlite_store_are_refused_before_anything_is_written(project):
    from conftest import run_sweeper

    refused = run_sweeper("slurm", "tiny_cnn", "--nodes", "3")
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sweeper: error: --nodes 3 with the SQLite "
                                                   f"store sqlite:///{project}/storage/tiny_cnn.db")
    assert "optuna#815" in lines[0] and "PostgreSQL or MySQL" in lines[0] and "--nodes 1" in lines[0]
    assert not (project / "storage").exists(), "something was written"

    one_node = run_sweeper("slurm", "tiny_cnn", "--nodes", "1")  # allowed, with a warning
    assert one_node.returncode == 0, one_node.stderr
    assert "warning: a SQLite store serves one machine" in one_node.stderr
    assert (project / "storage" / "slurm" / "tiny_cnn" / "sweep.sbatch").exists()


def test_a_warm_started_array_sweeps_the_seeded_study(project):
    """`slurm --warm-start` after the space changed: the new study is made and seeded before
    submitting, and the script's tasks join it."""
    import optuna
    import yaml
    from conftest import run_sweeper

    from sweeper import keys
    from sweeper.space import load_space
    from sweeper.sweep.studies import prepare_study

    url = f"sqlite:///{project / 'storage' / 'tiny_cnn.db'}"
    old = load_space("tiny_cnn")
    _, study = prepare_study(old, url, "tiny_cnn", 4)
    for lr in (1e-3, 2e-3):
        study.add_trial(optuna.trial.create_trial(
            values=[0.5], params={"learning_rate": lr, "filters": 8, "conv_blocks": 1},
            distributions={p.name: p.distribution() for p in old.params}))
    path = project / "search_spaces" / "tiny_cnn.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["params"]["dropout"] = {"type": "float", "low": 0.0, "high": 0.5}
    path.write_text(yaml.safe_dump(doc))
    result = run_sweeper("slurm", "tiny_cnn", "--nodes", "1", "--trials", "6", "--warm-start")
    assert result.returncode == 0, result.stderr
    assert "warm-started from 'tiny_cnn' (dropout: added (float 0.0..0.5)): imported 2 of its 2" \
        in result.stdout
    script = (project / "storage" / "slurm" / "tiny_cnn-2" / "sweep.sbatch").read_text()
    assert "--study tiny_cnn-2" in script and "--join" in script
    seeded = optuna.load_study(study_name="tiny_cnn-2", storage=url)
    assert [t.params["dropout"] for t in seeded.trials] == [0.0, 0.0]  # the model's default
    assert seeded.user_attrs[keys.LINEAGE]["parent"] == "tiny_cnn"
