"""Working beside a DVC cache that links files into the workspace.

On HPC the team shares one DVC cache and DVC links its files into each workspace
(``cache.type symlink``), so a model or an image collection exists once on disk.
A linked file must never be written in place: the write would change the cache
and, through it, every workspace that links the same content. Our stages replace
their outputs atomically (a new file renamed over the link), and Snakemake deletes
outputs before rerunning a job, so both leave the cache alone. Snakemake's own
records (``.snakemake/metadata``, versioned with the artifacts) are rewritten in
place, so the workflow makes them private copies before Snakemake touches them.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path


def is_linked(path: Path) -> bool:
    """A symlink, or a file with other hard links (one of them maybe in a DVC cache)."""
    return path.is_symlink() or (path.is_file() and path.stat().st_nlink > 1)


def make_private(directory: str | os.PathLike) -> int:
    """Replace every linked file under a directory by a private copy; returns how many."""
    count = 0
    for root, _, files in os.walk(directory):
        for name in files:
            path = Path(root, name)
            if is_linked(path):
                tmp = path.with_name(f".{name}.private")
                shutil.copyfile(path, tmp)  # follows the link: the content, not the link
                os.replace(tmp, path)
                count += 1
    return count
