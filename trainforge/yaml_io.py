"""The one safe YAML reader and writer of trainforge: YAML 1.2 scalars (``1e-3`` is a float, ``no`` is a
string), a repeated key is an error, alias expansion and nesting are bounded, files must be UTF-8 text,
and no tag builds a Python object. Every part of the package that reads YAML goes through here."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

#: Nodes a document may hold once its aliases are expanded; a real config has a few hundred.
MAX_NODES = 100_000
#: Bytes a YAML file may hold (a config is kilobytes; this refuses a data file given by mistake).
MAX_BYTES = 16 * 1024 * 1024
#: Nesting levels of ``[...]``/``{...}`` a document may have: PyYAML's scanner is quadratic in them
#: (3000 levels take seconds), and no config needs more than a handful.
MAX_FLOW_DEPTH = 64

# a bracket, or a quoted string or comment whose brackets do not count
_FLOW_TOKENS = re.compile(r"""[\[\]{}]|'(?:[^']|'')*'|"(?:[^"\\]|\\.)*"|(?:^|(?<=\s))\#[^\n]*""", re.M)

_MERGE_TAG = "tag:yaml.org,2002:merge"

# YAML 1.2 core schema. PyYAML implements YAML 1.1, where `1e-3` is a string (no dot), `no`/`off`/`yes`
# are booleans (Towhee quotes eval_strategy: 'no' for this reason), `1:30` is the integer 90 and a bare
# date is a datetime object. These are the 1.2 rules, plus `<<` merge keys, which configs use with anchors.
_RESOLVERS: list[tuple[str, re.Pattern[str], str]] = [
    ("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), "tTfF"),
    (
        "tag:yaml.org,2002:int",
        re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7_]+|0x[0-9a-fA-F_]+)$"),
        "-+0123456789",
    ),
    (
        "tag:yaml.org,2002:float",
        re.compile(
            r"""^(?:[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""",
            re.X,
        ),
        "-+0123456789.",
    ),
    ("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]),
    (_MERGE_TAG, re.compile(r"^(?:<<)$"), "<"),
]


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars and a duplicate-key check; only plain data types."""

    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012 — filled below, replacing YAML 1.1's
    source = "<string>"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"{self.source}:{line}: key {key!r} appears twice in one mapping (first at line {seen[key]}); "
                    "YAML would silently keep only the last value: remove one of them"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = str(self.construct_scalar(node)).replace("_", "")
        sign = -1 if text.startswith("-") else 1
        digits = text.lstrip("+-")
        if digits.startswith("0o"):
            return sign * int(digits[2:], 8)
        if digits.startswith("0x"):
            return sign * int(digits[2:], 16)
        return sign * int(digits, 10)  # YAML 1.2: a leading zero is decimal, not octal


for _tag, _pattern, _first in _RESOLVERS:
    _Loader.add_implicit_resolver(_tag, _pattern, list(_first))
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_str)  # a date stays text


class _Dumper(yaml.SafeDumper):
    """SafeDumper that also quotes strings YAML 1.2 would read as numbers (``'1e-3'``), so both our
    loader and any YAML 1.1 reader (PyYAML) read back exactly what was written."""


for _tag, _pattern, _first in _RESOLVERS[1:3]:  # YAML 1.2 ints and floats; 1.1's bools are quoted already
    _Dumper.add_implicit_resolver(_tag, _pattern, list(_first))


def load_yaml(path: str | os.PathLike[str], *, max_nodes: int = MAX_NODES) -> Any:
    """Read the YAML file ``path`` safely (see the module docstring); errors name the file and line.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> _ = Path(folder, "run.yaml").write_text("lr: 1e-3\\neval_strategy: no\\n")
    >>> load_yaml(Path(folder, "run.yaml"))
    {'lr': 0.001, 'eval_strategy': 'no'}
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; expected a YAML file")
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError(
                f"{path}: {size} bytes is too large for a YAML config (limit {MAX_BYTES}); is it the right file?"
            )
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}") from None
    return load_yaml_text(data, source=str(path), max_nodes=max_nodes)


