"""The package's layers import in one direction only (docs/architecture.md).

Every ``import`` / ``from ... import`` statement of every module under ``jgi/`` (those
inside functions too) is read with :mod:`ast`; a module may import its own layer and the
layers below it, never one above. A failure names the module, the line and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

JGI = Path(__file__).resolve().parents[1] / "jgi"

# Bottom to top. The key is the first component under ``jgi`` (a subpackage or a module).
LAYERS: dict[str, int] = {
    "data": 0, "checkpointing": 0, "checks": 0,
    "models": 1,
    "defenses": 2,
    "fl": 3,
    "attacks": 4,
    "metrics": 5,
    "results": 6, "records": 6, "tables": 6, "figures": 6,
    "diagnostics": 6, "report": 6,
    "pipeline": 7,
    "integrations": 8,
}

# Documented upward imports: (importing module, imported module) -> why it is allowed.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def module_name(path: Path, root: Path = JGI) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path = JGI) -> list[tuple[int, str]]:
    """``(line, module)`` for every jgi module ``path`` imports, relative imports resolved.

    ``from jgi import x`` yields ``jgi.x``; ``from jgi.a import b`` yields ``jgi.a`` (its
    layer is the one of ``jgi.a`` whatever ``b`` is).
    """
    name = module_name(path, root)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[:len(package) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base == "jgi":
                found += [(node.lineno, f"jgi.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, base))
    return sorted((line, m) for line, m in found if m == "jgi" or m.startswith("jgi."))


def layer_key(module: str) -> str | None:
    """``"models"`` for ``jgi.models.cnn``; None for the package root ``jgi``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def top(module: str) -> str:
    return ".".join(module.split(".")[:2])


def violations(root: Path = JGI) -> tuple[list[str], set[tuple[str, str]]]:
    """The upward imports (messages) and the documented exceptions that were used."""
    bad, used = [], set()
    for path in sorted(root.rglob("*.py")):
        importer = module_name(path, root)
        key = layer_key(importer)
        if key is None:  # jgi/__init__.py, the package root, may gather anything
            continue
        if key not in LAYERS:
            bad.append(f"{importer} ({path.relative_to(root.parent)}) is in no layer; add "
                       f"{key!r} to LAYERS in tests/test_layering.py and to "
                       "docs/architecture.md.")
            continue
        for line, imported in imports(path, root):
            target = layer_key(imported)
            if target is None or target not in LAYERS or LAYERS[target] <= LAYERS[key]:
                continue
            pair = (top(importer), top(imported))
            if pair in EXCEPTIONS:
                used.add(pair)
                continue
            bad.append(f"{importer} (line {line}) imports {imported}: layer {key!r} "
                       f"({LAYERS[key]}) may not import layer {target!r} ({LAYERS[target]}).")
    return bad, used


def test_no_module_imports_a_higher_layer():
    bad, _ = violations()
    assert not bad, "Upward imports (see docs/architecture.md):\n" + "\n".join(bad)


def test_every_documented_exception_is_still_needed():
    _, used = violations()
    stale = set(EXCEPTIONS) - used
    assert not stale, f"No longer needed, remove from EXCEPTIONS: {sorted(stale)}"


def test_models_import_nothing_from_defenses():
    """Dropout and the bottlenecks live in jgi.models (the defenses re-export them)."""
    offending = [f"{module_name(p)} (line {line}) imports {m}"
                 for p in sorted((JGI / "models").rglob("*.py"))
                 for line, m in imports(p) if layer_key(m) == "defenses"]
    assert not offending, offending


def test_the_checker_sees_upward_imports(tmp_path):
    root = tmp_path / "jgi"
    (root / "models").mkdir(parents=True)
    (root / "__init__.py").write_text("from jgi import pipeline\n")
    (root / "models" / "__init__.py").write_text("")
    (root / "models" / "cnn.py").write_text(
        "import jax\n"
        "from jgi.data import datasets\n"
        "def f():\n"
        "    from ..attacks import mimic\n"
        "from jgi import fl, metrics\n")
    bad, _ = violations(root)
    assert bad == [
        "jgi.models.cnn (line 4) imports jgi.attacks: layer 'models' (1) may not import "
        "layer 'attacks' (4).",
        "jgi.models.cnn (line 5) imports jgi.fl: layer 'models' (1) may not import layer "
        "'fl' (3).",
        "jgi.models.cnn (line 5) imports jgi.metrics: layer 'models' (1) may not import "
        "layer 'metrics' (5).",
    ]


@pytest.mark.parametrize("key", sorted({p.name if p.is_dir() else p.stem for p in JGI.iterdir()
                                        if not p.name.startswith("_") and (
                                            p.suffix == ".py" or (p / "__init__.py").exists())}))
def test_every_top_level_module_has_a_layer(key):
    assert key in LAYERS, (f"jgi.{key} is in no layer; add it to LAYERS in "
                           "tests/test_layering.py and to docs/architecture.md.")
