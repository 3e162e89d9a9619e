"""The fixed model of benchmarks/spaces/fixed_cnn.yaml, built by sweeper's own code, so every
compared tool trains exactly the same network on exactly the same data."""

from __future__ import annotations

from pathlib import Path

SPACE = Path(__file__).resolve().parents[1] / "spaces" / "fixed_cnn.yaml"


def load():
    """(space, hyperparameters, data) for the fixed space."""
    from sweeper.pipeline.data import load_dataset
    from sweeper.space import parse_space

    space = parse_space(SPACE.read_text(), source=str(SPACE))
    hp = space.hyperparameters({p.name: p.choices[0] for p in space.params})
    data = load_dataset(space.config["dataset"], space.config["preprocess"])
    return space, hp, data


def build(space, hp, data):
    from sweeper.pipeline.model import build_model

    batch_size = int(hp["batch_size"])
    steps = -(-len(data.x_train) // batch_size)
    return build_model(space.config["model"], hp, data, steps, space.max_epochs)
