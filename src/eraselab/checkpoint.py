"""Resumable loops: periodic checkpoints that a rerun picks up after a kill.

A checkpoint is tied to a fingerprint of everything that determines the loop
(its params and seed). A rerun with the same fingerprint resumes from the last
saved step; with another fingerprint it starts over. Loops draw their per-step
randomness from generators seeded by (seed, step), so a resumed run gives the
same result as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from .artifacts import atomic_path


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
        self.resumed_from: int | None = None  # the step load() resumed from, recorded in provenance

    def load(self) -> dict | None:
        """The saved state if one exists for this fingerprint, else None."""
        if not self.file.exists():
            return None
        try:
            state = torch.load(self.file, map_location="cpu", weights_only=False)
        except Exception as e:  # a checkpoint is a cache: a broken one is dropped, not fatal
            print(f"[checkpoint] ignoring unreadable {self.file}: {e}", file=sys.stderr)
            return None
        if state.get("key") != self.key:
            print(f"[checkpoint] {self.file} is for other params; starting over", file=sys.stderr)
            return None
        print(f"[checkpoint] resuming from step {state['step']} ({self.file})", file=sys.stderr)
        self.resumed_from = state["step"]
        return state

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def save(self, step: int, state: dict) -> None:
        try:
            with atomic_path(self.file) as tmp:
                torch.save({"key": self.key, "step": step, **state}, tmp)
        except RuntimeError as e:  # torch's zip writer reports a failed write without its cause
            raise OSError(f"{self.file}: could not write the checkpoint (disk full or over quota?): {e}") from None

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
