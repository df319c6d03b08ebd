"""The attribution stage: which UNet neurons a concept drives, which erasure silences, which attacks revive.

``run`` with ``pairs`` (rule attribute_base): the base model's activations on a
concept's prompts and on their matched neutral prompts. With ``delta`` and
``adversarial`` (rule attribute), for an erased variant under an attack
(2405.16534's analysis), per neuron (``hooks.py`` defines neurons and sites):

    rho   = E[|z_base(concept)|]  - E[|z_erased(concept)|]     (deactivated by erasure)
    delta = E[|z_erased(adversarial)|] - E[|z_erased(concept)|]  (re-activated by the attack)

over the attacked rows of the target's prompt set. ``summarise`` gives the
Spearman correlation of rho and delta and the share of the top-k rho neurons
whose delta is positive (against the same share over all neurons).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..artifacts import atomic_path, write_json
from ..adversarial import conditioning, load_adversarial
from ..delta import apply_delta
from ..models import encode_prompts, load_pipeline
from ..prompts import concept_pairs
from ..runtime import stage
from .hooks import activations, hook_points


def neuron_table(points, columns: dict[str, dict[str, torch.Tensor]]) -> pd.DataFrame:
    """One row per neuron: layer (module name), site, neuron (channel index), then one column per measure."""
    parts = []
    for name, site, _ in points:
        n = next(iter(columns.values()))[name].numel()
        part = {"layer": [name] * n, "site": [site] * n, "neuron": np.arange(n)}
        part.update({col: values[name].cpu().numpy() for col, values in columns.items()})
        parts.append(pd.DataFrame(part))
    return pd.concat(parts, ignore_index=True)


def spearman(a, b) -> float | None:
    """Spearman's rank correlation (average ranks for ties), without scipy; None when a side is constant."""
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def summarise(table: pd.DataFrame, top_k: float) -> dict:
    """Rank correlation of rho and delta, and how many of the most deactivated neurons re-activate.

    top_k: the fraction of neurons (per site) counted as "most deactivated" (largest rho).
    """
    out = {"neurons": len(table), "top_k_fraction": top_k, "sites": {}}

    def stats(t: pd.DataFrame) -> dict:
        k = max(1, round(top_k * len(t)))
        top = t.nlargest(k, "rho")
        return {"neurons": len(t), "top_k": k, "spearman_rho_delta": spearman(t["rho"], t["delta"]),
                "top_k_reactivated_share": float((top["delta"] > 0).mean()),
                "all_reactivated_share": float((t["delta"] > 0).mean()),
                "top_k_recovered_fraction": float(top["delta"].sum() / top["rho"].sum()) if top["rho"].sum() else None,
                "top_k_mean_rho": float(top["rho"].mean()), "top_k_mean_delta": float(top["delta"].mean())}

    for site, t in table.groupby("site", sort=False):
        out["sites"][site] = stats(t)
    out["all"] = stats(table.assign(rho=table.groupby("site")["rho"].transform(_unit),
                                    delta=table.groupby("site")["delta"].transform(_unit)))
    return out


def _unit(s: pd.Series) -> pd.Series:
    """Scale a site's values to unit mean |value| so sites of different magnitude can be pooled."""
    scale = s.abs().mean()
    return s / scale if scale else s


