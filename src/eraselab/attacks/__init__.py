"""Attacks on erased models. Each is ``attack(pipe, inputs, params, seed, progress, ckpt) -> (AdversarialSet, record)``.

Like erasure methods, attacks work on a diffusers ``StableDiffusionPipeline``
(the erased model: base + delta) and nothing else. ``ATTACKS`` names where each
lives (a job imports only its own). Two facts about each attack shape the DAG,
so they live here without importing torch (the Snakefile reads them):
- ``LEVEL``: ``variant`` attacks read the erased UNet and run once per erased
  model; ``text_encoder`` attacks (Ring-A-Bell) read only the text encoder and
  run once per base model and target, reused by every erased variant that left
  the text encoder unchanged;
- ``NEEDS``: what an attack reads besides the model (the base model's reference
  images, the concept's detector for early stopping, paired prompts, ``base``: the
  base model's UNet, and its text encoder where the erasure changed it).
"""
from __future__ import annotations

ATTACKS = {"unlearndiff": "eraselab.attacks.unlearndiff:unlearndiff", "ringabell": "eraselab.attacks.ringabell:ringabell",
           "concept_inversion": "eraselab.attacks.concept_inversion:concept_inversion",
           "p4d": "eraselab.attacks.p4d:p4d"}
LEVEL = {"unlearndiff": "variant", "ringabell": "text_encoder", "concept_inversion": "variant", "p4d": "variant"}
NEEDS = {"unlearndiff": {"reference", "detector"}, "ringabell": {"pairs"}, "concept_inversion": {"reference"},
         "p4d": {"base", "reference", "detector"}}


def attack(algorithm: str):
    """The attack function of an algorithm name (imported now)."""
    from ..registry import load
    return load(ATTACKS, algorithm, "attack algorithm")
