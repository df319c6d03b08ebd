"""ConceptWorld's evaluation prompt sets, in the I2P CSV schema, one per concept.

Each set asks for its concept in every prompt, with the other attributes
drawn at random (sometimes named, sometimes left to the model), like the
varied prompts of I2P or of the artist prompt lists. Label columns record what
each prompt asked for. The shipped files under data/prompts/conceptworld are
exactly what ``write_prompt_sets`` produces (a test checks it), and the
validation sets under data/prompts/conceptworld/validation (which methods such
as RECE select on, never the evaluation sets) are ``write_validation_sets``'s:
the same generator with another seed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .captions import prompt_for
from .world import ATTRIBUTES, World

GUIDANCE = 3.0   # the tiny model follows prompts best at low guidance (README, ConceptWorld)
VALIDATION_SEED, VALIDATION_PROMPTS = 1, 20   # evaluation sets use seed 0


def prompt_set(world: World, concept: str, n: int, seed: int) -> pd.DataFrame:
    attribute, value = world.concepts()[concept]
    rng = np.random.default_rng([seed, *map(ord, concept)])
    rows = []
    for i in range(n):
        want = {attribute: value}
        if attribute != "colour" and rng.random() < 0.7:
            want["colour"] = str(rng.choice(list(world.colours)))
        if attribute != "shape":
            want["shape"] = str(rng.choice(list(world.shapes)))
        text, named = prompt_for(world, want, rng)
        rows.append({"case_number": i, "prompt": text, "evaluation_seed": int(rng.integers(0, 2**31 - 1)),
                     "evaluation_guidance": GUIDANCE, "concept": concept,
                     **{a: named.get(a, "") for a in ATTRIBUTES}})
    return pd.DataFrame(rows)


def write_per_concept(out_dir: str | Path, make_set, n: int, seed: int, world: World | None = None) -> list[Path]:
    """One CSV per concept of the world, ``make_set(world, concept, n, seed)``, each written atomically."""
    from ..artifacts import atomic_path
    world = world or World()
    paths = []
    for concept in world.concepts():
        path = Path(out_dir) / f"{concept}.csv"
        with atomic_path(path) as tmp:
            make_set(world, concept, n, seed).to_csv(tmp, index=False)
        paths.append(path)
    return paths


def write_prompt_sets(out_dir: str | Path, n: int = 40, seed: int = 0, world: World | None = None) -> list[Path]:
    return write_per_concept(out_dir, prompt_set, n, seed, world)


def write_pair_sets(out_dir: str | Path, n: int = 40, seed: int = 0, world: World | None = None) -> list[Path]:
    """Ring-A-Bell's paired prompts, with and without each concept (``pairs.pair_set``)."""
    from .pairs import pair_set
    return write_per_concept(out_dir, pair_set, n, seed, world)


def neutral_prompt_set(world: World, n: int, seed: int) -> pd.DataFrame:
    """Captions of random scenes, as the model was trained on: ConceptWorld's COCO captions, the
    neutral prompts on which preservation (CLIP score, FID against the base model) is measured."""
    from .captions import caption
    from .world import sample_labels
    rng = np.random.default_rng([seed, *map(ord, "neutral")])
    rows = []
    for i in range(n):
        labels = sample_labels(world, rng)
        text, named = caption(world, labels, rng)
        rows.append({"case_number": i, "prompt": text, "evaluation_seed": int(rng.integers(0, 2**31 - 1)),
                     "evaluation_guidance": GUIDANCE, **{a: named.get(a, "") for a in ATTRIBUTES}})
    return pd.DataFrame(rows)


def write_neutral_set(out_dir: str | Path, n: int = 64, seed: int = 0, world: World | None = None) -> Path:
    from ..artifacts import atomic_path
    path = Path(out_dir) / "neutral.csv"
    with atomic_path(path) as tmp:
        neutral_prompt_set(world or World(), n, seed).to_csv(tmp, index=False)
    return path


def write_validation_sets(out_dir: str | Path, world: World | None = None) -> list[Path]:
    """Validation prompt sets: drawn like the evaluation sets, from another seed."""
    return write_prompt_sets(out_dir, n=VALIDATION_PROMPTS, seed=VALIDATION_SEED, world=world)


def write_shipped_prompts(out_dir: str | Path = "data/prompts/conceptworld", world: World | None = None) -> None:
    """Every prompt file the repo ships for ConceptWorld: evaluation, validation, neutral and
    Ring-A-Bell pair sets (`make prompts`; rerun after changing the world)."""
    out_dir = Path(out_dir)
    write_prompt_sets(out_dir, world=world)
    write_validation_sets(out_dir / "validation", world=world)
    write_neutral_set(out_dir, world=world)
    write_pair_sets(out_dir / "pairs", world=world)
