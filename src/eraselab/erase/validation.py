"""Validation inside an erase stage: how often a concept still appears on a held-out prompt set.

RECE keeps the epoch whose model shows its concept least on a validation prompt
set, which must not be the evaluation set (ConceptWorld ships validation sets
drawn with another seed, data/prompts/conceptworld/validation/). The erase
stage builds a ``Validator`` from the spec ``plan.erase_spec`` gives it.
"""
from __future__ import annotations

from pathlib import Path

import torch


class Validator:
    """``validator(pipe) -> rate``: generate the validation prompts with pipe, detect the concept."""

    def __init__(self, prompts: str | Path, detector: dict, model_dir: str | Path, generation: dict):
        from ..prompts import load_prompts
        from ..score import make_detector
        self.prompts = load_prompts(prompts, generation["guidance"])
        self.detector = make_detector(detector, model_dir)
        self.generation = generation

    def __call__(self, pipe, prompt_embeds: torch.Tensor | None = None) -> float:
        """The detection rate; with ``prompt_embeds`` (1 x 77 x d or one per row), they replace the prompts."""
        from ..generate import generate_images, set_scheduler
        g, ps = self.generation, self.prompts
        if prompt_embeds is not None and len(prompt_embeds) == 1:
            prompt_embeds = prompt_embeds.expand(len(ps), -1, -1)
        scheduler = pipe.scheduler
        set_scheduler(pipe, g["scheduler"])
        try:
            images = generate_images(pipe, ps.prompts, ps.seeds, ps.guidances, g["steps"], g["batch_size"],
                                     prompt_embeds=prompt_embeds)
        finally:
            pipe.scheduler = scheduler
        return float(self.detector(images)["detected"].mean())

    @classmethod
    def from_spec(cls, spec: dict | None, model_dir: str | Path) -> "Validator | None":
        """spec: {prompts, detector, generation} from plan.erase_spec, or None (no validation set)."""
        if not spec:
            return None
        return cls(spec["prompts"], spec["detector"], model_dir, spec["generation"])
