"""Fuzzed inputs (hypothesis): any search-space file and any command line ends in a valid result
or in one line of user error with exit code 2; never a traceback, never a write to a store."""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import math
import os
import re
import tempfile
import time
import tracemalloc
from pathlib import Path

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sweeper.cli import build_parser, main
from sweeper.cli.args import MAX_COUNT, int_between, non_negative_int, parse_duration, positive_int, unix_time
from sweeper.errors import GpuError, SpaceError
from sweeper.gpus import parse_gpu_list
from sweeper.pipeline.multi_objective import load_prunable_study, report, should_prune
from sweeper.space import SearchSpace, load_space
from sweeper.sweep import controller

ROOT = Path(__file__).resolve().parents[1]
BASES = [(ROOT / "search_spaces" / f"{name}.yaml").read_text()
         for name in ("cnn_lr", "mlp_breast_cancer", "cnn_compress")]
BASE_DOCS = [yaml.safe_load(text) for text in BASES]

# Examples per test are set below; the whole file takes about 25 s.
FUZZ = settings(deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


def fuzz(examples: int) -> settings:
    """SWEEPER_FUZZ_SCALE=10 runs ten times the examples (a deeper, slower search)."""
    scale = float(os.environ.get("SWEEPER_FUZZ_SCALE", "1"))
    return settings(FUZZ, max_examples=max(1, round(examples * scale)))


optuna.logging.set_verbosity(optuna.logging.WARNING)

ERROR_LINE = re.compile(r"sweeper: error: .+ \(see 'sweeper( [a-z]+)? --help'\)")


# ---------------------------------------------------------------------------------------------
# Generators of space files

def _laughs(levels: int = 9) -> str:
    """A flow value of `levels` nested anchors, each referring 9 times to the one before."""
    parts = ["&l0 [" + ", ".join(["lol"] * 9) + "]"]
    parts += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + f", *l{levels - 1}]"


MARKER = str(Path(tempfile.gettempdir()) / f"sweeper-fuzz-{os.getpid()}-ran")  # by no tag
RAW_JUNK = [
    # numbers YAML can spell but Python may not hold
    ".nan", ".NaN", ".inf", "-.inf", "+.inf", "nan", "inf", "1e400", "-1e400", "1.0e+400",
    "9" * 400, "-" + "9" * 400, "9" * 5000, "0x" + "f" * 400, "0o777", "0b101", "1_000",
    "1:30:00", "-0", "0.0", "-1", "-1.0e-400",
    # nothing, empty, odd text
    "~", "null", "", "''", '"\\0\\x85\\u2028 x"', '"a\\nb"', "'\t'", "\"\\ud800\"", "|\n  block",
    # tags: unsafe ones must be refused with nothing constructed
    f'!!python/object/apply:os.system ["touch {MARKER}"]',
    f'!!python/object/new:os.system ["touch {MARKER}"]', "!!python/name:os.system",
    "!!python/tuple [1, 2]", "!!python/object:argparse.Namespace {a: 1}",
    "!!binary aGVsbG8=", "!!binary '***'", "!!timestamp 2001-12-14t21:59:43.10-05:00",
    "!!timestamp soon", "2024-02-30", "2001-12-14", "2001-12-14 25:00:00", "!!set {a, b}",
    "!!set {[a]: }", "!!omap [{a: 1}, {b: 2}]", "!!pairs [{a: 1}]", "!!map [a]", "!!map a",
    "!!seq {a: 1}", "!!str 5", "!!int x", "!!int 0x", "!!float x", "!!bool maybe", "!!null x",
    "!!merge x", "!custom 1", "!<tag:yaml.org,2002:str> x", "!foo%0Abar 1", "!!int " + "9" * 5000,
    # anchors, aliases, duplicate and odd keys
    "&a [1, 2]", "*nope", "[&x 1, *x, *x]", "{a: 1, a: 2}", "{<<: {a: 1}}", "{? [a, b] : 1}",
    "{? {a: 1} : 1}", "{.nan: 1, .nan: 2}", "{1: a, 1.0: b}", "{null: 1}", "{true: 1, yes: 2}",
    _laughs(),
    # deep nesting
    "[" * 10000, "{a: " * 500 + "1" + "}" * 500, "[" * 300 + "]" * 300,
    "{a: " * 60 + "1" + "}" * 60,
    # bounds (constraints) with odd numbers and shapes
    "'size_kb <= 1e400'", "'latency_ms < -inf'", "'size_kb <= 64 <= 3'", "'f1>=0x10'",
    "'params > 9" + "9" * 400 + "'", "['size_kb <= 1', 'size_kb <= 1']",
]


def _deep(depth: int):
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
           | st.integers(min_value=-10**300, max_value=10**300))
