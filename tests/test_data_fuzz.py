"""Fuzzing the dataset loaders: whatever is on disk, load_dataset either returns a usable Dataset
or raises one DataError whose message is a single line naming the file. Any other exception, a
traceback, or a Dataset with NaN inputs, bad labels or an empty split is a bug.

Generated cases per test (max_examples): see the EXAMPLES_* constants below.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from sweeper.errors import DataError
from sweeper.pipeline.data import clean, load_dataset, normalize, split
from sweeper.pipeline.sources import load_source

EXAMPLES_NPZ = 400
EXAMPLES_NPZ_BYTES = 400
EXAMPLES_CLASS_SIZES = 150
EXAMPLES_IMAGES = 150
EXAMPLES_CLEAN = 400

SPLIT = {"validation_fraction": 0.2, "test_fraction": 0.2, "split_seed": 0}
PRE = {"normalize": "unit", "drop_duplicates": True, "drop_nonfinite": True}
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])
preprocess = st.fixed_dictionaries({
    "normalize": st.sampled_from(["unit", "symmetric", "standardize", "none"]),
    "drop_duplicates": st.booleans(), "drop_nonfinite": st.booleans()})


def assert_valid(data) -> None:
    """What training needs: finite float32 inputs of one shape, labels 0..K-1, no empty split."""
    k = data.num_classes
    assert k >= 2, data.class_names
    json.dumps(data.class_names)  # plain ints/strings: they go into reports and artifacts
    assert data.x_train.ndim >= 2
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val),
                 (data.x_test, data.y_test)):
        assert len(x) == len(y) > 0
        assert x.dtype == np.float32 and x.shape[1:] == data.x_train.shape[1:]
        assert np.isfinite(x).all()
        assert y.ndim == 1 and y.dtype.kind == "i" and y.min() >= 0 and y.max() < k


def assert_clear(error: DataError, path) -> None:
    message = str(error)
    assert message.strip() and "\n" not in message and "\r" not in message, repr(message)
    assert str(path) in message, message


def outcome(call, path):
    """The Dataset when the loader accepted the data (checked valid), else None (checked clear)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overflow warnings on absurd values are expected
        try:
            data = call()
        except DataError as e:
            assert_clear(e, path)
            # Shown by --hypothesis-show-statistics: how often each outcome is generated.
            event(f"DataError: {str(e).removeprefix(str(path))[:32]}")
            return None
    assert_valid(data)
    event("valid Dataset")
    return data


# ---------------------------------------------------------------------------------------------
# .npz files: random arrays, dtypes, shapes, labels and keys

# (usual, unusual) choices. A tame case takes only usual ones, so that a good share of cases
# load and their Dataset is checked; a wild case also takes unusual ones, 1 time in 4 each.
X_DTYPES = (["float64", "float32", "float16", "int64", "uint8", "bool"],
            ["complex128", "U8", "S8", "datetime64[s]", "timedelta64[s]", "object", "structured"])
ROW_SHAPES = ([(1,), (3,), (4,), (2, 3), (3, 3, 1), (2, 2, 3)], [(), (0,), (2, 0)])
LABEL_KINDS = (["int", "uint8", "float_whole", "str", "bytes"],
               ["float_fraction", "float_nan", "float_huge", "bool", "complex", "datetime64",
                "object"])
LABEL_SHAPES = (["rows", "column"], ["onehot", "scalar", "3d"])
NAMES = ["cat", "dog", "émeu", "", "yak"]


def chooser(draw, wild: bool):
    def choose(usual: list, unusual: list):
        if not wild:
            return draw(st.sampled_from(usual))
        return draw(st.one_of(*[st.sampled_from(usual)] * 3, st.sampled_from(unusual)))
    return choose


