"""The linear algebra of UCE and RECE: closed-form edits of cross-attention projections.

Keys and values are rows (N x d and N x out), as text encodings are. Two solves:

``closed_form_edit``: UCE's edit of one projection W (out x d),

    W* = argmin_W'  lamb ||W' - W||_F^2 + s_e sum_i ||W' k_i - v_i||^2 + s_p sum_j ||W' p_j - W p_j||^2
       = (lamb W + s_e V^T K + s_p W P^T P)(lamb I + s_e K^T K + s_p P^T P)^-1      (UCE eq. 7)
       = W + (V - K W^T)^T op,   op = s_e K B^-1,  B = lamb I + s_e K^T K + s_p P^T P.

``op`` (N x d) is solved once and shared by every layer edited with the same keys,
so a layer costs O(out * d * N) instead of a d x d solve. When the values are
the layer's own response to guide tokens, V = G W^T (UCE and RECE always edit
so), the edit is a right-multiplication shared by all layers,

    W* = W (I + (G - K)^T op)                                         (``guided_edit``)

so after any sequence of such edits W'_l = W_l Q for one d x d matrix Q.

``derive_embedding``: RECE's adversarial embedding for each token row c,

    regzero:   c' = argmin_x sum_l ||W'_l x - W_l c||^2 + reg ||x||^2
    standard:  c' = argmin_x sum_l ||W'_l x - W_l c||^2 + reg ||x - c_old||^2
    surrogate: c' = argmin_x sum_l ||W'_l x - W_l c||^2 + reg sum_l ||W'_l x - W'_l c||^2

with W_l the original and W'_l the edited projections (all K and V of cross-attention).
It needs only the Gram matrices sum_l W'^T W' and sum_l W'^T W (``solve_embedding``),
which with W' = W Q are Q^T G0 Q and Q^T G0, G0 = sum_l W_l^T W_l: RECE computes
G0 once and each epoch costs d x d work. Small d x d systems are solved in float64.
"""
from __future__ import annotations

from typing import Sequence

import torch

DERIVATIONS = ("regzero", "standard", "surrogate")


def _solve_sym(a: torch.Tensor, rhs_rows: torch.Tensor) -> torch.Tensor:
    """Rows x with a x^T = rhs^T for a symmetric positive definite a (in float64)."""
    return torch.linalg.solve(a.double(), rhs_rows.double().T).T


def edit_operator(keys: torch.Tensor, preserve: torch.Tensor | None, lamb: float, erase_scale: float,
                  preserve_scale: float) -> torch.Tensor:
    """s_e K B^-1 (N x d, float64): what every layer's edit is multiplied by (see module docstring)."""
    d = keys.shape[1]
    k = keys.double()
    b = lamb * torch.eye(d, dtype=torch.float64, device=keys.device) + erase_scale * k.T @ k
    if preserve is not None and len(preserve):
        p = preserve.double()
        b = b + preserve_scale * p.T @ p
    return erase_scale * _solve_sym(b, k)


def _compute_dtype(weight: torch.Tensor) -> torch.dtype:
    return torch.promote_types(weight.dtype, torch.float32)   # half-precision weights are edited in fp32


def apply_edit(weight: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, operator: torch.Tensor) -> torch.Tensor:
    """W + (V - K W^T)^T op: the closed-form solution for W given ``edit_operator(keys, ...)``."""
    dt = _compute_dtype(weight)
    w = weight.to(dt)
    residual = values.to(dt) - keys.to(dt) @ w.T                 # N x out: what the edit must change
    return (w + residual.T @ operator.to(dt)).to(weight.dtype)


def guided_edit(weight: torch.Tensor, keys: torch.Tensor, guide: torch.Tensor, operator: torch.Tensor) -> torch.Tensor:
    """``apply_edit`` with values V = guide W^T (the layer's response to guide tokens): W (I + (G - K)^T op)."""
    dt = _compute_dtype(weight)
    w = weight.to(dt)
    return (w + (w @ (guide - keys).to(dt).T) @ operator.to(dt)).to(weight.dtype)


def closed_form_edit(weight: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                     preserve: torch.Tensor | None = None, lamb: float = 0.5, erase_scale: float = 1.0,
                     preserve_scale: float = 1.0) -> torch.Tensor:
    """UCE's closed-form edit of one projection matrix (see module docstring)."""
    return apply_edit(weight, keys, values, edit_operator(keys, preserve, lamb, erase_scale, preserve_scale))


def gram(weights: Sequence[torch.Tensor], others: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """sum_l W_l^T O_l (d x d), with O = W when ``others`` is None; one product over the stacked matrices."""
    w = torch.cat(list(weights)).to(_compute_dtype(weights[0]))
    return w.T @ (w if others is None else torch.cat(list(others)).to(w.dtype))


def solve_embedding(gram_new: torch.Tensor, cross: torch.Tensor, c: torch.Tensor, reg: float,
                    variant: str = "regzero", c_old: torch.Tensor | None = None) -> torch.Tensor:
    """RECE's c' from gram_new = sum_l W'^T W' and cross = sum_l W'^T W (see module docstring)."""
    if variant not in DERIVATIONS:
        raise ValueError(f"unknown derivation {variant!r}; allowed: {', '.join(DERIVATIONS)}")
    a, m, rows = gram_new.double(), cross.double(), c.double()
    rhs = rows @ m.T                                                   # rows: sum_l W'^T W c
    eye = torch.eye(a.shape[0], dtype=torch.float64, device=a.device)
    if variant == "regzero":
        x = _solve_sym(a + reg * eye, rhs)
    elif variant == "standard":
        if c_old is None:
            raise ValueError("the standard derivation regularises toward c_old; none given")
        x = _solve_sym(a + reg * eye, rhs + reg * c_old.double())
    else:
        x = _solve_sym((1 + reg) * a, rhs + reg * rows @ a)
    return x.to(c.dtype)


def derive_embedding(edited: Sequence[torch.Tensor], original: Sequence[torch.Tensor], c: torch.Tensor,
                     reg: float, variant: str = "regzero", c_old: torch.Tensor | None = None) -> torch.Tensor:
    """RECE's closed-form adversarial embedding c' for every row of c (N x d), from the projections themselves.

    ``edited``/``original``: the projections W'_l and W_l (out_l x d each).
    ``c_old``: rows to regularise toward (``standard`` only; the concept's old UCE target).
    """
    return solve_embedding(gram(edited), gram(edited, original), c, reg, variant, c_old)
