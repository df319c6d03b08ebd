"""The prune stage: base model (+ attribution table, or paired prompts) -> mask.safetensors + mask.json."""
from __future__ import annotations

from ..models import load_pipeline
from ..registry import load
from ..runtime import stage
from . import KINDS
from .masks import save_mask


def run(base, out, spec: dict, pairs=None, attribution=None) -> None:
    """spec: {"pruning": {algorithm, ...}, "pruning_name", "concept": {"name"}, "seed", "guidance"}."""
    kind = load(KINDS, spec["pruning"]["algorithm"], "pruning algorithm")
    with stage("prune", spec, spec["seed"]) as run_info:
        pipe = load_pipeline(base)
        mask, record = kind(pipe, spec, pairs=pairs, attribution=attribution)
        save_mask(out, mask, {**run_info.record(), **record, **mask.summary(pipe.unet), "base": str(base)})
