"""Attacks on erased models. Each is ``attack(pipe, inputs, params, seed, progress, ckpt) -> (AdversarialSet, record)``.

Like erasure methods, attacks work on a diffusers ``StableDiffusionPipeline``
(the erased model: base + delta) and nothing else. Two facts about each attack
shape the DAG, so they live here without importing torch (the Snakefile reads them):
- ``LEVEL``: ``variant`` attacks read the erased UNet and run once per erased
  model; ``text_encoder`` attacks (Ring-A-Bell) read only the text encoder and
  run once per base model and target, reused by every erased variant that left
  the text encoder unchanged;
- ``NEEDS``: what an attack reads besides the model (the base model's reference
  images, the concept's detector for early stopping, paired prompts).
"""
from __future__ import annotations

from typing import Callable

LEVEL = {"unlearndiff": "variant", "ringabell": "text_encoder", "concept_inversion": "variant"}
NEEDS = {"unlearndiff": {"reference", "detector"}, "ringabell": {"pairs"}, "concept_inversion": {"reference"}}


def algorithms() -> dict[str, Callable]:
    """name -> attack function (imported on use: they need torch)."""
    from .concept_inversion import concept_inversion
    from .ringabell import ringabell
    from .unlearndiff import unlearndiff
    return {"unlearndiff": unlearndiff, "ringabell": ringabell, "concept_inversion": concept_inversion}


def __getattr__(name: str):
    if name == "ALGORITHMS":  # the registry, as in eraselab.erase
        return algorithms()
    if name in ("AdversarialSet", "AttackInputs"):
        from . import common
        return getattr(common, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ALGORITHMS", "LEVEL", "NEEDS", "AdversarialSet", "AttackInputs", "algorithms"]