known_keys = st.sampled_from(["description", "dataset", "model", "training", "params", "sampler",
                              "pruner", "objective", "name", "type", "low", "high", "log", "step",
                              "choices", "when", "seed", "path", "image_size", "classes",
                              "objectives", "constraints", "compress", "quantize", "sparsity",
                              "finetune_epochs", "population_size"])
nested = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(known_keys | st.text(max_size=10) | st.integers(), inner, max_size=5),
    max_leaves=20)
junk_values = nested | st.integers(50, 120).map(_deep) | st.sampled_from(
    [[], {}, -1, 0, 10**300, -(10**300), math.nan, math.inf, -math.inf, "", "x" * 1000])


@st.composite
def mutated(draw, texts) -> bytes:
    """A text, then up to 3 edits: cut at a byte, bytes inserted or deleted, a line doubled."""
    data = draw(texts).encode("utf-8")
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["truncate", "insert", "delete", "double_line"]))
        at = draw(st.integers(0, len(data)))
        if op == "truncate":
            data = data[:at]
        elif op == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=8) | st.sampled_from(
                [b": ", b"- ", b"\n", b"  ", b"{", b"[", b"&a ", b"*a", b"!!", b"\t", b"#",
                 b"'", b'"', b"\xff", b"\xc3", b"\x00"])) + data[at:]
        elif op == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 40)):]
        else:
            lines = data.split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            data = b"\n".join(lines[:i + 1] + lines[i:])
    return data


