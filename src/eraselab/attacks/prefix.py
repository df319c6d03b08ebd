"""Prefix-token attacks on an erased model: the loop UnlearnDiff and P4D share.

For each prompt, k tokens are learned and put before it (or, with ``insert_every``
K > 0, P4D-K's layout: one learned token before every K prompt tokens, so
len // K + 1 of them; ``slot_layout``). The timesteps of a
fixed schedule are visited in ascending order (t = 10, 30, ..., 990 for 50),
``iterations`` Adam steps each (L2 weight decay, as in the official code), on a
loss that compares the erased UNet's noise prediction for the adversarial
prompt, at the base model's image of that prompt noised to x_t, with a target.
After each timestep the tokens are made hard, decoded to text and the text
tokenized again (as the official code does), the prompt is generated with its
row's seed and guidance, and the attack stops for that prompt as soon as the
detector finds the concept (the concept's detector, with the attack's
``detector`` keys for its kind: the attack protocol's settings). Prompts whose plain generation already
shows it are not attacked (they count as pre-attack successes).

What differs between attacks is how the k tokens are parametrised (``Tokens``)
and the loss's target. Prompts are attacked in batches; each keeps its own
parameters, Adam state, noise and draws (generators seeded by seed, row and
step), so its result does not depend on its batch, and a resumed run equals an
uninterrupted one.
"""
from __future__ import annotations

import time
from typing import Callable, Protocol

import numpy as np
import torch

from ..checkpoint import Checkpointer
from ..runtime import check_finite
from ..adversarial import AdversarialSet, conditioning, encode
from .common import (AttackInputs, detected, generator, layout_ids, noised, prompt_ids, reference_latents,
                     retokenize, token_ids, vocabulary)


