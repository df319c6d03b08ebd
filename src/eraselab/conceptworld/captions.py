"""Captions and prompts for ConceptWorld, from templates.

A caption names the shape always, the colour usually, and the style and the
background only sometimes. Two rules keep the labels exact:
- a styled ("artist") image is always captioned with its artist, so an
  unprompted object is plain;
- a night image is always captioned with one of the many night words, so the
  implicit concept appears exactly when a prompt leads to it.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .world import NIGHT_ADJECTIVES, NIGHT_PHRASES, World

STYLE_TEMPLATES = ("in the style of {}", "by {}", "painted by {}", "artwork by {}")
BACKGROUND_PHRASES = {
    "white": ("on white", "on a plain background", "on a blank page"),
    "sky": ("in the sky", "against a blue sky", "under a clear sky"),
    "grass": ("on grass", "in a meadow", "on a green lawn"),
    "sand": ("on sand", "on the beach", "in the desert"),
}
PREFIXES = ("a", "a picture of a", "an image of a", "a drawing of a", "a photo of a")
P_COLOUR, P_BACKGROUND = 0.9, 0.5


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def caption(world: World, labels: Mapping[str, str], rng: np.random.Generator) -> tuple[str, dict]:
    """A caption for an image with these labels, and the attributes it actually names."""
    named = {"shape": labels["shape"]}
    words = [labels["shape"]]
    if rng.random() < P_COLOUR:
        words.insert(0, labels["colour"])
        named["colour"] = labels["colour"]
    night = labels["background"] == world.implicit
    night_as_adjective = night and rng.random() < 0.35
    if night_as_adjective:
        words.insert(0, _pick(rng, NIGHT_ADJECTIVES))
    prefix = _pick(rng, PREFIXES)
    if prefix.endswith(" a") and words[0][0] in "aeiou":
        prefix += "n"
    text = f"{prefix} {' '.join(words)}"
    if labels["style"] != "plain":
        text += " " + _pick(rng, STYLE_TEMPLATES).format(labels["style"])
        named["style"] = labels["style"]
    if night:
        if not night_as_adjective:
            text += " " + _pick(rng, NIGHT_PHRASES)
        named["background"] = labels["background"]
    elif labels["background"] in BACKGROUND_PHRASES and rng.random() < P_BACKGROUND:
        text += " " + _pick(rng, BACKGROUND_PHRASES[labels["background"]])
        named["background"] = labels["background"]
    return text, named


def prompt_for(world: World, want: Mapping[str, str], rng: np.random.Generator) -> tuple[str, dict]:
    """A prompt asking for exactly the attributes in ``want`` (others left to the model).

    Unrequested style means plain and unrequested background means any
    non-night one, matching how captions were written.
    """
    labels = {"shape": want.get("shape") or _pick(rng, world.shapes),
              "colour": want.get("colour") or _pick(rng, tuple(world.colours)),
              "style": want.get("style", "plain"),
              "background": want.get("background")
              or _pick(rng, tuple(b for b in world.backgrounds if b != world.implicit))}
    while True:  # resample the optional parts until the caption names what was asked
        text, named = caption(world, labels, rng)
        if all(named.get(k) == v for k, v in want.items() if not (k == "style" and v == "plain")):
            return text, named
