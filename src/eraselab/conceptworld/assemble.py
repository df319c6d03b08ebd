"""The ``conceptworld`` model source: the shipped (or retrained) weights as a diffusers directory."""
from __future__ import annotations

import shutil
from pathlib import Path

from ..artifacts import ArtifactError, atomic_path, verify_manifest, write_manifest


def assemble_conceptworld(weights: str | Path, out_dir: str | Path) -> None:
    """ConceptWorld's pipeline weights plus the offline-built CLIP tokenizer, as one diffusers directory.

    The world's attribute classifier (its exact scorer) and quality record travel
    with the model, in ``classifier/`` and ``quality.json``.
    """
    from ..tokenizer import build_clip_tokenizer
    weights = Path(weights)
    for need in ("pipeline/model_index.json", "classifier/classifier.safetensors"):
        if not (weights / need).is_file():
            raise ArtifactError(f"{weights / need}: missing; not a ConceptWorld weights directory")
    verify_manifest(weights, what="ConceptWorld weights", fix="retrain them or restore them (dvc checkout)")
    with atomic_path(out_dir, directory=True) as tmp:
        shutil.copytree(weights / "pipeline", tmp, dirs_exist_ok=True)
        shutil.copytree(weights / "classifier", tmp / "classifier")
        for extra in ("quality.json", "world.json"):
            if (weights / extra).is_file():
                shutil.copy2(weights / extra, tmp / extra)
        build_clip_tokenizer(tmp / "tokenizer")
        write_manifest(tmp)


def prepare(spec: dict, out: str | Path, weights: str | Path) -> None:
    assemble_conceptworld(weights, out)
