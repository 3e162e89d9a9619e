"""Search spaces: a YAML file -> a validated SearchSpace that suggests a trial's parameters.

Everything is checked before any worker starts or anything is written to a store. A problem
raises SpaceError with one line: the file, the key, what is wrong and how to fix it.

- `schema`: what a space may say, with the built-in hyperparameters' types, bounds and defaults;
- `yaml_file`: reading YAML safely; `checks`, `params`, `validate`: the validator;
- `runtime`: SearchSpace and Param, what workers use.
"""

from __future__ import annotations

import os
from pathlib import Path

from sweeper.space.runtime import Param, SearchSpace
from sweeper.space.validate import Validator
from sweeper.space.yaml_file import read_yaml, space_error

__all__ = ["Param", "SearchSpace", "available_spaces", "load_space", "parse_space", "space_path"]

SPACES_DIR = Path("search_spaces")


def space_path(name: str, spaces_dir: Path | str = SPACES_DIR) -> Path:
    """`cnn_lr` -> search_spaces/cnn_lr.yaml; a path to a .yaml file is taken as it is."""
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        return Path(name)
    return Path(spaces_dir) / f"{name}.yaml"


def available_spaces(spaces_dir: Path | str = SPACES_DIR) -> list[str]:
    folder = Path(spaces_dir)
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_space(name: str, spaces_dir: Path | str = SPACES_DIR) -> SearchSpace:
    """Read and validate a space by name (search_spaces/<name>.yaml) or by path."""
    path = space_path(name, spaces_dir)
    try:
        found = path.is_file()
    except OSError as e:  # e.g. a name longer than the file system allows
        raise space_error(f"{path}: cannot be read ({e.strerror}); check the name") from None
    if not found:
        known = ", ".join(available_spaces(spaces_dir)) or "none"
        raise space_error(
            f"{path}: no such search space '{name}'; known spaces: {known} "
            f"(add {path} or pick one of those)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise space_error(f"{path}: not UTF-8 text; save the file as UTF-8") from None
    except OSError as e:
        raise space_error(
            f"{path}: cannot be read ({e.strerror}); check its permissions") from None
    return parse_space(text, source=str(path), name=path.stem)



def parse_space(text: str, source: str = "<space>", name: str = "space") -> SearchSpace:
    """Validate YAML text into a SearchSpace. `source` names the file in messages."""
    return Validator(source).space(read_yaml(text, source), text, name)
