"""Datasets: load, clean, split (seeded, stratified), normalise, and cache on disk.

The prepared arrays are computed once per dataset + options and kept by joblib.Memory under the
cache folder; every later trial and every other worker loads them memory-mapped, so N workers
share one copy of the data in the page cache instead of holding N private ones.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sweeper.errors import DataError
from sweeper.storage import file_lock

CACHE_ENV = "SWEEPER_CACHE_DIR"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")


@dataclass
class Dataset:
    """Prepared arrays: float32 inputs, int32 labels 0..K-1 (class_names[k] is the original)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list
    report: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple:
        return tuple(self.x_train.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x_train.ndim == 4


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path("storage") / "cache")


def load_dataset(dataset_cfg: dict, preprocess_cfg: dict, cache: Path | None = None) -> Dataset:
    """The prepared dataset, from the on-disk cache when it is there (memory-mapped)."""
    import joblib

    folder = Path(cache or cache_dir())
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    memory = joblib.Memory(folder, mmap_mode="r", verbose=0)
    cached_prepare = memory.cache(_prepare)
    args = (dataset_cfg, preprocess_cfg, _source_fingerprint(dataset_cfg))
    started = time.perf_counter()
    # One worker computes, the others wait for it and then read its result.
    with file_lock(folder / ".prepare.lock"):
        was_cached = cached_prepare.check_call_in_cache(*args)
        arrays, report = cached_prepare(*args)
    report = {**report, "cached": bool(was_cached),
              "load_seconds": round(time.perf_counter() - started, 4)}
    return Dataset(**arrays, report=report)


def _source_fingerprint(cfg: dict) -> str:
    """Changes when the data behind a path changes, so the cache never serves stale arrays."""
    if "path" not in cfg:
        return "builtin"
    path = Path(cfg["path"]).expanduser()
    if path.is_file():
        st = path.stat()
        return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    if path.is_dir():
        parts = []
        for child in sorted(path.rglob("*")):
            if child.is_file():
                st = child.stat()
                parts.append(f"{child.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}")
        return f"{path.resolve()}|" + "|".join(parts)
    raise DataError(f"dataset.path: {path} does not exist; check the path in the search space")


def _prepare(dataset_cfg: dict, preprocess_cfg: dict, fingerprint: str):
    """Load -> clean -> split -> normalise. Pure function of its arguments (joblib caches it)."""
    x, y, x_test, y_test, skipped = load_source(dataset_cfg)
    report: dict = {"source_rows": int(len(x)), "unreadable_files": skipped}
    x, y, class_names, dropped = clean(x, y, dataset_cfg.get("classes"), preprocess_cfg)
    if x_test is not None:
        x_test, y_test, _, dropped_test = clean(x_test, y_test, class_names, preprocess_cfg)
        dropped = {k: dropped[k] + dropped_test[k] for k in dropped}
    report["dropped"] = dropped
    splits = split(x, y, x_test, y_test, dataset_cfg)
    splits = normalize(splits, preprocess_cfg.get("normalize", "unit"))
    report.update({name: int(len(splits[f"y_{name}"])) for name in ("train", "val", "test")})
    arrays = {**splits, "class_names": [_plain(c) for c in class_names]}
    return arrays, report


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


# ---------------------------------------------------------------------------------------------
# Sources: each returns x, y and optionally a given test split (else None, None)


def load_source(cfg: dict):
    """x, y, x_test, y_test (None when the source has no test split), unreadable files skipped."""
    if "function" in cfg:
        return (*_from_function(cfg["function"]), 0)
    if "path" in cfg:
        path = Path(cfg["path"]).expanduser()
        return (*_from_npz(path), 0) if path.is_file() else _from_image_folder(path, cfg)
    name = cfg.get("name", "digits")
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images[..., np.newaxis], digits.target, None, None, 0
    if name == "breast_cancer":
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer()
        return data.data, data.target, None, None, 0
    return (*_from_keras(name), 0)


def _from_function(import_path: str):
    func = import_object(import_path, "dataset.function")
    result = func()
    if not isinstance(result, (tuple, list)) or len(result) not in (2, 4):
        raise DataError(f"dataset.function {import_path} must return (x, y) or "
                        "(x_train, y_train, x_test, y_test)")
    result = tuple(np.asarray(part) for part in result)
    return result if len(result) == 4 else (*result, None, None)


def _from_npz(path: Path):
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as e:
        raise DataError(f"{path}: not a readable .npz file ({e}); save it with numpy.savez") from None
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise DataError(f"{path}: no array '{key}' (found: {', '.join(arrays) or 'none'}); "
                            "save x_train, y_train and optionally x_test, y_test")
    has_test = "x_test" in arrays and "y_test" in arrays
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path}: has only one of x_test and y_test; save both or neither")
    return (arrays["x_train"], arrays["y_train"],
            arrays["x_test"] if has_test else None, arrays["y_test"] if has_test else None)


def _from_image_folder(path: Path, cfg: dict):
    """One sub-folder per class; unreadable files are skipped and counted."""
    from PIL import Image, UnidentifiedImageError

    height, width = cfg.get("image_size", [32, 32])
    mode = "L" if cfg.get("color_mode", "rgb") == "grayscale" else "RGB"
    images, labels, skipped = [], [], 0
    class_dirs = sorted(d for d in path.iterdir() if d.is_dir())
    if not class_dirs:
        raise DataError(f"{path}: no class folders inside; put each class's images in "
                        f"{path}/<class name>/")
    for class_dir in class_dirs:
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as img:
                    img = img.convert(mode).resize((width, height))
                    images.append(np.asarray(img, dtype=np.float32))
                    labels.append(class_dir.name)
            except (UnidentifiedImageError, OSError, ValueError):
                skipped += 1
    if not images:
        raise DataError(f"{path}: no readable images in its class folders")
    x = np.stack(images)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    return x, np.asarray(labels), None, None, skipped


