"""The defaults a user meets, each written once: the command line, the sweep's options, the worker,
Slurm scripts and the store all take them from here (and the README states them)."""

TRIALS = 40  # finished trials a sweep reaches
HEARTBEAT_S = 20  # between a worker's heartbeats; silent for 3, its trial is failed and retried
RECYCLE_AFTER = 25  # trials before a worker makes way for a fresh process
MAX_WORKER_MEMORY_MB = 8192  # resident memory past which a worker makes way for a fresh one
KEEP_MODELS = 3  # model files kept: those of the best trials
WORKERS_PER_GPU = 1
MAX_CPU_WORKERS = 8  # CPU workers without GPUs: one per core, at most this many
SLURM_TIME = "10:00:00"
DASHBOARD_HOST = "127.0.0.1"
DASHBOARD_PORT = 8080
REPORT_TOP = 10
