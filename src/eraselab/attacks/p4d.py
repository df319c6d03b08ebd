"""P4D (Chin et al., ICML 2024, arXiv 2309.06135, "Prompting4Debugging"): hard-prompt optimisation
that makes the erased model predict, for the adversarial prompt, what the base model predicts for
the original one.

The learned tokens are continuous embeddings, made hard PEZ-style (Wen et al., 2023): each
forward pass uses the vocabulary embedding nearest (cosine) to each continuous one, and the
gradient with respect to those hard embeddings is applied to the continuous ones. The loss, on
the base model's image x0 of the prompt noised to x_t:

    L = || eps_base(x_t, c_plain, t) - eps_erased(x_t, c_adv, t) ||^2

Layout: P4D-N (``insert_every: 0``) puts ``prefix_tokens`` learned tokens before the prompt, as
the UnlearnDiff repository's P4D (the authors' own P4D-N learns 16 tokens that replace the
prompt); P4D-K (``insert_every: K``) puts one learned token before every K prompt tokens.
Schedule, early stopping and batching are the prefix-attack loop's (``prefix.py``).
"""
from __future__ import annotations

import torch

from ..adversarial import AdversarialSet, encode
from ..checkpoint import Checkpointer
from .common import AttackInputs, generator
from .prefix import prefix_attack


class HardTokens:
    """k continuous embeddings per prompt, projected to their nearest vocabulary tokens in the forward pass."""

    def __init__(self, allowed: torch.Tensor, words: torch.Tensor, seed: int):
        self.words, self.seed = words, seed                          # V' x D: the allowed tokens' embeddings
        self.unit = torch.nn.functional.normalize(words.float(), dim=-1)

    def init(self, cases: list[int], k: int) -> torch.Tensor:
        """The embeddings of k random allowed tokens per prompt (both official codes start from random tokens)."""
        ids = [torch.randint(len(self.words), (k,), generator=generator(self.seed, c, -1)) for c in cases]
        return self.words[torch.stack(ids).to(self.words.device)].float()

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """Indices of the allowed tokens of highest cosine similarity (the official projection)."""
        return (torch.nn.functional.normalize(x, dim=-1) @ self.unit.T).argmax(-1)

    def embed(self, x, gens):
        leaf = self.words[self.nearest(x)].float().requires_grad_(True)
        return leaf, leaf                  # the loss's gradient w.r.t. the hard embeddings goes to x

    def project(self, x):
        return x                           # x stays continuous; the projection is in the forward pass

    def hard(self, x):
        return self.nearest(x)


def base_target(inputs: AttackInputs, batch_size: int = 32):
    """make_target for the loop: eps_base(x_t, c_plain, t), the base model's prediction for the plain prompt.

    The plain prompts are encoded once by the base text encoder (the erased model's own when the
    erasure left it unchanged, ``inputs.base_text_encoder`` is None)."""
    if inputs.base_unet is None:
        raise ValueError("P4D needs the base model's UNet (AttackInputs.base_unet): NEEDS['p4d'] has 'base'")

    def make(pipe, plain_ids: torch.Tensor):
        te = inputs.base_text_encoder or pipe.text_encoder
        with torch.no_grad():
            cond = torch.cat([encode(te, plain_ids[i:i + batch_size])
                              for i in range(0, len(plain_ids), batch_size)])
        unet = inputs.base_unet.requires_grad_(False).eval()
        return lambda x_t, t, rows, noise: unet(x_t, t, cond[rows]).sample
    return make


def p4d(pipe, inputs: AttackInputs, params: dict, seed: int, progress=None,
        ckpt: Checkpointer | None = None) -> tuple[AdversarialSet, dict]:
    return prefix_attack(pipe, inputs, params, seed, "P4D", HardTokens, make_target=base_target(inputs),
                         progress=progress, ckpt=ckpt)