@np.errstate(all="ignore")  # casting absurd values on purpose
def make_x(rng, n: int, row_shape: tuple, dtype: str, damage: list) -> np.ndarray:
    x = rng.normal(size=(n, *row_shape)) * 10
    flat = x.reshape(n, int(np.prod(row_shape)))
    for kind in damage if n and flat.shape[1] else []:
        row = rng.integers(n)
        if kind == "duplicate":
            flat[row] = flat[rng.integers(n)]
        else:
            flat[row, rng.integers(flat.shape[1])] = {
                "nan": np.nan, "inf": -np.inf, "huge": 3e38 * rng.choice([-1, 1]),
                "beyond_float32": 1e300, "tiny": 1e-44}[kind]
    if dtype == "structured":
        out = np.zeros(n, dtype=[("a", "f4"), ("b", "i4")])
        out["a"] = flat[:, 0] if flat.shape[1] else 0
        return out
    if dtype in ("U8", "S8"):
        return x.astype(dtype)  # numbers written as text
    if dtype.startswith(("datetime", "timedelta")):
        return np.nan_to_num(x, posinf=0, neginf=0).astype(np.int64).astype(dtype)
    if dtype in ("int64", "uint8", "bool"):
        return np.nan_to_num(x, posinf=0, neginf=0).clip(0, 200).astype(dtype)
    return x.astype(dtype)


def make_y(index: np.ndarray, kind: str, shape: str, classes: int) -> np.ndarray:
    if kind == "int":
        y = index * 3 - 2
    elif kind == "uint8":
        y = index.astype(np.uint8)
    elif kind == "float_whole":
        y = index.astype(float)
    elif kind == "float_fraction":
        y = index + 0.5
    elif kind == "float_nan":
        y = index.astype(float)
        y[:1] = np.nan
    elif kind == "float_huge":
        y = index * 1e300
    elif kind == "str":
        y = np.asarray(NAMES)[index]
    elif kind == "bytes":
        y = np.asarray([name.encode() for name in NAMES])[index]
    elif kind == "bool":
        y = index % 2 == 1
    elif kind == "complex":
        y = index + 1j
    elif kind == "datetime64":
        y = index.astype("datetime64[D]")
    else:
        y = np.asarray(NAMES, dtype=object)[index]
    if shape == "column":
        return y.reshape(-1, 1)
    if shape == "onehot":
        return np.eye(max(classes, 1))[index]
    if shape == "scalar":
        return np.asarray(y[0] if len(y) else 0)
    if shape == "3d":
        return y.reshape(-1, 1, 1)
    return y