def plot(table: pd.DataFrame, summary: dict, out: str | Path, title: str) -> None:
    """rho against delta, one panel per site, the top-k rho neurons highlighted."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sites = list(summary["sites"])
    fig, axes = plt.subplots(1, len(sites), figsize=(3.6 * len(sites), 3.4), squeeze=False)
    for ax, site in zip(axes[0], sites):
        t, s = table[table["site"] == site], summary["sites"][site]
        top = t.nlargest(s["top_k"], "rho")
        ax.scatter(t["rho"], t["delta"], s=3, alpha=0.4, color="grey", label="all")
        ax.scatter(top["rho"], top["delta"], s=6, color="tab:red", label=f"top {s['top_k']} rho")
        ax.axhline(0, lw=0.5, color="k")
        ax.axvline(0, lw=0.5, color="k")
        corr = s["spearman_rho_delta"]
        ax.set_title(f"{site}: Spearman {'n/a' if corr is None else f'{corr:.2f}'}, "
                     f"{100 * s['top_k_reactivated_share']:.0f}% re-activate", fontsize=8)
        ax.set_xlabel("rho (base - erased, concept prompts)", fontsize=8)
        ax.set_ylabel("delta (adversarial - plain, erased)", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def write_table(table: pd.DataFrame, out: str | Path) -> None:
    with atomic_path(out) as tmp:
        table.to_parquet(tmp, index=False)


def run_base(base, pairs_csv, out, spec: dict) -> None:
    """The base model's activations on a concept's prompts and on their matched neutral prompts.

    Writes ``out`` (parquet: layer, site, neuron, concept, neutral, difference) and its ``.json``.
    """
    p = spec["attribution"]
    with stage("attribute", spec, spec["seed"]) as run_info:
        pipe = load_pipeline(base)
        pairs = concept_pairs(pairs_csv, p["max_prompts"])
        seeds = [spec["seed"] * 100_003 + i for i in range(len(pairs))]   # pair i: same noise for both prompts
        guid = [spec["guidance"]] * len(pairs)
        cols = {which: activations(pipe, p["sites"], encode_prompts(pipe, pairs[col].tolist()), seeds, guid, p)
                for which, col in (("concept", "prompt"), ("neutral", "prompt_without"))}
        table = neuron_table(hook_points(pipe.unet, p["sites"]), cols)
        table["difference"] = table["concept"] - table["neutral"]
        write_table(table, out)
        write_json(Path(out).with_suffix(".json"), {**run_info.record(), "prompts": len(pairs),
                                                    "pairs": str(pairs_csv), "neurons": len(table)})


def run_erased(base, delta, adversarial, out, spec: dict) -> None:
    """rho and delta of every neuron for one erased variant under one attack.

    Writes ``out`` (parquet), a ``.png`` scatter of rho against delta and a ``.json`` summary.
    """
    p = spec["attribution"]
    with stage("attribute", spec, spec["seed"]) as run_info:
        pipe = load_pipeline(base)
        adv, rows, _ = load_adversarial(adversarial)
        n = min(len(rows), p["max_prompts"] or len(rows))
        rows = rows.head(n)
        seeds, guid = rows["evaluation_seed"].tolist(), rows["evaluation_guidance"].tolist()
        plain = encode_prompts(pipe, rows["prompt"].tolist())
        cols = {"base_concept": activations(pipe, p["sites"], plain, seeds, guid, p)}
        apply_delta(pipe, delta)
        plain = encode_prompts(pipe, rows["prompt"].tolist())   # the erased text encoder, if it changed
        cols["erased_concept"] = activations(pipe, p["sites"], plain, seeds, guid, p)
        cols["erased_adversarial"] = activations(pipe, p["sites"], conditioning(pipe, adv)[:n], seeds, guid, p)
        table = neuron_table(hook_points(pipe.unet, p["sites"]), cols)
        table["rho"] = table["base_concept"] - table["erased_concept"]
        table["delta"] = table["erased_adversarial"] - table["erased_concept"]
        summary = summarise(table, p["top_k"])
        write_table(table, out)
        plot(table, summary, Path(out).with_suffix(".png"), f"{spec['variant']} under {spec['attack_name']}")
        write_json(Path(out).with_suffix(".json"), {**run_info.record(), **summary, "prompts": n,
                                                    "delta_path": str(delta), "adversarial": str(adversarial)})


def run(base, out, spec: dict, pairs=None, delta=None, adversarial=None) -> None:
    """The attribution stage: the base model on concept-vs-neutral pairs, or an erased variant under an attack."""
    if delta:
        run_erased(base, delta, adversarial, out, spec)
    else:
        run_base(base, pairs, out, spec)
