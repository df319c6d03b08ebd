"""The base-model stage and loading of models: base pipelines and their erased variants.

Every base model becomes a diffusers ``StableDiffusionPipeline`` directory:
- ``hub``: downloaded once with huggingface_hub at a pinned revision into
  ``resources/models/<name>`` (only the fp32 safetensors the pipeline needs);
- ``conceptworld``: the shipped (or retrained) weights plus the CLIP tokenizer
  built offline from open_clip's vocabulary;
- ``local``: an existing diffusers directory, used in place;
- ``random``: random weights with the shapes of a named architecture (SD v1.4's
  or ConceptWorld's), built from a config with no download, for benchmarks and tests.
Later stages load a base directory, then apply a pruning mask and an erasure
delta, so an erased model is never stored whole.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from .artifacts import REBUILD_MODEL, ArtifactError, atomic_path, verify_manifest, write_json, write_manifest

# What a Stable Diffusion pipeline needs from a hub repo: configs, tokenizer, fp32 safetensors.
HUB_FILES = ["model_index.json", "scheduler/*", "tokenizer/*", "text_encoder/config.json",
             "text_encoder/model.safetensors", "unet/config.json",
             "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
             "vae/diffusion_pytorch_model.safetensors"]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def download(repo_id: str, revision: str, out_dir: str | Path) -> None:
    """Fetch a pipeline from the Hugging Face hub at a fixed revision (needs network; done once)."""
    from huggingface_hub import snapshot_download
    with atomic_path(out_dir, directory=True) as tmp:
        try:
            snapshot_download(repo_id, revision=revision, local_dir=tmp, allow_patterns=HUB_FILES)
        except Exception as e:
            raise RuntimeError(
                f"could not download {repo_id}@{revision}: {e}\n"
                f"Without network access, download it elsewhere (huggingface-cli download {repo_id} "
                f"--revision {revision}) and point the model at it with source: local, path: <dir>.") from e
        missing = [f for f in HUB_FILES if "*" not in f and not (tmp / f).is_file()]
        if missing:  # snapshot_download skips patterns that match nothing, so check what arrived
            raise RuntimeError(
                f"{repo_id}@{revision} lacks {', '.join(missing)}: this revision has no fp32 safetensors "
                f"in the diffusers layout. Pin a revision that has them, or convert the weights and use "
                f"source: local.")
        write_json(tmp / "eraselab_source.json", {"repo_id": repo_id, "revision": revision})
        write_manifest(tmp)


def assemble_conceptworld(weights: str | Path, out_dir: str | Path) -> None:
    """ConceptWorld's pipeline weights plus the offline-built CLIP tokenizer, as one diffusers directory.

    The world's attribute classifier (its exact scorer) and quality record travel
    with the model, in ``classifier/`` and ``quality.json``.
    """
    from .tokenizer import build_clip_tokenizer
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


def build_random(architecture: str, out_dir: str | Path, seed: int, image_size: int | None = None) -> None:
    """Random weights with the shapes of ``architecture`` (``sd14``, ``conceptworld``), as a diffusers directory.

    ``image_size`` changes the default resolution the pipeline samples at, never a
    weight shape, so SD-v1.4-shaped weights can run at 64 px on a CPU.
    """
    import dataclasses

    from .conceptworld.architecture import ARCHITECTURES, build_random_pipeline
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; allowed: {', '.join(ARCHITECTURES)}")
    arch = ARCHITECTURES[architecture]
    if image_size:
        arch = dataclasses.replace(arch, image_size=image_size)
    with atomic_path(out_dir, directory=True) as tmp:
        build_random_pipeline(arch, tmp, seed)
        write_json(tmp / "eraselab_source.json", {"source": "random", "architecture": architecture,
                                                  "image_size": arch.image_size, "seed": seed})
        write_manifest(tmp)


PICKLED_WEIGHTS = ("*.bin", "*.ckpt", "*.pt", "*.pth", "*.pkl", "*.pickle")


def refuse_pickled_weights(path: Path) -> None:
    """Raise ArtifactError if a component of a diffusers directory has pickled weights but no safetensors.

    Model directories come from the hub or from a colleague's path: unpickling them could run code."""
    for component in sorted(p for p in path.iterdir() if p.is_dir()):
        if any(component.glob("*.safetensors")):
            continue
        pickled = sorted(f for pattern in PICKLED_WEIGHTS for f in component.glob(pattern) if f.is_file())
        if pickled:
            raise ArtifactError(
                f"{pickled[0]}: pickled weights can run code when loaded; eraselab loads safetensors only. "
                f"Convert them (e.g. `python -c \"from diffusers import StableDiffusionPipeline as P; "
                f"P.from_pretrained('{path}').save_pretrained('{path}-safetensors', safe_serialization=True)\"` "
                f"on a machine you trust) and point the model at the converted directory")


def load_pipeline(path: str | Path, dtype: str = "float32", device: str | None = None):
    """A StableDiffusionPipeline from a diffusers directory, without the safety checker; safetensors only."""
    from diffusers import StableDiffusionPipeline

    from .runtime import device as default_device, quiet_libraries
    path = Path(path)
    if not (path / "model_index.json").is_file():
        raise ArtifactError(f"{path}: not a diffusers pipeline directory (no model_index.json)")
    refuse_pickled_weights(path)
    verify_manifest(path, what="base model", fix=REBUILD_MODEL)
    quiet_libraries()
    try:
        pipe = StableDiffusionPipeline.from_pretrained(path, dtype=DTYPES[dtype], safety_checker=None,
                                                       feature_extractor=None, requires_safety_checker=False,
                                                       use_safetensors=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise ArtifactError(f"{path}: cannot load the pipeline (missing or corrupted weights?): {e}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device or default_device())


def load_variant(base: str | Path, delta: str | Path | None = None, dtype: str = "float32",
                 device: str | None = None):
    """The base pipeline with an erasure delta applied, if given."""
    from .delta import apply_delta
    pipe = load_pipeline(base, dtype, device)
    if delta:
        apply_delta(pipe, delta)
    return pipe