@st.composite
def npz_contents(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    wild = draw(st.booleans())
    choose = chooser(draw, wild)
    sizes = draw(st.lists(st.integers(0, 9), min_size=1, max_size=4) if wild  # rows per class
                 else st.lists(st.integers(4, 12), min_size=2, max_size=4))
    index = np.repeat(np.arange(len(sizes)), sizes)
    n = len(index)
    row_shape = choose(*ROW_SHAPES)
    dtype = choose(*X_DTYPES)
    damage = draw(st.lists(st.sampled_from(["nan", "inf", "huge", "beyond_float32", "tiny",
                                            "duplicate"]), max_size=3))
    label_kind = choose(*LABEL_KINDS)
    label_shape = choose(*LABEL_SHAPES)
    arrays = {"x_train": make_x(rng, n, row_shape, dtype, damage),
              "y_train": make_y(index, label_kind, label_shape, len(sizes))}
    if choose([False], [True]) and arrays["y_train"].ndim:  # mismatched lengths
        arrays["y_train"] = arrays["y_train"][:max(0, n - draw(st.integers(1, 3)))]
    if draw(st.booleans()):  # a given test split, its rows maybe of another shape
        test_index = rng.integers(0, len(sizes) + draw(st.integers(0, 1)), draw(st.integers(0, 6)))
        test_shape = choose([row_shape], [(5,), (2, 3, 1)])
        arrays["x_test"] = make_x(rng, len(test_index), test_shape, dtype, damage)
        arrays["y_test"] = make_y(test_index, label_kind, "rows", len(sizes))
    if choose([False], [True]):  # a key missing
        arrays.pop(draw(st.sampled_from(["x_train", "y_train", "x_test", "y_test"])), None)
    for junk in draw(st.sets(st.sampled_from(["x", "y", "meta", "labels"]))):
        arrays[junk] = (np.asarray([{"a": 1}], dtype=object) if junk == "meta"
                        else rng.normal(size=3))
    return arrays


@settings(FUZZ, max_examples=EXAMPLES_NPZ)
@given(arrays=npz_contents(), pre=preprocess, seed=st.integers(0, 3),
       classes=st.none() | st.lists(st.sampled_from([-2, 1, 4, 9, "cat", "dog", "", "yak"]),
                                    min_size=2, max_size=4, unique=True))
def test_any_npz_loads_valid_or_fails_clearly(tmp_path_factory, arrays, pre, seed, classes):
    folder = tmp_path_factory.mktemp("npz")
    path = folder / "data.npz"
    np.savez(path, **arrays)  # object arrays are written as pickles: the loader must refuse them
    cfg = {"path": str(path), **SPLIT, "split_seed": seed}
    if classes is not None:  # as the search space allows: two or more whole numbers or names
        cfg["classes"] = classes
    data = outcome(lambda: load_dataset(cfg, pre, folder / "cache"), path)
    if data is not None and classes is not None:
        assert data.class_names == classes


@st.composite
def damaged_npz_bytes(draw):
    """A valid .npz with its bytes cut, overwritten or replaced, or another kind of file."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    buffer = io.BytesIO()
    save = np.savez_compressed if draw(st.booleans()) else np.savez
    save(buffer, x_train=rng.normal(size=(30, 4)), y_train=np.arange(30) % 3)
    blob = bytearray(buffer.getvalue())
    kind = draw(st.sampled_from(["intact", "cut", "flip", "flip", "splice", "append", "random",
                                 "empty", "npy", "pickle", "text", "zip_of_junk"]))
    if kind == "append":
        blob += draw(st.binary(min_size=1, max_size=64))
    elif kind == "cut":
        blob = blob[:draw(st.integers(0, len(blob) - 1))]
    elif kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            blob[draw(st.integers(0, len(blob) - 1))] ^= draw(st.integers(1, 255))
    elif kind == "splice":
        at = draw(st.integers(0, len(blob)))
        blob[at:at] = draw(st.binary(min_size=1, max_size=64))
    elif kind == "random":
        blob = draw(st.binary(max_size=256))
    elif kind == "empty":
        blob = b""
    elif kind == "npy":
        npy = io.BytesIO()
        np.save(npy, rng.normal(size=(5, 2)))
        blob = npy.getvalue()
    elif kind == "pickle":
        blob = pickle.dumps({"x_train": [[1.0]], "y_train": [0]})
    elif kind == "text":
        blob = b"x_train,y_train\n1.0,0\n2.0,1\n"
    else:  # a zip of arrays with junk bodies, one header claiming an enormous array
        huge = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            huge, {"descr": "<i8", "fortran_order": False, "shape": (99999999999,)})
        junk = io.BytesIO()
        bodies = [draw(st.binary(max_size=128)), huge.getvalue() + b"\x00" * 64]
        with zipfile.ZipFile(junk, "w") as archive:
            for key, body in zip(("x_train.npy", "y_train.npy"), draw(st.permutations(bodies))):
                archive.writestr(key, body)
        blob = junk.getvalue()
    return bytes(blob)


@settings(FUZZ, max_examples=EXAMPLES_NPZ_BYTES)
@given(blob=damaged_npz_bytes())
def test_damaged_or_foreign_npz_bytes_fail_clearly(tmp_path_factory, blob):
    folder = tmp_path_factory.mktemp("bytes")
    path = folder / "data.npz"
    path.write_bytes(blob)
    outcome(lambda: load_dataset({"path": str(path), **SPLIT}, PRE, folder / "cache"), path)


@settings(FUZZ, max_examples=EXAMPLES_CLASS_SIZES)
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=len(NAMES)),
       test_fraction=st.sampled_from([0.1, 0.2, 0.4]), given_test=st.booleans())
def test_small_classes_split_or_say_which_class(tmp_path_factory, sizes, test_fraction,
                                                given_test):
    folder = tmp_path_factory.mktemp("classes")
    path = folder / "data.npz"
    y = np.asarray(NAMES)[np.repeat(np.arange(len(sizes)), sizes)]
    x = np.arange(len(y) * 2, dtype=np.float64).reshape(-1, 2)  # all rows distinct
    arrays = {"x_train": x, "y_train": y}
    if given_test:
        arrays.update(x_test=x[:3] + 0.5, y_test=y[:3])
    np.savez(path, **arrays)
    cfg = {"path": str(path), **SPLIT, "test_fraction": test_fraction}
    try:
        data = load_dataset(cfg, PRE, folder / "cache")
    except DataError as e:
        assert_clear(e, path)
        message = str(e)
        event(f"DataError: {message.removeprefix(str(path))[:32]}")
        too_small = [NAMES[i] for i, size in enumerate(sizes) if size < (2 if given_test else 3)]
        if len(sizes) == 1:
            assert "one class" in message, message
        elif too_small:
            assert any(repr(name) in message for name in too_small), message
            assert "at least" in message, message
        return
    assert_valid(data)
    event("valid Dataset")
    assert data.class_names == sorted(NAMES[: len(sizes)])


# ---------------------------------------------------------------------------------------------
# Image folders: valid images of any size and mode mixed with broken and foreign files

IMAGE_KINDS = {  # format -> modes it can store
    "PNG": ["L", "RGB", "RGBA", "P", "1", "LA", "I;16"],
    "BMP": ["L", "RGB"],
    "GIF": ["P", "L"],
    "TIFF": ["F", "CMYK", "RGB", "I;16"],
    "JPEG": ["L", "RGB"],
}
SUFFIX = {"PNG": ".png", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif", "JPEG": ".jpg"}


def image_bytes(rng, fmt: str, mode: str, width: int, height: int) -> bytes:
    pixels = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


valid_image = st.tuples(st.just("valid"), st.sampled_from(sorted(IMAGE_KINDS)),
                        st.integers(0, 6), st.integers(1, 9), st.integers(1, 9))
broken_file = st.sampled_from(["empty", "text_as_png", "dir_named_png", "bomb",  # never images
                               "random_bytes", "cut", "flip",  # maybe still decodable
                               "notes_txt"])  # not an image suffix: ignored, not counted
SURE_BAD = {"empty", "text_as_png", "dir_named_png", "bomb"}
MAYBE_BAD = {"random_bytes", "cut", "flip"}


@st.composite
def image_tree(draw):
    """Class folders of valid images and broken files: mostly enough to split, sometimes not."""
    files = st.one_of(valid_image, valid_image, valid_image, broken_file)
    classes = draw(st.one_of(st.lists(st.lists(files, min_size=4, max_size=8), min_size=2,
                                      max_size=3),
                             st.lists(st.lists(files, max_size=5), max_size=4)))
    return classes, draw(st.integers(0, 2**32 - 1)), draw(st.booleans())


def write_entry(folder, i, entry, rng) -> None:
    if isinstance(entry, tuple):
        _, fmt, mode_index, width, height = entry
        modes = IMAGE_KINDS[fmt]
        data = image_bytes(rng, fmt, modes[mode_index % len(modes)], width, height)
        (folder / f"{i}{SUFFIX[fmt]}").write_bytes(data)
        return
    good = image_bytes(rng, "PNG", "RGB", 6, 5)
    if entry == "empty":
        (folder / f"{i}.png").write_bytes(b"")
    elif entry == "text_as_png":
        (folder / f"{i}.png").write_text("not an image\n")
    elif entry == "dir_named_png":
        (folder / f"{i}.png").mkdir()
    elif entry == "bomb":  # a valid PNG header claiming 100000 x 100000 pixels
        header = bytearray(good)
        header[16:24] = (100000).to_bytes(4, "big") * 2
        header[29:33] = zlib.crc32(bytes(header[12:29])).to_bytes(4, "big")  # IHDR checksum
        (folder / f"{i}.png").write_bytes(bytes(header))
    elif entry == "random_bytes":
        (folder / f"{i}.jpg").write_bytes(rng.bytes(int(rng.integers(1, 200))))
    elif entry == "cut":
        (folder / f"{i}.png").write_bytes(good[: int(rng.integers(1, len(good)))])
    elif entry == "flip":
        damaged = bytearray(good)
        damaged[int(rng.integers(8, len(good)))] ^= 0xFF
        (folder / f"{i}.png").write_bytes(bytes(damaged))
    else:
        (folder / f"{i}.txt").write_text("notes")


@settings(FUZZ, max_examples=EXAMPLES_IMAGES)
@given(tree=image_tree(), grayscale=st.booleans())
def test_any_image_folder_loads_valid_or_fails_clearly(tmp_path_factory, tree, grayscale):
    classes, seed, stray_file = tree
    rng = np.random.default_rng(seed)
    root = tmp_path_factory.mktemp("images") / "data"
    root.mkdir()
    if stray_file:  # files next to the class folders are not images of any class
        (root / "README.png").write_bytes(image_bytes(rng, "PNG", "RGB", 3, 3))
    for c, entries in enumerate(classes):
        (root / f"class{c}").mkdir()
        for i, entry in enumerate(entries):
            write_entry(root / f"class{c}", i, entry, rng)
    cfg = {"path": str(root), "image_size": [5, 4],
           "color_mode": "grayscale" if grayscale else "rgb", **SPLIT}
    data = outcome(lambda: load_dataset(cfg, PRE, root.parent / "cache"), root)
    valid = sum(isinstance(e, tuple) for entries in classes for e in entries)
    sure_bad = sum(e in SURE_BAD for entries in classes for e in entries)
    maybe_bad = sum(e in MAYBE_BAD for entries in classes for e in entries)
    if data is None:
        return
    assert data.input_shape == (5, 4, 1 if grayscale else 3)
    assert sure_bad <= data.report["unreadable_files"] <= sure_bad + maybe_bad
    assert data.report["source_rows"] + data.report["unreadable_files"] == (
        valid + sure_bad + maybe_bad)
    if not maybe_bad:  # every valid image, whatever its mode and size, was read
        assert data.report["source_rows"] == valid


# ---------------------------------------------------------------------------------------------
# clean / split / normalize called directly, as user functions' arrays reach them


@settings(FUZZ, max_examples=EXAMPLES_CLEAN)
@given(arrays=npz_contents(), pre=preprocess)
def test_clean_split_normalize_on_raw_arrays(arrays, pre):
    x, y = arrays.get("x_train", np.zeros((0, 2))), arrays.get("y_train", np.zeros(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            x, y, names, _ = clean(x, y, None, pre, source="fuzz")
            splits = normalize(split(x, y, None, None, SPLIT, names, source="fuzz"),
                               pre["normalize"], source="fuzz")
        except DataError as e:
            assert_clear(e, "fuzz")
            event(f"DataError: {str(e)[6:38]}")
            return
    event("valid splits")
    for part in ("train", "val", "test"):
        assert len(splits[f"x_{part}"]) == len(splits[f"y_{part}"]) > 0
        assert np.isfinite(splits[f"x_{part}"]).all()
        assert splits[f"y_{part}"].max() < len(names)


# ---------------------------------------------------------------------------------------------
# Regressions: each bug the fuzzing found, as a fixed case


def npz(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def load(path, tmp_path, pre=PRE, **cfg):
    return load_dataset({"path": str(path), **SPLIT, **cfg}, pre, tmp_path / "cache")


ROWS = np.arange(60, dtype=float).reshape(30, 2)
LABELS = np.arange(30) % 3


class Unpickled:
    """Leaves a folder behind if it is ever unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def test_pickles_inside_an_npz_are_never_loaded(tmp_path):
    marker = tmp_path / "unpickled"
    bad = npz(tmp_path, x_train=np.asarray([Unpickled(marker)] * 30, dtype=object),
              y_train=LABELS)
    with pytest.raises(DataError, match="x_train.*pickle"):
        load(bad, tmp_path)
    # An unused object array next to good arrays is not read at all.
    (tmp_path / "junk").mkdir()
    extra = npz(tmp_path / "junk", x_train=ROWS, y_train=LABELS,
                meta=np.asarray([Unpickled(marker)], dtype=object))
    assert load(extra, tmp_path / "junk").num_classes == 3
    assert not marker.exists()


@pytest.mark.parametrize("blob, says", [
    (b"x_train,y_train\n1.0,0\n", "not a .npz"),
    (b"", "not a .npz"),
    (pickle.dumps({"x_train": [1.0]}), "not a .npz"),
])
def test_files_that_are_not_npz_say_so(tmp_path, blob, says):
    path = tmp_path / "data.npz"
    path.write_bytes(blob)
    with pytest.raises(DataError, match=says) as caught:
        load(path, tmp_path)
    assert_clear(caught.value, path)


@pytest.mark.parametrize("flag", [0x01, 0x40])  # encrypted; strong encryption (unsupported)
def test_npz_entries_flagged_encrypted_are_a_clear_error(tmp_path, flag):
    """zipfile raises RuntimeError / NotImplementedError for these, not BadZipFile."""
    buffer = io.BytesIO()
    np.savez(buffer, x_train=ROWS, y_train=LABELS)
    blob = bytearray(buffer.getvalue())
    entry = blob.index(b"PK\x01\x02")  # central directory record of the first array
    blob[entry + 8] |= flag  # its general purpose flags
    path = tmp_path / "data.npz"
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="x_train.*cannot be read") as caught:
        load(path, tmp_path)
    assert_clear(caught.value, path)


