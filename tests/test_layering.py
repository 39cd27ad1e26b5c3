"""pdlkit's layers point one way: every import in the package (module level or inside a function)
goes to the same package or to a lower layer.  docs/ARCHITECTURE.md's layer table lists the same
order; this test reads it back so that the two cannot drift apart."""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

REPO = Path(__file__).resolve().parents[1]

# Bottom to top.  A module may import its own package and any lower layer; packages that share a
# layer may not import each other, except in the first layer (leaf utilities with no pdlkit imports
# but each other's).
LAYERS: List[Tuple[str, ...]] = [
    ("config", "errors", "fileio", "io", "threads", "_C"),
    ("ops",),
    ("data",),
    ("modeling",),
    ("checkpoint",),
    ("inference",),
    ("evaluation", "visualize"),
    ("engine",),
    ("export",),
    ("cli",),
]
RANK: Dict[str, int] = {name: rank for rank, names in enumerate(LAYERS) for name in names}

# Upward imports that exist in code owned elsewhere and are scheduled to move; each entry is
# (importing module, imported package).  The test fails when one of them disappears, so the list
# only ever shrinks.
KNOWN_UPWARD: Set[Tuple[str, str]] = set()


def _modules() -> Iterator[Tuple[str, Path]]:
    for path in sorted((REPO / "pdlkit").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path
    for path in sorted((REPO / "cli").rglob("*.py")):  # installed as pdlkit.cli
        parts = ("pdlkit", "cli", *path.relative_to(REPO / "cli").with_suffix("").parts)
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _imports(module: str, path: Path) -> Iterator[Tuple[int, str]]:
    """(line, absolute name) of every pdlkit module ``path`` imports, at any depth of the code."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # `from pdlkit import engine` imports the package pdlkit.engine
                yield node.lineno, f"{target}.{alias.name}"


def _layer_of(name: str) -> Optional[str]:
    """The package a ``pdlkit.<package>...`` name belongs to (None outside pdlkit, or the package root)."""
    parts = name.split(".")
    if parts[0] != "pdlkit" or len(parts) < 2:
        return None
    return parts[1]


def _violations() -> List[str]:
    found = []
    for module, path in _modules():
        source = _layer_of(module)
        if source is None:
            continue  # pdlkit/__init__.py: __version__ and a lazy alias, outside the layers
        for line, target in _imports(module, path):
            layer = _layer_of(target)
            if layer is None or layer == source or layer not in RANK:
                continue  # not pdlkit, the same package, or a name inside a module (pdlkit.__version__)
            same_layer_ok = RANK[layer] == RANK[source] == 0
            if (RANK[layer] > RANK[source] or (RANK[layer] == RANK[source] and not same_layer_ok)) \
                    and (module, layer) not in KNOWN_UPWARD:
                found.append(f"{path.relative_to(REPO)}:{line}: {module} ({source}) imports {target} ({layer})")
    return found


def test_every_package_has_a_layer():
    packages = {p.stem if p.is_file() else p.name for p in (REPO / "pdlkit").iterdir()
                if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert packages - set(RANK) == set(), "add the new package to LAYERS and docs/ARCHITECTURE.md"


def test_imports_point_down_the_layers():
    assert _violations() == []


def test_known_upward_imports_still_exist():
    # When one is fixed, remove it from KNOWN_UPWARD so that it cannot come back.
    seen = {(module, _layer_of(target)) for module, path in _modules() for _, target in _imports(module, path)}
    assert KNOWN_UPWARD <= seen


def test_the_architecture_page_lists_the_same_layers():
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\|\s*\d+\s*\|", line)]
    documented = []
    for row in rows:
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        documented.append(tuple(sorted(set(re.findall(r"`(?:pdlkit\.)?([A-Za-z_]+)/?`", cells[1])))))
    assert documented == [tuple(sorted(names)) for names in LAYERS]


def test_the_walker_sees_function_level_and_relative_imports(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text("from ..inference import Predictor\n"
                    "def f():\n    from pdlkit.engine import train\n    import pdlkit.export\n")
    names = [name for _, name in _imports("pdlkit.modeling.mod", path)]
    assert "pdlkit.inference" in names and "pdlkit.engine" in names and "pdlkit.export" in names
