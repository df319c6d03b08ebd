"""Erasure methods. Each is ``method(pipe, concept, params, seed, ...) -> (changed tensors, record)``.

All methods work on a diffusers ``StableDiffusionPipeline`` and nothing else,
so the same function erases from ConceptWorld's tiny UNet and from SD v1.4.
They return the tensors they changed (keys prefixed ``unet.`` / ``text_encoder.``);
the erase stage saves them as a delta.
"""
from __future__ import annotations

from typing import Callable

from .abo import all_but_one
from .common import Concept, DivergenceError, select_parameters
from .esd import esd
from .identity import identity
from .rece import rece
from .uce import uce

ALGORITHMS: dict[str, Callable] = {"esd": esd, "all-but-one": all_but_one, "uce": uce, "rece": rece,
                                 "identity": identity}

__all__ = ["ALGORITHMS", "Concept", "DivergenceError", "select_parameters"]
