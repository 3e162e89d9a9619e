"""A trial's confusion matrix as a PNG heat map, and its per-class table as CSV.

Drawn with Pillow directly: a matplotlib figure costs ~0.1 s per trial, this ~5 ms. Every piece of
text is measured before it is placed (`layout`), so nothing overlaps whatever the class names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FONT_SIZE = 13
PAD = 8  # around the picture and between its parts
CELL_MIN = 36


@dataclass
class Layout:
    width: int
    height: int
    texts: list[tuple[int, int, str, str]] = field(default_factory=list)  # x, y, text, colour
    cells: list[tuple[tuple[int, int, int, int], tuple[int, int, int]]] = field(default_factory=list)


def layout(counts: np.ndarray, labels: list[str], title: str, measure) -> Layout:
    """Where everything goes. `measure(text)` is (width, height) in pixels. Rows are the true
    class, columns the predicted one; a cell is shaded by its share of the true class."""
    n = len(labels)
    line = measure("Ag")[1] + PAD
    cell = max(CELL_MIN, measure(str(counts.max()))[0] + PAD,
               max(measure(t)[0] for t in labels) + PAD)
    left = PAD + max(measure("true")[0], max(measure(t)[0] for t in labels)) + PAD
    grid_top = PAD + 3 * line  # title, axis name, column labels
    width = max(left + n * cell + PAD, PAD + measure(title)[0] + PAD,
                left + measure("predicted")[0] + PAD)
    out = Layout(width, grid_top + n * cell + PAD)
    out.texts += [(PAD, PAD, title, "black"), (left, PAD + line, "predicted", "black"),
                  (PAD, PAD + 2 * line, "true", "black")]
    row_totals = np.maximum(counts.sum(axis=1, keepdims=True), 1)
    middle = (cell - line) // 2 + PAD // 2  # from a cell's top to its text's top
    for i, label in enumerate(labels):
        out.texts.append((left + i * cell + (cell - measure(label)[0]) // 2, PAD + 2 * line,
                          label, "black"))
        out.texts.append((PAD, grid_top + i * cell + middle, label, "black"))
        for j in range(n):
            share = counts[i, j] / row_totals[i, 0]
            shade = int(255 - 200 * share)
            x, y = left + j * cell, grid_top + i * cell
            out.cells.append(((x, y, x + cell - 1, y + cell - 1), (shade, shade, 255)))
            text = str(counts[i, j])
            out.texts.append((x + (cell - measure(text)[0]) // 2, y + middle, text,
                              "white" if share > 0.6 else "black"))
    return out


def confusion_png(y_true, y_pred, class_names, path: Path, title: str) -> None:
    from PIL import Image, ImageDraw, ImageFont

    n = len(class_names)
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    font = ImageFont.load_default(size=FONT_SIZE)
    plan = layout(counts, [str(c)[:12] for c in class_names], title, text_measure(font))
    image = Image.new("RGB", (plan.width, plan.height), "white")
    draw = ImageDraw.Draw(image)
    for box, fill in plan.cells:
        draw.rectangle(box, fill=fill, outline=(200, 200, 200))
    for x, y, text, colour in plan.texts:
        draw.text((x, y), text, fill=colour, font=font)
    image.save(path, format="PNG")


def text_measure(font):
    """(width, height) of a text in `font`, as Pillow draws it."""
    from PIL import Image, ImageDraw

    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def measure(text: str) -> tuple[int, int]:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        return int(right - left), int(bottom - top)

    return measure


def per_class_csv(y_true, y_pred, class_names) -> str:
    from sklearn.metrics import precision_recall_fscore_support

    labels = list(range(len(class_names)))
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                       zero_division=0)
    rows = ["class,precision,recall,f1,support"]
    rows += [f"{name},{p[i]:.4f},{r[i]:.4f},{f[i]:.4f},{support[i]}"
             for i, name in enumerate(class_names)]
    return "\n".join(rows) + "\n"
