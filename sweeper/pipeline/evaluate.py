"""Predictions and scikit-learn metrics: validation F1 each epoch, the full set on the test split."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

PREDICT_BATCH = 4096


def predict_classes(model, x: np.ndarray) -> np.ndarray:
    """Class indices for x, in a few large batches (one compiled call each, no per-call setup)."""
    parts = [np.asarray(model.predict_on_batch(x[i:i + PREDICT_BATCH]))
             for i in range(0, len(x), PREDICT_BATCH)]
    return np.concatenate(parts).argmax(axis=-1)


def f1(y_true: np.ndarray, y_pred: np.ndarray, average: str) -> float:
    return float(f1_score(y_true, y_pred, average=average, zero_division=0))


def test_metrics(y_true: np.ndarray, y_pred: np.ndarray, average: str) -> dict[str, float]:
    precision, recall, f1_value, _ = precision_recall_fscore_support(
        y_true, y_pred, average=average, zero_division=0)
    return {"f1": float(f1_value), "precision": float(precision), "recall": float(recall),
            "accuracy": float(accuracy_score(y_true, y_pred))}
