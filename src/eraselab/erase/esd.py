"""ESD: Erasing Concepts from Diffusion Models (Gandikota et al., ICCV 2023, arXiv 2303.07345).

The fine-tuned UNet's conditional prediction for the concept c is pulled to a
negatively guided target from a frozen copy:

    eps_theta(x_t, c, t)  <-  eps*(x_t, c_from, t) - eta * (eps*(x_t, c, t) - eps*(x_t, "", t))

with c_from = "" in plain ESD (the target is then eps*("") - eta * guidance), or
another prompt in the erase-from variant (then the UNet is trained on c_from, and
x_t is drawn along c_from, as in the official diffusers code).
Which parameters are trained decides the flavour: ESD-x (cross-attention),
ESD-u (everything else), ESD-x-strict. Sampling of x_t, the training loop,
checkpoints and masks are shared with All-but-One (``finetune.py``).
"""
from __future__ import annotations

import torch
from torch import nn

from ..checkpoint import Checkpointer
from ..models import encode_prompts
from .common import Concept
from .finetune import Objective, finetune, frozen_copy, predict


def esd(pipe, concept: Concept, params: dict, seed: int, progress=None,
        ckpt: Checkpointer | None = None, masks: dict[str, torch.Tensor] | None = None
        ) -> tuple[dict[str, torch.Tensor], dict]:
    """Fine-tune pipe.unet in place to erase the concept (one of its erase prompts per iteration).

    Returns the changed tensors (``unet.*``) and a record with the loss curve.
    """
    p = params
    frozen = frozen_copy(pipe.unet)
    conds = list(encode_prompts(pipe, list(concept.erase)).split(1))
    uncond = encode_prompts(pipe, [""])
    cond_from = encode_prompts(pipe, [p["erase_from"]]) if p.get("erase_from") else None
    eta = p["negative_guidance"]

    def teacher(x, t, which):
        extra = [cond_from] if cond_from is not None else []
        e_0, e_p, *e_from = predict(frozen, x, t, [uncond, conds[which], *extra])
        return ((e_from[0] if e_from else e_0) - eta * (e_p - e_0),)

    def loss(unet, x, t, which, targets):
        train_cond = cond_from if cond_from is not None else conds[which]
        (pred,) = predict(unet, x, t, [train_cond])
        return nn.functional.mse_loss(pred, targets[0])

    return finetune(pipe, frozen, Objective("ESD", teacher, loss), conds, uncond, p, seed,
                    progress=progress, ckpt=ckpt, masks=masks,
                    sample_conds=None if cond_from is None else [cond_from] * len(conds))
