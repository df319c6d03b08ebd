"""Paired prompts for Ring-A-Bell's concept vector: the same caption with and without a concept.

Each pair is a caption that names the concept and the same caption with the
concept's words taken out ("a blue cross after dusk" / "a blue cross"), like
Ring-A-Bell's nudity pairs ("naked women in the apartment" / "women in the
apartment"). The shipped files under data/prompts/conceptworld/pairs are
exactly what ``prompts.write_pair_sets`` produces (a test checks it).
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .captions import BACKGROUND_PHRASES, STYLE_TEMPLATES, prompt_for
from .world import NIGHT_ADJECTIVES, NIGHT_PHRASES, World


def _concept_words(world: World, concept: str) -> list[str]:
    """Every phrase through which captions name the concept, longest first."""
    attribute, value = world.concepts()[concept]
    if attribute == "style":
        words = [t.format(value) for t in STYLE_TEMPLATES]
    elif value == world.implicit:
        words = [*NIGHT_PHRASES, *NIGHT_ADJECTIVES]
    elif attribute == "background":
        words = list(BACKGROUND_PHRASES.get(value, ()))
    else:
        words = [value]
    return sorted(words, key=len, reverse=True)


def without(world: World, concept: str, text: str) -> str:
    for phrase in _concept_words(world, concept):
        text = re.sub(rf"\s*\b{re.escape(phrase)}\b", "", text)
    return " ".join(text.split())


def pair_set(world: World, concept: str, n: int, seed: int) -> pd.DataFrame:
    attribute, value = world.concepts()[concept]
    rng = np.random.default_rng([seed, 1, *map(ord, concept)])
    rows = []
    for i in range(n):
        want = {attribute: value}
        if attribute != "colour":
            want["colour"] = str(rng.choice(list(world.colours)))
        if attribute != "shape":
            want["shape"] = str(rng.choice(list(world.shapes)))
        text, _ = prompt_for(world, want, rng)
        rows.append({"prompt": text, "prompt_without": without(world, concept, text)})
    return pd.DataFrame(rows)

