"""The layers of docs/architecture.md, checked on the real imports.

Every module of robustzoo/ and plugins/ is parsed with ``ast`` (nothing is imported), every
import statement is read — at the top of a module and inside functions alike — and

* each module must sit on a layer, and import only from its own layer or below (plugins:
  the pieces and the bottom layer, and other plugins);
* the import graph must have no cycle;
* the slow libraries must be imported inside the functions that need them.

Two readings of ``from PACKAGE import NAME``, each for its own question:

* what **runs**: the package's ``__init__`` (which imports its submodules), so the cycle
  check sees what Python executes;
* what is **used**: the module that defines NAME, when the package's ``__init__`` only
  hands it on (``from .hookspecs import hookimpl``), so ``from robustzoo import hookimpl``
  uses the bottom layer, not the face. The layer check reads this one.

Importing ``a.b.c`` also initialises the packages ``a`` and ``a.b``; those implicit imports
are not edges (else every module would depend on the face ``robustzoo``, which imports all).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Layers from the bottom up; a module may import from its own layer and those below.
ORDER = ("base", "pieces", "engines", "zoo", "faces")
#: Plugins stand beside the core: they see the pieces and the base (and each other),
#: never the engines, the zoo or the faces, and the core never imports a plugin.
PLUGINS = "plugins"
MAY_IMPORT: dict[str, set[str]] = {layer: set(ORDER[:i + 1]) for i, layer in enumerate(ORDER)}
MAY_IMPORT[PLUGINS] = {"base", "pieces", PLUGINS}

#: Module or package (with everything under it) -> layer; docs/architecture.md draws it.
LAYERS: dict[str, str] = {
    # base: no torch; what every other layer may use
    "robustzoo._version": "base",
    "robustzoo.errors": "base",
    "robustzoo.registry": "base",
    "robustzoo.hookspecs": "base",
    "robustzoo.plugins": "base",
    "robustzoo.recipes": "base",
    "robustzoo.zoo": "base",  # the zoo index's entry type and schema (pure Python)
    "robustzoo.progress": "base",
    "robustzoo.papers": "base",  # bibliographic facts of methods and nets (plain data)
    "robustzoo.lazy": "base",  # deferred imports: lazy re-exports, the post-import hook for timm
    "robustzoo.files": "base",  # atomic writes with the umask, the output-path convention
    "robustzoo.settings": "base",  # typed, ranged settings (--set): parsing and the one-line errors
    # pieces: what training and evaluation are made of
    "robustzoo.data": "pieces",
    "robustzoo.models": "pieces",
    "robustzoo.attacks": "pieces",
    "robustzoo.objectives": "pieces",
    "robustzoo.devices": "pieces",
    "robustzoo.runs": "pieces",  # the run directory: written by training, read by evaluation
    "robustzoo.builtins": "pieces",  # the core's own plugin
    # engines: the loops
    "robustzoo.config": "engines",
    "robustzoo.fast": "engines",
    "robustzoo.distributed": "engines",
    "robustzoo.train": "engines",
    "robustzoo.eval": "engines",
    # zoo: publishing and pulling models
    "robustzoo.hub": "zoo",
    "robustzoo.cards": "zoo",
    "robustzoo.robustbench": "zoo",  # the RobustBench record of a run
    "robustzoo.leaderboard": "zoo",  # runs and zoo entries ranked (data only; drawn by the CLI)
    # faces: the Python API, the command line and what only they use
    "robustzoo": "faces",  # the package's __init__ only: a new module robustzoo.x needs its own line
    "robustzoo.api": "faces",
    "robustzoo.publish": "faces",  # `zoo publish`: drives training, the API's evaluation and the Hub
    "robustzoo.ui": "faces",
    "robustzoo.cli": "faces",
    "robustzoo.__main__": "faces",
    "robustzoo.testing": "faces",
}

#: (importer, imported) -> why an import may break the rule. Keep it short.
ALLOWED: dict[tuple[str, str], str] = {}

#: Libraries that take long to import: only inside the functions that need them, so that
#: `robustzoo --help` and `import robustzoo` need not pay for them.
SLOW_LIBRARIES = ("timm", "matplotlib", "huggingface_hub", "pyautoattack", "sklearn", "torchvision")
#: (module, library) -> why it is imported at the top of the module.
EAGER_OK: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Import:
    importer: str  # the importing module
    runs: str  # the module whose code the statement executes (cycle check)
    uses: str  # the module that defines what is imported (layer check)
    file: str  # the importer's path from the repository root
    line: int
    where: str  # "at the top" or "in NAME()"

    def at(self) -> str:
        return f"{self.file}:{self.line} ({self.where})"


def find_modules(root: Path) -> dict[str, Path]:
    """Module name -> file, for robustzoo/ and every package under plugins/."""
    out: dict[str, Path] = {}
    tops = [root / "robustzoo"] + sorted(p for p in (root / "plugins").glob("*") if (p / "__init__.py").is_file())
    for top in tops:
        if not top.is_dir():
            continue
        for path in sorted(top.rglob("*.py")):
            parts = list(path.relative_to(top.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _package(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _absolute(node: ast.ImportFrom, name: str, path: Path) -> str:
    if not node.level:
        return node.module or ""
    base = _package(name, path).split(".")
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _reexports(name: str, path: Path) -> dict[str, tuple[str, str]]:
    """What a package's ``__init__`` hands on: exported name -> (module, name there)."""
    if path.name != "__init__.py":
        return {}
    out = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom):
            src = _absolute(node, name, path)
            for a in node.names:
                out[a.asname or a.name] = (src, a.name)
    return out