def load_yaml_text(text: str | bytes, source: str = "<string>", *, max_nodes: int = MAX_NODES) -> Any:
    """Parse YAML ``text`` (a ``str``, or ``bytes`` that must be UTF-8) safely; ``source`` names it in errors.

    >>> load_yaml_text("lr: 1e-3\\nsizes: [1, 0o10, 1_000]\\nwhen: 2024-01-02\\n")
    {'lr': 0.001, 'sizes': [1, 8, 1000], 'when': '2024-01-02'}
    >>> load_yaml_text("a: 1\\nb: 2\\na: 3\\n", source="run.yaml")
    Traceback (most recent call last):
    ...
    trainforge.errors.ConfigError: run.yaml:3: key 'a' appears twice in one mapping (first at line 1); ...
    """
    if isinstance(text, bytes):
        text = _decode(text, source)
    elif "\x00" in text:
        raise ConfigError(f"{source} holds NUL characters: a binary file, not YAML text")
    _check_flow_depth(text, source)
    loader = _Loader(text)
    loader.source = source
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node, source, max_nodes)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = " ".join(str(part) for part in (error.context, error.problem) if part)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be a config") from None
    finally:
        loader.dispose()


def dump_yaml(data: Any) -> str:
    """YAML text of plain ``data`` (dicts, lists, str, numbers, bools, None), keys in their order; what
    ``load_yaml_text`` and ``yaml.safe_load`` both read back unchanged.

    >>> text = dump_yaml({"lr": 0.001, "name": "1e-3", "eval_strategy": "no"})
    >>> print(text, end="")
    lr: 0.001
    name: '1e-3'
    eval_strategy: 'no'
    >>> load_yaml_text(text) == yaml.safe_load(text) == {"lr": 0.001, "name": "1e-3", "eval_strategy": "no"}
    True
    """
    try:
        return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    except yaml.representer.RepresenterError as error:
        raise ConfigError(
            f"cannot write {error.args[-1]!r} as YAML: only plain data (dict, list, str, numbers, bool, None)"
        ) from None


def _decode(data: bytes, source: str) -> str:
    if b"\x00" in data:
        raise ConfigError(f"{source} holds NUL bytes: a binary file, not YAML text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError(
            f"{source}:{line}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
            "save the file as UTF-8"
        ) from None


def _check_flow_depth(text: str, source: str) -> None:
    if text.count("[") + text.count("{") <= MAX_FLOW_DEPTH:  # the common case: nothing to scan
        return
    depth = 0
    for match in _FLOW_TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_FLOW_DEPTH:
                line = text.count("\n", 0, match.start()) + 1
                raise ConfigError(
                    f"{source}:{line}: nested more than {MAX_FLOW_DEPTH} levels deep in [...] or {{...}}; "
                    "too deep to be a config"
                )
        elif token in "]}":
            depth = max(0, depth - 1)


def _check_size(root: yaml.Node, source: str, max_nodes: int) -> None:
    """Count the nodes of the document with every alias expanded, each shared node counted once per use
    but computed once (so a "billion laughs" file is refused in microseconds, before anything is built)."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children = _children(node)
        if children_done:
            in_progress.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[key] > max_nodes:
                raise ConfigError(
                    f"{source}:{node.start_mark.line + 1}: the document expands to more than {max_nodes} values "
                    "through its aliases (*name); a config this large is refused (an alias bomb?)"
                )
            continue
        if key in in_progress:
            raise ConfigError(f"{source}:{node.start_mark.line + 1}: an alias refers to itself (a recursive structure)")
        in_progress.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in in_progress:
                raise ConfigError(
                    f"{source}:{child.start_mark.line + 1}: an alias refers to a value that contains it "
                    "(a recursive structure)"
                )
            if id(child) not in sizes:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []
