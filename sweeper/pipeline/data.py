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
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sweeper.errors import DataError
from sweeper.paths import private_folder
from sweeper.storage.locks import file_lock

CACHE_ENV = "SWEEPER_CACHE_DIR"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
# What reading a damaged .npz raises: the zip layer (BadZipFile; RuntimeError and its subclass
# NotImplementedError for entries flagged encrypted or in an unsupported format), zlib, and
# numpy's .npy header parser (ValueError, which also refuses object arrays: they would be
# unpickled). An absurd shape in a damaged header asks for more memory than exists.
NPZ_READ_ERRORS = (OSError, ValueError, EOFError, MemoryError, RuntimeError, zipfile.BadZipFile,
                   zlib.error)
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
    raise _bad_path(path)


def _bad_path(path: Path) -> DataError:
    what = "is not a file or a folder" if path.exists() else "does not exist"
    return DataError(f"dataset.path: {path} {what}; check the path in the search space")


def _source_name(cfg: dict) -> str:
    """How messages name the dataset: its file or folder, else the setting that chose it."""
    if "function" in cfg:
        return f"dataset.function {cfg['function']}"
    if "path" in cfg:
        return str(Path(cfg["path"]).expanduser())
    return f"dataset.name {cfg.get('name', 'digits')}"


def _one_line(error: Exception) -> str:
    """An exception's text on one line, to quote it inside a one-line DataError."""
    return " ".join(str(error).split()) or type(error).__name__


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
# Sources: each returns x, y and optionally a given test split (else None, None)


def load_source(cfg: dict):
    """x, y, x_test, y_test (None when the source has no test split), unreadable files skipped."""
    if "function" in cfg:
        return (*_from_function(cfg["function"]), 0)
    if "path" in cfg:
        path = Path(cfg["path"]).expanduser()
        if path.is_file():
            return (*_from_npz(path), 0)
        if path.is_dir():
            return _from_image_folder(path, cfg)
        raise _bad_path(path)
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
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({_one_line(e)}); check its permissions") from None
    # np.load treats anything that is neither a zip nor a .npy as a pickle; name what it is instead.
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        what = "a single .npy array" if head == b"\x93NUMPY" else "not a .npz archive"
        raise DataError(f"{path}: {what}; save the arrays with "
                        "numpy.savez(path, x_train=..., y_train=...)")
    arrays, key = {}, None
    try:
        with np.load(path, allow_pickle=False) as data:
            found = list(data.files)
            # Only the arrays used are read: any other key, e.g. a pickled object, is never loaded.
            for key in (k for k in NPZ_KEYS if k in found):
                arrays[key] = data[key]
    except NPZ_READ_ERRORS as e:
        what = f"array '{key}' cannot be read" if key else "not a readable .npz archive"
        raise DataError(f"{path}: {what} ({_one_line(e)}); save plain numeric or text arrays "
                        "with numpy.savez") from None
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise DataError(f"{path}: no array '{key}' (found: {', '.join(found) or 'none'}); "
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
            # DecompressionBombError: a header claiming a gigantic image (damaged, or a bomb).
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
                skipped += 1
    if not images:
        raise DataError(f"{path}: no readable images in its class folders ({skipped} unreadable "
                        f"files skipped); put {'/'.join(sorted(IMAGE_SUFFIXES))} images in "
                        f"{path}/<class name>/")
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
        class_names, y_index = np.unique(y, return_inverse=True)
        class_names = [_plain(c) for c in class_names]
        y_index = y_index.astype(np.int32)
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
                        f"{len(present)} classes ({_one_line(e)}); add rows, or change "
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
