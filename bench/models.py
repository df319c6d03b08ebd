"""The two models every stage is timed on, loaded through eraselab.models as the workflow loads them.

- ``conceptworld``: the shipped weights (data/conceptworld), assembled once into
  bench/.cache/ as the base_model stage does;
- ``sd14``: SD v1.4's shapes with random weights (``source: random``,
  ``architecture: sd14``), built once into bench/.cache/ at the requested
  resolution: weight shapes are SD v1.4's at any resolution, the resolution
  decides the activations (64 px on a CPU, 512 px, SD's own, on a GPU).
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(__file__).resolve().parent / ".cache"
SHIPPED = ROOT / "data" / "conceptworld"


def conceptworld_dir() -> Path:
    from eraselab.conceptworld.assemble import assemble_conceptworld
    from eraselab.fingerprint import digest
    out = CACHE / f"conceptworld-{digest(SHIPPED / 'pipeline')[:12]}"   # re-assembled when the weights change
    if not out.is_dir():
        assemble_conceptworld(SHIPPED, out)
    return out


def sd14_dir(image_size: int) -> Path:
    from eraselab.conceptworld.architecture import build_random
    out = CACHE / f"sd14-random-{image_size}"
    if not out.is_dir():
        build_random("sd14", out, seed=0, image_size=image_size)
    return out


def model_dir(name: str, sd14_size: int) -> Path:
    return conceptworld_dir() if name == "conceptworld" else sd14_dir(sd14_size)


def load(name: str, sd14_size: int, dtype: str = "float32"):
    from eraselab.models import load_pipeline
    return load_pipeline(model_dir(name, sd14_size), dtype)
