"""The layers of msdfast import only downward, and no modules import each other in a cycle.

    ops -> schedule -> denoisers -> samplers -> estimators -> fields -> pipelines / toy / digits / sweep /
    profile / adapters / cli / bench

A module may import its own layer and the layers below it, never a layer above. Every import counts,
including the ones inside functions (a lazy import is still a dependency). Small shared modules sit at the
layer of their lowest user (`errors` below ops; `cache_dir` and `prompts` with the denoisers); a top-level
single-file module not listed (atomic, checkpoint, runlock, ...) sits as low as its own imports allow, so a
user below that is reported. A new top-level package must be placed in LAYERS (the first test says so).
The graph is read with `ast` from the source files, so the test needs no optional package.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "msdfast"

# The layers, lowest first. A module's layer is the one of its longest listed prefix.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "_backend"),
    ("ops", "_info"),
    ("schedule", ""),           # "" = the package's own __init__ (imports ops and schedule only)
    ("denoisers", "cache_dir", "prompts"),
    ("samplers",),
    ("estimators",),
    ("fields",),
    ("pipelines", "toy", "digits", "sweep", "profile", "adapters", "cli", "cli_info", "bench", "testing",
     "__main__"),
)
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer(mod: str, g: dict[str, set[str]] | None = None) -> int:
    """The layer of a module: its top-level name's in LAYERS; a top-level single-file module not listed there
    (a new small shared utility) sits as low as its own msdfast imports allow, so its users are checked."""
    parts = mod.split(".")[1:]           # drop "msdfast"
    key = parts[0] if parts else ""
    if key in LAYER_OF:
        return LAYER_OF[key]
    g = graph() if g is None else g
    if len(parts) == 1 and mod in g and not (ROOT / key).is_dir():
        return max((layer(d, g) for d in g[mod]), default=0)
    raise KeyError(f"{mod}: not assigned to a layer; add its top-level package to LAYERS in {__file__}")


def imports_of(mod: str, path: Path, known: set[str]) -> set[str]:
    """The msdfast modules `mod` imports (relative imports resolved; `from pkg import sub` -> pkg.sub)."""
    is_pkg = path.name == "__init__.py"
    package = mod if is_pkg else mod.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]
        else:
            continue
        for name in names:
            if name == "msdfast" or name.startswith("msdfast."):
                # the deepest known module on the path (an attribute import names its module)
                while name not in known and "." in name:
                    name = name.rpartition(".")[0]
                # The root package runs before any submodule, so `import msdfast` (for __version__) orders nothing.
                if name not in (mod, "msdfast"):
                    out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports_of(m, p, known) for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer() -> None:
    g = graph()
    for m in g:
        layer(m, g)


def test_no_upward_import() -> None:
    g = graph()
    bad = [f"{m} (layer {layer(m, g)}) imports {d} (layer {layer(d, g)})"
           for m, deps in g.items() for d in sorted(deps) if layer(d, g) > layer(m, g)]
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycle() -> None:
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_cycle_between_top_level_packages() -> None:
    """Peers of one layer (e.g. pipelines and toy) may use each other, but never both ways."""
    g: dict[str, set[str]] = {}
    for m, deps in graph().items():
        top = ".".join(m.split(".")[:2])
        g.setdefault(top, set()).update(".".join(d.split(".")[:2]) for d in deps if not d.startswith(top + ".")
                                        and d != top)
    found = cycles(g)
    assert not found, "package cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


# ------------------------------------------------------------------ the checker itself can fail
def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


@pytest.mark.parametrize("files, expect_upward, expect_cycle", [
    ({"msdfast/__init__.py": "", "msdfast/ops/__init__.py": "from ..samplers import x\n",
      "msdfast/samplers/__init__.py": "", "msdfast/samplers/x.py": ""}, True, False),
    ({"msdfast/__init__.py": "", "msdfast/denoisers/__init__.py": "", "msdfast/denoisers/a.py": "from . import b\n",
      "msdfast/denoisers/b.py": "def f():\n    from .a import g\n"}, False, True),
    ({"msdfast/__init__.py": "", "msdfast/estimators/__init__.py": "",
      "msdfast/estimators/m.py": "import msdfast.samplers.p\nfrom msdfast.ops import thing\n",
      "msdfast/samplers/__init__.py": "", "msdfast/samplers/p.py": "", "msdfast/ops/__init__.py": ""}, False, False),
    ({"msdfast/__init__.py": "", "msdfast/util.py": "from .samplers import p\n", "msdfast/samplers/__init__.py": "",
      "msdfast/samplers/p.py": "", "msdfast/ops/__init__.py": "from .. import util\n"}, True, False),
])
def test_checker_detects_upward_imports_and_cycles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   files: dict[str, str], expect_upward: bool,
                                                   expect_cycle: bool) -> None:
    _write(tmp_path, files)
    monkeypatch.setitem(globals(), "ROOT", tmp_path / "msdfast")
    g = graph()
    upward = [(m, d) for m, deps in g.items() for d in deps if layer(d, g) > layer(m, g)]
    assert bool(upward) == expect_upward, upward
    assert bool(cycles(g)) == expect_cycle, g
