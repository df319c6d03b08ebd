"""Writing and reading artifacts safely, with provenance and checksums.

Every output is written under a temporary name in its final directory and
renamed into place only when complete, so a killed job or a full disk never
leaves a file that looks finished, and the previous version survives until the
new one is whole. Every artifact has a metadata JSON beside it recording what
made it (config slice, seed, versions, wall time, peak memory) and the SHA-256
of each file, checked on load.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


class ArtifactError(RuntimeError):
    """An artifact is missing, truncated, corrupted or inconsistent with its metadata."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success rename it to ``path``.

    The rename is atomic on POSIX, so readers see the old artifact or the new
    one, never a partial one. On any exception the temporary is removed and the
    old artifact is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed earlier attempt
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp if directory else tmp / path.name
    try:
        yield target
        if not directory:
            with open(target, "rb") as f:  # make the bytes durable before the rename
                os.fsync(f.fileno())
        if directory and path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """atomic_path for files that belong together (tensors, then their metadata): every file is
    written before any is renamed, so a failed write (a full disk) leaves all the old ones in place.
    They are renamed in the order given: put the metadata, which marks completeness, last."""
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_path(p)) for p in reversed(paths)]  # exits run in reverse
        yield tmps[::-1]


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: not valid JSON (truncated or corrupted?): {e}") from None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sidecar(path: str | os.PathLike, suffix: str) -> Path:
    """A file that describes an artifact, beside it: images.tar -> images.json (suffix ".json")."""
    return Path(path).with_suffix(suffix)


def sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def checksums(paths: list[Path], root: Path) -> dict[str, str]:
    """SHA-256 of each file, keyed by its path relative to ``root``."""
    return {str(Path(p).relative_to(root)): sha256(p) for p in paths}


def verify_checksums(root: str | os.PathLike, expected: dict[str, str], what: str = "artifact") -> None:
    """Raise ArtifactError naming the first file that is missing or differs from its recorded hash."""
    root = Path(root)
    for rel, digest in expected.items():
        p = root / rel
        if not p.exists():
            raise ArtifactError(f"{p}: missing file of {what} (listed in its metadata)")
        if sha256(p) != digest:
            raise ArtifactError(f"{p}: checksum mismatch: the file is truncated or corrupted "
                                f"(expected sha256 {digest[:12]}..., metadata in {root})")


MANIFEST = "eraselab_checksums.json"  # in a directory artifact (a model): the SHA-256 of each of its files
REBUILD_MODEL = "rebuild it (snakemake --forcerun base_model) or restore it (dvc checkout)"


def write_manifest(directory: str | os.PathLike) -> None:
    """Record the checksum of every file of a directory artifact, in MANIFEST inside it."""
    directory = Path(directory)
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST
                   and not any(part.startswith(".") for part in p.relative_to(directory).parts))
    write_json(directory / MANIFEST, checksums(files, directory))


def verify_manifest(directory: str | os.PathLike, prefix: str = "", what: str = "model",
                    fix: str = "rebuild it") -> None:
    """Check the files under ``prefix`` that a directory's MANIFEST lists; a directory without one
    (made before manifests existed, or a user's own model) is not checked."""
    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        return
    listed = {k: v for k, v in read_json(directory / MANIFEST).items() if k.startswith(prefix)}
    try:
        verify_checksums(directory, listed, what)
    except ArtifactError as e:
        raise ArtifactError(f"{e}; {fix}") from None
