"""The erase stage: base model + concept + method -> delta (changed tensors + metadata)."""
from __future__ import annotations

from pathlib import Path

from ..checkpoint import Checkpointer, checkpoint_dir_for
from ..delta import save_delta
from ..models import load_pipeline
from ..runtime import progress, stage
from . import ALGORITHMS
from .common import Concept
from .validation import Validator


def run(base: str | Path, out: str | Path, spec: dict) -> None:
    """spec: {"method": {algorithm, ...}, "method_name": str, "concept": {...}, "seed": int}.

    Methods that select among their states on a validation set (RECE) also get
    ``spec["validation"]``: {prompts, detector, generation}; see plan.erase_spec.
    """
    method, seed = spec["method"], spec["seed"]
    concept = Concept.from_config(spec["concept"]["name"], spec["concept"])
    with stage("erase", spec, seed) as run_info:
        pipe = load_pipeline(base)
        ckpt = Checkpointer(checkpoint_dir_for(out), spec, method.get("checkpoint_every", 100))
        bar = progress(method.get("iterations"), f"erase {concept.name} with {spec['method_name']}")
        validator = Validator.from_spec(spec.get("validation"), base)
        extra = {"validator": validator} if validator is not None else {}
        tensors, record = ALGORITHMS[method["algorithm"]](pipe, concept, method, seed, progress=bar, ckpt=ckpt,
                                                          **extra)
        bar.close()
        save_delta(out, tensors, {**run_info.record(), "base": str(base), **record,
                                  "resumed_from_step": ckpt.resumed_from})
        ckpt.clear()
