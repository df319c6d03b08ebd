"""Resumable loops: periodic checkpoints that a rerun picks up after a kill.

A checkpoint is tied to a fingerprint of everything that determines the loop
(its params and seed). A rerun with the same fingerprint resumes from the last
saved step; with another fingerprint it starts over. Loops draw their per-step
randomness from generators seeded by (seed, step), so a resumed run gives the
same result as an uninterrupted one.

Checkpoints live next to results, often on a shared, group-writable filesystem,
so loading one must never run code: ``state.pt`` is read with
``torch.load(weights_only=True)`` (tensors, dicts, lists, numbers and strings
only; numpy arrays and other objects must be saved as tensors or lists), and
only after its SHA-256 matches the one recorded in ``state.json`` next to it
with the fingerprint. A checkpoint that is unreadable, refused, for other params
or whose checksum does not match is ignored with a message: the job starts over.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from .artifacts import atomic_paths, sha256


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def checkpoint_dir_for(output: str | Path) -> Path:
    """Where a stage keeps the checkpoints of the output it is making: a hidden sibling."""
    output = Path(output)
    return output.parent / f".{output.name}.ckpt"


class Checkpointer:
    def __init__(self, directory: str | Path, key: Any, every: int):
        self.dir, self.key, self.every = Path(directory), fingerprint(key), max(1, int(every))
        self.file = self.dir / "state.pt"
        self.record = self.dir / "state.json"  # the fingerprint, the step and state.pt's SHA-256
        self.resumed_from: int | None = None  # the step load() resumed from, recorded in provenance

    def _ignore(self, why: str) -> None:
        print(f"[checkpoint] ignoring {self.file}: {why}; starting over", file=sys.stderr)

    def load(self) -> dict | None:
        """The saved state if one exists for this fingerprint and its checksum matches, else None.

        A checkpoint is a cache: a broken, foreign or refused one is dropped, never fatal and never
        half-loaded. state.pt is only ever read with weights_only=True, which refuses pickled code."""
        if not self.file.exists():
            return None
        try:
            record = json.loads(self.record.read_text())
            key, digest = record["key"], record["sha256"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            self._ignore(f"no valid checksum record {self.record.name} ({type(e).__name__}: {e})")
            return None
        if key != self.key:
            self._ignore("it is for other params")
            return None
        if sha256(self.file) != digest:
            self._ignore(f"its SHA-256 does not match the one in {self.record.name} (changed or damaged)")
            return None
        try:
            state = torch.load(self.file, map_location="cpu", weights_only=True)
        except Exception as e:  # weights_only refuses anything but tensors and plain data
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            self._ignore(f"unreadable or refused by torch.load(weights_only=True) ({type(e).__name__}: {first})")
            return None
        if not isinstance(state, dict) or state.get("key") != self.key or not isinstance(state.get("step"), int):
            self._ignore("its contents are not a checkpoint for these params")
            return None
        print(f"[checkpoint] resuming from step {state['step']} ({self.file})", file=sys.stderr)
        self.resumed_from = state["step"]
        return state

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def save(self, step: int, state: dict) -> None:
        """Write state.pt and its checksum record together. The record is renamed into place first and
        state.pt last, so a new state.pt is always complete with its record (a kill in between leaves
        a mismatch, which load() takes as no checkpoint)."""
        try:
            with atomic_paths(self.record, self.file) as (record, tmp):
                torch.save({"key": self.key, "step": step, **state}, tmp)
                record.write_text(json.dumps({"key": self.key, "step": step, "sha256": sha256(tmp)}) + "\n")
        except RuntimeError as e:  # torch's zip writer reports a failed write without its cause
            raise OSError(f"{self.file}: could not write the checkpoint (disk full or over quota?): {e}") from None

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
