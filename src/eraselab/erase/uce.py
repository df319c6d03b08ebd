"""UCE: Unified Concept Editing (Gandikota et al., WACV 2024, arXiv 2308.14761).

Every cross-attention key and value projection (``attn2.to_k``, ``attn2.to_v``)
is edited in closed form (``closed_form``) so that the erase prompts' text tokens
k_i produce what the guide's tokens produced, v_i = W g_i, while the preserve
prompts' tokens keep their outputs. The text encoder is untouched.

Which tokens (``tokens``), as in the two official codebases:
- ``subject_to_end`` (the paper-era repo, which RECE builds on): every token from
  the prompt's last subject token through EOS and padding, aligned position by
  position with the guide's tokens from its own last subject token (for the
  empty guide, from BOS); preserve prompts use all 77 tokens.
- ``last_subject`` (the current repo): only the last subject token of each erase,
  guide and preserve prompt.
The last subject token is at index (attention-mask sum - 2). With
``preserve_unconditional`` the empty prompt joins the preserve set (it keeps the
unconditional branch of guidance intact); unset, it follows the token choice's
repo: the paper-era repo always adds it, the current one does not.
"""
from __future__ import annotations

import torch

from ..checkpoint import Checkpointer
from .closed_form import edit_operator, gram, guided_edit
from ..models import encode_prompts
from .common import Concept, cross_attention_kv

TOKEN_CHOICES = ("subject_to_end", "last_subject")


class Encodings:
    """Text encodings (77 x d) and last-subject-token indices of the prompts an edit uses, encoded once."""

    @torch.no_grad()
    def __init__(self, pipe, prompts: list[str]):
        unique = list(dict.fromkeys(prompts))
        mask = pipe.tokenizer(unique, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt")["attention_mask"]
        self.emb = dict(zip(unique, encode_prompts(pipe, unique)))
        self.last = dict(zip(unique, (mask.sum(1) - 2).tolist()))

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        return torch.stack([self.emb[p] for p in prompts])


def erase_tokens(enc: Encodings, erase: list[str], guides: list[str], tokens: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys of the erase prompts and the guide tokens aligned with them (rows, N x d each)."""
    if tokens not in TOKEN_CHOICES:
        raise ValueError(f"unknown token choice {tokens!r}; allowed: {', '.join(TOKEN_CHOICES)}")
    keys, targets = [], []
    for e, g in zip(erase, guides):
        i, j, length = enc.last[e], enc.last[g], enc.emb[e].shape[0]
        n = 1 if tokens == "last_subject" else length - max(i, j)
        keys.append(enc.emb[e][i:i + n])
        targets.append(enc.emb[g][j:j + n])
    return torch.cat(keys), torch.cat(targets)


def preserve_tokens(enc: Encodings, prompts: list[str], tokens: str) -> torch.Tensor | None:
    if not prompts:
        return None
    if tokens == "last_subject":
        return torch.stack([enc.emb[p][enc.last[p]] for p in prompts])
    return enc(prompts).reshape(-1, enc.emb[prompts[0]].shape[-1])


def keeps_unconditional(p: dict) -> bool:
    """``preserve_unconditional``, or when unset (None) the choice of the repo whose tokens are used."""
    keep = p.get("preserve_unconditional")
    return p["tokens"] == "subject_to_end" if keep is None else keep


def preserve_prompts(concept: Concept, p: dict) -> list[str]:
    return list(dict.fromkeys(([""] if keeps_unconditional(p) else []) + list(concept.preserve)))


class CrossAttentionKV:
    """The K/V projections UCE and RECE edit, in place, as one stacked matrix.

    Every edit here is W <- W (I + (G - K)^T op) for all layers at once
    (``closed_form.guided_edit``). The projections are re-pointed to row blocks
    of one (sum_l out_l) x d matrix, so an edit of all 32 SD projections is two
    large matrix products rather than 64 small ones. The edited projections stay
    W_0 Q for one tracked d x d matrix Q, so sum_l W'^T W' = Q^T G0 Q with
    G0 = sum_l W_0^T W_0, computed once when ``with_gram``. Pruning masks are
    re-applied after each edit; that breaks W' = W_0 Q, so then the Gram
    matrices are recomputed from the weights.
    """

    def __init__(self, pipe, with_gram: bool = False, masks: dict[str, torch.Tensor] | None = None):
        named = dict(pipe.unet.named_parameters())
        self.names = cross_attention_kv(pipe.unet)
        params = [named[n] for n in self.names]
        self.stacked = torch.cat([p.detach() for p in params])
        self.blocks, row = [], 0
        with torch.no_grad():
            for p in params:
                p.data = self.stacked[row:row + p.shape[0]]    # a view: editing the stack edits the UNet
                self.blocks.append((row, row + p.shape[0]))
                row += p.shape[0]
        self.mask = (torch.cat([masks.get(n, torch.ones_like(p)) for n, p in zip(self.names, params)])
                     if masks else None)
        self.q = torch.eye(self.stacked.shape[1], dtype=torch.float64)
        self.original = self.stacked.clone() if with_gram and masks else None
        self.g0 = gram([self.stacked]).double() if with_gram and not masks else None

    @torch.no_grad()
    def edit(self, keys: torch.Tensor, guide: torch.Tensor, op: torch.Tensor) -> None:
        self.stacked.copy_(guided_edit(self.stacked, keys, guide, op))
        if self.mask is not None:
            self.stacked.mul_(self.mask)
        self.q = guided_edit(self.q, keys.double(), guide.double(), op)

    def grams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """sum_l W'^T W' and sum_l W'^T W_0 (d x d, float64)."""
        if self.original is not None:
            return gram([self.stacked]).double(), gram([self.stacked], [self.original]).double()
        return self.q.T @ self.g0 @ self.q, self.q.T @ self.g0

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"unet.{n}": self.stacked[a:b].clone() for n, (a, b) in zip(self.names, self.blocks)}

    @torch.no_grad()
    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        for n, (a, b) in zip(self.names, self.blocks):
            self.stacked[a:b] = tensors[f"unet.{n}"]


def uce_prompts(concept: Concept, p: dict) -> list[str]:
    return list(concept.erase) + concept.guides() + preserve_prompts(concept, p)


def uce_edit(kv: CrossAttentionKV, enc: Encodings, concept: Concept, p: dict) -> dict:
    """Apply UCE's edit through ``kv``; returns what the edit used (for the record)."""
    keys, guide = erase_tokens(enc, list(concept.erase), concept.guides(), p["tokens"])
    kept = preserve_prompts(concept, p)
    pres = preserve_tokens(enc, kept, p["tokens"])
    s_p = p["preserve_scale"] if p.get("preserve_scale") is not None else max(0.1, 1 / max(1, len(kept)))
    kv.edit(keys, guide, edit_operator(keys, pres, p["lamb"], p["erase_scale"], s_p))
    return {"edited": len(kv.names), "erase_tokens": int(keys.shape[0]), "preserve_prompts": kept,
            "preserve_tokens": 0 if pres is None else int(pres.shape[0]), "preserve_scale_used": s_p}


def uce(pipe, concept: Concept, params: dict, seed: int, progress=None,
        ckpt: Checkpointer | None = None, masks: dict[str, torch.Tensor] | None = None
        ) -> tuple[dict[str, torch.Tensor], dict]:
    """Erase the concept (every erase prompt, each toward its anchor) in closed form; deterministic."""
    kv = CrossAttentionKV(pipe, masks=masks)
    record = uce_edit(kv, Encodings(pipe, uce_prompts(concept, params)), concept, params)
    if progress is not None:
        progress.update(1)
    return kv.tensors(), record
