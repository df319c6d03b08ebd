"""Concept inversion (CCE; Pham et al., ICLR 2024, arXiv 2308.01508): textual inversion on the erased model.

A new token is added (its embedding initialised from ``initializer``) and only
that vector is trained, with the standard diffusion loss of the *erased* model,
on images of the concept made by the *base* model, captioned by ``templates``
(``{token}`` is the new token, ``{prompt}`` the image's own prompt). The
erased model then regenerates the concept from prompts that use the token:
each row's adversarial prompt is ``attack_template`` filled in with its prompt.

Optimiser as in the paper's code (diffusers' textual inversion): AdamW with
weight decay 1e-2 and a constant learning rate; ``lr`` is the effective rate
(the paper's 5e-3 scaled by batch 4 x accumulation 4 = 0.08).
"""
from __future__ import annotations

import torch

from ..checkpoint import Checkpointer
from ..runtime import check_finite
from ..adversarial import AdversarialSet, embed_ids, encode
from .common import AttackInputs, decode, generator, layout_ids, noised, reference_latents, token_ids


def template_ids(tokenizer, template: str, prompt: str, new_id: int) -> list[int]:
    """The 77 ids of a template, with ``new_id`` where it says {token}."""
    parts = template.split("{token}")
    tokens: list[int] = []
    for i, part in enumerate(parts):
        if i:
            tokens.append(new_id)
        tokens += token_ids(tokenizer, part.format(prompt=prompt)) if part.strip() else []
    return layout_ids(tokenizer, tokens)


def concept_inversion(pipe, inputs: AttackInputs, params: dict, seed: int, progress=None,
                      ckpt: Checkpointer | None = None) -> tuple[AdversarialSet, dict]:
    p, tok, te, unet = params, pipe.tokenizer, pipe.text_encoder, pipe.unet
    for m in (te, unet, pipe.vae):
        m.requires_grad_(False).eval()
    rows = inputs.prompts.reset_index(drop=True)
    init = token_ids(tok, p["initializer"])
    if len(init) != 1:
        raise ValueError(f"concept inversion: initializer {p['initializer']!r} is {len(init)} tokens; "
                         f"it must be a single token")
    new_id = len(tok)
    vector = te.get_input_embeddings().weight[init[0]].detach().clone().float().requires_grad_(True)
    opt = torch.optim.AdamW([vector], lr=p["lr"], weight_decay=1e-2)
    x0 = reference_latents(pipe, inputs.reference)
    prompts, templates = rows["prompt"].tolist(), p["templates"]
    t_max = pipe.scheduler.config.num_train_timesteps

    start, losses = 0, []
    if ckpt is not None and (state := ckpt.load()) is not None:
        with torch.no_grad():
            vector.copy_(state["vector"])
        opt.load_state_dict(state["opt"])
        start, losses = state["step"], state["losses"]
    for step in range(start, p["steps"]):
        g = generator(seed, step)
        pick = torch.randint(len(rows), (p["batch_size"],), generator=g)
        which = torch.randint(len(templates), (p["batch_size"],), generator=g)
        t = torch.randint(t_max, (p["batch_size"],), generator=g).to(pipe.device)
        noise = torch.randn(x0[pick].shape, generator=g).to(pipe.device, x0.dtype)
        ids = torch.tensor([template_ids(tok, templates[w], prompts[i], new_id)
                            for i, w in zip(pick.tolist(), which.tolist())], device=pipe.device)
        cond = encode(te, ids, embed_ids(te, ids, vector[None]))
        pred = unet(noised(pipe, x0[pick.to(x0.device)], noise, t), t, cond).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
        check_finite(loss, "concept inversion", step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.4f}")
        if ckpt is not None and ckpt.due(step + 1) and step + 1 < p["steps"]:
            ckpt.save(step + 1, {"vector": vector.detach().clone(), "opt": opt.state_dict(), "losses": losses})

    vector = vector.detach()
    ids = torch.tensor([template_ids(tok, p["attack_template"], s, new_id) for s in prompts])
    texts = [decode(tok, r, [p["token_name"]]) for r in ids]
    init_vec = te.get_input_embeddings().weight[init[0]].detach().float()
    return (AdversarialSet(ids, texts, new_tokens=vector[None].to(te.dtype)),
            {"losses": losses, "token_name": p["token_name"], "initializer": p["initializer"],
             "vector_norm": float(vector.norm()), "moved_from_initializer": float((vector - init_vec).norm())})
