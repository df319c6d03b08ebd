"""Erasure deltas: the tensors an erasure changed, at their new values, plus metadata.

A delta is ``delta.safetensors`` (keys are state-dict names prefixed with the
pipeline component, e.g. ``unet.down_blocks.0...attn2.to_k.weight``) and
``delta.json`` (method, params, seed, versions, wall time, peak memory, and the
SHA-256 of the tensors file). Loading base + delta reproduces the erased model
bit for bit, and a truncated or altered file is caught by its checksum.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .artifacts import ArtifactError, atomic_paths, read_json, sha256, write_json

COMPONENTS = ("unet", "text_encoder")


def meta_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_delta(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write tensors and metadata atomically together; the metadata (renamed last) marks completeness."""
    from safetensors.torch import save_file
    bad = [k for k in tensors if k.split(".", 1)[0] not in COMPONENTS]
    if bad:
        raise ValueError(f"delta keys must start with one of {COMPONENTS}: {bad[:3]}")
    with atomic_paths(path, meta_path(path)) as (tmp, tmp_meta):
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
        write_json(tmp_meta, {**meta, "sha256": sha256(tmp), "n_tensors": len(tensors),
                              "n_parameters": int(sum(v.numel() for v in tensors.values()))})


def load_delta(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of a delta, after checking the tensors against the recorded checksum."""
    from safetensors.torch import load_file
    path = Path(path)
    meta = read_json(meta_path(path))
    if not path.is_file():
        raise ArtifactError(f"{path}: delta tensors missing (metadata {meta_path(path)} exists)")
    if sha256(path) != meta.get("sha256"):
        raise ArtifactError(f"{path}: checksum mismatch: the delta is truncated or corrupted "
                            f"(expected sha256 {str(meta.get('sha256'))[:12]}...); rerun its erase job")
    return load_file(str(path)), meta


@torch.no_grad()
def apply_tensors(pipe, tensors: dict[str, torch.Tensor], source: str = "delta") -> None:
    """Overwrite pipeline parameters in place; every key must name an existing tensor of the same shape."""
    for key, value in tensors.items():
        component, name = key.split(".", 1)
        params = dict(getattr(pipe, component).named_parameters())
        if name not in params:
            raise ArtifactError(f"{source}: {key} is not a parameter of this model's {component} "
                                f"(was the delta made from another base model?)")
        if params[name].shape != value.shape:
            raise ArtifactError(f"{source}: {key} has shape {tuple(value.shape)}, the model's is "
                                f"{tuple(params[name].shape)}")
        params[name].copy_(value.to(params[name].dtype))


def apply_delta(pipe, path: str | Path) -> dict:
    tensors, meta = load_delta(path)
    apply_tensors(pipe, tensors, str(path))
    return meta
