"""AdvUnlearn: defensive unlearning with adversarial training (Zhang et al., NeurIPS 2024, arXiv 2405.15234).

ESD's unlearning step, taken on an adversarial version of the erase prompt that an
inner attack finds against the model being erased, plus a utility-retention loss
(official code: OPTML-Group/AdvUnlearn, train-scripts/AdvUnlearn.py and utils/):

    inner (every ``attack_every`` iterations, after ``warmup`` clean ones):
        k soft word embeddings a put after BOS (prefix_k), then for ``attack_steps`` Adam steps
        a <- a - lr * Adam(grad_a || eps_theta(x_t, E_theta([a; c]), t) - eps*(x_t, c, t) ||^2)
        i.e. the prompt the current model answers as the original model answered the concept
    outer (every iteration):
        L = || eps_theta(x_t, E_theta([a; c]), t) - (eps*(x_t, "") - eta (eps*(x_t, c) - eps*(x_t, ""))) ||^2
          + retain_weight * mean_r || eps_theta(x_r, E_theta(r), t) - eps*(x_r, E*(r), t) ||^2

theta is the text encoder (the paper's finding: it is the module to train) or a UNet
parameter set; eps* and E* are the frozen originals; r is a batch of retain prompts
(the official set: COCO-object prompts; here ``retain``: the concept's preserve prompts
or a CSV). x_t is ESD's partial DDIM along the original encoding of c (``sampling: ddim``,
with the UNet being trained, which is the frozen one when the text encoder trains) or
states of cached frozen-model trajectories (``sampling: frozen``, exact in distribution
when the text encoder trains). Resumable; per-step generators seeded by (seed, step).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ..adversarial import encode
from ..attacks.common import generator, prompt_ids
from ..checkpoint import Checkpointer
from ..runtime import check_finite
from .common import Concept, select_parameters
from .finetune import FrozenTrajectories, ddim_scheduler, frozen_copy, partial_ddim, predict

# Text-encoder parameter sets (official param_choices, component 'all' unless named): the token and
# position embeddings never train. transformers 5 names them without the text_model. prefix.
TEXT_ENCODER_SETS = {
    "text_encoder": r"^(text_model\.)?(encoder\.|final_layer_norm\.)",    # text_encoder_full (the paper's)
    "text_encoder_layer0": r"^(text_model\.)?encoder\.layers\.0\.",       # text_encoder_layer0
    "text_encoder_attn": r"^(text_model\.)?encoder\.layers\.\d+\.self_attn\.",   # full, component attn
    "text_encoder_mlp": r"^(text_model\.)?encoder\.layers\.\d+\.mlp\.",          # full, component ffn
}
UNET_SETS = ("xattn", "noxattn", "selfattn", "full")


def trained_parameters(pipe, train: str) -> tuple[str, torch.nn.Module, list[str]]:
    """(delta prefix, module, parameter names) of a ``train`` choice."""
    if train in TEXT_ENCODER_SETS:
        names = [n for n, _ in pipe.text_encoder.named_parameters() if re.search(TEXT_ENCODER_SETS[train], n)]
        if not names:
            raise ValueError(f"train {train!r} matches no parameter of this text encoder")
        return "text_encoder", pipe.text_encoder, names
    if train in UNET_SETS:
        return "unet", pipe.unet, select_parameters(pipe.unet, train)
    raise ValueError(f"advunlearn: unknown train {train!r}; allowed: {', '.join([*TEXT_ENCODER_SETS, *UNET_SETS])}")


def retain_prompts(concept: Concept, retain: str) -> list[str]:
    """``preserve``: the concept's preserve prompts; otherwise a CSV path whose ``prompt`` column is the set."""
    if retain == "preserve":
        if not concept.preserve:
            raise ValueError(f"advunlearn: retain 'preserve' but concept {concept.name!r} has no preserve prompts; "
                             f"give it some, or set retain to a CSV with a 'prompt' column")
        return list(concept.preserve)
    import pandas as pd
    path = Path(retain)
    if not path.is_file():
        raise ValueError(f"advunlearn: retain {retain!r} is neither 'preserve' nor an existing CSV file")
    table = pd.read_csv(path, keep_default_na=False)
    if "prompt" not in table.columns or not len(table):
        raise ValueError(f"advunlearn: retain CSV {retain!r} needs a 'prompt' column with at least one row "
                         f"(columns: {', '.join(map(str, table.columns))})")
    return table["prompt"].astype(str).tolist()


