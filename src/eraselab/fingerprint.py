"""Content fingerprints: of source data files, and of the code each stage runs.

Snakemake decides what to rerun by comparing what it recorded when an output
was made with what holds now. Our rules are shell commands over this package,
so Snakemake sees neither the bytes of the files a rule reads from the repo
(prompt CSVs, shipped weights: we put their digests into the job specs) nor the
Python a stage runs (we put its fingerprint into the rule's command, which is
what Snakemake's ``code`` trigger compares). Both are content hashes, so they
survive ``dvc pull``, ``git checkout`` and copies, which reset file times.

A stage's code is the module its ``eraselab <stage>`` subcommand imports and
every module of this package that it imports in turn (module-level and inside
functions). The fingerprint hashes their syntax trees without docstrings, so
editing a comment, a docstring or the formatting does not rerun anything, and
editing a line of logic reruns exactly the stages whose closure holds it.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import inspect
import json
import os
import textwrap
from collections.abc import Collection
from functools import lru_cache
from pathlib import Path

PACKAGE = "eraselab"
PACKAGE_DIR = Path(__file__).resolve().parent
# Not part of any stage's code: the package's __init__ (its version number), the CLI (it dispatches
# to every stage) and this module (it only measures code; runtime imports it to record the code
# version). None of them changes what a stage computes.
TOOLING = {PACKAGE, f"{PACKAGE}.cli", f"{PACKAGE}.fingerprint"}


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
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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
    return out


@lru_cache(maxsize=None)
def _module_imports(module: str) -> set[str]:
    path = module_path(module)
    return imports(ast.parse(path.read_text(), filename=str(path)), module, path.name == "__init__.py")


def closure(tree: ast.AST, module: str, is_package: bool = False) -> list[str]:
    """The package modules a piece of code runs: its imports, and theirs, transitively."""
    todo, seen = list(imports(tree, module, is_package)), set()
    while todo:
        name = todo.pop()
        if name in seen or name in TOOLING:
            continue
        seen.add(name)
        todo.extend(_module_imports(name))
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


def _entry_source(stage: str) -> str:
    """The source of the CLI function that runs a stage (``eraselab <stage>``)."""
    from .cli import make_parser
    return textwrap.dedent(inspect.getsource(_subcommands(make_parser())[stage]))


def stages() -> list[str]:
    from .cli import make_parser
    return sorted(_subcommands(make_parser()))


def _subcommands(parser: argparse.ArgumentParser) -> dict:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: p.get_default("func") for name, p in action.choices.items()}


def stage_modules(stage: str) -> list[str]:
    """The package modules ``eraselab <stage>`` runs."""
    return closure(ast.parse(_entry_source(stage)), f"{PACKAGE}.cli")


@lru_cache(maxsize=None)
def code_fingerprint(stage: str) -> str:
    """A short hash of the code ``eraselab <stage>`` runs (see the module docstring)."""
    parts = {"<entry>": hashlib.sha256(normalized(_entry_source(stage)).encode()).hexdigest()}
    parts.update({m: _module_hash(m) for m in stage_modules(stage)})
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def stage_of(shellcmd: str) -> str | None:
    """The eraselab stage a rule's shell command runs, if any."""
    words, known = shellcmd.split(), set(stages())
    if PACKAGE not in words:
        return None
    return next((w for w in words[words.index(PACKAGE) + 1:] if w in known), None)
