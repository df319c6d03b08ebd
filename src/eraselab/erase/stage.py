"""The erase stage: base model + concept + method -> delta (changed tensors + metadata)."""
from __future__ import annotations

from pathlib import Path

from ..checkpoint import Checkpointer, checkpoint_dir_for
from ..delta import save_delta
from ..models import load_pipeline
from ..prune.masks import apply_mask, load_mask, masked_tensors
from ..runtime import progress, stage
from . import method as erasure_method
from .common import Concept


def run(base: str | Path, out: str | Path, spec: dict, mask: str | Path | None = None) -> None:
    """spec: {"method": {algorithm, ...}, "method_name": str, "concept": {...}, "seed": int}.

    With a pruning ``mask`` (prune/masks.py), the masked weights are zeroed first, the method
    keeps them at zero, and the delta holds them too: base + delta is the pruned, erased model.

    Methods that select among their states on a validation set (RECE) also get
    ``validation``: {prompts, detector, generation} (plan.erase_spec), and the base model's directory.
    """
    method, seed = spec["method"], spec["seed"]
    concept = Concept.from_config(spec["concept"]["name"], spec["concept"])
    extra: dict = {}
    with stage("erase", spec, seed) as run_info:
        pipe = load_pipeline(base)
        pruning = load_mask(mask)[0] if mask else None
        if pruning is not None:
            apply_mask(pipe, pruning)
            extra["masks"] = pruning.keep(pipe.device)
        ckpt = Checkpointer(checkpoint_dir_for(out), spec, method.get("checkpoint_every", 100))
        bar = progress(method.get("iterations"), f"erase {concept.name} with {spec['method_name']}")
        if "validation" in spec:
            extra.update(validation=spec["validation"], model_dir=base)
        tensors, record = erasure_method(method["algorithm"])(pipe, concept, method, seed, progress=bar,
                                                              ckpt=ckpt, **extra)
        bar.close()
        if pruning is not None:   # whatever the method did, pruned weights stay zero
            apply_mask(pipe, pruning)
            tensors = {**masked_tensors(pipe, pruning), **_masked(tensors, pruning)}
            record = {**record, "mask": {"path": str(mask), "pruned": pruning.count()}}
        save_delta(out, tensors, {**run_info.record(), "base": str(base), **record,
                                  "resumed_from_step": ckpt.resumed_from})
        ckpt.clear()


def _masked(tensors: dict, mask) -> dict:
    """The method's tensors with the mask's entries zeroed (closed-form edits may write them)."""
    out = dict(tensors)
    for name, idx in mask.indices.items():
        key = "unet." + name
        if key in out:
            out[key] = out[key].clone()
            out[key].view(-1)[idx.to(out[key].device)] = 0
    return out
