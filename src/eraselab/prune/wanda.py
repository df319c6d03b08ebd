"""ConceptPrune (Chavhan et al., 2405.19237): training-free Wanda-style pruning of "skilled" weights.

For a linear layer W (out x in) with input X, the Wanda score of weight (i, j)
is S_ij = |W_ij| * ||X_j||_2, X's token rows unit-normalised and its column
norms accumulated over prompts and both halves of the classifier-free-guidance
batch (ConceptPrune's hook sees the unconditional and the conditional pass),
separately per denoising step. A weight is *skilled* at a step when it is among
the top k = int(ratio * in_features) of its row (truncated, as the official
code; k = 0 selects nothing) by the concept prompts' score, and its concept score exceeds its score on
the matched neutral prompts. The mask is the union of the skilled weights over
the first ``timesteps`` denoising steps.
"""
from __future__ import annotations

import torch

from ..attribute.hooks import Recorder, record
from ..models import encode_prompts
from ..prompts import concept_pairs
from .masks import Mask, linear_layers

def top_k_per_row(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k largest entries of each row (ties: the lower column index)."""
    out = torch.zeros_like(scores, dtype=torch.bool)
    out.scatter_(1, scores.topk(k, dim=1, sorted=False).indices, True)
    return out


def skilled(weight: torch.Tensor, norm_concept: torch.Tensor, norm_neutral: torch.Tensor, ratio: float) -> torch.Tensor:
    """Weights in their row's top k by concept score that score higher on the concept than on neutral."""
    w = weight.detach().abs().float()
    s_concept, s_neutral = w * norm_concept[None, :], w * norm_neutral[None, :]
    k = int(ratio * w.shape[1])   # the official code truncates
    return top_k_per_row(s_concept, k) & (s_concept > s_neutral)


def column_norms(pipe, layers, cond, seeds, guidances, p: dict) -> dict[int, dict[str, torch.Tensor]]:
    """step -> layer name -> ||X_j||_2 of the layer's input, over the prompts' guided passes (both halves)."""
    with Recorder([(n, "input", m) for n, m in layers]) as rec:
        record(pipe, rec, cond, seeds, guidances, p["steps"], p["timesteps"], p["batch_size"], unconditional=True)
        return {s: rec.column_norms(s) for s in rec.steps()}


def wanda_mask(pipe, concept_cond, neutral_cond, seeds, guidances, p: dict) -> tuple[Mask, dict]:
    layers = linear_layers(pipe.unet, p["parameters"])
    concept = column_norms(pipe, layers, concept_cond, seeds, guidances, p)
    neutral = column_norms(pipe, layers, neutral_cond, seeds, guidances, p)
    pruned = {f"{n}.weight": torch.zeros_like(m.weight, dtype=torch.bool) for n, m in layers}
    per_step = []
    for step in sorted(concept):
        new = 0
        for n, m in layers:
            s = skilled(m.weight, concept[step][n], neutral[step][n], p["ratio"])
            new += int((s & ~pruned[f"{n}.weight"]).sum())
            pruned[f"{n}.weight"] |= s
        per_step.append(new)
    return Mask.from_bool(pruned), {"new_weights_per_step": per_step, "layers": [n for n, _ in layers]}


def prune(pipe, spec: dict, pairs=None, attribution=None):
    """The prune stage's ``wanda`` kind: a mask from the concept's prompts and their matched neutral ones."""
    p = spec["pruning"]
    frame = concept_pairs(pairs, p["max_prompts"])
    seeds = [spec["seed"] * 100_003 + i for i in range(len(frame))]
    guid = [spec["guidance"]] * len(frame)
    mask, record = wanda_mask(pipe, encode_prompts(pipe, frame["prompt"].tolist()),
                              encode_prompts(pipe, frame["prompt_without"].tolist()), seeds, guid, p)
    return mask, {**record, "pairs": str(pairs), "prompts": len(frame)}
