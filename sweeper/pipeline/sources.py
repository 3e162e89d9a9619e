"""Where a dataset comes from: a built-in one, a `.npz` file, a folder of class folders of images,
or the user's own function. Each source returns x, y and, where it has one, its own test split
(else None, None), and the number of files it skipped; damaged input is one DataError line naming
the file and the array."""

from __future__ import annotations

import importlib
import os
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

from sweeper.errors import DataError
from sweeper.text import error_text

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
# What reading a damaged .npz raises: the zip layer (BadZipFile; RuntimeError and its subclass
# NotImplementedError for entries flagged encrypted or in an unsupported format), zlib, and
# numpy's .npy header parser (ValueError, which also refuses object arrays: they would be
# unpickled). An absurd shape in a damaged header asks for more memory than exists.
NPZ_READ_ERRORS = (OSError, ValueError, EOFError, MemoryError, RuntimeError, zipfile.BadZipFile,
                   zlib.error)


def bad_path(path: Path) -> DataError:
    what = "is not a file or a folder" if path.exists() else "does not exist"
    return DataError(f"dataset.path: {path} {what}; check the path in the search space")


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
        raise bad_path(path)
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
        raise DataError(f"{path}: cannot be read ({error_text(e)}); check its permissions") from None
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
        raise DataError(f"{path}: {what} ({error_text(e)}); save plain numeric or text arrays "
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
