"""Datasets: load, clean, split (seeded, stratified), normalise, and cache on disk.

The prepared arrays are computed once per dataset + options and kept by joblib.Memory under the
cache folder; every later trial and every other worker loads them memory-mapped, so N workers
share one copy of the data in the page cache instead of holding N private ones.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sweeper.errors import DataError
from sweeper.paths import private_folder
from sweeper.pipeline.sources import bad_path, load_source
from sweeper.storage.locks import file_lock
from sweeper.text import error_text

CACHE_ENV = "SWEEPER_CACHE_DIR"
KIND_NAMES = {"c": "complex numbers", "M": "datetimes", "m": "timedeltas", "U": "text",
              "S": "text", "V": "structured records", "O": "Python objects"}


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
    private_folder(folder)
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
    raise bad_path(path)


def _source_name(cfg: dict) -> str:
    """How messages name the dataset: its file or folder, else the setting that chose it."""
    if "function" in cfg:
        return f"dataset.function {cfg['function']}"
    if "path" in cfg:
        return str(Path(cfg["path"]).expanduser())
    return f"dataset.name {cfg.get('name', 'digits')}"


def _prepare(dataset_cfg: dict, preprocess_cfg: dict, fingerprint: str):
    """Load -> clean -> split -> normalise. Pure function of its arguments (joblib caches it)."""
    source = _source_name(dataset_cfg)
    x, y, x_test, y_test, skipped = load_source(dataset_cfg)
    # (a 0-d x has no rows: clean() refuses it just below)
    report: dict = {"source_rows": int(len(x)) if np.ndim(x) else 0, "unreadable_files": skipped}
    x, y, class_names, dropped = clean(x, y, dataset_cfg.get("classes"), preprocess_cfg, source)
    if x_test is not None:
        x_test, y_test, _, dropped_test = clean(x_test, y_test, class_names, preprocess_cfg,
                                                source, keys=("x_test", "y_test"))
        dropped = {k: dropped[k] + dropped_test[k] for k in dropped}
    report["dropped"] = dropped
    splits = split(x, y, x_test, y_test, dataset_cfg, class_names, source)
    splits = normalize(splits, preprocess_cfg.get("normalize", "unit"), source)
    report.update({name: int(len(splits[f"y_{name}"])) for name in ("train", "val", "test")})
    arrays = {**splits, "class_names": [_plain(c) for c in class_names]}
    return arrays, report


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


# ---------------------------------------------------------------------------------------------
# Cleaning, splitting, normalising


def clean(x, y, classes, preprocess_cfg: dict, source: str = "dataset",
          keys: tuple = ("x_train", "y_train")):
    """Drop rows with NaN/inf, exact duplicates and labels outside the class set.

    Returns x (float32), y as indices 0..K-1, the class names, and counts of what was dropped.
    Errors name `source` (the file, or the setting that chose the data) and the array `keys`.
    """
    x_key, y_key = keys
    x = _real_inputs(np.asarray(x), source, x_key)
    y = _class_labels(np.asarray(y), source, y_key)
    if len(x) != len(y):
        raise DataError(f"{source}: {x_key} has {len(x)} rows but {y_key} has {len(y)}; "
                        "save one label per row")
    if len(x) == 0:
        raise DataError(f"{source}: {x_key} is empty; save rows of at least two classes")
    dropped = {"nonfinite": 0, "duplicates": 0, "unknown_label": 0}
    keep = np.ones(len(x), dtype=bool)
    finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if preprocess_cfg.get("drop_nonfinite", True):
        dropped["nonfinite"] = int((~finite).sum())
        keep &= finite
    elif not finite.all():
        # Kept, they would make every loss and score NaN: refuse rather than train on them.
        raise DataError(f"{source}: {x_key} has {int((~finite).sum())} rows with NaN or inf; "
                        "fix them, or set preprocess.drop_nonfinite: true to drop them")
    if classes is not None:
        known = np.isin(y.astype(str), np.asarray([str(c) for c in classes]))
        dropped["unknown_label"] = int((keep & ~known).sum())
        keep &= known
    x, y = x[keep], y[keep]
    if preprocess_cfg.get("drop_duplicates", True) and len(x):
        rows = np.ascontiguousarray(x.reshape(len(x), -1)).view(
            np.dtype((np.void, x[0].nbytes)))
        row_keys = np.array([r.tobytes() + str(label).encode() for r, label in zip(rows, y)],
                            dtype=object)
        _, first = np.unique(row_keys, return_index=True)
        first.sort()
        dropped["duplicates"] = int(len(x) - len(first))
        x, y = x[first], y[first]
    if len(x) == 0:
        raise DataError(f"{source}: no rows of {x_key} left after cleaning (all had NaN/inf, "
                        "duplicates or labels outside dataset.classes); check the data")
    names = np.asarray(classes if classes is not None else np.unique(y))
    if classes is not None:
        lookup = {str(c): i for i, c in enumerate(names)}
        y_index = np.asarray([lookup[str(label)] for label in y], dtype=np.int32)
        class_names = list(classes)
    else:
        found, inverse = np.unique(y, return_inverse=True)
        class_names = [_plain(c) for c in found]
        y_index = inverse.astype(np.int32)
    return x, y_index, class_names, dropped


def _real_inputs(x: np.ndarray, source: str, key: str) -> np.ndarray:
    """x as float32 rows with at least one feature each."""
    # A float32 cast would drop imaginary parts and turn dates or numeric text into numbers.
    if x.dtype.kind not in "biufO":
        raise DataError(f"{source}: {key} holds {KIND_NAMES.get(x.dtype.kind, x.dtype)} "
                        f"({x.dtype}); save real numbers, e.g. {key}.astype('float32')")
    try:
        x = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError):
        raise DataError(f"{source}: {key} holds values that are not numbers; "
                        "save real numbers") from None
    if x.ndim == 0:
        raise DataError(f"{source}: {key} is a single number; save one row per sample")
    if x.ndim == 1:
        x = x[:, np.newaxis]  # one number per row: a table with one feature
    if 0 in x.shape[1:]:
        raise DataError(f"{source}: {key} rows have no features (shape {x.shape}); "
                        "save at least one column")
    return x


def _class_labels(y: np.ndarray, source: str, key: str) -> np.ndarray:
    """y as one label per row: whole numbers (int64), booleans or names (str)."""
    if y.dtype.kind == "O":  # e.g. a pandas column of names: let numpy find the real type
        try:
            y = np.asarray(y.tolist())
        except ValueError:  # ragged
            pass
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim != 1:
        hint = "save one-hot labels as y.argmax(axis=1)" if y.ndim == 2 else "save a 1-D array"
        raise DataError(f"{source}: {key} must hold one label per row, got shape {y.shape}; "
                        f"{hint}")
    if y.dtype.kind == "S":  # byte strings: class names are text
        y = np.asarray([label.decode("utf-8", "replace") for label in y.tolist()], dtype=str)
    if y.dtype.kind == "f":
        # Whole and exactly representable (|y| <= 2**53), or the int64 cast would garble it.
        bad = ~np.isfinite(y) | (y != np.round(y)) | (np.abs(y) > 2.0**53)
        if bad.any():
            raise DataError(f"{source}: {key} has fractional, NaN or huge labels (e.g. "
                            f"{y[bad][0]}); give class labels (whole numbers or names)")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "biuU":
        raise DataError(f"{source}: {key} holds {KIND_NAMES.get(y.dtype.kind, y.dtype)} "
                        f"({y.dtype}); give class labels (whole numbers or names)")
    return y


def split(x, y, x_test, y_test, cfg: dict, class_names=None, source: str = "dataset") -> dict:
    """Stratified train/validation(/test) splits of x, y (labels 0..K-1); x_test given or made."""
    from sklearn.model_selection import train_test_split

    seed = cfg.get("split_seed", 0)
    val_fraction = cfg.get("validation_fraction", 0.15)
    test_fraction = cfg.get("test_fraction", 0.15)
    names = list(class_names) if class_names is not None else list(range(int(y.max()) + 1))
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(f"{source}: all rows are of one class ({names[present[0]]!r}); "
                        "a classifier needs rows of at least two classes")
    if x_test is not None and x_test.shape[1:] != x.shape[1:]:
        raise DataError(f"{source}: x_test rows have shape {x_test.shape[1:]} but x_train rows "
                        f"{x.shape[1:]}; save both with the same features")
    # A stratified split needs 2 rows of each class; making test then validation needs 3.
    need = 2 if x_test is not None else 3
    counts = np.bincount(y, minlength=len(names))
    smallest = min(present, key=lambda k: counts[k])
    if counts[smallest] < need:
        raise DataError(f"{source}: the smallest class has {counts[smallest]} rows (class "
                        f"{names[smallest]!r}); each class needs at least {need} for stratified "
                        "splits: add rows, or leave it out with dataset.classes")
    try:
        if x_test is None:
            x, x_test, y, y_test = train_test_split(
                x, y, test_size=test_fraction, stratify=y, random_state=seed)
            val_fraction = val_fraction / (1 - test_fraction)  # still a fraction of all rows
        x_train, x_val, y_train, y_val = train_test_split(
            x, y, test_size=val_fraction, stratify=y, random_state=seed)
    except ValueError as e:  # e.g. a split smaller than the number of classes
        raise DataError(f"{source}: cannot make stratified splits of {len(y)} rows in "
                        f"{len(present)} classes ({error_text(e)}); add rows, or change "
                        "dataset.test_fraction / dataset.validation_fraction") from None
    return {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val,
            "x_test": x_test, "y_test": y_test.astype(np.int32)}


def normalize(splits: dict, how: str, source: str = "dataset") -> dict:
    """Scale with statistics of the training split only (no leak from val/test)."""
    train = splits["x_train"]
    if how == "none":
        return splits
    if how == "standardize":
        axes = tuple(range(train.ndim - 1))  # per channel (images) or per feature (tables)
        shift = train.mean(axis=axes, dtype=np.float64)
        scale = train.std(axis=axes, dtype=np.float64)
        scale[scale == 0] = 1.0
    else:
        low, high = float(train.min()), float(train.max())
        span = (high - low) or 1.0
        # unit: (a - low) / span; symmetric: that * 2 - 1
        shift, scale = (low, span) if how == "unit" else (low + span / 2, span / 2)
    out = dict(splits)
    for name in ("x_train", "x_val", "x_test"):
        out[name] = _scaled(splits[name], shift, scale)
        if not np.isfinite(out[name]).all():
            raise DataError(f"{source}: {name} has values so far outside the training range "
                            "that they overflow float32 once scaled; rescale the inputs, or set "
                            "preprocess.normalize: none")
    return out


def _scaled(a: np.ndarray, shift, scale) -> np.ndarray:
    """(a - shift) / scale as float32, computed in float64 so that extreme values cannot
    overflow on the way; in chunks, so a large split never needs a whole float64 copy."""
    out = np.empty(a.shape, dtype=np.float32)
    step = max(1, (1 << 22) // max(1, int(np.prod(a.shape[1:]))))  # about 32 MiB of float64
    with np.errstate(over="ignore"):  # a result beyond float32 becomes inf: checked by the caller
        for start in range(0, len(a), step):
            out[start:start + step] = (a[start:start + step].astype(np.float64) - shift) / scale
    return out
