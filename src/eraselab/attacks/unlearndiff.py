"""UnlearnDiff (Zhang et al., ECCV 2024, arXiv 2310.11868): a white-box prompt attack on an erased model.

Each of the k prefix tokens is a distribution over the vocabulary, kept on the
probability simplex (uniform at the start). A forward pass draws a hard token
from each distribution (straight-through: the gradient of the one-hot, clipped
to [-1, 1], goes to the distribution) and multiplies it into the
token-embedding matrix. The loss is the erased model's diffusion-classifier
loss on the *base* model's image x0 for that prompt:

    x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps,   L = || eps - eps_erased(x_t, c_adv, t) ||^2

Hard tokens are the argmax of each distribution. The schedule, early stopping
(on the decoded and re-tokenised prompt, with the attack protocol's detector
settings) and batching are the prefix-attack loop's (``prefix.py``).
"""
from __future__ import annotations

import torch

from ..checkpoint import Checkpointer
from ..adversarial import AdversarialSet
from .common import AttackInputs, project_simplex, sample_one_hot
from .prefix import prefix_attack, timestep_schedule  # noqa: F401 (the schedule is part of this attack)


class SoftTokens:
    """k distributions over the vocabulary per prompt, sampled straight-through."""

    def __init__(self, allowed: torch.Tensor, words: torch.Tensor, seed: int):
        self.words = words                                   # V' x D: the embedding of each allowed token

    def init(self, cases: list[int], k: int) -> torch.Tensor:
        return torch.full((len(cases), k, len(self.words)), 1.0 / len(self.words), device=self.words.device)

    def embed(self, x, gens):
        leaf = x.clone().requires_grad_(True)
        return leaf, sample_one_hot(leaf, gens) @ self.words

    def project(self, x):
        return project_simplex(x)

    def hard(self, x):
        return x.argmax(-1)


def unlearndiff(pipe, inputs: AttackInputs, params: dict, seed: int, progress=None,
                ckpt: Checkpointer | None = None) -> tuple[AdversarialSet, dict]:
    return prefix_attack(pipe, inputs, params, seed, "UnlearnDiff", SoftTokens, progress=progress, ckpt=ckpt)
