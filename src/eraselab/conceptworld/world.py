"""ConceptWorld: synthetic images whose concepts are known exactly.

Every image is one object (a shape, or none) with a colour and a surface style
("artist") on a background. Captions come from templates, so each image's
labels and each prompt's requested attributes are exact.

Three kinds of concept live here, mirroring what erasure papers remove:
- objects, named directly ("a triangle");
- styles, named through a fictional artist ("in the style of Brellin");
- one implicit concept, ``night``: a dark background that captions reach
  through many related words ("moonlit", "after dusk", "at midnight"), the way
  I2P prompts reach nudity without naming it.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

ATTRIBUTES = ("shape", "colour", "style", "background")

# Words that lead to the implicit concept. The first is its name, used as the
# erasure prompt; the others are how prompts reach it without naming it.
NIGHT_ADJECTIVES = ("moonlit", "nocturnal", "starlit", "midnight")
NIGHT_PHRASES = ("at night", "at midnight", "under the moon", "under the stars",
                 "after dusk", "by moonlight", "in the dark", "late in the evening")


@dataclasses.dataclass(frozen=True)
class World:
    """The vocabulary and look of a ConceptWorld. Small worlds make fast tests."""

    shapes: tuple[str, ...] = ("circle", "square", "triangle", "cross")
    colours: Mapping[str, tuple[int, int, int]] = dataclasses.field(default_factory=lambda: {
        "red": (215, 40, 40), "green": (30, 160, 60), "blue": (40, 80, 220),
        "yellow": (235, 195, 20)})
    # artist name -> surface texture; "plain" is the absence of a style.
    styles: Mapping[str, str] = dataclasses.field(default_factory=lambda: {
        "plain": "flat", "Brellin": "stripes", "Okonta": "outline", "Sarvik": "shaded"})
    backgrounds: Mapping[str, tuple[int, int, int]] = dataclasses.field(default_factory=lambda: {
        "white": (245, 245, 240), "sky": (170, 210, 245), "grass": (170, 225, 150),
        "sand": (235, 215, 170), "night": (15, 20, 55)})
    size: int = 32
    implicit: str = "night"

    def values(self, attribute: str) -> tuple[str, ...]:
        """Class names of one attribute; shape has an extra "none" class (no object)."""
        return {"shape": (*self.shapes, "none"), "colour": tuple(self.colours),
                "style": tuple(self.styles), "background": tuple(self.backgrounds)}[attribute]

    def concepts(self) -> dict[str, tuple[str, str]]:
        """Every erasable concept: name -> (attribute, value)."""
        named = {s: ("shape", s) for s in self.shapes}
        named |= {c: ("colour", c) for c in self.colours}
        named |= {a: ("style", a) for a in self.styles if a != "plain"}
        named |= {b: ("background", b) for b in self.backgrounds}
        return named


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float, ss: int = 4) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of a shape, by supersampling ss x ss per pixel."""
    n = size * ss
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / ss
    dx, dy = x - cx, y - cy
    if shape == "circle":
        inside = dx**2 + dy**2 <= r**2
    elif shape == "square":
        inside = (np.abs(dx) <= 0.8 * r) & (np.abs(dy) <= 0.8 * r)
    elif shape == "diamond":
        inside = np.abs(dx) + np.abs(dy) <= 1.1 * r
    elif shape == "triangle":  # apex up
        inside = (dy <= 0.8 * r) & (dy >= -r + 2 * np.abs(dx) * 0.95)
    elif shape == "cross":
        arm = 0.33 * r
        inside = ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    elif shape == "none":
        inside = np.zeros_like(dx, dtype=bool)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return inside.reshape(size, ss, size, ss).mean(axis=(1, 3))


def _brightness(texture: str, size: int, cy: float, r: float, phase: int) -> np.ndarray:
    """How a surface style modulates the object's colour, as a per-pixel factor.

    Styles are broad (bands 4 px wide, shading over the whole object), like an
    artist's manner rather than pixel noise, so they survive the VAE's 4x
    downsampling and a short training budget.
    """
    y, x = np.mgrid[0:size, 0:size].astype(float)
    if texture in ("flat", "outline"):
        return np.ones((size, size))
    if texture == "stripes":  # diagonal bands, 4 px dark in every 8
        return 1.0 - 0.55 * (((x + y + phase) // 4) % 2 == 0)
    if texture == "shaded":  # light at the top, dark at the bottom
        return 1.35 - 0.8 * np.clip((y - (cy - r)) / (2 * r), 0, 1)
    raise ValueError(f"unknown texture {texture!r}")


def render(world: World, labels: Mapping[str, str], rng: np.random.Generator) -> np.ndarray:
    """One HxWx3 uint8 image with exactly the given labels (position, size and light jittered)."""
    s = world.size
    image = np.empty((s, s, 3))
    image[:] = world.backgrounds[labels["background"]]
    image = image * (0.04 * rng.standard_normal() + 1.0)  # mild lighting jitter
    if labels["shape"] != "none":
        r = s * rng.uniform(0.28, 0.36)
        cx, cy = s / 2 + rng.uniform(-0.1, 0.1) * s, s / 2 + rng.uniform(-0.1, 0.1) * s
        texture = world.styles[labels["style"]]
        cover = _shape_mask(labels["shape"], s, cx, cy, r)
        if texture == "outline":  # hollow: only a thick rim of the shape is painted
            cover = cover * (1 - _shape_mask(labels["shape"], s, cx, cy, 0.5 * r))
        shade = _brightness(texture, s, cy, r, int(rng.integers(0, 8)))[..., None]
        surface = np.asarray(world.colours[labels["colour"]], dtype=float) * shade
        image = image * (1 - cover[..., None]) + surface * cover[..., None]
    return np.clip(image, 0, 255).round().astype(np.uint8)


def sample_labels(world: World, rng: np.random.Generator, p_none: float = 0.0) -> dict[str, str]:
    """Uniform labels; with probability p_none the image has no object (for the classifier)."""
    pick = lambda vals: vals[int(rng.integers(len(vals)))]
    shape = "none" if rng.random() < p_none else pick(world.shapes)
    return {"shape": shape, "colour": pick(tuple(world.colours)),
            "style": pick(tuple(world.styles)), "background": pick(tuple(world.backgrounds))}


def render_batch(world: World, labels: list[Mapping[str, str]], seed: int) -> np.ndarray:
    """N x H x W x 3 uint8 renders; image i depends only on (seed, i)."""
    return np.stack([render(world, lab, np.random.default_rng([seed, i])) for i, lab in enumerate(labels)])


def world_to_dict(world: World) -> dict:
    """JSON-ready; mappings become [name, value] pairs because their order is the class order."""
    return {f.name: ([[k, v] for k, v in val.items()] if isinstance(val := getattr(world, f.name), Mapping)
                     else val) for f in dataclasses.fields(world)}


def world_from_dict(d: dict) -> World:
    d = dict(d)
    d["shapes"] = tuple(d["shapes"])
    d["colours"] = {k: tuple(v) for k, v in d["colours"]}
    d["backgrounds"] = {k: tuple(v) for k, v in d["backgrounds"]}
    d["styles"] = {k: v for k, v in d["styles"]}
    return World(**d)
