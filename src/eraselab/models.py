"""The base-model stage and loading of models: base pipelines and their erased variants.

Every base model becomes a diffusers ``StableDiffusionPipeline`` directory; where
it comes from is its ``source``, each in its own module (``SOURCES``), so a job
runs, and reruns for, only the source it uses:
- ``hub``: downloaded once at a pinned revision (``eraselab.hub``);
- ``conceptworld``: the shipped (or retrained) weights plus the CLIP tokenizer
  built offline (``eraselab.conceptworld.assemble``);
- ``random``: random weights with the shapes of a named architecture, for
  benchmarks and tests (``eraselab.conceptworld.architecture``);
- ``local``: an existing diffusers directory, used in place (no job).
Later stages load a base directory, then apply a pruning mask and an erasure
delta, so an erased model is never stored whole.
"""
from __future__ import annotations

from pathlib import Path

from . import registry
from .artifacts import REBUILD_MODEL, ArtifactError, verify_manifest

# torch is imported inside the functions: the workflow reads SOURCES while it plans jobs.
SOURCES = {"hub": "eraselab.hub:prepare", "conceptworld": "eraselab.conceptworld.assemble:prepare",
           "random": "eraselab.conceptworld.architecture:prepare"}


def prepare(spec: dict, out: str | Path, weights: str | Path | None = None) -> None:
    """The base_model stage: make the base model's directory from its source (spec: plan.base_model_spec)."""
    if spec["source"] == "local":
        raise SystemExit("base_model: a local model is used in place and needs no preparation")
    registry.load(SOURCES, spec["source"], "model source")(spec, out, weights)


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
    import torch
    from diffusers import StableDiffusionPipeline

    from .runtime import device as default_device, quiet_libraries
    path = Path(path)
    if not (path / "model_index.json").is_file():
        raise ArtifactError(f"{path}: not a diffusers pipeline directory (no model_index.json)")
    refuse_pickled_weights(path)
    verify_manifest(path, what="base model", fix=REBUILD_MODEL)
    quiet_libraries()
    try:
        pipe = StableDiffusionPipeline.from_pretrained(path, dtype=getattr(torch, dtype), safety_checker=None,
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


def encode_prompts(pipe, prompts: list[str]):
    """Text-encoder hidden states, N x 77 x D, exactly as the pipeline conditions the UNet."""
    import torch
    with torch.no_grad():
        embeds, _ = pipe.encode_prompt(prompts, device=pipe.device, num_images_per_prompt=1,
                                       do_classifier_free_guidance=False)
    return embeds
