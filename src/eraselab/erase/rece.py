"""RECE: Reliable and Efficient Concept Erasure (Gong et al., ECCV 2024, arXiv 2407.12383).

Starts from a UCE edit (``uce``: its own UCE parameters), then for ``epochs`` epochs:
(a) derives, in closed form, the embedding c' that makes the *edited* cross-attention
    projections reproduce what the *original* ones made of the concept's full 77-token
    encoding c (``closed_form.solve_embedding``; ``derivation`` regzero/standard/surrogate
    with ``regular_scale``): the embedding that regenerates the erased concept;
(b) erases c' with a UCE step on the current projections: all 77 tokens of c' are
    mapped to what the guide's 77 tokens give (``lamb``, ``erase_scale``), with the
    ``retain`` set kept (``preserve_scale``): ``unconditional``, the empty prompt
    once per erase prompt (the official nudity script), or ``preserve``, the empty
    prompt and the concept's preserve prompts (its artist and object scripts).
After UCE and after each epoch a validator (when given) generates the concept's
validation prompt set and its detector scores it; the state with the lowest rate
is kept (ties: the earlier one), as the official code does.

The paper's per-concept-type settings are presets (``by_type``); an explicit
``regular_scale``, ``epochs`` or ``retain`` overrides them.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..checkpoint import Checkpointer
from .closed_form import edit_operator, solve_embedding
from .common import Concept
from .uce import CrossAttentionKV, Encodings, uce_edit, uce_prompts
from .validation import Validator

PRESET_KEYS = ("regular_scale", "epochs", "retain")
RETAIN = ("unconditional", "preserve")


def resolve(params: dict, concept_type: str) -> dict:
    """The params with the concept type's preset filling every preset key left unset (null)."""
    preset = params.get("by_type", {}).get(concept_type, {})
    out = dict(params)
    for k in PRESET_KEYS:
        if out.get(k) is None:
            out[k] = preset.get(k)
        if out[k] is None:
            raise ValueError(f"RECE: {k} is unset and by_type.{concept_type} gives none")
    return out


def rece_prompts(concept: Concept) -> list[str]:
    return list(concept.erase) + concept.guides() + [""] + list(concept.preserve)


def retained(concept: Concept, retain: str) -> list[str]:
    """The prompts each RECE step keeps (all 77 tokens of each)."""
    if retain not in RETAIN:
        raise ValueError(f"RECE: unknown retain {retain!r}; allowed: {', '.join(RETAIN)}")
    if retain == "unconditional":   # train.py: retain_texts = [' ' for _ in old_texts]
        return [""] * len(concept.erase)
    return list(dict.fromkeys([""] + list(concept.preserve)))


def adversarial_embeddings(kv: CrossAttentionKV, enc: Encodings, concept: Concept, p: dict) -> torch.Tensor:
    """c' for each erase prompt (n x 77 x d), against the current projections."""
    c = enc(list(concept.erase))
    c_old = enc(concept.guides()).reshape(-1, c.shape[-1]) if p["derivation"] == "standard" else None
    rows = solve_embedding(*kv.grams(), c.reshape(-1, c.shape[-1]), p["regular_scale"], p["derivation"], c_old)
    return rows.reshape(c.shape)


def erase_embeddings(kv: CrossAttentionKV, enc: Encodings, adv: torch.Tensor, concept: Concept, p: dict) -> None:
    """UCE step on the current projections: every token of c' -> the guide's token at its position."""
    d = adv.shape[-1]
    keys, guide = adv.reshape(-1, d), enc(concept.guides()).reshape(-1, d)
    pres = enc(retained(concept, p["retain"])).reshape(-1, d)
    kv.edit(keys, guide, edit_operator(keys, pres, p["lamb"], p["erase_scale"], p["preserve_scale"]))


def rece(pipe, concept: Concept, params: dict, seed: int, progress=None,
         ckpt: Checkpointer | None = None, masks: dict[str, torch.Tensor] | None = None,
         validator: Callable | None = None, validation: dict | None = None,
         model_dir=None) -> tuple[dict[str, torch.Tensor], dict]:
    """UCE, then ``epochs`` rounds of derive-and-erase; keeps the state with the lowest validation rate.

    ``validator(pipe) -> rate`` scores the concept on its validation prompts (or is built from
    ``validation``, the erase stage's spec, and the base ``model_dir``); without one, the last
    epoch is kept (and the record says so). Deterministic: no sampling.
    """
    if validator is None and validation is not None:
        validator = Validator.from_spec(validation, model_dir)
    p = resolve(params, concept.type)
    kv = CrossAttentionKV(pipe, with_gram=p["epochs"] > 0, masks=masks)
    enc = Encodings(pipe, uce_prompts(concept, p["uce"]) + rece_prompts(concept))
    record = {"uce": uce_edit(kv, enc, concept, p["uce"]), "regular_scale": p["regular_scale"],
              "epochs": p["epochs"], "retained": retained(concept, p["retain"]), "validation_rates": {}}

    def score(label: str) -> float | None:
        rate = validator(pipe) if validator is not None else None
        record["validation_rates"][label] = rate
        return rate

    best = ("uce", score("uce"), kv.tensors())
    for epoch in range(p["epochs"]):
        erase_embeddings(kv, enc, adversarial_embeddings(kv, enc, concept, p), concept, p)
        rate = score(f"epoch-{epoch}")
        if validator is None or rate < best[1]:
            best = (f"epoch-{epoch}", rate, kv.tensors())
        if progress is not None:
            progress.update(1)
    kv.load(best[2])   # leave the pipeline in the state that is returned
    record["selected"] = best[0] if validator is not None else f"{best[0]} (last: no validation set)"
    record["selected_rate"] = best[1]
    return best[2], record
