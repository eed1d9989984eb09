"""The student's path for notebooks 04-07: with lessons 1..N solved, notebook N meets no exercise stub.

`tests/docs/test_exercises.py` proves the path for N = 1, 2, 3 by executing notebook N in a student copy.
Notebooks 04-07 train language models (minutes each), too slow for the suite, so for N = 4..7 this
file proves the same property statically, in well under a second per notebook:

    cut a student copy with lessons 1..N solved (course/exercises.py, as `--solved N` does), then
    show that no function holding a stub of a lesson > N is reachable from notebook N's code.

Why a static check is sound here. "Reachable" is over-approximated by names, never under-approximated:

* The stubs are found in the copy itself: every function (or method) whose body the cut turned into
  `raise NotImplementedError("Exercise X.Y: ...")`. A stub can raise only if that function is called.
* The roots are every name in notebook N's code cells: variables, called functions, attribute names
  (`lab.train` counts as `train`, `layer.delta_weight()` as `delta_weight`), imported names, and every
  string constant that is a valid identifier (a name looked up with getattr or a table of strings).
  Module-level code of every `core/` and `lab/` module counts as a root too (it runs at import).
* A reached name reaches every function, method and class of that name anywhere in `core/` and
  `lab/` (whatever object the attribute belongs to), everything their bodies name (nested functions
  and lambdas included), every method of a reached class (libraries call `forward`, `backward`,
  `_save`, ... by protocol), the value of a reached module-level assignment (`LAYERS = {...}`), and
  the original of an import alias.
* Python can also call code by a name computed at run time; the check refuses (fails) if reached code
  uses `eval`, `exec`, `compile`, `__import__`, `importlib` or `globals()`, which would escape it.

So a stub outside the closure cannot run when notebook N runs, whatever its data or settings (the
paper profile included). The converse does not hold: a stub inside the closure may still be
unreachable in fact; the failure message names the chain of names to check it by hand.

Two more conditions make "notebook N runs in the student copy" mean what it says:

* the notebook imports the copy's own `core` and `lab` (it puts the copy's root first on sys.path
  before importing them), not the package installed from the reference repo; and
* with N = 7 every lesson is solved, so the copy's code is the reference code, which nbval runs.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import deque
from pathlib import Path

import nbformat
import pytest

from tests.helpers import REPO as ROOT
sys.path.insert(0, str(ROOT / "course"))
import exercises  # noqa: E402

ESCAPES = {"eval", "exec", "compile", "__import__", "importlib", "globals"}
STUB = re.compile(r"Exercise (\d+\.\d+):")


def _notebook(root: Path, n: int) -> Path:
    return next((root / "notebooks").glob(f"{n:02d}_*.ipynb"))


def _code_cells(path: Path) -> list[str]:
    cells = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    # IPython lines (%magic, !shell) are not Python; they call nothing of core/ or lab/
    return ["\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in src.splitlines()) for src in cells]


def _names(node: ast.AST) -> set[str]:
    """Every name a piece of code mentions: identifiers, attributes, imported names, identifier-like strings."""
    out = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            out.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            out.add(sub.attr)
        elif isinstance(sub, ast.alias):
            out.add(sub.name.split(".")[-1])
            if sub.asname:
                out.add(sub.asname)
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str) and sub.value.isidentifier():
            out.add(sub.value)
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(sub.name)  # a nested function, or a method of a reached class, is reached with it
    return out


def _escapes(node: ast.AST) -> set[str]:
    """Built-ins that run code by a name computed at run time (`model.eval()` is a method, not one of them)."""
    out = {sub.id for sub in ast.walk(node) if isinstance(sub, ast.Name) and sub.id in ESCAPES}
    return out | {a.name for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom))
                  for a in sub.names if a.name.split(".")[0] == "importlib"} | (
        {"importlib"} if any(isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("importlib")
                             for sub in ast.walk(node)) else set())


class Sources:
    """The definitions of a copy's core/ and lab/, indexed by name."""

    def __init__(self, root: Path):
        self.defs: dict[str, list[tuple[str, ast.AST]]] = {}   # name -> [(where, function or class node)]
        self.values: dict[str, list[ast.AST]] = {}              # module-level assignment target -> value
        self.aliases: dict[str, set[str]] = {}                  # `import x as y`: y -> {x}
        self.toplevel: list[ast.AST] = []                       # module-level statements (run at import)
        self.stubs: dict[str, str] = {}                         # exercise id -> the function that raises it
        for path in exercises.source_files(root):
            where = str(path.relative_to(root))
            tree = ast.parse(path.read_text(), where)
            self._index(tree, where)
            for stmt in tree.body:
                if path.name == "__main__.py" or _is_main_guard(stmt):
                    continue  # runs under `python -m`, never when a notebook imports the package
                if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    self.toplevel += [*stmt.decorator_list, stmt.args]
                elif isinstance(stmt, ast.ClassDef):
                    self.toplevel += [*stmt.decorator_list, *stmt.bases,
                                      *(s for s in stmt.body if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)))]
                elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):  # at import only its calls run; the value
                    self.toplevel += [n for n in ast.walk(stmt) if isinstance(n, ast.Call)]  # counts once reached
                elif not isinstance(stmt, (ast.Import, ast.ImportFrom)):  # importing a name does not call it
                    self.toplevel.append(stmt)
                if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
                    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                    for t in targets:
                        for name in _names(t):
                            self.values.setdefault(name, []).append(stmt.value)

    def _index(self, tree: ast.AST, where: str, enclosing: str | None = None):
        for node in ast.iter_child_nodes(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.defs.setdefault(node.name, []).append((where, node))
                self._index(node, where, node.name if not isinstance(node, ast.ClassDef) else enclosing)
                if isinstance(node, ast.ClassDef):
                    continue
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Raise) and sub.exc is not None and _innermost(node, sub):
                        text = ast.unparse(sub.exc)
                        if "NotImplementedError" in text and (m := STUB.search(text)):
                            self.stubs[m[1]] = node.name
            else:
                self._index(node, where, enclosing)
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for a in node.names:
                    if a.asname:
                        self.aliases.setdefault(a.asname, set()).add(a.name.split(".")[-1])

    def closure(self, roots: set[str]) -> tuple[dict[str, str | None], set[str]]:
        """Every name reachable from `roots` (with the name that led to it) and the escapes met on the way."""
        parent: dict[str, str | None] = {r: None for r in roots}
        queue, escapes = deque(roots), set()
        while queue:
            name = queue.popleft()
            bodies = [node for _, node in self.defs.get(name, [])] + self.values.get(name, [])
            found = set().union(*(_names(b) for b in bodies)) | self.aliases.get(name, set())
            escapes |= set().union(*(_escapes(b) for b in bodies))
            for other in found:
                if other not in parent:
                    parent[other] = name
                    queue.append(other)
        return parent, escapes