def test_npz_header_claiming_an_enormous_array_is_a_clear_error(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<i8", "fortran_order": False, "shape": (99999999999,)})
    path = tmp_path / "data.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x_train.npy", header.getvalue() + bytes(64))
        archive.writestr("y_train.npy", header.getvalue() + bytes(64))
    with pytest.raises(DataError, match="x_train.*cannot be read") as caught:
        load(path, tmp_path)
    assert_clear(caught.value, path)


def test_a_single_npy_array_is_not_mistaken_for_an_npz(tmp_path):
    path = tmp_path / "data.npz"
    with open(path, "wb") as f:
        np.save(f, ROWS)
    with pytest.raises(DataError, match=r"\.npy.*numpy\.savez"):
        load(path, tmp_path)


@pytest.mark.parametrize("x, says", [
    (ROWS + 1j, "complex"),
    (ROWS.astype("datetime64[s]"), "datetime"),
    (ROWS.astype("timedelta64[s]"), "timedelta"),
    (ROWS.astype(str), "text"),
    (np.zeros(30, dtype=[("a", "f4"), ("b", "f4")]), "structured"),
])
def test_inputs_that_are_not_real_numbers_are_refused(tmp_path, x, says):
    """float32 would silently drop imaginary parts and turn dates and text into numbers."""
    path = npz(tmp_path, x_train=x, y_train=LABELS)
    with pytest.raises(DataError, match=f"x_train.*{says}") as caught:
        load(path, tmp_path)
    assert_clear(caught.value, path)


