"""Every project file a stage's script imports, transitively, is covered by that stage's deps
in dvc.yaml, and every code dep covers something the stage imports: edit a file and exactly
the stages that run it rerun.

The closure is derived statically from `stages/<stage>.py`: every import statement anywhere
in a module (module level or inside a function) counts, a package's `__init__` counts when
any of its modules is imported, and a dynamic import (`importlib.import_module`,
`__import__`) counts as an import of everything it can load (every module of the project).
One case is modelled exactly instead: a package's module-level `__getattr__` (PEP 562, the
lazy public API of `dpai/__init__.py`) runs only when code reads a name of that package that
is not a submodule; if any module of the closure does (`dpai.prune`, `from dpai import
prune`), everything that `__getattr__` can load joins the closure.
"""
import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "dpai"
STAGES = ("check", "data", "mask", "train", "report")


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The project file of a dotted module name (stage-local `common` included), or None."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        path = root / "stages" / f"{name}.py"
        return path if len(parts) == 1 and path.is_file() else None
    base = root.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "stages":
        return parts[-1]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path, root: Path) -> str:
    name = module_name(path, root)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _from_module(node: ast.ImportFrom, path: Path, root: Path) -> str:
    """The absolute module name of `from <module> import ...` in `path`."""
    if not node.level:
        return node.module
    base = _package_of(path, root).split(".")
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _is_dynamic(node: ast.Call) -> bool:
    f = node.func
    return (isinstance(f, ast.Attribute) and f.attr == "import_module") or (
        isinstance(f, ast.Name) and f.id in ("__import__", "import_module"))


def _lazy_getattr(tree: ast.Module):
    """The module-level `def __getattr__` of a module, or None."""
    return next((n for n in tree.body if isinstance(n, ast.FunctionDef)
                 and n.name == "__getattr__"), None)


def imports(path: Path, root: Path = ROOT) -> tuple[set, bool, set]:
    """(module names imported by `path`, whether it imports dynamically outside a lazy
    `__getattr__`, the names it reads as attributes of a project package)."""
    tree = ast.parse(path.read_text())
    lazy = _lazy_getattr(tree) if path.name == "__init__.py" else None
    lazy_nodes = set(map(id, ast.walk(lazy))) if lazy else set()
    names, dynamic, attrs = set(), False, set()
    bound = {}  # local name -> project package it is bound to by `import dpai...`
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.add(alias.name)
                if alias.asname is None:
                    bound[alias.name.split(".")[0]] = alias.name.split(".")[0]
                else:
                    bound[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            mod = _from_module(node, path, root)
            names.add(mod)
            for alias in node.names:
                if module_file(f"{mod}.{alias.name}", root) is not None:
                    names.add(f"{mod}.{alias.name}")
                elif mod.split(".")[0] == PACKAGE:
                    attrs.add((mod, alias.name))
        elif isinstance(node, ast.Call) and _is_dynamic(node) and id(node) not in lazy_nodes:
            dynamic = True
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in bound and bound[node.value.id].split(".")[0] == PACKAGE:
            mod = bound[node.value.id]
            if module_file(f"{mod}.{node.attr}", root) is None:
                attrs.add((mod, node.attr))
    return names, dynamic, attrs


def closure(script: Path, root: Path = ROOT) -> set[Path]:
    """The project files that running `script` can execute (module docstring)."""
    everything = set((root / PACKAGE).rglob("*.py"))
    seen, todo, lazy_read = set(), [script], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        names, dynamic, attrs = imports(path, root)
        if dynamic:
            todo.extend(everything)
        lazy_read |= attrs
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):   # parents run first
                f = module_file(".".join(parts[:i]), root)
                if f is not None:
                    todo.append(f)
        for mod, _ in list(lazy_read):
            init = module_file(mod, root)
            if init is not None and init.name == "__init__.py" and init in seen \
                    and _lazy_getattr(ast.parse(init.read_text())) is not None:
                todo.extend(p for p in init.parent.rglob("*.py"))   # all it can load
                lazy_read.discard((mod, _))
    return {p for p in seen if p.suffix == ".py"}


def code_deps(stage: str, root: Path = ROOT) -> list[str]:
    deps = yaml.safe_load((root / "dvc.yaml").read_text())["stages"][stage]["deps"]
    return [d for d in deps if d.split("/")[0] in ("stages", PACKAGE)]


def uncovered(files: set[Path], deps: list[str], root: Path = ROOT) -> list[str]:
    """The files of `files` that no dep (a file or a folder) covers."""
    out = []
    for f in sorted(files):
        rel = f.relative_to(root).as_posix()
        if not any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps):
            out.append(rel)
    return out


def superfluous(files: set[Path], deps: list[str], root: Path = ROOT) -> list[str]:
    rels = [f.relative_to(root).as_posix() for f in files]
    return [d for d in deps if not any(r == d or r.startswith(d.rstrip("/") + "/")
                                       for r in rels)]


def stage_files(stage: str) -> set[Path]:
    return closure(ROOT / "stages" / f"{stage}.py")