def _from_keras(name: str):
    import keras

    loader = getattr(keras.datasets, name)
    try:
        (x_train, y_train), (x_test, y_test) = loader.load_data()
    except Exception as e:
        raise DataError(f"dataset.name {name}: cannot load it ({e}); it downloads on first use "
                        "and is then read from ~/.keras/datasets") from None
    if x_train.ndim == 3:
        x_train, x_test = x_train[..., np.newaxis], x_test[..., np.newaxis]
    return x_train, y_train.reshape(-1), x_test, y_test.reshape(-1)


def import_object(import_path: str, key: str):
    module_name, _, attr = import_path.partition(":")
    if os.getcwd() not in sys.path:  # user code next to the search spaces, as with python -m
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise DataError(f"{key}: cannot import {module_name} ({e}); check the module is "
                        "installed or on PYTHONPATH") from None
    obj = getattr(module, attr, None)
    if not callable(obj):
        raise DataError(f"{key}: {module_name} has no function {attr}; check the name")
    return obj


# ---------------------------------------------------------------------------------------------
# Cleaning, splitting, normalising


def clean(x, y, classes, preprocess_cfg: dict):
    """Drop rows with NaN/inf, exact duplicates and labels outside the class set.

    Returns x (float32), y as indices 0..K-1, the class names, and counts of what was dropped.
    """
    try:
        x = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError):
        raise DataError("dataset inputs are not numeric arrays; give numbers") from None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise DataError(f"labels must be one label per row, got shape {y.shape}")
    if len(x) != len(y):
        raise DataError(f"inputs have {len(x)} rows but labels have {len(y)}; they must match")
    if len(x) == 0:
        raise DataError("the dataset is empty")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError("labels are fractional numbers; give class labels "
                            "(whole numbers or names)")
        y = y.astype(np.int64)
    dropped = {"nonfinite": 0, "duplicates": 0, "unknown_label": 0}
    keep = np.ones(len(x), dtype=bool)
    if preprocess_cfg.get("drop_nonfinite", True):
        finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        dropped["nonfinite"] = int((~finite).sum())
        keep &= finite
    if classes is not None:
        known = np.isin(y.astype(str), np.asarray([str(c) for c in classes]))
        dropped["unknown_label"] = int((keep & ~known).sum())
        keep &= known
    x, y = x[keep], y[keep]
    if preprocess_cfg.get("drop_duplicates", True) and len(x):
        rows = np.ascontiguousarray(x.reshape(len(x), -1)).view(
            np.dtype((np.void, x[0].nbytes)))
        keys = np.array([r.tobytes() + str(label).encode() for r, label in zip(rows, y)],
                        dtype=object)
        _, first = np.unique(keys, return_index=True)
        first.sort()
        dropped["duplicates"] = int(len(x) - len(first))
        x, y = x[first], y[first]
    if len(x) == 0:
        raise DataError("no rows left after cleaning (all had NaN/inf, duplicates or unknown "
                        "labels)")
    names = np.asarray(classes if classes is not None else np.unique(y))
    if classes is not None:
        lookup = {str(c): i for i, c in enumerate(names)}
        y_index = np.asarray([lookup[str(label)] for label in y], dtype=np.int32)
        class_names = list(classes)
    else:
        class_names, y_index = np.unique(y, return_inverse=True)
        class_names = [_plain(c) for c in class_names]
        y_index = y_index.astype(np.int32)
    return x, y_index, class_names, dropped


def split(x, y, x_test, y_test, cfg: dict) -> dict:
    from sklearn.model_selection import train_test_split

    seed = cfg.get("split_seed", 0)
    val_fraction = cfg.get("validation_fraction", 0.15)
    test_fraction = cfg.get("test_fraction", 0.15)
    try:
        if x_test is None:
            x, x_test, y, y_test = train_test_split(
                x, y, test_size=test_fraction, stratify=y, random_state=seed)
            val_fraction = val_fraction / (1 - test_fraction)  # still a fraction of all rows
        x_train, x_val, y_train, y_val = train_test_split(
            x, y, test_size=val_fraction, stratify=y, random_state=seed)
    except ValueError as e:
        counts = np.bincount(y)
        raise DataError(f"cannot make a stratified split ({e}); the smallest class has "
                        f"{counts[counts > 0].min()} rows: add data or drop that class "
                        "with dataset.classes") from None
    return {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val,
            "x_test": x_test, "y_test": y_test.astype(np.int32)}


def normalize(splits: dict, how: str) -> dict:
    """Scale with statistics of the training split only (no leak from val/test)."""
    train = splits["x_train"]
    if how == "none":
        return splits
    if how == "standardize":
        axes = tuple(range(train.ndim - 1))  # per channel (images) or per feature (tables)
        mean = train.mean(axis=axes, dtype=np.float64).astype(np.float32)
        std = train.std(axis=axes, dtype=np.float64).astype(np.float32)
        std[std == 0] = 1.0
        scale = lambda a: (a - mean) / std  # noqa: E731
    else:
        low, high = float(train.min()), float(train.max())
        span = (high - low) or 1.0
        if how == "unit":
            scale = lambda a: (a - low) / span  # noqa: E731
        else:
            scale = lambda a: (a - low) / span * 2.0 - 1.0  # noqa: E731
    out = dict(splits)
    for name in ("x_train", "x_val", "x_test"):
        out[name] = np.ascontiguousarray(scale(splits[name]), dtype=np.float32)
    return out
