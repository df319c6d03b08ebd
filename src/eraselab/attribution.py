"""Neuron attribution: which UNet neurons a concept drives, which erasure silences, which attacks revive.

A *neuron* is one channel of a hooked activation in a transformer block of the UNet:

- ``ffn``: a hidden unit of the feed-forward network, i.e. one input column of
  ``ff.net.2`` (the GEGLU output; ConceptPrune's and 2405.16534's site);
- ``to_q`` / ``to_k`` / ``to_v``: one output channel of a cross-attention projection.

``Recorder`` hooks every such site and accumulates, per recorded denoising step,
the mean |activation| of each channel (over tokens and images) and the squared
column norms of the L2-normalised token rows (the Wanda statistic pruning uses).
``record`` runs classifier-free-guided DDIM from each row's own seed and records
only the conditional UNet pass, at the first ``record_steps`` steps (each model
on its own trajectory, as in generation).

For an erased variant under an attack (2405.16534's analysis), per neuron:

    rho   = E[|z_base(concept)|]  - E[|z_erased(concept)|]     (deactivated by erasure)
    delta = E[|z_erased(adversarial)|] - E[|z_erased(concept)|]  (re-activated by the attack)

over the attacked rows of the target's prompt set. ``summarise`` gives the
Spearman correlation of rho and delta and the share of the top-k rho neurons
whose delta is positive (against the same share over all neurons).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

# site -> (module name suffix, which tensor: the module's input or its output)
SITES = {"ffn": ("ff.net.2", "input"), "to_q": ("attn2.to_q", "output"),
         "to_k": ("attn2.to_k", "output"), "to_v": ("attn2.to_v", "output")}


def hook_points(unet: torch.nn.Module, sites: Sequence[str]) -> list[tuple[str, str, torch.nn.Module]]:
    """(module name, site, module) for every hooked module, in model order."""
    unknown = sorted(set(sites) - set(SITES))
    if unknown:
        raise ValueError(f"unknown attribution site(s) {unknown}; allowed: {', '.join(SITES)}")
    points = [(name, site, module) for name, module in unet.named_modules()
              for site in sites if name.endswith("." + SITES[site][0])]
    if not points:
        raise ValueError(f"sites {list(sites)} match no module of this UNet")
    return points


class Recorder:
    """Per-channel activation statistics of hooked modules, per recorded step (``step`` None: paused)."""

    def __init__(self, points: list[tuple[str, str, torch.nn.Module]]):
        self.points = points
        self.step: int | None = None
        self.abs_sum: dict[tuple[str, int], torch.Tensor] = {}
        self.sq_sum: dict[tuple[str, int], torch.Tensor] = {}
        self.rows: dict[tuple[str, int], int] = {}
        self._handles: list = []

    def __enter__(self) -> "Recorder":
        for name, site, module in self.points:
            if SITES.get(site, (None, site))[1] == "input":   # site "input": any module's input
                h = module.register_forward_pre_hook(lambda m, args, name=name: self._add(name, args[0]))
            else:
                h = module.register_forward_hook(lambda m, args, out, name=name: self._add(name, out))
            self._handles.append(h)
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _add(self, name: str, x: torch.Tensor) -> None:
        if self.step is None:
            return
        x = x.detach().float().reshape(-1, x.shape[-1])
        key = (name, self.step)
        normed = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)  # ConceptPrune: unit token rows
        for store, value in ((self.abs_sum, x.abs().sum(0)), (self.sq_sum, normed.pow(2).sum(0))):
            store[key] = store[key] + value if key in store else value
        self.rows[key] = self.rows.get(key, 0) + x.shape[0]

    def steps(self) -> list[int]:
        return sorted({s for _, s in self.rows})

    def mean_abs(self) -> dict[str, torch.Tensor]:
        """Mean |activation| of each channel over every recorded row and step."""
        out = {}
        for name, _, _ in self.points:
            keys = [(name, s) for s in self.steps() if (name, s) in self.rows]
            out[name] = sum(self.abs_sum[k] for k in keys) / sum(self.rows[k] for k in keys)
        return out

    def column_norms(self, step: int) -> dict[str, torch.Tensor]:
        """||X_j||_2 of each channel at one step, over the unit-normalised token rows (Wanda's X)."""
        return {name: self.sq_sum[(name, step)].sqrt() for name, _, _ in self.points if (name, step) in self.sq_sum}


@contextlib.contextmanager
def recording(unet, sites: Sequence[str] = (), points=None):
    with Recorder(points if points is not None else hook_points(unet, sites)) as rec:
        yield rec


@torch.no_grad()
def encode_prompts(pipe, prompts: list[str]) -> torch.Tensor:
    """Text-encoder hidden states as the pipeline conditions the UNet (as erase.common's; not imported
    from there so that this stage's code does not include every erasure method)."""
    embeds, _ = pipe.encode_prompt(prompts, device=pipe.device, num_images_per_prompt=1,
                                   do_classifier_free_guidance=False)
    return embeds


@torch.no_grad()
def record(pipe, recorder: Recorder, cond: torch.Tensor, seeds: Sequence[int], guidances: Sequence[float],
           steps: int, record_steps: int | None, batch_size: int) -> None:
    """Guided DDIM from each row's seed (row i conditioned on cond[i]); record the conditional pass.

    Only the first ``record_steps`` denoising steps are run (all ``steps`` when None).
    """
    from diffusers import DDIMScheduler
    uncond = encode_prompts(pipe, [""])
    n_run = steps if record_steps is None else min(record_steps, steps)
    shape = (1, pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    for start in range(0, len(seeds), batch_size):
        rows = range(start, min(start + batch_size, len(seeds)))
        sched = DDIMScheduler.from_config(pipe.scheduler.config)
        sched.set_timesteps(steps, device=pipe.device)
        x = torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(int(seeds[i])))
                       for i in rows]).to(pipe.device) * sched.init_noise_sigma
        c = cond[rows.start:rows.stop].to(pipe.device, pipe.unet.dtype)
        g = torch.tensor([float(guidances[i]) for i in rows], device=pipe.device).view(-1, 1, 1, 1)
        for k, t in enumerate(sched.timesteps[:n_run]):
            e_u = pipe.unet(x, t, uncond.expand(len(rows), -1, -1)).sample
            recorder.step = k
            try:
                e_c = pipe.unet(x, t, c).sample
            finally:
                recorder.step = None
            x = sched.step(e_u + g * (e_c - e_u), t, x).prev_sample


