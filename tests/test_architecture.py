"""The layout's rules (docs/architecture.md): the public API keeps its names and signatures, no
module imports itself through a circle, every module imports on its own, files stay small."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

import hardmine

PACKAGE = Path(hardmine.__file__).parent
#: modules whose public functions are part of the API (besides ``hardmine`` itself)
PUBLIC_MODULES = ("hardmine.eval", "hardmine.pairs", "hardmine.active", "hardmine.cluster", "hardmine.torch",
                  "hardmine.integrations.pml", "hardmine.integrations.sentence_transformers", "hardmine.distributed",
                  "hardmine.recipes", "hardmine.report")


def public_api() -> dict:
    out: dict = {"__all__": sorted(hardmine.__all__)}
    for name in hardmine.__all__:
        obj = getattr(hardmine, name)
        if isinstance(obj, type):
            out[name] = list(getattr(obj, "_fields", None) or [field.name for field in dataclasses.fields(obj)])
        elif callable(obj):
            out[name] = str(inspect.signature(obj))
        else:
            out[name] = repr(obj)
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name, obj in sorted(vars(module).items()):
            if not name.startswith("_") and inspect.isfunction(obj) and obj.__module__ == module_name:
                out[f"{module_name}.{name}"] = str(inspect.signature(obj))
    return out


def test_public_names_and_signatures_are_unchanged():
    pytest.importorskip("torch")
    expected = json.loads((Path(__file__).parent / "public_api.json").read_text())
    assert public_api() == expected


def modules() -> dict[str, Path]:
    """Every hardmine module: Python files, and the compiled extensions (leaves of the graph)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    for path in sorted(PACKAGE.glob("_*.so")) + sorted(PACKAGE.glob("_*.pyd")):
        found[f"hardmine.{path.name.split('.')[0]}"] = path
    for extension in ("_core", "_cuda"):  # absent in a build without them, imported all the same
        found.setdefault(f"hardmine.{extension}", PACKAGE / f"{extension}.pyi")
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """hardmine modules that ``name`` imports anywhere in its file (lazy imports included)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    if path.suffix not in (".py",):
        return out
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in known:
                    out.add(target)  # a submodule
                elif base in known:
                    out.add(base)
    out.discard(name)
    return out


def test_no_import_circle():
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    # A package's __init__ only re-exports: follow edges into it as into its modules.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = stack[stack.index(target):] + [target]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


# The never-import rules of docs/architecture.md ("Rules"), as (importers, forbidden targets): a
# name covers the module and everything under it.
LOW_LAYERS = ("hardmine._problem", "hardmine._interop", "hardmine._rows", "hardmine._draws", "hardmine._merge")
LAYER_RULES = [
    (LOW_LAYERS, ("hardmine",), LOW_LAYERS),  # low layers import only each other
    (("hardmine.engine", "hardmine._scan", "hardmine._positives", "hardmine.mining", "hardmine.backends"),
     ("hardmine.api", "hardmine.io", "hardmine.cli", "hardmine.integrations"), ()),
    (("hardmine.cluster",), ("hardmine.api", "hardmine.mining"), ()),
]
EXTENSIONS = ("hardmine._core", "hardmine._cuda")


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_layer_rules_hold():
    known = modules()
    broken = []
    for name, path in known.items():
        targets = imports(name, path, known)
        for importers, forbidden, allowed in LAYER_RULES:
            if _under(name, importers):
                broken += [f"{name} imports {t}" for t in targets
                           if _under(t, forbidden) and not _under(t, allowed) and t != "hardmine"]
        if not _under(name, ("hardmine.backends",)):
            broken += [f"{name} imports the extension {t}" for t in targets if _under(t, EXTENSIONS)]
    assert not broken, "layer rules of docs/architecture.md broken:\n" + "\n".join(broken)


def test_layer_rules_see_a_violation(tmp_path):
    """The rule check on a module that breaks one: it must be found (the test above can fail)."""
    bad = tmp_path / "engine.py"
    bad.write_text("from . import cli\nfrom ._core import topk\n")
    known = {**modules(), "hardmine.engine": bad}
    targets = imports("hardmine.engine", bad, known)
    assert "hardmine.cli" in targets and "hardmine._core" in targets


def test_every_module_imports_on_its_own(tmp_path):
    pytest.importorskip("torch")
    from hardmine import backends

    names = [name for name, path in modules().items() if path.suffix == ".py" and not name.endswith("__main__")]
    for backend, reason in backends.status().items():  # a backend that cannot load here (no compiled core,
        if reason is not None:  # no GPU) refuses to import, with the reason the registry shows
            names.remove(f"hardmine.backends.{backend}")
    script = "import importlib, sys\nimportlib.import_module(sys.argv[1])\n"
    failures = {}
    for name in names:
        # run outside the checkout, so that the installed package (with its extensions) is imported
        done = subprocess.run([sys.executable, "-c", script, name], capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)
        if done.returncode:
            failures[name] = done.stderr.strip().splitlines()[-1:]
    assert not failures, failures


def test_product_files_stay_small():
    long = {str(path.relative_to(PACKAGE)): count for path in PACKAGE.rglob("*.py")
            if (count := len(path.read_text().splitlines())) > 420}
    assert not long, f"split these files (over 420 lines): {long}"


def test_backends_declare_what_they_read_and_auto_picks_by_location():
    from hardmine import backends

    for name, reason in backends.status().items():
        if reason is None:
            backend = backends.get(name)
            assert "host" in backend.devices and "fp32" in backend.precisions
    with pytest.raises(ValueError, match="backend 'reference' reads \\['host'\\] inputs in \\['fp32'\\]; these are "
                                         "cuda inputs in fp32 \\(copy them to the host"):
        backends.get("reference", device="cuda")
    with pytest.raises(RuntimeError, match="no hardmine backend for tpu inputs"):
        backends.get("auto", device="tpu")


def test_no_module_imports_another_modules_private_name():
    known = modules()
    crossings = []
    for name, path in known.items():
        if path.suffix != ".py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("hardmine")):
                for alias in node.names:
                    imported = alias.name
                    is_module = any(other.endswith("." + imported) for other in known)
                    if imported.startswith("_") and not imported.startswith("__") and not is_module:
                        crossings.append(f"{name}: from {'.' * node.level}{node.module or ''} import {imported}")
    assert not crossings, crossings
