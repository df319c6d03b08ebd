"""The validate stage (tuning): a model variant's images of every validation prompt set, scored.

It is the generate stage then the score stage, on the concepts' ``validation`` prompt sets instead of
their evaluation sets, in one job that keeps only the scores: tuning compares candidates by their
numbers, and the validation images are not part of the results. The outputs have the score stage's
formats (scores.csv per image, rates.json per concept), so the report's tables read them.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from . import generate
from .score import stage as score


def run(base, scores, rates, spec: dict, delta=None) -> None:
    """spec: generation, dtype, variant, model, concepts {name: {prompts, detector, type}}."""
    concepts = spec["concepts"]
    with tempfile.TemporaryDirectory(dir=Path(scores).parent, prefix=".validate-") as tmp:
        images = {c: str(Path(tmp) / f"{c}.tar") for c in concepts}
        generate.run(base, {c: concepts[c]["prompts"] for c in concepts}, images,
                     {k: spec[k] for k in ("generation", "dtype", "variant", "model")}, delta=delta)
        score.run(base, images, scores, rates, {"concepts": {c: {k: concepts[c][k] for k in ("detector", "type")}
                                                             for c in concepts},
                                                "variant": spec["variant"], "model": spec["model"]})