def _is_main_guard(stmt: ast.AST) -> bool:
    """`if __name__ == "__main__":`"""
    return (isinstance(stmt, ast.If) and isinstance(stmt.test, ast.Compare) and isinstance(stmt.test.left, ast.Name)
            and stmt.test.left.id == "__name__")


def _innermost(func: ast.AST, raise_node: ast.AST) -> bool:
    """True when `raise_node` belongs to `func` itself, not to a function nested inside it."""
    for sub in ast.walk(func):
        if sub is not func and isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            if any(x is raise_node for x in ast.walk(sub)):
                return False
    return True


def _chain(parent: dict[str, str | None], name: str) -> str:
    path = [name]
    while parent.get(path[-1]) is not None:
        path.append(parent[path[-1]])
    return " <- ".join(path) + " <- notebook"


def _imports_its_own_copy(cells: list[str]) -> bool:
    """The copy's root goes first on sys.path before the notebook first imports core or lab."""
    code = "\n".join(cells)
    first = re.search(r"^\s*(import (lab|core)\b|from (lab|core)[\s.])", code, re.M)
    insert = re.search(r"sys\.path\.insert\(0,\s*str\(ROOT\)\)", code)
    root = re.search(r"ROOT\s*=.*core.*bhra\.py", code)
    return bool(first and insert and root and root.start() < insert.start() < first.start())


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """N -> (student copy with lessons 1..N solved, ids of the exercises cut)."""
    base = tmp_path_factory.mktemp("student_path")
    return {n: (base / f"solved{n}", exercises.write_student_copy(base / f"solved{n}", solved=n)) for n in range(4, 8)}


