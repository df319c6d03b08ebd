"""Attribution-guided pruning: switch off the neurons the base model's attribution table ranks highest.

A neuron is ranked by how much more the concept's prompts drive it than their
matched neutral prompts (``difference``, or ``ratio`` = concept / neutral). The
top ``ratio`` fraction of each site's neurons is pruned: an FFN hidden unit by
zeroing its column of ``ff.net.2`` (nothing reads it any more), a
cross-attention projection's channel by zeroing its row of the projection.
"""
from __future__ import annotations

import pandas as pd
import torch

from .masks import Mask


def neuron_scores(table: pd.DataFrame, score: str) -> pd.Series:
    if score == "difference":
        return table["concept"] - table["neutral"]
    return table["concept"] / table["neutral"].clip(lower=1e-12)


def top_neurons(table: pd.DataFrame, sites: list[str], ratio: float, score: str) -> pd.DataFrame:
    """The top ``ratio`` of each site's neurons (at least one) by score."""
    t = table[table["site"].isin(sites)].assign(score=lambda f: neuron_scores(f, score))
    missing = sorted(set(sites) - set(t["site"]))
    if missing:
        raise ValueError(f"the attribution table has no neurons of site(s) {missing}; add them to attribution.sites")
    return pd.concat([g.nlargest(max(1, round(ratio * len(g))), "score") for _, g in t.groupby("site", sort=False)])


def neuron_mask(unet, neurons: pd.DataFrame) -> Mask:
    """Weight entries that switch the given neurons off."""
    named = dict(unet.named_parameters())
    pruned: dict[str, torch.Tensor] = {}
    for (layer, site), g in neurons.groupby(["layer", "site"], sort=False):
        name = f"{layer}.weight"
        b = pruned.setdefault(name, torch.zeros_like(named[name], dtype=torch.bool))
        idx = torch.tensor(g["neuron"].tolist(), dtype=torch.long)
        if site == "ffn":
            b[:, idx] = True     # an input column of ff.net.2
        else:
            b[idx, :] = True     # an output row of the projection
    return Mask.from_bool(pruned)


def prune(pipe, spec: dict, pairs=None, attribution=None):
    """The prune stage's ``attribution`` kind: the top neurons of the base model's attribution table."""
    p = spec["pruning"]
    neurons = top_neurons(pd.read_parquet(attribution), p["sites"], p["ratio"], p["score"])
    return neuron_mask(pipe.unet, neurons), {
        "attribution": str(attribution), "neurons": {s: int(n) for s, n in neurons["site"].value_counts().items()}}
