"""No erasure: the model as it is. With a pruning mask, the variant is pruning alone."""
from __future__ import annotations


def identity(pipe, concept, params: dict, seed: int, progress=None, ckpt=None, masks=None):
    """Changes nothing (the erase stage adds a mask's zeroed tensors to the delta)."""
    return {}, {"note": "identity: no erasure method ran"}