def test_scalar_inputs_and_rows_without_features_are_refused(tmp_path):
    for name, x in (("scalar", np.asarray(1.0)), ("nofeatures", np.zeros((30, 0)))):
        (tmp_path / name).mkdir()
        path = npz(tmp_path / name, x_train=x, y_train=LABELS)
        with pytest.raises(DataError, match="x_train") as caught:
            load(path, tmp_path / name)
        assert_clear(caught.value, path)


def test_one_dimensional_inputs_are_one_feature(tmp_path):
    data = load(npz(tmp_path, x_train=np.arange(30.0), y_train=LABELS), tmp_path)
    assert data.input_shape == (1,)


@pytest.mark.parametrize("y, says", [
    (LABELS + 0j, "complex"),
    (LABELS.astype("datetime64[D]"), "datetime"),
    (np.where(LABELS == 0, 1e300, LABELS), "fractional"),
    (np.eye(3)[LABELS], "one-hot"),
])
def test_labels_that_are_not_classes_are_refused(tmp_path, y, says):
    path = npz(tmp_path, x_train=ROWS, y_train=y)
    with pytest.raises(DataError, match=says) as caught:
        load(path, tmp_path)
    assert_clear(caught.value, path)


def test_byte_string_labels_become_text_class_names(tmp_path):
    data = load(npz(tmp_path, x_train=ROWS, y_train=np.asarray([b"cat", b"dog", b"emu"])[LABELS]),
                tmp_path)
    assert data.class_names == ["cat", "dog", "emu"]


