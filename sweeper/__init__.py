"""sweeper: hyperparameter sweeps of Keras models on every GPU, backed by an Optuna study store."""

from sweeper.errors import DataError, SpaceError, StorageError, SweeperError, SweepFailed

__all__ = ["DataError", "SpaceError", "StorageError", "SweeperError", "SweepFailed", "__version__"]
__version__ = "0.1.0"
