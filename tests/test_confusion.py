"""The confusion-matrix picture: every text placed inside the picture, none over another, with
the font the picture is drawn in; class names short and long, two classes to a hundred."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image, ImageFont

from sweeper.pipeline.confusion import FONT_SIZE, confusion_png, layout, text_measure


def _boxes(plan, measure):
    return [(x, y, x + measure(text)[0], y + measure(text)[1], text) for x, y, text, _ in plan.texts]


@pytest.mark.parametrize("labels", [
    [str(i) for i in range(10)],
    ["benign", "malignant"],
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    [f"class-{i}-long-name" for i in range(100)],
])
def test_no_text_overlaps_another_or_leaves_the_picture(labels):
    measure = text_measure(ImageFont.load_default(size=FONT_SIZE))
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5000, size=(len(labels), len(labels)))
    plan = layout(counts, [t[:12] for t in labels], "trial 123 (test split)", measure)
    boxes = _boxes(plan, measure)
    for x0, y0, x1, y1, text in boxes:
        assert 0 <= x0 and x1 <= plan.width and 0 <= y0 and y1 <= plan.height, text
    for a, b in itertools.combinations(boxes, 2):
        apart = a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
        assert apart, f"{a[4]!r} overlaps {b[4]!r}"


def test_the_picture_is_drawn_with_its_counts(tmp_path):
    path = tmp_path / "cm.png"
    confusion_png([0, 0, 1, 1, 1], [0, 1, 1, 1, 1], ["a", "b"], path, "trial 2 (test split)")
    image = Image.open(path)
    assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100
    assert len(set(image.getdata())) > 3  # shaded cells, not a blank picture
