"""Content fingerprints: of source data files, and of the code a job runs.

Snakemake decides what to rerun by comparing what it recorded when an output
was made with what holds now. Our rules are shell commands over this package,
so Snakemake sees neither the bytes of the files a rule reads from the repo
(prompt CSVs, shipped weights: we put their digests into the job specs) nor the
Python a job runs (we put its fingerprint into a job param, ``code``, which
Snakemake's params trigger compares). Both are content hashes, so they survive
``dvc pull``, ``git checkout`` and copies, which reset file times.

A job's code is a list of modules (``plan.job_modules``: its stage's module and
the algorithms it selects by name from registries) and every module of this
package that they import in turn, at module level or inside functions
(``closure``). Registries name modules as strings, so only the chosen algorithm
enters a closure. The fingerprint hashes the syntax trees without docstrings, so
editing a comment, a docstring or the formatting reruns nothing, and editing a
line of logic reruns exactly the jobs whose closure holds it.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Collection, Iterable
from functools import lru_cache
from pathlib import Path

from .artifacts import sha256

PACKAGE = "eraselab"
PACKAGE_DIR = Path(__file__).resolve().parent
# Not part of any job's code: the package's __init__ (its version number) and the CLI (it parses
# the command line and imports the stage's module by name). Neither changes what a stage computes.
TOOLING = {PACKAGE, f"{PACKAGE}.cli"}


# --- source data -----------------------------------------------------------

def digest(path: str | os.PathLike, ignore: Collection[str] = ()) -> str:
    """SHA-256 of a file's bytes, or of a directory's files (their relative names and bytes, sorted).

    ``ignore``: relative names of files in the directory left out (records that describe it).
    """
    path = Path(path)
    if path.is_file():
        return _file_digest(path)
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.relative_to(path).as_posix() not in ignore)
    if not files:
        raise FileNotFoundError(f"{path}: no such file, or an empty directory")
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(path).as_posix()}\0{_file_digest(f)}\n".encode())
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    st = path.stat()  # a DAG asks for the same file many times: hash it once per process
    return _cached_digest(str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


@lru_cache(maxsize=None)
def _cached_digest(path: str, *stat_key) -> str:
    return sha256(path)


# --- code ------------------------------------------------------------------

@lru_cache(maxsize=None)
def module_path(module: str) -> Path | None:
    """The source file of one of this package's modules (None if it is not one)."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    rel = Path(*module.split(".")[1:])
    for candidate in (PACKAGE_DIR / rel / "__init__.py", (PACKAGE_DIR / rel).with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def modules() -> list[str]:
    """Every module of the package."""
    return sorted(".".join((PACKAGE, *p.relative_to(PACKAGE_DIR).with_suffix("").parts)).removesuffix(".__init__")
                  for p in PACKAGE_DIR.rglob("*.py"))


def _resolve(node: ast.ImportFrom, importer: str, is_package: bool) -> list[str]:
    """The package modules an ``import`` / ``from ... import`` statement loads."""
    if node.level:
        base = importer.split(".")[: len(importer.split(".")) - node.level + is_package]
        base = ".".join(base + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    # `from . import esd` may name a submodule; `from .x import f` names a function
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every module of this package imported anywhere in a syntax tree, with its parent packages."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found.update(_resolve(node, module, is_package))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    out = set()
    for name in found:
        parts = name.split(".")
        out.update(p for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if module_path(p))
    return out - {module}


@lru_cache(maxsize=None)
def module_imports(module: str) -> frozenset[str]:
    """The package modules one module imports (module level and inside functions)."""
    path = module_path(module)
    if path is None:
        raise ValueError(f"{module}: not a module of {PACKAGE}")
    return frozenset(imports(ast.parse(path.read_text(), filename=str(path)), module, path.name == "__init__.py"))


def closure(roots: Iterable[str]) -> list[str]:
    """The package modules some code runs: the roots, their imports, and theirs, transitively."""
    todo, seen = list(roots), set()
    while todo:
        name = todo.pop()
        if name in seen or name in TOOLING:
            continue
        seen.add(name)
        todo.extend(module_imports(name))
    return sorted(seen)


def normalized(source: str) -> str:
    """Python source as its syntax tree, without docstrings: comments and layout are gone too."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False)


@lru_cache(maxsize=None)
def _module_hash(module: str) -> str:
    return hashlib.sha256(normalized(module_path(module).read_text()).encode()).hexdigest()


@lru_cache(maxsize=None)
def code_fingerprint(roots: tuple[str, ...]) -> str:
    """A short hash of the code that runs from ``roots`` (see the module docstring)."""
    parts = {m: _module_hash(m) for m in closure(roots)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def import_cycles() -> list[list[str]]:
    """The package's import cycles: strongly connected components of more than one module (Tarjan)."""
    graph = {m: sorted(module_imports(m)) for m in modules()}
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out