@pytest.mark.slow
@pytest.mark.parametrize("n", [4, 5, 6, 7])
def test_notebook_n_meets_no_stub_of_a_later_lesson(copies, n):
    copy, cut = copies[n]
    assert all(exercises.lesson(i) > n for i in cut), cut
    src = Sources(copy)
    assert sorted(src.stubs) == sorted(cut), f"stubs found {sorted(src.stubs)}, exercises cut {sorted(cut)}"
    if n == 7:
        assert not cut, f"lesson 7 is the last: nothing should be cut with every lesson solved, got {cut}"
        return
    cells = _code_cells(_notebook(copy, n))
    roots = set().union(*(_names(ast.parse(c)) for c in cells if c.strip()))
    roots |= set().union(*(_names(node) for node in src.toplevel))
    reached, escapes = src.closure(roots)
    assert not escapes, (f"notebook {n:02d} reaches code that looks names up at run time ({sorted(escapes)}); "
                         "the static check cannot follow it: execute the notebook in a student copy instead")
    met = {i: f for i, f in src.stubs.items() if f in reached}
    assert not met, (
        f"notebook {n:02d} can reach the stub(s) of a later lesson with lessons 1..{n} solved: "
        + "; ".join(f"Exercise {i} in {f}() via {_chain(reached, f)}" for i, f in sorted(met.items()))
        + ". Renumber the exercise to lesson <= N or keep the notebook off that function.")


@pytest.mark.slow
@pytest.mark.parametrize("n", [4, 5, 6, 7])
def test_notebook_n_imports_the_core_and_lab_of_its_own_copy(copies, n):
    """Otherwise, inside student/, notebook N would import the reference package installed from the repo
    (pip install -e .) and never run the student's code."""
    cells = _code_cells(_notebook(copies[n][0], n))
    assert _imports_its_own_copy(cells), (
        f"notebook {n:02d} imports core/lab before putting its copy's root on sys.path: add, before the first import, "
        "ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / 'core' / 'bhra.py').is_file()); "
        "sys.path.insert(0, str(ROOT))")


def test_the_static_check_sees_a_stub_that_a_notebook_reaches(tmp_path):
    """The check is not vacuous: a notebook cell that calls `gini` reaches Exercise 7.1 through
    lab.spectra.update_measures, and one that calls lab.evaluate_run reaches Exercise 5.1."""
    src = Sources(_copy(tmp_path, solved=4))
    assert src.stubs.get("7.1") == "gini" and src.stubs.get("5.1") == "extract_answer"
    for cell, stub in [("from lab.spectra import update_measures\nupdate_measures(u, g=4)", "gini"),
                       ("import lab\nlab.evaluate_run(cfg, tests)", "extract_answer")]:
        reached, _ = src.closure(_names(ast.parse(cell)))
        assert stub in reached, (cell, stub)
    reached, _ = src.closure(_names(ast.parse("import lab\nlab.configs('offline')")))
    assert "gini" not in reached and "extract_answer" not in reached


def _copy(tmp_path: Path, solved: int) -> Path:
    exercises.write_student_copy(tmp_path / "copy", solved=solved)
    return tmp_path / "copy"