def _paths(doc, prefix=()):
    """Every (path, container) in a parsed space: mapping keys and list indices."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield prefix + (k,), doc
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield prefix + (i,), doc
            yield from _paths(v, prefix + (i,))


@st.composite
def junk_in_a_real_space(draw) -> bytes:
    """A shipped space with one value or key replaced by junk (a Python value or raw YAML)."""
    doc = copy.deepcopy(draw(st.sampled_from(BASE_DOCS)))
    path, container = draw(st.sampled_from(list(_paths(doc))))
    op = draw(st.sampled_from(["value", "key", "add"]))
    raw = draw(st.booleans())
    junk = "__JUNK__" if raw else draw(junk_values)
    if op == "value" or isinstance(container, list):
        container[path[-1]] = junk
    elif op == "key":
        new_key = "__JUNK__" if raw else draw(known_keys | scalars)
        try:
            pairs = [(new_key if k == path[-1] else k, v) for k, v in container.items()]
            container.clear()
            container.update(pairs)
        except TypeError:  # an unhashable junk key
            return yaml.safe_dump(doc, sort_keys=False).encode()
    else:
        container["__JUNK__" if raw else draw(st.text(max_size=8))] = junk
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=draw(st.booleans()))
    if raw:
        text = text.replace("__JUNK__", draw(st.sampled_from(RAW_JUNK)))
    return text.encode("utf-8")


random_yaml = nested.map(lambda d: yaml.safe_dump(d, allow_unicode=True))
encodings = st.sampled_from(["latin-1", "utf-16", "utf-16-le", "utf-32", "cp1252", "utf-8-sig",
                             "utf-8"])


@st.composite
def wrongly_encoded(draw) -> bytes:
    text = draw(st.sampled_from(BASES) | st.text(max_size=200) | random_yaml)
    return text.encode(draw(encodings), errors="replace")


space_bytes = (mutated(random_yaml) | mutated(st.sampled_from(BASES)) | junk_in_a_real_space()
               | wrongly_encoded() | st.binary(max_size=300)
               | st.sampled_from(RAW_JUNK).map(str.encode))


def usable(space: SearchSpace) -> None:
    """A space the loader accepts builds its sampler and pruner and suggests trials."""
    assert space.fingerprint and space.direction in ("maximize", "minimize")
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(storage=storage, study_name="fuzz", directions=space.directions)
    study = load_prunable_study("fuzz", storage, space.make_sampler(), space.make_pruner())
    for _ in range(2):
        trial = study.ask()
        chosen = space.suggest(trial)
        space.hyperparameters(chosen)
        report(trial, 0.5, 1)
        should_prune(trial)
        study.tell(trial, [0.5] * len(space.directions))


def load_or_one_line(path: Path) -> SearchSpace | None:
    """load_space gives a valid space, or a SpaceError of one line naming the file."""
    try:
        space = load_space(str(path))
    except SpaceError as e:
        message = str(e)
        assert len(message.splitlines()) == 1 and "\n" not in message, message
        assert message.startswith(f"{path}: "), message
        event("user error: " + message[len(f"{path}: "):].split(":")[0][:20])
        return None
    assert isinstance(space, SearchSpace)
    usable(space)
    event("valid space")
    return space


# ---------------------------------------------------------------------------------------------
# 1. The space loader

@fuzz(400)
@given(data=mutated(random_yaml))
def test_random_yaml_documents_mutated(tmp_path, data):
    path = tmp_path / "space.yaml"
    path.write_bytes(data)
    load_or_one_line(path)


@fuzz(400)
@given(data=mutated(st.sampled_from(BASES)))
def test_shipped_spaces_truncated_and_mutated(tmp_path, data):
    path = tmp_path / "space.yaml"
    path.write_bytes(data)
    load_or_one_line(path)


@fuzz(300)
@given(data=wrongly_encoded() | st.binary(max_size=500))
def test_random_bytes_and_wrong_encodings(tmp_path, data):
    path = tmp_path / "space.yaml"
    path.write_bytes(data)
    load_or_one_line(path)


@fuzz(800)
@given(data=junk_in_a_real_space())
def test_junk_values_and_keys_in_a_real_space(tmp_path, data):
    path = tmp_path / "space.yaml"
    path.write_bytes(data)
    load_or_one_line(path)
    assert not Path(MARKER).exists()  # no tag ran a command


# Regression cases: each crashed with a traceback before.
CRASHES = [
    ("params: {learning_rate: {type: float, low: %d, high: 0.01}}" % 10**400, "is too large"),
    ("training: {seed: %s}" % ("9" * 5000), "is not a valid int"),
    ("description: 2024-02-30", "'2024-02-30' is not a valid timestamp"),
    ("description: !!bool maybe", "is not a valid bool"),
    ("description: !!timestamp soon", "is not a valid timestamp"),
    ("description: !!int abc", "is not a valid int"),
    ("description: !!map a", "expected a mapping"),
    ("description: !!map [a, b]", "expected a mapping"),
    ("sampler: grid\n"
     "params: {momentum: {type: float, low: -1.0e+300, high: 1.0e+300, step: 1.0e-300}}",
     "params.momentum: has a million grid points"),
    ("dataset: {path: '%s.npz'}" % ("a" * 5000), "dataset.path"),
    ("dataset: {path: '~no-such-user-here/x.npz'}", "no such home folder"),
    # accepted before, then failed inside Optuna or numpy after the study was written
    ("sampler: {name: tpe, seed: -1}", "sampler.seed: must be between 0 and 2147483647"),
    ("sampler: {name: random, seed: 4294967296}", "sampler.seed"),
    ("training: {seed: -5}", "training.seed"),
    ("dataset: {split_seed: 99999999999}", "dataset.split_seed"),
    # merge keys: refused (nested merges grow exponentially) with a clear reason
    ("x: &x {seed: 1}\ntraining: {<<: *x}", "merge keys (<<) are not supported"),
]
LR = "params: {learning_rate: {type: float, low: 0.0001, high: 0.01, log: true}}"


@pytest.mark.parametrize("text, fragment", CRASHES, ids=range(len(CRASHES)))
def test_former_crashes_are_one_line_errors(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(f"model: {{name: cnn}}\n{text}\n" + ("" if "params:" in text else LR + "\n"))
    with pytest.raises(SpaceError) as caught:
        load_space(str(path))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and fragment in message, message


# Whole documents that crashed before.
CRASHED_DOCUMENTS = [
    ('description: "\\U00110000"', "unreadable escape"),  # past the last code point
    ('description: "\\U80000000"', "unreadable escape"),  # past what a C int holds
    ("%YAML 1." + "9" * 5000 + "\n--- {}", "unreadable escape or number"),
    ("!!set {a}: 1", "a key must be a plain value, not set"),
    ('description: "\\ud800"', "lone surrogate"),  # no store could save it
]


@pytest.mark.parametrize("text, fragment", CRASHED_DOCUMENTS, ids=range(len(CRASHED_DOCUMENTS)))
def test_former_crashes_in_whole_documents(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    with pytest.raises(SpaceError) as caught:
        load_space(str(path))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and fragment in message, message


@pytest.mark.parametrize("text", [
    '"a\\nb": 1', '"a\\u2028b": 1', '{"x\\ny": 1, "x\\ny": 2}', "a: !foo%0Abar 1",
    'model: {name: "cnn\\nx"}', 'params: {"\\0": {type: float, low: 0, high: 1}}',
])
def test_line_breaks_in_keys_and_values_stay_on_one_line(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    with pytest.raises(SpaceError) as caught:
        load_space(str(path))
    assert len(str(caught.value).splitlines()) == 1


@pytest.mark.parametrize("name", ["a\\0b", "a\\ud800", "a\\tb", "a\\u2028", " "])
def test_param_names_a_store_cannot_hold_are_refused(tmp_path, name):
    # accepted before for a user model, then refused by the store (NUL) or its encoder
    path = tmp_path / "names.yaml"
    path.write_text(f'model: {{function: user_models:small_dense}}\n'
                    f'params: {{"{name}": {{type: int, low: 1, high: 4}}}}\n')
    with pytest.raises(SpaceError, match="is not a usable name|lone surrogate") as caught:
        load_space(str(path))
    assert len(str(caught.value).splitlines()) == 1


def test_file_name_with_a_line_break_stays_on_one_line(tmp_path):
    path = tmp_path / "two\nlines.yaml"
    path.write_text("[")
    with pytest.raises(SpaceError) as caught:
        load_space(str(path))
    assert len(str(caught.value).splitlines()) == 1 and "two\\nlines.yaml" in str(caught.value)


def test_a_space_name_too_long_for_the_file_system(tmp_path):
    with pytest.raises(SpaceError, match="cannot be read"):
        load_space("a" * 5000 + ".yaml")


@pytest.mark.parametrize("where", [
    "description: {laughs}", "dataset: {{classes: {laughs}}}", "dataset: {{image_size: {laughs}}}",
    "params: {{x: {{type: {laughs}}}}}", "model: {{name: {laughs}}}",
    "params:\n  optimizer: {{type: categorical, choices: [adam, sgd]}}\n"
    "  momentum: {{type: float, low: 0, high: 1, when: {{optimizer: {laughs}}}}}",
    "{laughs}: 1", "x: {laughs}",
])
def test_billion_laughs_is_quick_and_small(tmp_path, where):
    path = tmp_path / "laughs.yaml"
    path.write_text("model: {name: cnn}\n" + where.format(laughs=_laughs(9)) + "\n")
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(SpaceError):
            load_space(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 10  # 9**9 expanded would take minutes and GBs
    assert peak < 50e6


@pytest.mark.parametrize("depth", [50, 300, 1000, 10000])
@pytest.mark.parametrize("shape", ["flow_list", "flow_map", "block_list", "block_map"])
def test_deep_nesting_is_a_one_line_error(tmp_path, depth, shape):
    text = {
        "flow_list": "[" * depth + "]" * depth,
        "flow_map": "description: " + "{a: " * depth + "1" + "}" * depth,
        "block_list": "".join("  " * i + "-\n" for i in range(depth)),
        "block_map": "".join("  " * i + "a:\n" for i in range(depth)),
    }[shape]
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError) as caught:
        load_space(str(path))
    assert len(str(caught.value).splitlines()) == 1


def test_unsafe_tags_construct_nothing(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    for tag in ("python/object/apply:os.system", "python/object/new:os.system"):
        path.write_text(f'model: !!{tag} ["touch {marker}"]\n{LR}\n')
        with pytest.raises(SpaceError, match="invalid YAML"):
            load_space(str(path))
    assert not marker.exists()


def test_safe_tags_and_aliases_still_load(tmp_path):
    path = tmp_path / "tags.yaml"
    path.write_text("description: !!str 2024-01-01\nmodel: &m {name: cnn}\n"
                    "params: {filters: {type: categorical, choices: &c [8, 16]}}\n")
    space = load_space(str(path))
    assert space.config["description"] == "2024-01-01"
    assert space.params[0].choices == (8, 16)


# ---------------------------------------------------------------------------------------------
# 2. The command line

def _commands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


COMMANDS = _commands()
ACTIONS = {name: [a for a in p._actions if a.option_strings and "-h" not in a.option_strings]
           for name, p in COMMANDS.items()}
OPTIONS = {name: sorted({s for a in p._actions for s in a.option_strings})
           for name, p in COMMANDS.items()}
ARG_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                   max_size=16)
JUNK = (ARG_TEXT | st.integers(-10**30, 10**30).map(str) | st.sampled_from([
    "", "-1", "0", "1e400", "inf", "nan", "-inf", "9" * 400, "9" * 5000, "999999999999999999999d",
    "0.5", "0,0", "²", "١٢", " 5 ", "1_000", "0x10", "--", "-", "-h", "--help", "=", "a\nb",
    "65536", "1025", "1000000001",
]))
# Plausible values by the option's type, so that many command lines parse.
GOOD = {None: ["cnn_lr", "x", "out", "best.yaml"], "gpus": ["0,1", "", "0", "GPU-abc", "-1"],
        "storage": ["x.db", "sqlite:///x.db"], "host": ["127.0.0.1", "0.0.0.0"],
        "time": ["10:00:00"], parse_duration: ["8h", "45m", "90", "1h30m", "0.5h"],
        unix_time: ["1700000000", "0", "1.5"]}
GOOD_INTS = ["1", "2", "12", "64"]


@st.composite
def option(draw, action: argparse.Action, junk_odds: float = 0.3) -> list[str]:
    name = draw(st.sampled_from(action.option_strings))
    if action.nargs == 0:  # a flag
        return [name]
    good = st.sampled_from(GOOD.get(action.dest) or GOOD.get(action.type)
                           or (GOOD_INTS if action.type else GOOD[None]))
    value = draw(JUNK if draw(st.floats(0, 1)) < junk_odds else good)
    return draw(st.sampled_from([[name, value], [f"{name}={value}"]]))


@st.composite
def argv_for(draw, command: str, junk_odds: float = 0.3, positional: bool = True) -> list[str]:
    argv = [command]
    takes_space = any(not a.option_strings for a in COMMANDS[command]._actions)
    if positional and takes_space and draw(st.floats(0, 1)) > junk_odds / 3:
        argv.append(draw(st.sampled_from(["cnn_lr", "mlp_breast_cancer"]) | ARG_TEXT))
    for _ in range(draw(st.integers(0, 5))):
        roll = draw(st.floats(0, 1))
        if roll < junk_odds / 3 or not ACTIONS[command]:  # a stray token (check has no options)
            argv.append(draw(JUNK | st.sampled_from(OPTIONS[command])))
        else:
            argv += draw(option(draw(st.sampled_from(ACTIONS[command])), junk_odds))
    return argv


any_argv = (st.sampled_from(sorted(COMMANDS)).flatmap(argv_for)
            | st.lists(JUNK | st.sampled_from(sorted(COMMANDS)), max_size=5))


def run_captured(call):
    """(exit code or result, stdout, stderr) of call(), SystemExit included."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            result = call()
        except SystemExit as e:
            result = e.code
    return result, out.getvalue(), err.getvalue()


