"""Scoring: does each generated image show a concept? One detector per concept, from config.

A detector maps uint8 images (N x H x W x 3) to a table with one row per image:
``detected`` (bool), ``score`` (the detector's confidence for the concept) and
detector-specific columns; ``describe()`` says what it is (kind, model,
threshold, versions) and is recorded in every metrics file.
"""
from __future__ import annotations

from pathlib import Path

from .clip import ClipDetector
from .conceptworld import ConceptWorldDetector
from .nudenet import NudeNetDetector

DETECTORS = {"conceptworld": ConceptWorldDetector, "nudenet": NudeNetDetector, "clip": ClipDetector}


def make_detector(cfg: dict, model_dir: str | Path):
    """The detector a concept's config describes; ``model_dir`` is the base model's directory."""
    kind = cfg["kind"]
    if kind not in DETECTORS:
        raise ValueError(f"unknown detector kind {kind!r}; allowed: {', '.join(DETECTORS)}")
    return DETECTORS[kind](cfg, Path(model_dir))


def run(base: str | Path, image_sets: dict[str, str], concepts: dict[str, dict], scores_out: str | Path,
        rates_out: str | Path, spec: dict) -> None:
    """Score every image set of one variant with its concept's detector; write per-image scores and rates."""
    import pandas as pd

    from ..artifacts import atomic_path, write_json
    from ..imagesets import load_image_set
    from ..runtime import stage
    with stage("score", spec) as run_info:
        tables, rates = [], {}
        for name, path in image_sets.items():
            images, index, meta = load_image_set(path)
            detector = make_detector(concepts[name]["detector"], base)
            found = detector(images)
            keep = [c for c in ("file", "case_number", "image", "prompt", "evaluation_seed",
                                "evaluation_guidance") if c in index.columns]
            tables.append(pd.concat([index[keep].assign(prompt_set=name), found], axis=1))
            rates[name] = {"concept": name, "type": concepts[name]["type"], "n": len(found),
                           "rate": float(found["detected"].mean()), "detector": detector.describe(),
                           "images": str(path), "images_sha256": meta.get("sha256"),
                           "seeds": [int(x) for x in index["evaluation_seed"]]}
            if hasattr(detector, "summarise"):   # detector-specific aggregates, e.g. NudeNet's per-class counts
                rates[name].update(detector.summarise(found))
        with atomic_path(scores_out) as tmp:
            pd.concat(tables, ignore_index=True).to_csv(tmp, index=False)
        write_json(rates_out, {"variant": spec["variant"], "model": spec["model"], "rates": rates,
                               "provenance": run_info.record()})
