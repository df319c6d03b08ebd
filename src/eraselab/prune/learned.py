"""A learned pruning mask trained with an erasure objective: P-ESD (2405.16534), RECONSTRUCTED.

The paper learns a parameter-level mask that switches off critical weights by
optimising ESD's loss; its parameterisation, ratio and schedule are unpublished
(methods.md section 4.1). Here, per pruned weight matrix W, a score s per
weight (initialised at 0) parametrises

    W_eff = W * (1 - h),   h = 1[s among the top `ratio` of the matrix's scores, and s > 0]

with a straight-through estimator (dh/ds = 1), so s rises for the weights
whose removal lowers the loss. The weights stay frozen; only the scores train,
with ESD's loss on the shared fine-tuning loop (erase/finetune.py), so at step 0
the model is unpruned and the frozen teacher (a copy made before any step)
stays unpruned. The mask is the final h.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from .masks import Mask, linear_layers


class ScoredMask(nn.Module):
    """A parametrization W -> W * (1 - h(s)), hard in the forward pass, straight-through backward."""

    def __init__(self, shape: torch.Size, ratio: float):
        super().__init__()
        self.scores = nn.Parameter(torch.zeros(shape))
        self.ratio = ratio

    def hard(self) -> torch.Tensor:
        s = self.scores.detach().flatten()
        k = max(1, round(self.ratio * s.numel()))
        threshold = s.kthvalue(s.numel() - k + 1).values
        return ((self.scores.detach() >= threshold) & (self.scores.detach() > 0)).to(self.scores.dtype)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        h = self.hard() + self.scores - self.scores.detach()
        return weight * (1 - h)


def learned_mask(pipe, concept, p: dict, seed: int, progress=None) -> tuple[Mask, dict]:
    """Train the scores with ESD's objective (``p["objective"]``), then read off the hard mask."""
    from ..erase.esd import esd
    layers = linear_layers(pipe.unet, p["parameters"])
    for _, module in layers:
        parametrize.register_parametrization(module, "weight", ScoredMask(module.weight.shape, p["ratio"]))
    try:
        _, record = esd(pipe, concept, {**p["objective"], "train": "mask-scores"}, seed, progress=progress)
        pruned = {f"{n}.weight": m.parametrizations.weight[0].hard().bool() for n, m in layers}
    finally:
        for _, module in layers:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
    return Mask.from_bool(pruned), {"losses": record["losses"], "layers": [n for n, _ in layers]}


def prune(pipe, spec: dict, pairs=None, attribution=None):
    """The prune stage's ``learned`` kind (P-ESD): a mask trained on the concept's erase prompts."""
    from ..erase.common import Concept
    from ..runtime import progress
    p = spec["pruning"]
    concept = Concept.from_config(spec["concept"]["name"], spec["concept"])
    bar = progress(p["objective"]["iterations"], f"learn a mask for {concept.name} ({spec['pruning_name']})")
    mask, record = learned_mask(pipe, concept, p, spec["seed"], progress=bar)
    bar.close()
    return mask, record
