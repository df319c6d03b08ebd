"""UnlearnDiff (Zhang et al., ECCV 2024, arXiv 2310.11868): a white-box prompt attack on an erased model.

For each prompt, k prefix tokens are learned, each a distribution over the
vocabulary (kept on the probability simplex). A forward pass draws a hard token
from each distribution (straight-through: the gradient of the one-hot, clipped,
goes to the distribution), multiplies it into the token-embedding matrix and
runs the text encoder. The loss is the erased model's diffusion-classifier loss
on the *base* model's image for that prompt:

    x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps,   L = || eps - eps_erased(x_t, c_adv, t) ||^2

where x0 is the reference image's latent. The timesteps t = 10, 30, ..., 990
(for 50) are visited in ascending order, ``iterations`` Adam steps each (L2
weight decay, as in the official code). After each timestep the distributions
are projected to hard tokens (argmax), the prompt is generated with its row's
seed and guidance, and the attack stops for that prompt when the concept's
detector finds the concept. Prompts whose plain generation already shows the
concept are not attacked (they count as pre-attack successes).

Prompts are attacked in batches; each prompt has its own distributions, noise
and token draws (generators seeded by seed, row and step) and its own Adam
state, so a prompt's result does not depend on its batch, and a resumed run
equals an uninterrupted one.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ..checkpoint import Checkpointer
from .common import (AdversarialSet, AttackInputs, check_finite, conditioning, decode, detected, encode,
                     generator, layout_ids, noised, project_simplex, prompt_ids, reference_latents,
                     sample_one_hot, token_ids, vocabulary)


def timestep_schedule(n: int, total: int = 1000) -> list[int]:
    """n timesteps at the centres of n equal bins of [0, total), ascending (10, 30, ..., 990 for n=50)."""
    step = total // n
    return list(range(step // 2, total, step))[:n]


class _Adam:
    """torch.optim.Adam's update (L2 weight decay added to the gradient) on the rows still attacking."""

    def __init__(self, x: torch.Tensor, lr: float, weight_decay: float, betas=(0.9, 0.999), eps=1e-8):
        self.lr, self.wd, self.betas, self.eps = lr, weight_decay, betas, eps
        self.m, self.v, self.steps = torch.zeros_like(x), torch.zeros_like(x), 0

    def step(self, x: torch.Tensor, grad: torch.Tensor, rows: torch.Tensor) -> None:
        (b1, b2), self.steps = self.betas, self.steps + 1
        g = grad + self.wd * x[rows]
        self.m[rows] = b1 * self.m[rows] + (1 - b1) * g
        self.v[rows] = b2 * self.v[rows] + (1 - b2) * g * g
        denom = (self.v[rows] / (1 - b2 ** self.steps)).sqrt() + self.eps
        x[rows] -= self.lr / (1 - b1 ** self.steps) * self.m[rows] / denom


class _Batch:
    """The prompts attacked together: their distributions, optimiser state and progress."""

    def __init__(self, rows: list[int], k: int, vocab: int, p: dict, device):
        self.rows = rows
        self.probs = torch.full((len(rows), k, vocab), 1.0 / vocab, device=device)  # uniform: on the simplex
        self.adam = _Adam(self.probs, p["lr"], p["weight_decay"])
        self.active = torch.ones(len(rows), dtype=torch.bool, device=device)
        self.next_t = 0
        self.losses = [[] for _ in rows]
        self.seconds = [0.0] * len(rows)

    def state(self) -> dict:
        return {k: getattr(self, k) for k in ("rows", "probs", "active", "next_t", "losses", "seconds")} | {
            "adam": (self.adam.m, self.adam.v, self.adam.steps)}

    def restore(self, s: dict) -> None:
        for k in ("probs", "active", "next_t", "losses", "seconds"):
            setattr(self, k, s[k])
        self.adam.m, self.adam.v, self.adam.steps = s["adam"]


