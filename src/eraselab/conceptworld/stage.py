"""The train_conceptworld stage: config slice -> trained weights directory with its quality record."""
from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

from ..artifacts import atomic_path, write_json, write_manifest
from ..checkpoint import checkpoint_dir_for
from ..runtime import stage
from .architecture import ArchConfig
from .train import TrainSettings, train
from .world import World

CLASSIFIER_BAR, GENERATION_BAR = 0.95, 0.80


def settings_from_spec(spec: dict) -> tuple[TrainSettings, ArchConfig]:
    arch = dict(spec.get("architecture", {}))
    for key in ("vae_channels", "unet_channels"):
        if key in arch:
            arch[key] = tuple(arch[key])
    names = {f.name for f in dataclasses.fields(TrainSettings)}
    s = TrainSettings(**{k: v for k, v in spec.items() if k in names})
    return s, ArchConfig(**arch)


def run(out: str | Path, spec: dict) -> dict:
    from PIL import Image

    from ..imagesets import grid
    settings, arch = settings_from_spec(spec)
    with stage("train_conceptworld", spec, settings.seed) as run_info:
        with atomic_path(out, directory=True) as tmp:
            quality, examples = train(tmp, settings, arch, World(), checkpoint_dir_for(out))
            quality["bars"] = {
                f"classifier_accuracy >= {CLASSIFIER_BAR}": quality["classifier_accuracy"]["all"] >= CLASSIFIER_BAR,
                f"generation_all_attributes >= {GENERATION_BAR}": quality["generation_all_attributes"] >= GENERATION_BAR}
            quality["provenance"] = run_info.record()
            quality["architecture"] = dataclasses.asdict(arch)
            write_json(tmp / "quality.json", quality)
            Image.fromarray(grid(examples)).save(tmp / "examples.png")
            write_manifest(tmp)
        shutil.rmtree(checkpoint_dir_for(out), ignore_errors=True)  # complete: checkpoints no longer needed
        if not all(quality["bars"].values()):
            print(f"[train_conceptworld] WARNING: quality bars missed: {quality['bars']}", file=sys.stderr)
    return quality
