"""The controller side: what runs in the process of `sweeper sweep` (and `sweeper slurm`), and
never in a worker.

- `controller`: one sweep from start to stop: the study, the sweep lock, the pool, what is shown;
- `pool`: the worker processes, one per GPU slot, started, watched, replaced;
- `progress`: the live view and the closing summary;
- `studies`: creating or resuming a study, its attributes and the space it carries;
- `warm_start`: seeding a new study from an earlier one;
- `host_workers`: workers of an earlier sweep of this machine that are still running;
- `study_info`: how the run was started, written on the study and beside the store;
- `slurm`: the batch script of a Slurm job array.

Rule (checked by `make lint`): nothing here imports TensorFlow, Keras, JAX or PyTorch, directly or
through what it imports. Workers are reached only through the store and with signals.
"""
