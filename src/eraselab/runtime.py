"""What every stage does around its work: seeding, timing, memory, progress, provenance."""
from __future__ import annotations

import contextlib
import os
import platform
import random
import resource
import sys
import time
from importlib import metadata
from typing import Any, Iterator


class DivergenceError(RuntimeError):
    """An optimisation produced a NaN or infinite loss; nothing is saved."""


TRACKED_PACKAGES = ("eraselab", "torch", "diffusers", "transformers", "open_clip_torch", "nudenet",
                    "numpy", "safetensors")


def versions() -> dict[str, str | None]:
    """Installed versions of the packages whose changes can move results."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in TRACKED_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch. Per-step randomness should still use explicit generators."""
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_gpu_mb() -> float | None:
    import torch
    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def device() -> str:
    """The device to compute on: CUDA when present, else CPU. ERASELAB_DEVICE overrides."""
    import torch
    return os.environ.get("ERASELAB_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


def quiet_libraries() -> None:
    """Keep stage logs readable: no loading bars or info chatter from diffusers and transformers."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog
    for lib in (dlog, tlog):
        lib.set_verbosity_error()
        lib.disable_progress_bar()


def progress(total: int | None, desc: str, **kw):
    """A tqdm bar that also reads well in a Snakemake log file (fewer, line-based updates)."""
    from tqdm.auto import tqdm
    tty = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=tty, ascii=not tty,
                mininterval=0.5 if tty else 15.0, **kw)


def check_finite(loss, what: str, step: int, fix: str = "lower the learning rate") -> None:
    """Stop an optimisation whose loss is NaN or infinite, before anything is saved."""
    if not bool(loss.isfinite().all()):
        raise DivergenceError(f"{what} diverged at step {step}: loss is {loss.detach().flatten()[0].item()}; "
                              f"{fix} (nothing was saved)")


# The fingerprint of the code a job runs (plan.job_code), handed over by the rule: `eraselab --code`.
CODE_ENV = "ERASELAB_CODE"


class Run:
    """Times a stage and collects its provenance; ``record()`` is written beside each artifact."""

    def __init__(self, stage: str, params: dict[str, Any] | None = None, seed: int | None = None):
        self.stage, self.params, self.seed = stage, params or {}, seed
        self.start = time.perf_counter()
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.extra: dict[str, Any] = {}

    def record(self) -> dict[str, Any]:
        import torch
        return {"stage": self.stage, "params": self.params, "seed": self.seed,
                "versions": versions(), "started_at": self.started_at,
                "wall_time_s": round(time.perf_counter() - self.start, 3),
                "peak_rss_mb": round(peak_rss_mb(), 1), "peak_gpu_mb": peak_gpu_mb(),
                "device": device(), "torch_threads": torch.get_num_threads(),
                "host": platform.node(), "code": os.environ.get(CODE_ENV), **self.extra}

    def done(self) -> None:
        """The timing line every long stage ends its log with."""
        print(f"[{self.stage}] done in {time.perf_counter() - self.start:.1f} s, "
              f"peak RSS {peak_rss_mb():.0f} MB", file=sys.stderr, flush=True)


@contextlib.contextmanager
def stage(name: str, params: dict[str, Any] | None = None, seed: int | None = None) -> Iterator[Run]:
    """Seed, run, and print the closing timing line of a stage."""
    if seed is not None:
        seed_everything(seed)
    run = Run(name, params, seed)
    yield run
    run.done()