@pytest.mark.parametrize("stage", STAGES)
def test_every_imported_file_is_a_dep(stage):
    missing = uncovered(stage_files(stage), code_deps(stage))
    assert not missing, f"stage {stage!r} imports {missing}, which dvc.yaml does not list " \
                        f"in its deps"


@pytest.mark.parametrize("stage", STAGES)
def test_every_code_dep_is_imported(stage):
    extra = superfluous(stage_files(stage), code_deps(stage))
    assert not extra, f"stage {stage!r} lists {extra} in its deps but imports nothing there " \
                      f"(edits there would rerun it for nothing)"


@pytest.mark.parametrize("stage", STAGES)
def test_dropping_any_dependency_is_caught(stage):
    files, deps = stage_files(stage), code_deps(stage)
    for dep in deps:
        assert uncovered(files, [d for d in deps if d != dep]), \
            f"dropping {dep!r} from stage {stage!r} would go unnoticed"


def test_stages_import_only_what_they_run():
    """The mask stage never loads training code and the train stage never loads a method:
    editing one reruns only the stages that run it."""
    mask = {f.relative_to(ROOT).as_posix() for f in stage_files("mask")}
    train = {f.relative_to(ROOT).as_posix() for f in stage_files("train")}
    assert not [f for f in mask if f.startswith(("dpai/training/", "dpai/report/"))], mask
    assert not [f for f in train if f.startswith(("dpai/methods/", "dpai/paths/",
                                                  "dpai/report/"))], train


def _write(root: Path, files: dict) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_lazy_and_dynamic_imports_count(tmp_path):
    """A function-level import counts; a dynamic one loads everything; a lazy package
    __getattr__ counts only once a name of the package is read."""
    _write(tmp_path, {
        "dpai/__init__.py": "import importlib\ndef __getattr__(n):\n"
                            "    return importlib.import_module('dpai.' + n)\n",
        "dpai/a.py": "def f():\n    from . import b\n",
        "dpai/b.py": "", "dpai/c.py": "", "dpai/d/__init__.py": "", "dpai/d/e.py": "",
        "dpai/dyn.py": "import importlib\nimportlib.import_module(name)\n",
        "stages/one.py": "import dpai.a\n",
        "stages/two.py": "from dpai import dyn\n",
        "stages/three.py": "import dpai.a\nimport dpai\ndpai.anything\n",
    })
    rel = lambda s: sorted(p.relative_to(tmp_path).as_posix()  # noqa: E731
                           for p in closure(tmp_path / "stages" / s, tmp_path))
    assert rel("one.py") == ["dpai/__init__.py", "dpai/a.py", "dpai/b.py", "stages/one.py"]
    everything = ["dpai/__init__.py", "dpai/a.py", "dpai/b.py", "dpai/c.py", "dpai/d/__init__.py",
                  "dpai/d/e.py", "dpai/dyn.py"]
    assert rel("two.py") == everything + ["stages/two.py"]
    assert rel("three.py") == everything + ["stages/three.py"]


def edges(path: Path, root: Path = ROOT) -> set[str]:
    """The project modules `path` imports by name, anywhere in the file (imports inside
    functions count): `from .x import y` is an edge to `.x`, `from . import y` to the submodule
    `y` (not to the package), and a lazy or dynamic import to everything it can load."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mod = _from_module(node, path, root)
            subs = {f"{mod}.{a.name}" for a in node.names
                    if module_file(f"{mod}.{a.name}", root) is not None}
            out |= subs or {mod}
        elif isinstance(node, ast.Call) and _is_dynamic(node):
            out |= {module_name(p, root) for p in (root / PACKAGE).rglob("*.py")} - {
                module_name(path, root)}
    return {m for m in out if m.split(".")[0] == PACKAGE and module_file(m, root) is not None}


def import_cycle(root: Path = ROOT) -> list[str] | None:
    """One cycle in the import graph of the package's modules, or None."""
    graph = {module_name(p, root): edges(p, root) for p in (root / PACKAGE).rglob("*.py")}
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle_inside_the_package():
    """Imports inside functions count, and so does the lazy API's dynamic import (it can load
    every module, so no module may import the package root back)."""
    assert import_cycle() is None, " -> ".join(import_cycle())


def test_a_cycle_is_found(tmp_path):
    """A method module importing `register` back from its package's __init__ is a cycle."""
    _write(tmp_path, {"dpai/__init__.py": "", "dpai/m/__init__.py": "from . import a\n",
                      "dpai/m/a.py": "def f():\n    from ..m import register\n"})
    assert import_cycle(tmp_path) == ["dpai.m", "dpai.m.a", "dpai.m"]


def test_every_module_imports_and_the_api_resolves():
    """In a fresh interpreter, every module of the package imports, and afterwards every
    public name is still what the API says (a subpackage named like an API function would
    shadow it: `dpai.topology` the function, say)."""
    import subprocess
    import sys
    modules = sorted(module_name(p) for p in (ROOT / PACKAGE).rglob("*.py"))
    code = (f"import importlib, dpai; [importlib.import_module(m) for m in {modules!r}]; "
            "bad = [n for n in dpai.API if type(getattr(dpai, n)).__name__ == 'module']; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
