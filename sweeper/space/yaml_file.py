"""Reading a space's YAML safely: no tags that build objects, no duplicate keys (YAML keeps the
last one silently), no merge keys (they grow without end through aliases), and every way PyYAML
can fail turned into one line naming the line and column."""

from __future__ import annotations

import yaml

from sweeper.errors import SpaceError
from sweeper.text import one_line, shown


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML (no object construction) that refuses duplicate keys instead of keeping the last."""

    def construct_object(self, node, deep=False):
        if not isinstance(node, yaml.ScalarNode):
            return super().construct_object(node, deep=deep)
        if not node.value.isascii() and any("\ud800" <= c <= "\udfff" for c in node.value):
            # "\ud800" escapes give text that no store can save (it is not UTF-8)
            raise yaml.constructor.ConstructorError(
                None, None, "a lone surrogate escape (\\uD800-\\uDFFF) is not text",
                node.start_mark)
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, KeyError, AttributeError):
            # PyYAML's scalar constructors fail like this on `2024-02-30`, `!!bool maybe`,
            # `!!timestamp soon` or an int of more than 4300 digits.
            kind = node.tag.rsplit(":", 1)[-1]
            raise yaml.constructor.ConstructorError(
                None, None, f"{shown(node.value)} is not a valid {kind} (quote it if it is "
                "text)", node.start_mark) from None


def _construct_unique_mapping(loader, node, deep=False):
    if not isinstance(node, yaml.MappingNode):  # e.g. `!!map [a, b]`
        raise yaml.constructor.ConstructorError(
            None, None, f"expected a mapping, found a {node.id}", node.start_mark)
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            # Merges copy mappings into each other: nested ones grow exponentially.
            raise yaml.constructor.ConstructorError(
                None, None, "merge keys (<<) are not supported (write the keys out)",
                key_node.start_mark)
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)  # not `key in seen`: that takes a set (`!!set {a}: 1`), which add() refuses
        except TypeError:  # unhashable key such as a list
            raise yaml.constructor.ConstructorError(
                None, None, f"a key must be a plain value, not {type(key).__name__}",
                key_node.start_mark) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {shown(key)}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)



def read_yaml(text: str, source: str):
    """The YAML document in `text`; `source` names the file in messages."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise space_error(f"{source}: invalid YAML{where}: {problem}; fix the syntax") from None
    except (ValueError, OverflowError) as e:
        # PyYAML's scanner on "\U00110000" ("\U80000000" overflows), or a %YAML version of
        # 5000 digits.
        raise space_error(f"{source}: invalid YAML: unreadable escape or number ({e}); "
                          "fix the syntax") from None
    except RecursionError:
        raise space_error(f"{source}: YAML nested too deeply; flatten the file") from None


def space_error(message: str) -> SpaceError:
    return SpaceError(one_line(message))