def unlearndiff(pipe, inputs: AttackInputs, params: dict, seed: int, progress=None,
                ckpt: Checkpointer | None = None) -> tuple[AdversarialSet, dict]:
    p, tok, te, unet = params, pipe.tokenizer, pipe.text_encoder, pipe.unet
    rows = inputs.prompts.reset_index(drop=True)
    n, k, device = len(rows), p["prefix_tokens"], pipe.device
    for m in (te, unet, pipe.vae):
        m.requires_grad_(False).eval()
    allowed = vocabulary(tok, p["vocabulary"]).to(device)
    table = te.get_input_embeddings().weight.detach()
    words = table[allowed]                                              # V' x D
    tokens = [token_ids(tok, s)[:tok.model_max_length - 2 - k] for s in rows["prompt"]]
    # ids with placeholder slots for the prefix: the slots' embeddings are replaced, their ids only
    # need to be ordinary tokens (the text encoder pools at the first EOS)
    slot_ids = torch.tensor([layout_ids(tok, [int(allowed[0])] * k + t) for t in tokens], device=device)
    base_embeds = table[slot_ids]
    x0 = reference_latents(pipe, inputs.reference)
    ts = timestep_schedule(p["timesteps"], pipe.scheduler.config.num_train_timesteps)
    cases = [int(c) for c in rows["case_number"]]
    can_stop = inputs.detector is not None

    def hard_ids(batch: _Batch, j: int) -> list[int]:
        return layout_ids(tok, allowed[batch.probs[j].argmax(-1)].tolist() + tokens[batch.rows[j]])

    def check(idx: list[int], ids: torch.Tensor) -> np.ndarray:
        embeds = conditioning(pipe, AdversarialSet(ids, []))
        return detected(pipe, embeds, rows.iloc[idx], inputs.detector, inputs.generation)

    state = ckpt.load() if ckpt is not None else None
    if state is None:
        plain = prompt_ids(tok, rows["prompt"].tolist())
        pre = check(list(range(n)), plain) if can_stop and p["skip_successful"] else np.zeros(n, bool)
        state = {"pre": pre, "results": {}, "batch": None}
    pre, results = state["pre"], state["results"]
    todo = [i for i in range(n) if not pre[i]]
    batches = [todo[i:i + p["batch_size"]] for i in range(0, len(todo), p["batch_size"])]
    if progress is not None:
        progress.reset(total=len(todo) * len(ts))
        progress.update(sum(len(ts) for i in todo if i in results))

    for idx in batches:
        if all(i in results for i in idx):
            continue
        batch = _Batch(idx, k, len(allowed), p, device)
        if state["batch"] is not None and state["batch"]["rows"] == idx:
            batch.restore(state["batch"])
            if progress is not None:
                progress.update(batch.next_t * int(batch.active.sum()))  # its finished rows are counted above
        sel = torch.tensor(idx, device=device)
        for ti in range(batch.next_t, len(ts)):
            start = time.perf_counter()
            live = batch.active.nonzero().squeeze(1)
            rows_live = sel[live]
            t = torch.full((len(live),), ts[ti], device=device)
            block_loss = torch.zeros(len(live), device=device)
            for it in range(p["iterations"]):
                step = ti * p["iterations"] + it
                gens = [generator(seed, cases[int(r)], step) for r in rows_live]
                noise = torch.stack([torch.randn(x0.shape[1:], generator=generator(seed, cases[int(r)], step, 1))
                                     for r in rows_live]).to(device, x0.dtype)
                probs = batch.probs[live].requires_grad_(True)
                prefix = sample_one_hot(probs, gens) @ words                  # B x k x D, straight-through
                embeds = torch.cat([base_embeds[rows_live, :1], prefix, base_embeds[rows_live, 1 + k:]], 1)
                cond = encode(te, slot_ids[rows_live], embeds)
                pred = unet(noised(pipe, x0[rows_live], noise, t), t, cond).sample
                loss = ((pred.float() - noise.float()) ** 2).mean(dim=(1, 2, 3))   # one loss per prompt
                check_finite(loss, "UnlearnDiff", step)
                grad, = torch.autograd.grad(loss.sum(), probs)   # prompts do not interact: their own gradients
                with torch.no_grad():
                    batch.adam.step(batch.probs, grad, live)
                    batch.probs[live] = project_simplex(batch.probs[live])
                block_loss += loss.detach()
            for j, l in zip(live.tolist(), block_loss.tolist()):
                batch.losses[j].append(l)
            if can_stop:  # project to hard tokens, generate, stop the prompts that show the concept
                ids = torch.tensor([hard_ids(batch, j) for j in live.tolist()])
                hit = check([idx[j] for j in live.tolist()], ids)
                for j, h in zip(live.tolist(), hit):
                    if h:
                        batch.active[j] = False
                        results[idx[j]] = {"success": True, "t_index": ti}
                        if progress is not None:
                            progress.update(len(ts) - ti - 1)
            spent = (time.perf_counter() - start) / max(1, len(live))
            for j in live.tolist():
                batch.seconds[j] += spent
            batch.next_t = ti + 1
            if progress is not None:
                progress.update(len(live))
                progress.set_postfix(loss=f"{float(block_loss.mean()) / p['iterations']:.4f}",
                                     found=sum(r["success"] for r in results.values()))
            if not batch.active.any():
                break
            if ckpt is not None and ckpt.due(ti + 1):
                ckpt.save(ti + 1, {"pre": pre, "results": results, "batch": batch.state()})
        for j, i in enumerate(idx):
            r = results.setdefault(i, {"success": False, "t_index": len(ts) - 1})
            r.update(ids=hard_ids(batch, j), losses=batch.losses[j], seconds=round(batch.seconds[j], 3),
                     steps=(r["t_index"] + 1) * p["iterations"])
        state["batch"] = None
        if ckpt is not None:
            ckpt.save(len(results), {"pre": pre, "results": results, "batch": None})

    plain_ids = prompt_ids(tok, rows["prompt"].tolist())
    ids = torch.stack([torch.tensor(results[i]["ids"]) if i in results else plain_ids[i] for i in range(n)])
    per_row = [{"case_number": cases[i], "pre_success": bool(pre[i]),
                "attack_success": bool(pre[i]) or results.get(i, {}).get("success", False),
                "steps": results.get(i, {}).get("steps", 0), "seconds": results.get(i, {}).get("seconds", 0.0),
                "loss_curve": results.get(i, {}).get("losses", [])} for i in range(n)]
    return (AdversarialSet(ids, [decode(tok, r) for r in ids]),
            {"timesteps": ts, "vocabulary_size": len(allowed), "rows": per_row})
