"""Pruning before erasure: masks over UNet weights, stored apart from them (``masks.py``).

Algorithms (config ``prunings:``, ``algorithm``):

- ``wanda``: ConceptPrune's training-free skilled-weight selection (``wanda.py``);
- ``attribution``: the neurons the base model's attribution table ranks highest (``guided.py``);
- ``learned``: a mask trained with ESD's objective, P-ESD (``learned.py``).

The erase stage applies a variant's mask, runs its erasure method with the
pruned weights held at zero, and writes the pruned tensors into the delta, so
generation and attacks see the pruned-and-erased model through the delta alone.
"""
from __future__ import annotations

KINDS = {"wanda": "eraselab.prune.wanda:prune", "attribution": "eraselab.prune.guided:prune",
         "learned": "eraselab.prune.learned:prune"}   # each imported only by the jobs that use it
