"""The ``hub`` model source: a Stable Diffusion pipeline from the Hugging Face hub at a pinned revision."""
from __future__ import annotations

from pathlib import Path

from .artifacts import atomic_path, write_json, write_manifest

# What a Stable Diffusion pipeline needs from a hub repo: configs, tokenizer, fp32 safetensors.
HUB_FILES = ["model_index.json", "scheduler/*", "tokenizer/*", "text_encoder/config.json",
             "text_encoder/model.safetensors", "unet/config.json",
             "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
             "vae/diffusion_pytorch_model.safetensors"]

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


def prepare(spec: dict, out: str | Path, weights=None) -> None:
    download(spec["repo_id"], spec["revision"], out)
