"""Activation hooks on the UNet's neurons, recorded along guided denoising (the attribution stage's, and
Wanda pruning's, measurement).

A *neuron* is one channel of a hooked activation in a transformer block of the UNet:

- ``ffn``: a hidden unit of the feed-forward network, i.e. one input column of
  ``ff.net.2`` (the GEGLU output; ConceptPrune's and 2405.16534's site);
- ``to_q`` / ``to_k`` / ``to_v``: one output channel of a cross-attention projection.

``Recorder`` hooks every such site and accumulates, per recorded denoising step,
the mean |activation| of each channel (over tokens and images) and the squared
column norms of the L2-normalised token rows (the Wanda statistic pruning uses).
``record`` runs classifier-free-guided DDIM from each row's own seed and records
the conditional UNet pass (and, with ``unconditional``, the unconditional one
too, as ConceptPrune's hook sees the whole guidance batch), at the first
``record_steps`` steps (each model on its own trajectory, as in generation).
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch

from ..models import encode_prompts

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

    @contextlib.contextmanager
    def at(self, step: int | None):
        """Record what runs inside under ``step`` (None: nothing), then pause."""
        self.step = step
        try:
            yield
        finally:
            self.step = None

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
def record(pipe, recorder: Recorder, cond: torch.Tensor, seeds: Sequence[int], guidances: Sequence[float],
           steps: int, record_steps: int | None, batch_size: int, unconditional: bool = False) -> None:
    """Guided DDIM from each row's seed (row i conditioned on cond[i]); record the conditional pass,
    and the unconditional one too when ``unconditional``.

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
            with recorder.at(k if unconditional else None):
                e_u = pipe.unet(x, t, uncond.expand(len(rows), -1, -1)).sample
            with recorder.at(k):
                e_c = pipe.unet(x, t, c).sample
            x = sched.step(e_u + g * (e_c - e_u), t, x).prev_sample


def activations(pipe, sites: Sequence[str], cond: torch.Tensor, seeds, guidances, p: dict) -> dict[str, torch.Tensor]:
    """Mean |activation| per channel of every site, over the rows and recorded steps."""
    with recording(pipe.unet, sites) as rec:
        record(pipe, rec, cond, seeds, guidances, p["steps"], p["record_steps"], p["batch_size"])
        return rec.mean_abs()