def retain_batch(n: int, batch: int, it: int, seed: int) -> list[int]:
    """Retain prompts of iteration ``it``: the official PromptDataset draws without replacement and starts
    over when fewer than a batch are unseen; here one seeded permutation per pass, so any step is known."""
    if batch >= n:
        return list(range(n))
    per_pass = n // batch
    perm = torch.randperm(n, generator=generator(seed, it // per_pass, 0, 7)).tolist()
    k = it % per_pass
    return perm[k * batch:(k + 1) * batch]


class States:
    """x_t, t and the frozen teacher's targets for rows of prompts (indices into ``conds``)."""

    def __init__(self, pipe, frozen, sched, conds: torch.Tensor, uncond, teacher, p: dict, seed: int):
        self.pipe, self.sched, self.conds, self.uncond, self.teacher, self.p = pipe, sched, conds, uncond, teacher, p
        self.cache = None
        if p["sampling"] == "frozen":
            self.cache = FrozenTrajectories(pipe, frozen, sched, list(conds.split(1)), uncond,
                                            lambda x, t, w: teacher(x, t, conds[w:w + 1]), p, seed)

    def draw(self, which: list[int], g: torch.Generator):
        if self.cache is not None:
            parts = [self.cache.draw(w, 1, g) for w in which]
            x, t, ys = zip(*parts)
            return torch.cat(x), torch.cat(t), tuple(torch.cat(y) for y in zip(*ys))
        cond = self.conds[which]
        x_t, t = partial_ddim(self.pipe, self.pipe.unet, self.sched, cond, self.uncond, self.p["start_guidance"],
                              len(which), g)
        with torch.no_grad():
            return x_t, t, self.teacher(x_t, t, cond)


class Prefix:
    """The erase prompt with k adversarial word embeddings after BOS (the official prefix_k layout)."""

    def __init__(self, pipe, ids: torch.Tensor, k: int):
        # the k slots keep the ids that followed the prompt (EOS/pad), as the official construct_id does;
        # only the embeddings there are the attack's. The prompt's own tokens all stay (see docs).
        self.ids = torch.cat([ids[:, :1], ids.new_full((len(ids), k), pipe.tokenizer.pad_token_id),
                              ids[:, 1:ids.shape[1] - k]], 1).to(pipe.device)
        self.table = pipe.text_encoder.get_input_embeddings().weight
        self.k = k

    def embeds(self, which: int, adv: torch.Tensor) -> torch.Tensor:
        base = self.table[self.ids[which]].detach()
        return torch.cat([base[:1], adv, base[1 + self.k:]])[None]

    def encode(self, text_encoder, which: int, adv: torch.Tensor) -> torch.Tensor:
        return encode(text_encoder, self.ids[which:which + 1], self.embeds(which, adv))

    def random(self, g: torch.Generator) -> torch.Tensor:
        """k embeddings of token ids drawn from the whole vocabulary (official init_adv)."""
        ids = torch.randint(self.table.shape[0], (self.k,), generator=g).to(self.table.device)
        return self.table[ids].detach().clone()


def attack(pipe, prefix: Prefix, states: States, which: int, adv: torch.Tensor, p: dict, seed: int, it: int
           ) -> tuple[torch.Tensor, list[float]]:
    """The inner attack: ``attack_steps`` Adam steps on the prefix embeddings toward the original model's
    concept prediction. Official quirks kept: no zero_grad between steps (the gradient accumulates), and
    fast_at takes the sign of that accumulated gradient in place."""
    x = adv.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=p["attack_lr"])
    acc, losses = None, []
    for s in range(p["attack_steps"]):
        x_t, t, (_, e_p) = states.draw([which] * p["batch_size"], generator(seed, it, 1 + s))
        (e_n,) = predict(pipe.unet, x_t, t, [prefix.encode(pipe.text_encoder, which, x)])
        loss = nn.functional.mse_loss(e_n, e_p)
        check_finite(loss, "AdvUnlearn's attack", it)
        (grad,) = torch.autograd.grad(loss, x)
        acc = grad if acc is None or not p["attack_accumulate_grad"] else acc + grad
        if p["attack_method"] == "fast_at":
            acc = acc.sign()
        x.grad = acc.clone()
        opt.step()
        losses.append(loss.item())
    return x.detach(), losses


def advunlearn(pipe, concept: Concept, params: dict, seed: int, progress=None,
               ckpt: Checkpointer | None = None, masks: dict[str, torch.Tensor] | None = None
               ) -> tuple[dict[str, torch.Tensor], dict]:
    """Erase the concept by adversarial unlearning; returns the trained tensors (``text_encoder.*`` or
    ``unet.*``) and a record with the loss curves."""
    p = params
    te, unet = pipe.text_encoder, pipe.unet
    prefix_name, module, names = trained_parameters(pipe, p["train"])
    frozen = frozen_copy(unet)
    te.requires_grad_(False)
    unet.requires_grad_(False)
    named = dict(module.named_parameters())
    opt = torch.optim.Adam([named[n].requires_grad_(True) for n in names], lr=p["lr"])

    tok = pipe.tokenizer
    erase_ids = prompt_ids(tok, list(concept.erase)).to(pipe.device)
    retain = retain_prompts(concept, p["retain"]) if p["retain_weight"] > 0 else []
    retain_ids = prompt_ids(tok, retain).to(pipe.device) if retain else None
    with torch.no_grad():   # the original encoder's conditions: what x_t is drawn along, what eps* sees
        erase_conds = encode(te, erase_ids)
        uncond = encode(te, prompt_ids(tok, [""]).to(pipe.device))
        retain_conds = torch.cat([encode(te, r) for r in retain_ids.split(64)]) if retain else None
    eta = p["negative_guidance"]

    def erase_teacher(x, t, cond):
        e_0, e_p = predict(frozen, x, t, [uncond, cond])
        return e_0 - eta * (e_p - e_0), e_p

    sched = ddim_scheduler(pipe, p["ddim_steps"])
    erase_states = States(pipe, frozen, sched, erase_conds, uncond, erase_teacher, p, seed)
    retain_states = (States(pipe, frozen, sched, retain_conds, uncond,
                            lambda x, t, cond: tuple(predict(frozen, x, t, [cond])), p, seed + 1)
                     if retain else None)
    prefix = Prefix(pipe, erase_ids, p["prefix_tokens"])

    start, adv, which = 0, None, 0
    rec = {"losses": [], "unlearn_losses": [], "retain_losses": [], "attack_losses": [], "drawn": []}
    if ckpt is not None and (state := ckpt.load()) is not None:
        with torch.no_grad():
            for n in names:
                named[n].copy_(state["params"][n])
        opt.load_state_dict(state["opt"])
        start, rec = state["step"], state["record"]
        adv = state["adv"].to(pipe.device) if state["adv"] is not None else None

    module.train()
    for it in range(start, p["iterations"]):
        if it % p["attack_every"] == 0 or it == start:   # the round's erase prompt (and, after warmup, attack)
            rnd = it - it % p["attack_every"]
            which = int(torch.randint(len(erase_ids), (1,), generator=generator(seed, rnd, 0)))
            if it >= p["warmup"] and it % p["attack_every"] == 0:
                init = adv if p["attack_init"] == "latest" and adv is not None else prefix.random(generator(seed, it, -1))
                adv, losses = attack(pipe, prefix, erase_states, which, init, p, seed, it)
                rec["attack_losses"].append([losses[0], losses[-1]])
        g = torch.Generator().manual_seed(seed * 1_000_003 + it)
        x_t, t, (target, _) = erase_states.draw([which] * p["batch_size"], g)
        cond = (encode(te, erase_ids[which:which + 1]) if it < p["warmup"] or adv is None
                else prefix.encode(te, which, adv))
        unlearn = nn.functional.mse_loss(predict(unet, x_t, t, [cond])[0], target)
        loss, kept = unlearn, torch.zeros(())
        if retain:
            rows = retain_batch(len(retain), p["retain_batch"], it, seed)
            x_r, t_r, (e_r,) = retain_states.draw(rows, g)
            kept = nn.functional.mse_loss(predict(unet, x_r, t_r, [encode(te, retain_ids[rows])])[0], e_r)
            loss = unlearn + p["retain_weight"] * kept
        check_finite(loss, "AdvUnlearn", it)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if masks and prefix_name == "unet":
            with torch.no_grad():
                for n in names:
                    if n in masks:
                        named[n].mul_(masks[n])
        for key, v in (("losses", loss), ("unlearn_losses", unlearn), ("retain_losses", kept)):
            rec[key].append(v.item())
        rec["drawn"].append(which)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.4f}")
        if ckpt is not None and ckpt.due(it + 1) and it + 1 < p["iterations"]:
            ckpt.save(it + 1, {"params": {n: named[n].detach().clone() for n in names}, "opt": opt.state_dict(),
                               "record": rec, "adv": None if adv is None else adv.detach().cpu()})
    module.eval()
    te.requires_grad_(False)
    unet.requires_grad_(False)
    counts = torch.bincount(torch.tensor(rec.pop("drawn"), dtype=torch.long), minlength=len(erase_ids)).tolist()
    record = {**rec, "prompt_iterations": counts, "trained": prefix_name, "trained_tensors": len(names),
              "retain_prompts": len(retain),
              "adversarial_prompt_norm": None if adv is None else adv.norm(dim=-1).tolist()}
    return {f"{prefix_name}.{n}": named[n].detach().clone() for n in names}, record
