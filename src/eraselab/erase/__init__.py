"""Erasure methods. Each is ``method(pipe, concept, params, seed, ...) -> (changed tensors, record)``.

All methods work on a diffusers ``StableDiffusionPipeline`` and nothing else,
so the same function erases from ConceptWorld's tiny UNet and from SD v1.4.
They return the tensors they changed (keys prefixed ``unet.`` / ``text_encoder.``);
the erase stage (``stage.py``) saves them as a delta. ``METHODS`` names where
each lives; a job imports only its own (``eraselab.registry``).
"""
from __future__ import annotations

METHODS = {"esd": "eraselab.erase.esd:esd", "all-but-one": "eraselab.erase.abo:all_but_one",
           "uce": "eraselab.erase.uce:uce", "rece": "eraselab.erase.rece:rece",
           "salun": "eraselab.erase.salun:salun", "advunlearn": "eraselab.erase.advunlearn:advunlearn",
           "identity": "eraselab.erase.identity:identity"}


def method(algorithm: str):
    """The erasure function of an algorithm name (imported now)."""
    from ..registry import load
    return load(METHODS, algorithm, "erasure algorithm")
