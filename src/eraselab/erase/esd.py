"""ESD: Erasing Concepts from Diffusion Models (Gandikota et al., ICCV 2023, arXiv 2303.07345).

The fine-tuned UNet's conditional prediction for the concept c is pulled to a
negatively guided target from a frozen copy:

    eps_theta(x_t, c, t)  <-  eps*(x_t, c_from, t) - eta * (eps*(x_t, c, t) - eps*(x_t, "", t))

with c_from = "" in plain ESD (the target is then eps*("") - eta * guidance), or
another prompt in the erase-from variant. Which parameters are trained decides
the flavour: ESD-x (cross-attention), ESD-u (everything else), ESD-x-strict.

Two ways to draw x_t (``sampling``):
- ``ddim`` (the paper's code): partial DDIM from fresh noise, guided by c at
  ``start_guidance``, with the model being fine-tuned, stopping at a random
  step t_enc; the UNet is then queried at a DDPM timestep drawn from the bin of
  t_enc (the CompVis script's mapping, reproduced as is).
- ``frozen`` (fast): a few trajectories of the frozen model are computed once,
  with the frozen targets at every state, and each iteration trains on random
  (trajectory, step) states. Only the trained UNet runs per iteration.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..checkpoint import Checkpointer
from .common import Concept, check_finite, encode_prompts, select_parameters


def _ddim(pipe, steps: int):
    from diffusers import DDIMScheduler
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps, device=pipe.device)
    return sched


def _latent_shape(pipe, batch: int) -> tuple[int, ...]:
    c, s = pipe.unet.config.in_channels, pipe.unet.config.sample_size
    return (batch, c, s, s)


@torch.no_grad()
def _guided_eps(unet, x, t, cond, uncond, guidance: float) -> torch.Tensor:
    b = x.shape[0]
    eps = unet(torch.cat([x, x]), t, torch.cat([uncond.expand(b, -1, -1), cond.expand(b, -1, -1)])).sample
    e_u, e_c = eps.chunk(2)
    return e_u + guidance * (e_c - e_u)


@torch.no_grad()
def _denoise(unet, sched, x, cond, uncond, guidance: float, n_steps: int) -> torch.Tensor:
    """Run the first n_steps of the DDIM schedule from x (classifier-free guided)."""
    for t in sched.timesteps[:n_steps]:
        x = sched.step(_guided_eps(unet, x, t, cond, uncond, guidance), t, x).prev_sample
    return x


def _teacher(frozen, x, t, cond, uncond, cond_from, eta: float) -> torch.Tensor:
    """The negatively guided target of ESD, from the frozen UNet."""
    with torch.no_grad():
        b = x.shape[0]
        conds = [uncond, cond] + ([cond_from] if cond_from is not None else [])
        eps = frozen(torch.cat([x] * len(conds)), t.repeat(len(conds)) if t.ndim else t,
                     torch.cat([c.expand(b, -1, -1) for c in conds])).sample.chunk(len(conds))
        e_0, e_p = eps[0], eps[1]
        e_from = eps[2] if cond_from is not None else e_0
        return e_from - eta * (e_p - e_0)


class _FrozenTrajectories:
    """States x_k of frozen-model DDIM trajectories, with ESD's frozen targets at each state."""

    def __init__(self, pipe, frozen, sched, prompts, uncond, cond_from, p: dict, seed: int):
        n, m = p["ddim_steps"], p["cache_trajectories"]
        self.states, self.targets, self.timesteps = [], [], sched.timesteps
        g = torch.Generator().manual_seed(seed)
        for cond in prompts:
            x = torch.randn(_latent_shape(pipe, m), generator=g).to(pipe.device) * sched.init_noise_sigma
            xs, ys = [], []
            for t in sched.timesteps:
                xs.append(x)
                ys.append(_teacher(frozen, x, t.expand(m), cond, uncond, cond_from, p["negative_guidance"]))
                x = sched.step(_guided_eps(frozen, x, t, cond, uncond, p["start_guidance"]), t, x).prev_sample
            self.states.append(torch.stack(xs, 1))   # M x N x C x H x W
            self.targets.append(torch.stack(ys, 1))
        self.n_steps = n

    def draw(self, prompt_idx: int, batch: int, g: torch.Generator):
        m = self.states[prompt_idx].shape[0]
        traj = torch.randint(m, (batch,), generator=g)
        k = torch.randint(self.n_steps, (batch,), generator=g)
        return (self.states[prompt_idx][traj, k], self.timesteps[k],
                self.targets[prompt_idx][traj, k])


