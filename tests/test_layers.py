"""The layers hold: each rule of docs/architecture.md "Layers", checked by walking
every module's imports (those under TYPE_CHECKING and inside functions too: a
design dependency is one wherever it is written)."""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sidecar", "actors", "soak")


@dataclass(frozen=True)
class Rule:
    name: str
    modules: tuple[str, ...]  # the rule holds for these packages and modules
    forbidden: tuple[str, ...]  # which they may not import


# The core may import only these (and itself): the standard library's pure parts
# and numpy. An allow-list, so a new kind of import has to be argued for here.
CORE_MAY_IMPORT = ("__future__", "collections", "dataclasses", "enum", "functools", "heapq", "itertools", "math",
                   "numbers", "operator", "typing", "numpy", "sidecar.core")

RULES = (
    Rule("actors know no transport", ("actors",), (
        "grpc", "google", "aiohttp", "sidecar.api", "sidecar.rpc", "sidecar.wire", "sidecar.server", "sidecar.kserve",
        "sidecar.client",
    )),
    Rule("backends know no actors and no transport", ("sidecar.backends",), (
        "actors", "pykka", "grpc", "google", "aiohttp", "sidecar.server", "sidecar.rpc", "sidecar.api", "sidecar.kserve",
    )),
    Rule("the client imports no server code", ("sidecar.client", "sidecar.packing", "sidecar.wire", "sidecar.endpoint",
                                               "sidecar.retry", "sidecar.reconnect", "sidecar.window", "sidecar.backoff"), (
        "actors", "pykka", "aiohttp", "sidecar.server", "sidecar.rpc", "sidecar.kserve", "sidecar.metrics",
        "sidecar.config", "sidecar.backends",
    )),
)

# Imports that break a rule today, each with the work that removes it. The test
# fails on a new one, and on one listed here that is gone (so the list shrinks).
KNOWN_DEBTS: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> set[str]:
    """Every module `path` names: plain and from-imports (`from a import b` names
    a.b too: b may be a module), relative ones resolved, and import_module or
    __import__ calls with a literal name."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{a.name}" for a in node.names if a.name != "*")
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.add(node.args[0].value)
    return found


def _all_imports() -> dict[str, set[str]]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "api" in path.relative_to(ROOT).parts:  # generated stubs
                continue
            module = _module_name(path)
            out[module] = _imports(path, module)
    return out


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _breaches() -> dict[tuple[str, str], str]:
    breaches = {}
    for module, imported in _all_imports().items():
        if _under(module, ("sidecar.core",)):
            for name in imported:
                if not _under(name, CORE_MAY_IMPORT):
                    breaches[(module, name)] = "the core imports nothing impure (CORE_MAY_IMPORT)"
        for rule in RULES:
            if _under(module, rule.modules):
                for name in imported:
                    if _under(name, rule.forbidden):
                        breaches[(module, name)] = rule.name
    return breaches


def test_every_import_keeps_its_layers_rule_but_the_listed_debts():
    breaches = _breaches()
    new = {k: v for k, v in breaches.items() if k not in KNOWN_DEBTS}
    assert not new, "imports that break a layer rule (docs/architecture.md, Layers): " + "; ".join(
        f"{m} imports {n} ({rule})" for (m, n), rule in sorted(new.items())
    )


def test_a_debt_paid_is_struck_off_the_list():
    paid = set(KNOWN_DEBTS) - set(_breaches())
    assert not paid, f"no longer imported, remove from KNOWN_DEBTS: {sorted(paid)}"


def test_the_walk_sees_imports_of_every_kind():
    # A guard on the guard: a rule that checked no import would pass for ever.
    imports = _all_imports()
    assert "sidecar.core.tensors" in imports["sidecar.core.kserve_tensors"]  # from-import
    assert "grpc" in imports["sidecar.client"]  # plain import
    assert "sidecar.backends.base" in imports["actors.messages"]  # under TYPE_CHECKING
    assert "sidecar.core.tensors.DTYPES" in imports["sidecar.client"]  # a from-import's names too
    assert len(imports) > 100


@pytest.mark.parametrize("module", ["sidecar.client", "sidecar.flink.errors", "sidecar.flink.codec"])
def test_importing_the_client_loads_no_server_code_no_actors_and_no_pykka(module):
    code = (
        f"import sys, {module}; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('actors', 'pykka', 'aiohttp') "
        "or m.startswith(('sidecar.server', 'sidecar.rpc', 'sidecar.kserve', 'sidecar.metrics', 'sidecar.config', "
        "'sidecar.backends'))); "
        "print(','.join(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "", f"import {module} loaded {done.stdout.strip()}"


def test_the_walk_resolves_modules_named_every_way(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text(
        "from sidecar import server\n"
        "from .. import rpc\n"
        "import importlib\n"
        "def late():\n"
        "    importlib.import_module('pykka')\n"
        "    __import__('aiohttp')\n"
    )
    found = _imports(source, "sidecar.core.probe")
    assert {"sidecar.server", "sidecar.rpc", "pykka", "aiohttp"} <= found, found
