"""Datasets: sources, cleaning counts, splits, normalisation and the on-disk cache."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sweeper.errors import DataError
from sweeper.pipeline.data import clean, load_dataset, normalize

SPLIT = {"validation_fraction": 0.2, "test_fraction": 0.2, "split_seed": 0}
PRE = {"normalize": "unit", "drop_duplicates": True, "drop_nonfinite": True}


def test_digits_split_is_stratified_and_seeded(tmp_path):
    data = load_dataset({"name": "digits", **SPLIT}, PRE, tmp_path)
    assert data.input_shape == (8, 8, 1) and data.num_classes == 10
    total = len(data.y_train) + len(data.y_val) + len(data.y_test)
    assert total == 1797
    assert abs(len(data.y_test) / total - 0.2) < 0.01 and abs(len(data.y_val) / total - 0.2) < 0.01
    # Stratified: every class keeps its share in each split.
    for split in (data.y_train, data.y_val, data.y_test):
        assert np.bincount(split, minlength=10).min() >= 0.08 * len(split)
    again = load_dataset({"name": "digits", **SPLIT, "split_seed": 0}, PRE, tmp_path / "other")
    assert np.array_equal(again.y_val, data.y_val)
    other = load_dataset({"name": "digits", **SPLIT, "split_seed": 1}, PRE, tmp_path / "other")
    assert not np.array_equal(other.y_val, data.y_val)


def test_second_load_comes_from_the_cache_memory_mapped(tmp_path, monkeypatch):
    first = load_dataset({"name": "digits", **SPLIT}, PRE, tmp_path)
    assert first.report["cached"] is False

    def must_not_run(*args, **kwargs):
        raise AssertionError("recomputed despite the cache")

    monkeypatch.setattr("sweeper.pipeline.data.load_source", must_not_run)
    second = load_dataset({"name": "digits", **SPLIT}, PRE, tmp_path)
    assert second.report["cached"] is True
    assert isinstance(second.x_train, np.memmap)
    assert np.array_equal(np.asarray(second.x_train), np.asarray(first.x_train))
    # Other options are another cache entry, computed afresh.
    with pytest.raises(AssertionError, match="recomputed"):
        load_dataset({"name": "digits", **SPLIT}, {**PRE, "normalize": "symmetric"}, tmp_path)


def test_npz_cleaning_counts(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    y = np.array([0, 1, 2] * 20)
    x[3, 2] = np.nan
    x[4, 0] = np.inf
    x[10] = x[11]
    y[10] = y[11]  # an exact duplicate
    y[20] = 7  # outside the class set
    path = tmp_path / "data.npz"
    np.savez(path, x_train=x, y_train=y)
    data = load_dataset({"path": str(path), "classes": [0, 1, 2], **SPLIT}, PRE, tmp_path / "c")
    assert data.report["dropped"] == {"nonfinite": 2, "duplicates": 1, "unknown_label": 1}
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 56
    assert data.class_names == [0, 1, 2]


def test_npz_with_its_own_test_split_and_string_labels(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3))
    y = np.array(["cat", "dog"] * 20)
    path = tmp_path / "given.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x[:10] + 5, y_test=y[:10])
    data = load_dataset({"path": str(path), **SPLIT}, {**PRE, "normalize": "none"}, tmp_path / "c")
    assert data.class_names == ["cat", "dog"]
    assert len(data.y_test) == 10 and np.allclose(data.x_test, x[:10] + 5)
    assert len(data.y_train) + len(data.y_val) == 40


def test_npz_without_labels_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((4, 2)))
    with pytest.raises(DataError, match="no array 'y_train'"):
        load_dataset({"path": str(path), **SPLIT}, PRE, tmp_path / "c")


def test_image_folder_skips_unreadable_files(tmp_path):
    root = tmp_path / "images"
    rng = np.random.default_rng(2)
    for label in ("circle", "square"):
        (root / label).mkdir(parents=True)
        for i in range(10):
            pixels = (rng.random((12, 10, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    (root / "circle" / "broken.png").write_bytes(b"not a png")
    (root / "square" / "notes.txt").write_text("ignored: not an image suffix")
    cfg = {"path": str(root), "image_size": [8, 8], "color_mode": "grayscale", **SPLIT}
    data = load_dataset(cfg, PRE, tmp_path / "c")
    assert data.input_shape == (8, 8, 1)
    assert data.class_names == ["circle", "square"]
    assert data.report["unreadable_files"] == 1
    assert data.report["source_rows"] == 20


def test_dataset_from_a_user_function(project):
    data = load_dataset({"function": "user_models:blobs", **SPLIT}, PRE, project / "c")
    assert data.input_shape == (4,) and data.num_classes == 2


@pytest.mark.parametrize("how, check", [
    ("unit", lambda tr: np.isclose(tr.min(), 0) and np.isclose(tr.max(), 1)),
    ("symmetric", lambda tr: np.isclose(tr.min(), -1) and np.isclose(tr.max(), 1)),
    ("standardize", lambda tr: np.allclose(tr.mean(axis=0), 0, atol=1e-5)
     and np.allclose(tr.std(axis=0), 1, atol=1e-4)),
])
def test_normalisation_is_fitted_on_train_only(how, check):
    rng = np.random.default_rng(3)
    splits = {"x_train": rng.normal(5, 2, (50, 3)).astype(np.float32),
              "x_val": rng.normal(50, 2, (10, 3)).astype(np.float32),
              "x_test": rng.normal(50, 2, (10, 3)).astype(np.float32)}
    out = normalize(splits, how)
    assert check(out["x_train"])
    assert out["x_val"].mean() > out["x_train"].max()  # val kept its offset: no leak


def test_fractional_labels_are_refused():
    with pytest.raises(DataError, match="fractional"):
        clean(np.zeros((3, 2)), np.array([0.5, 1.0, 0.0]), None, PRE)


def test_one_sample_class_says_why_it_cannot_split(tmp_path):
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=np.arange(22, dtype=float).reshape(11, 2),
             y_train=np.array([0] * 10 + [1]))
    with pytest.raises(DataError, match="smallest class has 1 rows"):
        load_dataset({"path": str(path), **SPLIT}, PRE, tmp_path / "c")


# The per-epoch F1 is computed without scikit-learn (speed); it must agree with scikit-learn.
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.data(), st.sampled_from(["macro", "weighted", "micro", "binary"]))
def test_fast_f1_equals_scikit_learn(data, average):
    import warnings

    import numpy as np
    from sklearn.metrics import f1_score

    from sweeper.pipeline.evaluate import f1

    classes = 2 if average == "binary" else data.draw(st.integers(1, 12))
    size = data.draw(st.integers(1, 60))
    labels = st.lists(st.integers(0, classes - 1), min_size=size, max_size=size)
    y_true, y_pred = np.array(data.draw(labels)), np.array(data.draw(labels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = f1_score(y_true, y_pred, average=average, zero_division=0)
    assert f1(y_true, y_pred, average) == pytest.approx(expected, abs=1e-12)
