"""Every attribute sweeper stores on a study or a trial, and the few Optuna internals it needs.

This module is the only one that spells an attribute key or touches a private attribute of
Optuna's objects. The keys are a contract with users (README, optuna-dashboard, their own
scripts) and with stores written by earlier runs: renaming one breaks both, so each is written
once, here. Optuna offers no public way to get a study's or a trial's id, nor the database
storage beneath a study's cache; when a later Optuna moves them, this is the one place to change.
"""

from __future__ import annotations

# -- study attributes (user attributes, shown on the dashboard's study page) -----------------
SPACE_YAML = "sweeper.space_yaml"  # the space as written: any worker rebuilds it from this
SPACE_HASH = "sweeper.space_hash"  # its fingerprint: a changed space is refused on resume
SPACE_NAME = "sweeper.space_name"
CREATED = "sweeper.created"
BUDGET = "sweeper.n_trials"  # finished trials to reach, shared by every worker
KEEP_MODELS = "sweeper.keep_models"
EVICTED_MODELS = "sweeper.evicted_models"  # artifact ids of models no longer kept
CONTROLLER = "sweeper.controller"  # who sweeps the study now: named to a refused second sweep
# A study seeded from another (sweeper.sweep.warm_start): its parent, what changed, what was seeded.
LINEAGE = "sweeper.lineage"
# How the last run was started.
COMMAND = "sweeper.command"
STARTED = "sweeper.started"
VERSIONS = "sweeper.versions"
GIT_COMMIT = "sweeper.git_commit"
GPUS = "sweeper.gpus"

# -- trial attributes ----------------------------------------------------------------------
WORKER = "sweeper.worker"
HOST = "sweeper.host"  # also a study attribute: the machine of the last run
PID = "sweeper.pid"
CUDA_VISIBLE_DEVICES = "sweeper.cuda_visible_devices"  # the GPU slot the trial ran on
DEVICES = "sweeper.devices"  # the GPUs its Keras backend saw
BACKEND = "sweeper.backend"  # the Keras backend and its version, e.g. 'jax 0.10.2'
THREADS = "sweeper.threads"  # TensorFlow's CPU threads: results differ in the last bits with it
SEED = "sweeper.seed"
RSS_MB = "sweeper.rss_mb"
DATA = "sweeper.data"
EPOCHS_RUN = "sweeper.epochs_run"  # by this run: a resumed trial's count leaves out what it resumed
# A trial that went on from a checkpoint: {"trial": the number that wrote it, "epoch": epochs done}.
RESUMED_FROM = "sweeper.resumed_from"
RESUME_NOTE = "sweeper.resume_note"  # why a checkpoint found was not used
LOSS_HISTORY = "sweeper.loss_history"
SECONDS = "sweeper.seconds"  # where the trial's time went
TIMELINE = "sweeper.timeline"  # wall-clock times: fit called, its first batch, training ended
FAIL_REASON = "sweeper.fail_reason"
PRUNE_REASON = "sweeper.prune_reason"
REQUEUE = "sweeper.requeue"  # see sweeper.worker.retries
MODEL_ARTIFACT = "sweeper.model_artifact"
TEST_PREFIX = "sweeper.test_"  # + f1, precision, recall, accuracy
TEST_F1 = TEST_PREFIX + "f1"
# The compress stage (sweeper.pipeline.compress): sizes in bytes of the exported files, latencies
# in milliseconds (median after warm-up), F1 of each model measured by running that model.
PARAMS = "sweeper.params"  # weights of the float model
NONZERO_PARAMS = "sweeper.nonzero_params"  # of them, not zero after weight pruning
SPARSITY = "sweeper.sparsity"  # zero weights / weights of the pruned kernels
FLOAT_BYTES = "sweeper.float_bytes"  # the float32 .tflite file
COMPRESSED_BYTES = "sweeper.compressed_bytes"  # the compressed .tflite file
COMPRESSED_GZIP_BYTES = "sweeper.compressed_gzip_bytes"  # that file gzipped: pruned zeros pay here
LATENCY_MS = "sweeper.latency_ms_per_sample"  # compressed model, batch 1
LATENCY_BATCH_MS = "sweeper.latency_ms_per_batch"  # compressed model, training batch size
FLOAT_LATENCY_MS = "sweeper.float_latency_ms_per_sample"  # the Keras model on the worker's device
FLOAT_LATENCY_BATCH_MS = "sweeper.float_latency_ms_per_batch"
FLOAT_VAL_F1 = "sweeper.float_val_f1"  # before compression (sweeper.test_* are of this model too)
COMPRESSED_VAL_F1 = "sweeper.compressed_val_f1"
COMPRESSED_TEST_F1 = "sweeper.compressed_test_f1"
# Known once the model is built: weights it will keep, all x (1 - sparsity). In a multi-objective
# study a trial's per-epoch F1 is judged against trials no larger (sweeper.pipeline.multi_objective).
EXPECTED_NONZERO = "sweeper.expected_nonzero_params"

# Trials seeded by a warm start: {"study": parent, "trial": number} of the trial they come from.
IMPORTED_FROM = "sweeper.imported_from"  # its result, imported: takes no budget slot
RERUN_OF = "sweeper.rerun_of"  # its params, queued to run again under changed settings

# A retry inherits its failed trial's user attributes; these describe the failed run only.
PER_RUN = (FAIL_REASON, PRUNE_REASON, RESUMED_FROM, RESUME_NOTE)

# -- Optuna's own system attributes ----------------------------------------------------------
RETRY_HISTORY = "retry_history"  # on a retry: the numbers of the trials it retries
FAILED_TRIAL = "failed_trial"  # on a retry: the original trial's number
ARTIFACT_PREFIX = "artifacts:"  # + artifact id: the artifact's file name and type


# -- Optuna internals --------------------------------------------------------------------------


def study_id(study) -> int:
    return study._study_id


def trial_id(trial) -> int:
    """The storage's id of a Trial or FrozenTrial (trial numbers count per study)."""
    return trial._trial_id


def storage_of(study):
    """The storage a study reads and writes through (Optuna's cache over the database)."""
    return study._storage


def rdb_of(storage):
    """The RDBStorage itself, also when Optuna wraps it in its cache."""
    return getattr(storage, "_backend", storage)


def record_intermediate_value(trial, step: int, value: float) -> None:
    """What Trial.report does, which Optuna refuses in a multi-objective study: the value goes to
    the store and to the trial's own cached copy, which its pruner reads."""
    trial.storage.set_trial_intermediate_value(trial._trial_id, step, value)
    trial._cached_frozen_trial.intermediate_values[step] = value


def as_asked(trial):
    """The FrozenTrial Optuna read when `trial` was asked for: what was set on it before it ran
    (a retry's chain and inherited attributes), known without reading the store again."""
    return trial._cached_frozen_trial


def latest_trial(trial):
    """The FrozenTrial Trial.should_prune gives the pruner (cached values, system attrs live)."""
    return trial._get_latest_trial()
