"""The pipeline's stages as plain functions, for a notebook: no Snakemake, no files unless you ask.

    from eraselab import api
    cfg = api.config("config/config.yaml", "config/methods.yaml")
    base = api.base_model(cfg, "conceptworld", "resources/models/conceptworld")
    pipe = api.load(base)
    tensors, record = api.erase(pipe, cfg["concepts"]["triangle"] | {"name": "triangle"}, cfg["methods"]["uce"])
    api.save_delta("triangle-uce.safetensors", tensors, record)
    erased = api.load(base, delta="triangle-uce.safetensors")
    images = api.generate(erased, ["a red triangle on grass"] * 4, seeds=[0, 1, 2, 3])
    api.score(images, cfg["concepts"]["triangle"]["detector"], base)["detected"].mean()

Each function is the code the workflow's jobs run (the same modules), so a delta made here loads
in the workflow and the other way round.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def config(*paths: str | Path, root: str | Path = ".") -> dict:
    """Config files layered and validated as the workflow does (defaults filled in)."""
    from .config import load_config
    return load_config(*paths, root=root)


def base_model(cfg: dict, model: str, out: str | Path) -> Path:
    """Make a base model's diffusers directory (its ``source``); a local model is returned as it is."""
    from . import plan
    from .models import prepare
    m = cfg["models"][model]
    if m["source"] == "local":
        return Path(m["path"])
    if not (Path(out) / "model_index.json").is_file():
        weights = plan.conceptworld_weights(cfg, model)
        prepare(plan.base_model_spec(cfg, model), out, weights[0] if weights else None)
    return Path(out)


def load(base: str | Path, delta: str | Path | None = None, dtype: str = "float32"):
    """A diffusers StableDiffusionPipeline: the base model, with an erasure delta applied if given."""
    from .models import load_variant
    return load_variant(base, delta, dtype)


def erase(pipe, concept: dict, method: dict, seed: int = 0, **extra) -> tuple[dict, dict]:
    """Erase ``concept`` ({name, type, erase, anchor, preserve}) from ``pipe`` in place with ``method``
    ({algorithm, ...}: a config's ``methods`` entry). Returns the changed tensors and a record."""
    from .erase import method as erasure_method
    from .erase.common import Concept
    return erasure_method(method["algorithm"])(pipe, Concept.from_config(concept["name"], concept), method, seed,
                                               **extra)


def save_delta(path: str | Path, tensors: dict, record: dict) -> None:
    """Write an erasure's tensors and record as a delta (checksummed; loads with ``load(base, delta=path)``)."""
    from .delta import save_delta as save
    save(path, tensors, record)


def load_delta(path: str | Path) -> tuple[dict, dict]:
    """A delta's tensors and record, after checking its checksum."""
    from .delta import load_delta as read
    return read(path)


def generate(pipe, prompts: Sequence[str], seeds: Sequence[int], guidance: float = 3.0, steps: int = 25,
             batch_size: int = 16) -> np.ndarray:
    """uint8 images (N x H x W x 3), row i from prompts[i] with its own seed."""
    from .generate import generate_images
    return generate_images(pipe, list(prompts), list(seeds), [guidance] * len(seeds), steps, batch_size)


def score(images: np.ndarray, detector: dict, base: str | Path):
    """A detector ({kind, ...}: a concept's ``detector``) on images: one row per image, ``detected`` first."""
    from .score import make_detector
    return make_detector(detector, base)(images)
