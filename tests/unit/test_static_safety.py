"""B15: a static gate on unsafe deserialization and code execution in trainforge/.

Fails, naming file:line, on ``torch.load`` without a literal ``weights_only=True``; any other
``weights_only`` value; pickle/marshal/joblib/pandas pickle loaders; dill and cloudpickle;
``yaml.load`` without a SafeLoader and yaml's unsafe loaders; ``allow_pickle=True``; the ``eval`` and
``exec`` builtins; and ``torch.load`` passed around uncalled (aliasing would hide it from this gate).
The one exception is the reviewed function ``_load_trusted`` in checkpoint.py, reached only through
``trust=True``, which may pass ``weights_only=False``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

PACKAGE = Path(__file__).resolve().parents[2] / "trainforge"
ALLOWLIST = {("checkpoint.py", "_load_trusted")}  # (path relative to trainforge/, function name)
TORCH_LOADS = {"torch.load", "torch.serialization.load"}
UNSAFE_CALLS = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads", "_pickle.Unpickler",
    "marshal.load", "marshal.loads", "shelve.open", "joblib.load", "pandas.read_pickle",
    "yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all",
    "builtins.eval", "builtins.exec",
}  # fmt: skip
UNSAFE_MODULES = {"dill", "cloudpickle"}
YAML_LOADS = {"yaml.load", "yaml.load_all"}


class Gate(ast.NodeVisitor):
    """Collects findings for one module; names are resolved through the module's imports."""

    def __init__(self, relpath: str) -> None:
        self.relpath = relpath
        self.aliases: dict[str, str] = {}
        self.functions: list[str] = []
        self.called: set[int] = set()
        self.findings: list[str] = []

    def report(self, node: ast.AST, message: str) -> None:
        self.findings.append(f"trainforge/{self.relpath}:{node.lineno}: {message}")

    def allowlisted(self) -> bool:
        return bool(self.functions) and (self.relpath, self.functions[-1]) in ALLOWLIST

    def qualname(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.qualname(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    # -- imports ---------------------------------------------------------------------------------
    def check_module(self, node: ast.AST, module: str) -> None:
        if module.split(".")[0] in UNSAFE_MODULES:
            self.report(node, f"imports {module}, which unpickles arbitrary code")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.check_module(node, alias.name)
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                root = alias.name.split(".")[0]
                self.aliases[root] = root

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        self.check_module(node, module)
        for alias in node.names:
            self.aliases[alias.asname or alias.name] = f"{module}.{alias.name}" if node.level == 0 else alias.name

    # -- scopes ----------------------------------------------------------------------------------
    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    # -- calls -----------------------------------------------------------------------------------
    def visit_Call(self, node: ast.Call) -> None:
        self.called.add(id(node.func))
        name = self.qualname(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        if name in TORCH_LOADS and not self.allowlisted() and not is_true(keywords.get("weights_only")):
            self.report(node, f"{name}(...) without a literal weights_only=True")
        if "weights_only" in keywords and not is_true(keywords["weights_only"]) and not self.allowlisted():
            self.report(node, "weights_only is not the literal True (only _load_trusted may pass False)")
        if name in UNSAFE_CALLS or (isinstance(node.func, ast.Name) and name in ("eval", "exec")):
            self.report(node, f"{name}(...) can run arbitrary code")
        if name in YAML_LOADS and not self.yaml_is_safe(node, keywords):
            self.report(node, f"{name}(...) without Loader=yaml.SafeLoader")
        if is_true(keywords.get("allow_pickle")):
            self.report(node, "allow_pickle=True unpickles arbitrary code")
        if None in keywords and name in TORCH_LOADS:
            self.report(node, f"{name}(**kwargs) hides weights_only from this gate")
        self.generic_visit(node)

    def yaml_is_safe(self, node: ast.Call, keywords: dict) -> bool:
        loader = keywords.get("Loader", node.args[1] if len(node.args) > 1 else None)
        return loader is not None and (self.qualname(loader) or "").endswith("SafeLoader")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if id(node) not in self.called and self.qualname(node) in TORCH_LOADS:
            self.report(node, f"{self.qualname(node)} referenced without being called; call it directly")
        self.generic_visit(node)


def is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def check_source(source: str, relpath: str) -> list[str]:
    gate = Gate(relpath)
    gate.visit(ast.parse(source, filename=relpath))
    return gate.findings


def package_findings() -> list[str]:
    findings = []
    for file in sorted(PACKAGE.rglob("*.py")):
        findings += check_source(file.read_text(encoding="utf-8"), file.relative_to(PACKAGE).as_posix())
    return findings


def test_package_has_no_unsafe_deserialization():
    findings = package_findings()
    assert not findings, "unsafe deserialization or code execution:\n" + "\n".join(findings)


def test_the_allowlisted_function_exists():
    """A stale allowlist entry would silently permit a future function of that name."""
    for relpath, function in ALLOWLIST:
        tree = ast.parse((PACKAGE / relpath).read_text(encoding="utf-8"))
        names = [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        assert names.count(function) == 1, f"{relpath} must define {function} exactly once"


def test_torch_is_recent_enough():
    """torch < 2.10 has known weights_only bypasses (CVE-2026-24747)."""
    major, minor = (int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    assert (major, minor) >= (2, 10), f"torch {torch.__version__} is too old; install torch>=2.10"


# -- the gate can fail -----------------------------------------------------------------------------
BAD = {
    "torch.load(path)": "without a literal weights_only=True",
    "torch.load(path, weights_only=False)": "without a literal weights_only=True",
    "torch.load(path, weights_only=flag)": "weights_only is not the literal True",
    "torch.serialization.load(path, **options)": "hides weights_only",
    "from torch import load as tl\ntl(path)": "without a literal weights_only=True",
    "import torch as T\nT.load(path)": "without a literal weights_only=True",
    "loader = torch.load": "referenced without being called",
    "torch.hub.load_state_dict_from_url(url, weights_only=False)": "weights_only is not the literal True",
    "import pickle\npickle.loads(data)": "pickle.loads",
    "from pickle import load\nload(f)": "pickle.load",
    "import _pickle as p\np.Unpickler(f).load()": "_pickle.Unpickler",
    "import dill": "imports dill",
    "from cloudpickle import loads": "imports cloudpickle",
    "import yaml\nyaml.load(text)": "without Loader=yaml.SafeLoader",
    "import yaml\nyaml.load(text, Loader=yaml.Loader)": "without Loader=yaml.SafeLoader",
    "import yaml\nyaml.unsafe_load(text)": "yaml.unsafe_load",
    "eval('1 + 1')": "eval(...) can run arbitrary code",
    "exec(code)": "exec(...) can run arbitrary code",
    "import numpy as np\nnp.load(f, allow_pickle=True)": "allow_pickle=True",
}
GOOD = [
    "torch.load(f, map_location='cpu', weights_only=True)",
    "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)",
    "import yaml\nyaml.safe_load(text)",
    "model.eval()",
    "import numpy as np\nnp.load(f)",
    "import json\njson.loads(text)",
]


@pytest.mark.parametrize("source", sorted(BAD))
def test_gate_catches_bad_source(source):
    findings = check_source("import torch\n" + source, "other.py")
    assert any(BAD[source] in finding for finding in findings), findings
    assert all(finding.startswith("trainforge/other.py:") for finding in findings)


@pytest.mark.parametrize("source", GOOD)
def test_gate_accepts_safe_source(source):
    assert check_source("import torch\n" + source, "other.py") == []


def test_allowlist_covers_only_the_reviewed_function_in_its_file():
    trusted = "import torch\ndef _load_trusted(f):\n    return torch.load(f, weights_only=False)\n"
    assert check_source(trusted, "checkpoint.py") == []
    assert check_source(trusted, "other.py")  # same code elsewhere is caught
    helper = trusted.replace("_load_trusted", "_load_helper")
    assert check_source(helper, "checkpoint.py")
    nested = "import torch\ndef _load_trusted(f):\n    def inner():\n        return torch.load(f)\n    return inner\n"
    assert check_source(nested, "checkpoint.py")  # only the function's own body is allowlisted
