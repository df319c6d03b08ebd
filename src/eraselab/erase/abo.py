"""All but One: surgical concept erasing (Hong, Lee, Woo, AAAI 2024, arXiv 2312.12807). RECONSTRUCTED.

The paper's stated idea (abstract): a surgical update on the classifier-guidance
term, with the drift of the unconditional score constrained, optionally toward a
user-chosen replacement concept. No code or full text was available, so the loss
below is a reconstruction (docs/methods.md §2; README "Reconstructed details"):

    g_theta(x_t, c)  = eps_theta(x_t, c) - eps_theta(x_t, "")          (guidance term)
    L_erase = || g_theta(x_t, c) - [eps*(x_t, c_alt) - eps*(x_t, "")] ||^2
    L_drift = || eps_theta(x_t, "") - eps*(x_t, "") ||^2
    L       = L_erase + drift_weight * L_drift

c_alt is the concept's ``anchor`` (one per erase prompt, or shared); with the
default "" the guidance term is trained toward zero, so c generates what the
unconditional model would. Gradients flow through both predictions of the
guidance term. x_t and the training loop are ESD's (``finetune.py``); the default
``sampling: frozen`` draws x_t from the frozen model's own trajectories for c,
which is the "noised latents the frozen model generated for c" of the
reconstruction, computed once.
"""
from __future__ import annotations

import torch
from torch import nn

from ..checkpoint import Checkpointer
from ..models import encode_prompts
from .common import Concept
from .finetune import Objective, finetune, frozen_copy, predict


def all_but_one(pipe, concept: Concept, params: dict, seed: int, progress=None,
                ckpt: Checkpointer | None = None, masks: dict[str, torch.Tensor] | None = None
                ) -> tuple[dict[str, torch.Tensor], dict]:
    """Fine-tune pipe.unet in place so the concept's guidance term becomes its anchor's."""
    p = params
    frozen = frozen_copy(pipe.unet)
    conds = list(encode_prompts(pipe, list(concept.erase)).split(1))
    alts = list(encode_prompts(pipe, concept.guides()).split(1))
    uncond = encode_prompts(pipe, [""])
    w = p["drift_weight"]

    def teacher(x, t, which):
        e_0, e_alt = predict(frozen, x, t, [uncond, alts[which]])
        return e_alt - e_0, e_0

    def loss(unet, x, t, which, targets):
        guidance_alt, e_0 = targets
        e_c, e_u = predict(unet, x, t, [conds[which], uncond])
        return nn.functional.mse_loss(e_c - e_u, guidance_alt) + w * nn.functional.mse_loss(e_u, e_0)

    return finetune(pipe, frozen, Objective("All-but-One", teacher, loss), conds, uncond, p, seed,
                    progress=progress, ckpt=ckpt, masks=masks)
