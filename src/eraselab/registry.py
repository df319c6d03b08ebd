"""Registries: algorithm names -> where their code lives, imported only when chosen.

A stage that offers several algorithms (erasure methods, attacks, detectors,
base-model sources, pruning kinds) names each as ``"module:attribute"`` in a
plain dict instead of importing them all. A job then imports, and its code
fingerprint covers, only the algorithm it runs (``plan.job_modules``), so
editing UCE reruns UCE's jobs and no ESD job.
"""
from __future__ import annotations

import importlib


def module_of(table: dict[str, str], name: str, what: str) -> str:
    """The module that holds ``name``'s code; a clear error for an unknown name."""
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; allowed: {', '.join(table)}")
    return table[name].partition(":")[0]


def load(table: dict[str, str], name: str, what: str):
    """The function or class a registry names, imported now."""
    module = importlib.import_module(module_of(table, name, what))
    return getattr(module, table[name].partition(":")[2])