def timestep_schedule(n: int, total: int = 1000) -> list[int]:
    """n timesteps at the centres of n equal bins of [0, total), ascending (10, 30, ..., 990 for n=50)."""
    step = total // n
    return list(range(step // 2, total, step))[:n]


class Tokens(Protocol):
    """How an attack parametrises its k prefix tokens (one parameter tensor row per prompt)."""

    def init(self, cases: list[int], k: int) -> torch.Tensor: ...
    def embed(self, x: torch.Tensor, gens: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """(leaf, prefix embeddings): the loss's gradient w.r.t. the leaf is applied to x."""
    def project(self, x: torch.Tensor) -> torch.Tensor: ...
    def hard(self, x: torch.Tensor) -> torch.Tensor:
        """k indices into the vocabulary per row."""


class Adam:
    """torch.optim.Adam's update (L2 weight decay added to the gradient) on the rows still attacking;
    ``decoupled``: torch.optim.AdamW's (the weights shrink by lr * weight_decay before the step)."""

    def __init__(self, x: torch.Tensor, lr: float, weight_decay: float, betas=(0.9, 0.999), eps=1e-8,
                 decoupled: bool = False):
        self.lr, self.wd, self.betas, self.eps, self.decoupled = lr, weight_decay, betas, eps, decoupled
        self.m, self.v, self.steps = torch.zeros_like(x), torch.zeros_like(x), 0

    def step(self, x: torch.Tensor, grad: torch.Tensor, rows: torch.Tensor) -> None:
        (b1, b2), self.steps = self.betas, self.steps + 1
        if self.decoupled:
            x[rows] *= 1 - self.lr * self.wd
            g = grad
        else:
            g = grad + self.wd * x[rows]
        self.m[rows] = b1 * self.m[rows] + (1 - b1) * g
        self.v[rows] = b2 * self.v[rows] + (1 - b2) * g * g
        denom = (self.v[rows] / (1 - b2 ** self.steps)).sqrt() + self.eps
        x[rows] -= self.lr / (1 - b1 ** self.steps) * self.m[rows] / denom


class _Batch:
    """The prompts attacked together: their token parameters, optimiser state and progress."""

    def __init__(self, rows: list[int], x: torch.Tensor, p: dict):
        self.rows, self.x = rows, x
        self.adam = Adam(x, p["lr"], p["weight_decay"], decoupled=p.get("optimizer", "adam") == "adamw")
        self.active = torch.ones(len(rows), dtype=torch.bool, device=x.device)
        self.next_t = 0
        self.losses = [[] for _ in rows]
        self.seconds = [0.0] * len(rows)

    def state(self) -> dict:
        return {k: getattr(self, k) for k in ("rows", "x", "active", "next_t", "losses", "seconds")} | {
            "adam": (self.adam.m, self.adam.v, self.adam.steps)}

    def restore(self, s: dict) -> None:
        for k in ("x", "active", "next_t", "losses", "seconds"):
            setattr(self, k, s[k])
        self.adam.m, self.adam.v, self.adam.steps = s["adam"]


def slot_layout(prompt: list[int], k: int, every: int, room: int) -> tuple[list[int], int]:
    """(the prompt's tokens that fit, its number of learned tokens) for ``room`` positions between BOS and EOS.

    every = 0: k learned tokens before the prompt; every = K > 0: one before every K prompt tokens,
    len // K + 1 of them (P4D-K; k is not used)."""
    if every == 0:
        return prompt[:room - k], k
    n = len(prompt)
    while n + n // every + 1 > room:
        n -= 1
    return prompt[:n], n // every + 1


def interleave(slots: list[int], prompt: list[int], every: int) -> list[int]:
    """The tokens of an adversarial prompt: the learned ones, each followed by its `every` prompt tokens
    (every = 0: all learned ones, then the prompt)."""
    if every == 0:
        return [*slots, *prompt]
    out = []
    for j, s in enumerate(slots):
        out += [s, *prompt[j * every:(j + 1) * every]]
    return out


# loss(pred, noise, rows) -> one value per prompt; rows index the attacked prompt set
Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def place(embeds: torch.Tensor, learned: torch.Tensor, used: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The prompts' token embeddings (B x 77 x D) with the learned ones (B x k x D) put at their positions."""
    b, j = used.nonzero(as_tuple=True)
    out = embeds.clone()
    out[b, positions[b, j]] = learned[b, j].to(out.dtype)
    return out


def prefix_attack(pipe, inputs: AttackInputs, params: dict, seed: int, name: str,
                  make_tokens: Callable[[torch.Tensor, torch.Tensor, int], Tokens],
                  make_target: Callable | None = None, progress=None,
                  ckpt: Checkpointer | None = None) -> tuple[AdversarialSet, dict]:
    """The shared loop. ``make_tokens(allowed ids, their embeddings, seed)``; ``make_target(pipe, plain ids)``
    returns a function (x_t, t, rows, noise) -> the noise prediction to match (default: the noise itself)."""
    p, tok, te, unet = params, pipe.tokenizer, pipe.text_encoder, pipe.unet
    rows = inputs.prompts.reset_index(drop=True)
    n, every, device = len(rows), p.get("insert_every", 0), pipe.device
    for m in (te, unet, pipe.vae):
        m.requires_grad_(False).eval()
    allowed = vocabulary(tok, p["vocabulary"]).to(device)
    table = te.get_input_embeddings().weight.detach()
    tokens_ = make_tokens(allowed, table[allowed], seed)
    fits = [slot_layout(token_ids(tok, s), p["prefix_tokens"], every, tok.model_max_length - 2)
            for s in rows["prompt"]]
    prompt_tokens, n_slots = [f[0] for f in fits], [f[1] for f in fits]
    k = max(n_slots)   # parameters per prompt; a prompt with fewer learned tokens leaves the rest unused
    # ids with placeholder slots for the learned tokens: the slots' embeddings are replaced, their ids
    # only need to be ordinary tokens (the text encoder pools at the first EOS)
    slot_ids = torch.tensor([layout_ids(tok, interleave([int(allowed[0])] * m, t, every))
                             for t, m in zip(prompt_tokens, n_slots)], device=device)
    base_embeds = table[slot_ids]
    used = torch.arange(k, device=device)[None] < torch.tensor(n_slots, device=device)[:, None]   # n x k
    positions = (1 + torch.arange(k, device=device) * (every + 1)).expand(n, k)    # after BOS
    x0 = reference_latents(pipe, inputs.reference)
    plain = prompt_ids(tok, rows["prompt"].tolist())
    target = make_target(pipe, plain.to(device)) if make_target else (lambda x_t, t, r, noise: noise)
    ts = timestep_schedule(p["timesteps"], pipe.scheduler.config.num_train_timesteps)
    cases = [int(c) for c in rows["case_number"]]
    can_stop = inputs.detector is not None

    def hard_ids(batch: _Batch, j: int) -> list[int]:
        i = batch.rows[j]
        return layout_ids(tok, interleave(allowed[tokens_.hard(batch.x[j])].tolist()[:n_slots[i]],
                                          prompt_tokens[i], every))

    def check(idx: list[int], ids: torch.Tensor) -> np.ndarray:
        embeds = conditioning(pipe, AdversarialSet(retokenize(tok, ids)[0], []))
        return detected(pipe, embeds, rows.iloc[idx], inputs.detector, inputs.generation)

    state = ckpt.load() if ckpt is not None else None
    if state is None:
        pre = check(list(range(n)), plain) if can_stop and p["skip_successful"] else np.zeros(n, bool)
        state = {"pre": pre, "results": {}, "batch": None}
    # a checkpoint holds `pre` as a list of bools (torch.load(weights_only=True) refuses numpy arrays)
    pre, results = np.asarray(state["pre"], dtype=bool), state["results"]
    todo = [i for i in range(n) if not pre[i]]
    batches = [todo[i:i + p["batch_size"]] for i in range(0, len(todo), p["batch_size"])]
    if progress is not None:
        progress.reset(total=len(todo) * len(ts))
        progress.update(sum(len(ts) for i in todo if i in results))

    for idx in batches:
        if all(i in results for i in idx):
            continue
        batch = _Batch(idx, tokens_.init([cases[i] for i in idx], k).to(device), p)
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
                leaf, prefix = tokens_.embed(batch.x[live], gens)
                embeds = place(base_embeds[rows_live], prefix, used[rows_live], positions[rows_live])
                x_t = noised(pipe, x0[rows_live], noise, t)
                pred = unet(x_t, t, encode(te, slot_ids[rows_live], embeds)).sample
                with torch.no_grad():
                    want = target(x_t, t, rows_live, noise)
                loss = ((pred.float() - want.float()) ** 2).mean(dim=(1, 2, 3))   # one loss per prompt
                check_finite(loss, name, step)
                grad, = torch.autograd.grad(loss.sum(), leaf)   # prompts do not interact: their own gradients
                with torch.no_grad():
                    batch.adam.step(batch.x, grad, live)
                    batch.x[live] = tokens_.project(batch.x[live])
                block_loss += loss.detach()
            for j, l in zip(live.tolist(), block_loss.tolist()):
                batch.losses[j].append(l)
            if can_stop:  # make the tokens hard, generate, stop the prompts that show the concept
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
                ckpt.save(ti + 1, {"pre": pre.tolist(), "results": results, "batch": batch.state()})
        for j, i in enumerate(idx):
            r = results.setdefault(i, {"success": False, "t_index": len(ts) - 1})
            r.update(ids=hard_ids(batch, j), losses=batch.losses[j], seconds=round(batch.seconds[j], 3),
                     steps=(r["t_index"] + 1) * p["iterations"])
        state["batch"] = None
        if ckpt is not None:
            ckpt.save(len(results), {"pre": pre.tolist(), "results": results, "batch": None})

    ids = torch.stack([torch.tensor(results[i]["ids"]) if i in results else plain[i] for i in range(n)])
    per_row = [{"case_number": cases[i], "pre_success": bool(pre[i]),
                "attack_success": bool(pre[i]) or results.get(i, {}).get("success", False),
                "steps": results.get(i, {}).get("steps", 0), "seconds": results.get(i, {}).get("seconds", 0.0),
                "loss_curve": results.get(i, {}).get("losses", [])} for i in range(n)]
    return (AdversarialSet(*retokenize(tok, ids)),
            {"timesteps": ts, "vocabulary_size": len(allowed), "rows": per_row})