def assert_one_line_error(stdout: str, stderr: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1 and stderr.endswith("\n"), stderr
    assert lines[0].startswith("sweeper: error: "), stderr


@fuzz(1000)
@given(argv=any_argv)
def test_any_command_line_parses_or_is_one_line(argv):
    result, out, err = run_captured(lambda: build_parser().parse_args(argv))
    event(f"outcome: {type(result).__name__} {result if isinstance(result, int) else ''}")
    if result == 0:  # --help (or an abbreviation such as --hel)
        assert any(t.startswith("-h") or t.startswith("--h") for t in argv) and "usage:" in out
        assert not err
    elif result == 2:
        assert_one_line_error(out, err)
        assert ERROR_LINE.fullmatch(err.strip()), err
        assert not out
    else:
        assert isinstance(result, argparse.Namespace), result
        assert not out and not err
        assert callable(result.handler)  # the command's own handler
        for name, value in vars(result).items():  # argparse 3.11 read `--port=--` as []
            assert name == "handler" or value is None or isinstance(
                value, (bool, int, float, str)), value
        for name in ("trials", "workers", "workers_per_gpu", "recycle_after", "heartbeat", "top",
                     "port", "threads", "max_memory_mb", "max_worker_memory_mb", "nodes",
                     "gpus_per_node"):
            value = getattr(result, name, None)
            assert value is None or 1 <= value <= MAX_COUNT
        for name in ("timeout", "deadline"):
            value = getattr(result, name, None)
            assert value is None or (math.isfinite(value) and value >= 0)


numbers_as_text = (st.integers(-10**600, 10**600).map(str) | ARG_TEXT
                   | st.sampled_from(["9" * 5000, "1e400", "inf", "nan", " 7 ", "1_0", "٣"]))


@fuzz(300)
@given(text=numbers_as_text, bounds=st.sampled_from([(1, MAX_COUNT), (0, MAX_COUNT), (1, 64),
                                                     (1, 65535)]))
def test_whole_number_options(text, bounds):
    check = {(1, MAX_COUNT): positive_int, (0, MAX_COUNT): non_negative_int}.get(
        bounds, int_between(*bounds))
    try:
        value = check(text)
    except argparse.ArgumentTypeError as e:
        assert "\n" not in str(e) and len(str(e)) < 120
    else:
        assert bounds[0] <= value <= bounds[1]


durations = (st.from_regex(r"\A(\d{1,30}(\.\d{1,4})?[dhmsDHMS]){1,4}\Z") | numbers_as_text
             | st.sampled_from(["999999999999999999999d", "9" * 400, "9" * 400 + "d", "1e400s",
                                "0h", "0.0", "1h 30m", "inf", "-inf", "nan", "1h30m"]))


@fuzz(300)
@given(text=durations)
def test_durations_are_finite_and_positive_or_refused(text):
    try:
        seconds = parse_duration(text)
    except argparse.ArgumentTypeError as e:
        assert "\n" not in str(e) and len(str(e)) < 120
    else:
        assert math.isfinite(seconds) and seconds > 0


@fuzz(200)
@given(text=numbers_as_text | st.floats().map(repr))
def test_unix_times(text):
    try:
        value = unix_time(text)
    except argparse.ArgumentTypeError as e:
        assert "\n" not in str(e)
    else:
        assert math.isfinite(value) and value >= 0


gpu_items = (st.integers(-2, 99).map(str) | st.sampled_from(["GPU-abc", "MIG-1/2", "²", "", " ",
                                                              "-1", "0x1", "1.0"]) | ARG_TEXT)


@fuzz(300)
@given(text=st.lists(gpu_items, max_size=6).map(",".join) | ARG_TEXT)
def test_gpu_lists(text):
    try:
        gpus = parse_gpu_list(text)
    except GpuError as e:
        assert len(str(e).splitlines()) == 1
    else:
        assert len(set(gpus)) == len(gpus)
        for gpu in gpus:
            assert gpu == gpu.strip() and "," not in gpu
            assert (gpu.isascii() and gpu.isdigit()) or gpu.startswith(("GPU-", "MIG-"))


@fuzz(400)
@given(data=st.data())
def test_sweep_and_check_write_nothing_on_bad_input(project, monkeypatch, data):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    reached = []
    monkeypatch.setattr(controller.Controller, "run", lambda self: reached.append(self) or 0)
    space = project / "fuzz" / "space.yaml"
    space.parent.mkdir(exist_ok=True)
    kind = data.draw(st.sampled_from(["shipped file", "shipped file", "fuzzed file", "name"]))
    if kind == "name":
        name = data.draw(st.sampled_from(["cnn_lr", "mlp_breast_cancer", "nope"]) | ARG_TEXT)
    else:
        space.write_bytes(data.draw(st.sampled_from(BASES).map(str.encode) if kind == "shipped file"
                                    else space_bytes))
        name = str(space)
    store = project / "store" / "x.db"
    command = data.draw(st.sampled_from(["sweep", "check"]))
    argv = [command, name] + (["--storage", f"sqlite:///{store}"] if command == "sweep" else [])
    junk_odds = data.draw(st.sampled_from([0.0, 0.1, 0.3]))
    argv += data.draw(argv_for(command, junk_odds, positional=False))[1:]
    before = sorted(project.rglob("*"))
    calls = len(reached)

    result, out, err = run_captured(lambda: main(argv))
    event(f"{command}: exit {result}" + (", sweep started" if len(reached) > calls else ""))

    assert sorted(project.rglob("*")) == before, "something was written"
    assert not store.parent.exists()
    if result == 2:
        assert_one_line_error(out, err)
        assert len(reached) == calls  # no sweep started
    else:
        assert result == 0, (result, err)
        if len(reached) == calls:  # `check`, or --help
            assert "ok (" in out or "usage:" in out