def test_a_single_class_is_refused(tmp_path):
    path = npz(tmp_path, x_train=ROWS, y_train=np.zeros(30, int))
    with pytest.raises(DataError, match="one class") as caught:
        load(path, tmp_path)
    assert_clear(caught.value, path)


def test_a_class_too_small_to_split_is_named(tmp_path):
    path = npz(tmp_path, x_train=ROWS[:11], y_train=np.asarray(["cat"] * 10 + ["dog"]))
    with pytest.raises(DataError, match=r"smallest class has 1 rows \(class 'dog'\).*least 3") \
            as caught:
        load(path, tmp_path)
    assert_clear(caught.value, path)


def test_too_many_classes_for_the_test_split_say_which_fraction_to_raise(tmp_path):
    path = npz(tmp_path, x_train=ROWS[:30], y_train=np.arange(30) % 10)
    with pytest.raises(DataError, match="test_fraction") as caught:
        load(path, tmp_path)
    assert_clear(caught.value, path)


def test_a_test_split_with_other_features_is_refused(tmp_path):
    path = npz(tmp_path, x_train=ROWS, y_train=LABELS, x_test=np.zeros((6, 5)), y_test=LABELS[:6])
    for how in ("unit", "standardize"):
        with pytest.raises(DataError, match="x_test") as caught:
            load(path, tmp_path, {**PRE, "normalize": how})
        assert_clear(caught.value, path)