def _where(stack: list[str]) -> str:
    return f"in {stack[-1]}()" if stack else "at the top"


def read_imports(modules: dict[str, Path], root: Path) -> list[Import]:
    """Every import between the modules, top-level and function-local."""
    exports = {m: _reexports(m, p) for m, p in modules.items()}

    def defining(module: str, attr: str, seen: int = 0) -> str:
        src = exports.get(module, {}).get(attr)
        if src is None or seen > 20:
            return module
        mod, orig = src
        if f"{mod}.{orig}" in modules:
            return f"{mod}.{orig}"
        return defining(mod, orig, seen + 1) if mod in modules else module

    def known(dotted: str) -> str | None:
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in modules:
                return ".".join(parts[:i])
        return None

    out: list[Import] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        file = path.relative_to(root).as_posix()

        def visit(node: ast.AST, stack: list[str], name: str = name, path: Path = path,
                  file: str = file) -> None:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                stack = [*stack, node.name]
            if isinstance(node, ast.Import):
                for a in node.names:
                    target = known(a.name)
                    if target:
                        out.append(Import(name, target, target, file, node.lineno, _where(stack)))
            elif isinstance(node, ast.ImportFrom):
                src = _absolute(node, name, path)
                for a in node.names:
                    if f"{src}.{a.name}" in modules:  # a submodule
                        target = f"{src}.{a.name}"
                        out.append(Import(name, target, target, file, node.lineno, _where(stack)))
                    elif src in modules:
                        out.append(Import(name, src, defining(src, a.name), file, node.lineno, _where(stack)))
            for child in ast.iter_child_nodes(node):
                visit(child, stack)

        visit(tree, [])
    return out


def layer_of(module: str) -> str | None:
    if module.split(".")[0].startswith("robustzoo_"):
        return PLUGINS
    if module in LAYERS:
        return LAYERS[module]
    parts = module.split(".")
    for i in range(len(parts) - 1, 1, -1):  # a package covers what is under it; the face does not
        layer = LAYERS.get(".".join(parts[:i]))
        if layer:
            return layer
    return None


def layer_errors(modules: dict[str, Path], imports: list[Import], root: Path) -> list[str]:
    errors = [f"{p.relative_to(root).as_posix()} is on no layer: add it to LAYERS in tests/test_architecture.py "
              f"and to docs/architecture.md" for m, p in modules.items() if layer_of(m) is None]
    for imp in imports:
        a, b = layer_of(imp.importer), layer_of(imp.uses)
        if a is None or b is None or b in MAY_IMPORT[a] or (imp.importer, imp.uses) in ALLOWED:
            continue
        errors.append(f"{imp.at()} imports {imp.uses}: a module of layer '{a}' may import only "
                      f"from {', '.join(sorted(MAY_IMPORT[a]))}, and {imp.uses} is '{b}'")
    return errors


