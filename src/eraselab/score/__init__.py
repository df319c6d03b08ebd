"""Scoring: does each generated image show a concept? One detector per concept, from config.

A detector maps uint8 images (N x H x W x 3) to a table with one row per image:
``detected`` (bool), ``score`` (the detector's confidence for the concept) and
detector-specific columns; ``describe()`` says what it is (kind, model,
threshold, versions) and is recorded in every rates file. The scoring stages
(plain prompts, and under attack) are in ``stage.py``; preservation metrics in
``quality.py``. The registries below name where each detector and each FID
feature extractor lives; a job imports only those it uses.
"""
from __future__ import annotations

from pathlib import Path

DETECTORS = {"conceptworld": "eraselab.score.conceptworld:ConceptWorldDetector",
             "nudenet": "eraselab.score.nudenet:NudeNetDetector", "clip": "eraselab.score.clip:ClipDetector"}
FEATURES = {"inception": "eraselab.score.fid:InceptionFeatures",
            "conceptworld": "eraselab.score.conceptworld:ConceptWorldFeatures"}


def make_detector(cfg: dict, model_dir: str | Path):
    """The detector a concept's config describes; ``model_dir`` is the base model's directory."""
    from ..registry import load
    return load(DETECTORS, cfg["kind"], "detector kind")(cfg, Path(model_dir))