def esd(pipe, concept: Concept, params: dict, seed: int, progress=None,
        ckpt: Checkpointer | None = None, masks: dict[str, torch.Tensor] | None = None
        ) -> tuple[dict[str, torch.Tensor], dict]:
    """Fine-tune pipe.unet in place to erase the concept.

    Returns the changed tensors (``unet.*``) and a record with the loss curve.

    ``masks`` (name -> 0/1 tensor) keep pruned weights at zero throughout.
    """
    p = params
    unet = pipe.unet
    frozen = copy.deepcopy(unet).requires_grad_(False).eval()
    names = select_parameters(unet, p["train"])
    unet.requires_grad_(False)
    named = dict(unet.named_parameters())
    trainable = [named[n].requires_grad_(True) for n in names]
    opt = torch.optim.Adam(trainable, lr=p["lr"])
    unet.train()

    erase_prompts = list(concept.erase)
    conds = list(encode_prompts(pipe, erase_prompts).split(1))
    uncond = encode_prompts(pipe, [""])
    cond_from = encode_prompts(pipe, [p["erase_from"]]) if p.get("erase_from") else None
    sched = _ddim(pipe, p["ddim_steps"])
    cache = (_FrozenTrajectories(pipe, frozen, sched, conds, uncond, cond_from, p, seed)
             if p["sampling"] == "frozen" else None)

    start, losses = 0, []
    if ckpt is not None and (state := ckpt.load()) is not None:
        with torch.no_grad():
            for n in names:
                named[n].copy_(state["params"][n])
        opt.load_state_dict(state["opt"])
        start, losses = state["step"], state["losses"]

    b, n_ddim, t_max = p["batch_size"], p["ddim_steps"], pipe.scheduler.config.num_train_timesteps
    for it in range(start, p["iterations"]):
        g = torch.Generator().manual_seed(seed * 1_000_003 + it)
        which = int(torch.randint(len(conds), (1,), generator=g))
        if cache is not None:
            x_t, t, target = cache.draw(which, b, g)
        else:  # the paper's on-policy partial DDIM, with the model being trained
            t_enc = int(torch.randint(n_ddim, (1,), generator=g))
            x = torch.randn(_latent_shape(pipe, b), generator=g).to(pipe.device) * sched.init_noise_sigma
            unet.eval()
            x_t = _denoise(unet, sched, x, conds[which], uncond, p["start_guidance"],
                           min(n_ddim, n_ddim + 1 - t_enc))
            unet.train()
            lo, hi = round(t_enc / n_ddim * t_max), round((t_enc + 1) / n_ddim * t_max)
            t = torch.randint(lo, hi, (b,), generator=g).to(pipe.device)
            target = _teacher(frozen, x_t, t, conds[which], uncond, cond_from, p["negative_guidance"])
        train_cond = cond_from if cond_from is not None else conds[which]
        pred = unet(x_t, t, train_cond.expand(b, -1, -1)).sample
        loss = nn.functional.mse_loss(pred, target)
        check_finite(loss, "ESD", it)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if masks:
            with torch.no_grad():
                for n in names:
                    if n in masks:
                        named[n].mul_(masks[n])
        losses.append(loss.item())
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.4f}")
        if ckpt is not None and ckpt.due(it + 1) and it + 1 < p["iterations"]:
            ckpt.save(it + 1, {"params": {n: named[n].detach().clone() for n in names},
                               "opt": opt.state_dict(), "losses": losses})
    unet.eval().requires_grad_(False)
    return {f"unet.{n}": named[n].detach().clone() for n in names}, {"losses": losses}
