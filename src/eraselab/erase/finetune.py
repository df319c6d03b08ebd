"""What fine-tuning erasers share: a frozen teacher, x_t samplers, and one resumable training loop.

ESD and All-but-One differ only in what the frozen UNet teaches at a state x_t
and how the trained UNet's predictions are compared with it. An ``Objective``
holds those two functions; ``finetune`` does everything else:

- selects the trained parameters (``train``: xattn, noxattn, ...) and freezes the rest;
- draws x_t (``sampling``):
  - ``ddim`` (ESD's paper code): partial DDIM from fresh noise, guided by the
    erase prompt (or the prompt given to sample along) at ``start_guidance``,
    with the model being fine-tuned, to a random step t_enc; the UNet is then queried at a DDPM timestep drawn from
    the bin of t_enc (the CompVis script's mapping, reproduced as is);
  - ``frozen`` (fast): ``cache_trajectories`` DDIM trajectories of the frozen
    model per erase prompt are computed once, with the teacher's targets at
    every state, and each iteration trains on random (trajectory, step) states,
    so only the trained UNet runs per iteration;
- runs Adam with per-step generators seeded by (seed, step), checkpoints and
  resumes, keeps pruned weights at zero, and stops on a NaN/inf loss.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Callable, Sequence

import torch

from ..checkpoint import Checkpointer
from ..runtime import check_finite
from .common import select_parameters

# teacher(x_t, t, which) -> targets from the frozen UNet for erase prompt `which`
Teacher = Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, ...]]
# loss(unet, x_t, t, which, targets) -> scalar loss of the trained UNet
Loss = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, int, tuple[torch.Tensor, ...]], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Objective:
    name: str          # used in messages ("ESD diverged at step 3")
    teacher: Teacher
    loss: Loss


def ddim_scheduler(pipe, steps: int):
    from diffusers import DDIMScheduler
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps, device=pipe.device)
    return sched


def latent_shape(pipe, batch: int) -> tuple[int, ...]:
    c, s = pipe.unet.config.in_channels, pipe.unet.config.sample_size
    return (batch, c, s, s)


def predict(unet, x: torch.Tensor, t: torch.Tensor, conds: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """eps(x, t, c) for each condition c, in one batched UNet call (t: one timestep per row of x)."""
    b, k = x.shape[0], len(conds)
    eps = unet(torch.cat([x] * k), t.expand(b).repeat(k), torch.cat([c.expand(b, -1, -1) for c in conds])).sample
    return list(eps.chunk(k))


@torch.no_grad()
def guided_eps(unet, x, t, cond, uncond, guidance: float) -> torch.Tensor:
    e_u, e_c = predict(unet, x, t, [uncond, cond])
    return e_u + guidance * (e_c - e_u)


@torch.no_grad()
def denoise(unet, sched, x, cond, uncond, guidance: float, n_steps: int) -> torch.Tensor:
    """Run the first n_steps of the DDIM schedule from x (classifier-free guided)."""
    for t in sched.timesteps[:n_steps]:
        x = sched.step(guided_eps(unet, x, t, cond, uncond, guidance), t, x).prev_sample
    return x


def partial_ddim(pipe, unet, sched, cond, uncond, guidance: float, batch: int, g: torch.Generator):
    """ESD's on-policy x_t (CompVis train-esd.py): DDIM from fresh noise with ``unet`` along ``cond`` to a
    random step t_enc, and a DDPM timestep t drawn from t_enc's bin, as the script maps them (reproduced as is).

    ``cond`` is one condition (1 x 77 x D) or one per row (batch x 77 x D). Returns (x_t, t)."""
    n_ddim, t_max = len(sched.timesteps), pipe.scheduler.config.num_train_timesteps
    t_enc = int(torch.randint(n_ddim, (1,), generator=g))
    x = torch.randn(latent_shape(pipe, batch), generator=g).to(pipe.device) * sched.init_noise_sigma
    training = unet.training
    unet.eval()
    x_t = denoise(unet, sched, x, cond, uncond, guidance, min(n_ddim, n_ddim + 1 - t_enc))
    unet.train(training)
    lo, hi = round(t_enc / n_ddim * t_max), round((t_enc + 1) / n_ddim * t_max)
    return x_t, torch.randint(lo, hi, (batch,), generator=g).to(pipe.device)


class FrozenTrajectories:
    """States x_k of frozen-model DDIM trajectories, with the teacher's targets at each state."""

    def __init__(self, pipe, frozen, sched, conds, uncond, teacher: Teacher, p: dict, seed: int):
        m = p["cache_trajectories"]
        self.states, self.targets, self.timesteps = [], [], sched.timesteps
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for which, cond in enumerate(conds):
                x = torch.randn(latent_shape(pipe, m), generator=g).to(pipe.device) * sched.init_noise_sigma
                xs, ys = [], []
                for t in sched.timesteps:
                    xs.append(x)
                    ys.append(teacher(x, t.expand(m), which))
                    x = sched.step(guided_eps(frozen, x, t, cond, uncond, p["start_guidance"]), t, x).prev_sample
                self.states.append(torch.stack(xs, 1))   # M x N x C x H x W
                self.targets.append(tuple(torch.stack(parts, 1) for parts in zip(*ys)))
        self.n_steps = len(sched.timesteps)

    def draw(self, which: int, batch: int, g: torch.Generator):
        m = self.states[which].shape[0]
        traj = torch.randint(m, (batch,), generator=g)
        k = torch.randint(self.n_steps, (batch,), generator=g)
        return (self.states[which][traj, k], self.timesteps[k],
                tuple(y[traj, k] for y in self.targets[which]))


