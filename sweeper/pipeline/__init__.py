"""One trial's work, in a worker process: data -> model -> train -> evaluate -> compress ->
artifacts. Keras (and through it TensorFlow, JAX or PyTorch) is imported only here and above.

- `objective`: the Optuna objective that runs the stages in order;
- `data`, `sources`: datasets, prepared once and cached; `model`: the Keras model of a space;
- `train`: fit with per-epoch F1, reported and pruned; `multi_objective`: pruning when a study
  has several objectives; `evaluate`: F1 and friends; `compress`: pruning weights, quantizing;
- `artifacts`, `confusion`: what a trial leaves on disk; `bookkeeping`: the worker's background
  thread that writes it while the next trial trains;
- `backend`: the Keras backend of a worker process, set up before Keras is imported.
"""
