"""Ring-A-Bell (Tsai et al., ICLR 2024): a black-box attack that needs only the text encoder.

1. Concept vector: v = mean over paired prompts of E(prompt with the concept) -
   E(the same prompt without it), on full 77 x D text-encoder outputs.
2. For each prompt p of the set, the target T = E(p) + eta * v.
3. ``mode: prompt`` (the paper): a genetic algorithm searches K discrete tokens
   whose encoding is closest to T: minimise ||E(P) - T||^2. Each generation
   keeps the best half of the population; each parent is crossed over with a
   random other parent with probability ``crossover`` (one cut point, two
   children) and every individual but the best is mutated with probability
   ``mutation`` (one random position set to a random token). Keeping the best
   individual unmutated makes the best objective never rise (the official
   notebook may also mutate it). As in the notebook, the best tokens are
   decoded to a text prompt, and generation uses that text, tokenized again.
   ``mode: embedding`` (the cheap variant of RECE's code): no search, T itself
   is fed to the pipeline as ``prompt_embeds``.

The result depends only on the text encoder, so the DAG computes it once per
base model and reuses it for every erased variant that left the text encoder
unchanged.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..checkpoint import Checkpointer
from ..adversarial import AdversarialSet, encode
from .common import AttackInputs, layout_ids, numpy_rng, prompt_ids, retokenize, vocabulary


@torch.no_grad()
def encode_texts(text_encoder, tokenizer, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    ids = prompt_ids(tokenizer, texts)
    return torch.cat([encode(text_encoder, ids[i:i + batch_size]) for i in range(0, len(ids), batch_size)])


def concept_vector(text_encoder, tokenizer, pairs: pd.DataFrame) -> torch.Tensor:
    """77 x D: the mean difference of encodings with and without the concept."""
    missing = {"prompt", "prompt_without"} - set(pairs.columns)
    if missing:
        raise ValueError(f"Ring-A-Bell pairs need columns prompt and prompt_without; missing {sorted(missing)}")
    with_ = encode_texts(text_encoder, tokenizer, pairs["prompt"].tolist())
    without = encode_texts(text_encoder, tokenizer, pairs["prompt_without"].tolist())
    return (with_ - without).mean(0)


class Genetic:
    """Ring-A-Bell's genetic search for one prompt: populations of K token indices into a vocabulary."""

    def __init__(self, p: dict, vocab_size: int, rng: np.random.Generator):
        self.p, self.vocab_size, self.rng = p, vocab_size, rng
        self.pop = rng.integers(vocab_size, size=(p["population"], p["length"]))
        self.fitness = np.full(len(self.pop), np.nan)
        self.best: list[float] = []   # the best objective after each generation

    def select(self) -> None:
        """Keep the best half (the population's size is set by the parameter, not by crossover's luck)."""
        order = np.argsort(self.fitness, kind="stable")[:self.p["population"] // 2]
        self.pop, self.fitness = self.pop[order], self.fitness[order]
        self.best.append(float(self.fitness[0]))

    def breed(self) -> None:
        parents, k, rng = self.pop, self.p["length"], self.rng
        children = []
        for i in range(len(parents)):
            if rng.random() < self.p["crossover"]:
                j, cut = rng.integers(len(parents)), rng.integers(k)
                children += [np.concatenate([parents[i][:cut], parents[j][cut:]]),
                             np.concatenate([parents[j][:cut], parents[i][cut:]])]
        pop = np.concatenate([parents, np.array(children, dtype=parents.dtype).reshape(-1, k)])
        fitness = np.concatenate([self.fitness, np.full(len(children), np.nan)])
        for i in range(1, len(pop)):                              # the best (index 0) is kept as it is
            if rng.random() < self.p["mutation"]:
                pop[i, rng.integers(k)] = rng.integers(self.vocab_size)
                fitness[i] = np.nan
        self.pop, self.fitness = pop, fitness

    def state(self) -> dict:
        """Tensors and plain data only, so that a checkpoint loads with torch.load(weights_only=True)."""
        return {"pop": torch.from_numpy(self.pop.copy()), "fitness": torch.from_numpy(self.fitness.copy()),
                "best": list(self.best), "rng": self.rng.bit_generator.state}

    def restore(self, s: dict) -> None:
        self.pop, self.fitness, self.best = s["pop"].numpy(), s["fitness"].numpy(), list(s["best"])
        self.rng.bit_generator.state = s["rng"]


@torch.no_grad()
def _evaluate(searches: list[Genetic], targets: torch.Tensor, allowed: torch.Tensor, te, tok, batch_size: int):
    """Fill in the objective ||E(P) - T||^2 of every individual not yet scored, all prompts in one pass."""
    todo = [(r, i) for r, s in enumerate(searches) for i in np.flatnonzero(np.isnan(s.fitness))]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        ids = torch.tensor([layout_ids(tok, allowed[searches[r].pop[i]].tolist()) for r, i in chunk])
        out = encode(te, ids).float()
        rows = torch.tensor([r for r, _ in chunk], device=out.device)
        losses = ((out - targets[rows]) ** 2).sum(dim=(1, 2)).cpu().numpy()
        for (r, i), loss in zip(chunk, losses):
            searches[r].fitness[i] = loss


def ringabell(pipe, inputs: AttackInputs, params: dict, seed: int, progress=None,
              ckpt: Checkpointer | None = None) -> tuple[AdversarialSet, dict]:
    p, tok, te = params, pipe.tokenizer, pipe.text_encoder
    te.requires_grad_(False).eval()
    rows = inputs.prompts.reset_index(drop=True)
    v = concept_vector(te, tok, inputs.pairs).float()
    plain = prompt_ids(tok, rows["prompt"].tolist())
    targets = encode_texts(te, tok, rows["prompt"].tolist()).float() + p["eta"] * v
    record = {"concept_vector_norm": float(v.norm()), "n_pairs": len(inputs.pairs)}
    if p["mode"] == "embedding":
        texts = [f"{s} [+{p['eta']:g} v]" for s in rows["prompt"]]
        if progress is not None:
            progress.update(progress.total or 0)
        return AdversarialSet(plain, texts, prompt_embeds=targets.to(te.dtype)), record

    allowed = vocabulary(tok, p["vocabulary"])
    cases = [int(c) for c in rows["case_number"]]
    searches = [Genetic(p, len(allowed), numpy_rng(seed, c)) for c in cases]
    start = 0
    if ckpt is not None and (state := ckpt.load()) is not None:
        for s, saved in zip(searches, state["searches"]):
            s.restore(saved)
        start = state["step"]
    if progress is not None:
        progress.reset(total=p["generations"])
        progress.update(start)
    for gen in range(start, p["generations"]):
        _evaluate(searches, targets, allowed, te, tok, p["batch_size"])
        for s in searches:
            s.select()
        if gen + 1 < p["generations"]:
            for s in searches:
                s.breed()
            if ckpt is not None and ckpt.due(gen + 1):
                ckpt.save(gen + 1, {"searches": [s.state() for s in searches]})
        if progress is not None:
            progress.update(1)
            progress.set_postfix(objective=f"{np.mean([s.best[-1] for s in searches]):.3g}")
    found = [allowed[s.pop[0]].tolist() for s in searches]
    record["rows"] = [{"case_number": c, "objective_start": s.best[0], "objective": s.best[-1],
                       "objective_curve": s.best, "search_ids": f} for c, s, f in zip(cases, searches, found)]
    # the notebook hands on tokenizer.decode(best tokens): the text, not the ids, is the attack
    return AdversarialSet(*retokenize(tok, torch.tensor([layout_ids(tok, f) for f in found]))), record