def test_nan_inputs_kept_on_request_are_an_error_not_nan_training(tmp_path):
    x = ROWS.copy()
    x[3, 1] = np.nan
    path = npz(tmp_path, x_train=x, y_train=LABELS)
    with pytest.raises(DataError, match="drop_nonfinite") as caught:
        load(path, tmp_path, {**PRE, "drop_nonfinite": False})
    assert_clear(caught.value, path)


def test_normalising_extreme_values_stays_finite():
    splits = {"x_train": np.asarray([[3e38], [-3e38], [0.0]], np.float32),
              "x_val": np.zeros((1, 1), np.float32), "x_test": np.ones((1, 1), np.float32)}
    for how in ("unit", "symmetric", "standardize"):
        out = normalize(splits, how)
        assert all(np.isfinite(out[k]).all() for k in ("x_train", "x_val", "x_test")), how


def test_values_that_overflow_once_normalised_are_refused():
    splits = {"x_train": np.asarray([[0.0], [1e-44]], np.float32),
              "x_val": np.ones((1, 1), np.float32), "x_test": np.ones((1, 1), np.float32)}
    with pytest.raises(DataError, match="x_val.*normalize"):
        normalize(splits, "unit", source="data.npz")


def test_a_path_that_is_not_there_or_not_a_folder(tmp_path):
    for path in (tmp_path / "missing", tmp_path / "fifo"):
        if path.name == "fifo":
            os.mkfifo(path)
        with pytest.raises(DataError) as caught:
            load_source({"path": str(path)})
        assert_clear(caught.value, path)


def test_image_folder_without_readable_images_counts_what_it_skipped(tmp_path):
    root = tmp_path / "images"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "a.png").write_bytes(b"junk")
    (root / "cat" / "b.png").write_bytes(b"")
    with pytest.raises(DataError, match="2 unreadable") as caught:
        load_source({"path": str(root)})
    assert_clear(caught.value, root)


def test_image_folder_skips_a_decompression_bomb(tmp_path):
    """Pillow raises DecompressionBombError (not an OSError) for a header claiming huge sizes."""
    root = tmp_path / "images"
    rng = np.random.default_rng(4)
    for label in ("circle", "square"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            (root / label / f"{i}.png").write_bytes(image_bytes(rng, "PNG", "RGB", 6, 5))
    write_entry(root / "circle", 9, "bomb", rng)
    x, _, _, _, skipped = load_source({"path": str(root), "image_size": [4, 4]})
    assert skipped == 1 and len(x) == 8


@pytest.mark.parametrize("arrays, says", [
    ({"x_train": ROWS, "y_train": LABELS[:20]}, "x_train has 30 rows but y_train has 20"),
    ({"x_train": ROWS[:0], "y_train": LABELS[:0]}, "x_train is empty"),
    ({"x_train": ROWS, "y_train": LABELS, "x_test": ROWS[:0], "y_test": LABELS[:0]},
     "x_test is empty"),
])
def test_messages_name_the_file_and_the_array(tmp_path, arrays, says):
    path = npz(tmp_path, **arrays)
    with pytest.raises(DataError, match=says) as caught:
        load(path, tmp_path)
    assert_clear(caught.value, path)


def test_object_labels_from_a_user_function():
    """np.unique cannot sort mixed Python objects; they are read as names, None is refused."""
    x = np.arange(12.0).reshape(6, 2)
    _, y, names, _ = clean(x, np.asarray([1, "a"] * 3, dtype=object), None, PRE)
    assert names == ["1", "a"] and list(y) == [0, 1] * 3
    with pytest.raises(DataError, match="y_train holds Python objects"):
        clean(x, np.asarray([None, "a"] * 3, dtype=object), None, PRE)