def activations(pipe, sites: Sequence[str], cond: torch.Tensor, seeds, guidances, p: dict) -> dict[str, torch.Tensor]:
    """Mean |activation| per channel of every site, over the rows and recorded steps."""
    with recording(pipe.unet, sites) as rec:
        record(pipe, rec, cond, seeds, guidances, p["steps"], p["record_steps"], p["batch_size"])
        return rec.mean_abs()


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

    from .artifacts import atomic_path
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
    from .artifacts import atomic_path
    with atomic_path(out) as tmp:
        table.to_parquet(tmp, index=False)


# --- stages ---------------------------------------------------------------------------------------

def concept_pairs(pairs_csv: str | Path, max_prompts: int | None) -> pd.DataFrame:
    """Concept prompts and their matched neutral prompts (columns prompt, prompt_without)."""
    frame = pd.read_csv(pairs_csv, keep_default_na=False)
    missing = {"prompt", "prompt_without"} - set(frame.columns)
    if missing:
        raise ValueError(f"{pairs_csv}: needs columns prompt, prompt_without (missing {sorted(missing)})")
    return frame.head(max_prompts) if max_prompts else frame


def run_base(base, pairs_csv, out, spec: dict) -> None:
    """The base model's activations on a concept's prompts and on their matched neutral prompts.

    Writes ``out`` (parquet: layer, site, neuron, concept, neutral, difference) and its ``.json``.
    """
    from .artifacts import write_json
    from .models import load_pipeline
    from .runtime import stage
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
    from .artifacts import write_json
    from .attacks.common import conditioning
    from .attacks.stage import load_adversarial
    from .delta import apply_delta
    from .models import load_pipeline
    from .runtime import stage
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