def cycles(imports: list[Import]) -> list[tuple[list[str], list[Import]]]:
    """Each group of modules that import each other, with one cycle (its imports) through it."""
    graph: dict[str, list[Import]] = {}
    for imp in imports:
        graph.setdefault(imp.importer, []).append(imp)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def strong(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for imp in graph.get(v, []):
            w = imp.runs
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1 or any(i.runs == v for i in graph.get(v, [])):
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            strong(v)
    found = []
    for group in groups:  # a shortest way back to the start, inside the group
        start = min(group)
        paths: dict[str, list[Import]] = {start: []}
        todo = [start]
        done = None
        while todo and done is None:
            v = todo.pop(0)
            for imp in graph.get(v, []):
                if imp.runs == start:
                    done = paths[v] + [imp]
                    break
                if imp.runs in group and imp.runs not in paths:
                    paths[imp.runs] = paths[v] + [imp]
                    todo.append(imp.runs)
        found.append((sorted(group), done or []))
    return found


def describe(found: tuple[list[str], list[Import]]) -> str:
    group, cycle = found
    return (f"{len(group)} modules import each other ({', '.join(group)}); for example: "
            + " -> ".join([cycle[0].importer] + [f"{imp.runs} [{imp.at()}]" for imp in cycle]))


# --- the checks on this repository ------------------------------------------------------------

MODULES = find_modules(ROOT)
IMPORTS = read_imports(MODULES, ROOT)


def test_every_module_imports_only_its_own_layer_or_below():
    errors = layer_errors(MODULES, IMPORTS, ROOT)
    assert not errors, "\n".join(errors)


def test_the_import_graph_has_no_cycle():
    found = cycles(IMPORTS)
    assert not found, "\n".join(describe(c) for c in found)


def test_slow_libraries_are_imported_where_they_are_needed():
    errors = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
               and not _inside_function(tree, n)]
        for node in top:
            libs = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for lib in libs:
                root_lib = lib.split(".")[0]
                if root_lib in SLOW_LIBRARIES and (name, root_lib) not in EAGER_OK:
                    errors.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {lib} at the top: "
                                  f"import it inside the function that needs it, with a comment")
    assert not errors, "\n".join(errors)


def _inside_function(tree: ast.AST, target: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and target in ast.walk(node):
            return True
    return False


def test_the_layers_are_the_ones_docs_architecture_draws():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for module, layer in LAYERS.items():
        shown = module.removeprefix("robustzoo.").replace(".", "/") if module != "robustzoo" else "__init__"
        assert f"`{shown}" in text, f"docs/architecture.md does not place {module} (layer '{layer}')"


def test_the_reading_finds_the_real_imports():
    """The checks would pass on an empty reading: make sure they read what is there."""
    seen = {(i.importer, i.runs, i.uses) for i in IMPORTS}
    assert ("robustzoo.train", "robustzoo.eval", "robustzoo.eval._evaluate") in seen  # a re-export
    assert ("robustzoo_trades", "robustzoo", "robustzoo.hookspecs") in seen  # through the face
    local = [i for i in IMPORTS if i.importer == "robustzoo.cli.commands" and i.runs == "robustzoo.train"]
    assert local and all(i.where.startswith("in ") for i in local)  # function-local imports count
    assert len(MODULES) > 40 and len(IMPORTS) > 150


# --- the checker itself, on a small made-up tree ----------------------------------------------

def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return find_modules(tmp_path)


def test_the_checker_names_an_upward_import_and_a_cycle(tmp_path):
    mods = _tree(tmp_path, {
        "robustzoo/__init__.py": "from .api import go\n",
        "robustzoo/api.py": "from .train import fit\n\ndef go():\n    return fit()\n",
        "robustzoo/train.py": "def fit():\n    from .api import go  # a circle, hidden in a function\n",
        "robustzoo/errors.py": "def e():\n    from . import train\n",
        "robustzoo/newthing.py": "",
        "plugins/robustzoo_x/__init__.py": "from robustzoo import go\n",
    })
    imports = read_imports(mods, tmp_path)
    errors = layer_errors(mods, imports, tmp_path)
    assert "robustzoo/newthing.py is on no layer: add it to LAYERS" in errors[0], errors
    assert any(e.startswith("robustzoo/errors.py:2 (in e()) imports robustzoo.train: a module of "
                            "layer 'base'") for e in errors), errors
    assert any(e.startswith("plugins/robustzoo_x/__init__.py:1 (at the top) imports robustzoo.api")
               for e in errors), errors  # the face only hands on api.go: the plugin uses the API
    assert not any(e.startswith("robustzoo/__init__.py") for e in errors), errors
    found = [describe(c) for c in cycles(imports)]
    assert len(found) == 1 and found[0].startswith("2 modules import each other (robustzoo.api, "
                                                   "robustzoo.train)"), found
    assert "robustzoo.api -> robustzoo.train" in found[0] and "robustzoo/train.py:2 (in fit())" in found[0]