def frozen_copy(unet: torch.nn.Module) -> torch.nn.Module:
    """The teacher: a copy of the UNet as it was before erasing, never trained."""
    return copy.deepcopy(unet).requires_grad_(False).eval()


def finetune(pipe, frozen, objective: Objective, conds: list[torch.Tensor], uncond: torch.Tensor, p: dict,
             seed: int, progress=None, ckpt: Checkpointer | None = None,
             masks: dict[str, torch.Tensor] | None = None,
             sample_conds: list[torch.Tensor] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Fine-tune pipe.unet in place toward ``objective``; x_t is drawn along the erase prompts ``conds``
    (or, for erase prompt i, along ``sample_conds[i]`` when given: ESD's erase-from variant).

    One erase prompt is drawn per iteration. ``frozen`` is the teacher UNet
    (``frozen_copy``), used to draw cached trajectories. Returns the trained
    tensors (``unet.*``) and a record with the loss curve. ``masks`` (name ->
    0/1 tensor) keep pruned weights at zero throughout.
    """
    unet = pipe.unet
    names = select_parameters(unet, p["train"])
    unet.requires_grad_(False)
    named = dict(unet.named_parameters())
    trainable = [named[n].requires_grad_(True) for n in names]
    opt = torch.optim.Adam(trainable, lr=p["lr"])
    unet.train()

    sched = ddim_scheduler(pipe, p["ddim_steps"])
    along = conds if sample_conds is None else sample_conds
    cache = (FrozenTrajectories(pipe, frozen, sched, along, uncond, objective.teacher, p, seed)
             if p["sampling"] == "frozen" else None)

    start, losses, drawn = 0, [], []
    if ckpt is not None and (state := ckpt.load()) is not None:
        with torch.no_grad():
            for n in names:
                named[n].copy_(state["params"][n])
        opt.load_state_dict(state["opt"])
        start, losses, drawn = state["step"], state["losses"], state["drawn"]

    b = p["batch_size"]
    for it in range(start, p["iterations"]):
        g = torch.Generator().manual_seed(seed * 1_000_003 + it)
        which = int(torch.randint(len(conds), (1,), generator=g))
        if cache is not None:
            x_t, t, targets = cache.draw(which, b, g)
        else:  # the paper's on-policy partial DDIM, with the model being trained
            x_t, t = partial_ddim(pipe, unet, sched, along[which], uncond, p["start_guidance"], b, g)
            with torch.no_grad():
                targets = objective.teacher(x_t, t, which)
        loss = objective.loss(unet, x_t, t, which, targets)
        check_finite(loss, objective.name, it)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if masks:
            with torch.no_grad():
                for n in names:
                    if n in masks:
                        named[n].mul_(masks[n])
        losses.append(loss.item())
        drawn.append(which)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.4f}")
        if ckpt is not None and ckpt.due(it + 1) and it + 1 < p["iterations"]:
            ckpt.save(it + 1, {"params": {n: named[n].detach().clone() for n in names},
                               "opt": opt.state_dict(), "losses": losses, "drawn": drawn})
    unet.eval().requires_grad_(False)
    counts = torch.bincount(torch.tensor(drawn, dtype=torch.long), minlength=len(conds)).tolist()
    return {f"unet.{n}": named[n].detach().clone() for n in names}, {"losses": losses, "prompt_iterations": counts}
