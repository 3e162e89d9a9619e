"""The worker side: what runs in a worker process (`sweeper worker`), under the controller, in a
Slurm job or by hand, all the same.

- `loop`: trials until the shared budget is spent, and when to stop or make way;
- `trial_run`: one trial: ask, run the objective, tell, and what ended it;
- `retries`: a trial cut short is marked, failed and queued again;
- `lifeline`: a worker whose controller is gone stops on its own;
- `handover`: the slot lock, and the warm successor that takes it over;
- `exits`: the exit codes the controller side reads.

The trial's work itself (data, model, training) is the pipeline's (sweeper.pipeline).
"""
