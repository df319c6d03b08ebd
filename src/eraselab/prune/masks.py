"""Pruning masks, stored apart from the weights: which entries of which UNet tensors are zeroed.

A mask is ``mask.safetensors`` (one int64 tensor per pruned parameter, keyed
``unet.<name>``: the flat indices of its pruned entries, sorted) and
``mask.json`` (each tensor's shape, counts, the pruned fraction of the UNet,
provenance, and the SHA-256 of the tensors file). Sparse indices keep a mask
small (a 0.1% mask of SD's UNet is ~1M indices, 8 MB) and auditable, and the
unpruned model stays recoverable: ``apply_mask`` returns the values it zeroed
and ``remove_mask`` writes them back bit for bit.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..artifacts import ArtifactError, atomic_path, read_json, sha256, write_json

PREFIX = "unet."


@dataclasses.dataclass
class Mask:
    indices: dict[str, torch.Tensor]          # parameter name (no prefix) -> sorted flat int64 indices
    shapes: dict[str, tuple[int, ...]]

    @classmethod
    def from_bool(cls, pruned: dict[str, torch.Tensor]) -> "Mask":
        """From boolean tensors (True = pruned); parameters with nothing pruned are left out."""
        idx = {n: torch.nonzero(b.flatten()).flatten().to(torch.int64) for n, b in pruned.items()}
        return cls({n: i for n, i in idx.items() if i.numel()},
                   {n: tuple(pruned[n].shape) for n in idx if idx[n].numel()})

    def union(self, other: "Mask") -> "Mask":
        names = sorted(set(self.indices) | set(other.indices))
        empty = torch.empty(0, dtype=torch.int64)
        return Mask({n: torch.unique(torch.cat([self.indices.get(n, empty), other.indices.get(n, empty)]))
                     for n in names}, {**self.shapes, **other.shapes})

    def count(self) -> int:
        return int(sum(i.numel() for i in self.indices.values()))

    def keep(self, device=None) -> dict[str, torch.Tensor]:
        """Dense 0/1 multipliers (1 = kept), the form fine-tuning erasers take as ``masks``."""
        out = {}
        for n, i in self.indices.items():
            m = torch.ones(self.shapes[n], device=device).flatten()
            m[i.to(m.device)] = 0
            out[n] = m.view(self.shapes[n])
        return out

    def summary(self, unet: torch.nn.Module) -> dict:
        total = sum(p.numel() for p in unet.parameters())
        per = {n: {"shape": list(self.shapes[n]), "pruned": int(i.numel()),
                   "fraction": i.numel() / torch.Size(self.shapes[n]).numel()} for n, i in self.indices.items()}
        return {"pruned": self.count(), "unet_parameters": total, "pruned_fraction_of_unet": self.count() / total,
                "tensors": per}


def _params(pipe, mask: Mask) -> dict[str, torch.nn.Parameter]:
    named = dict(pipe.unet.named_parameters())
    for n, shape in mask.shapes.items():
        if n not in named:
            raise ArtifactError(f"mask: {n} is not a parameter of this UNet (made for another model?)")
        if tuple(named[n].shape) != tuple(shape):
            raise ArtifactError(f"mask: {n} has shape {tuple(shape)}, the model's is {tuple(named[n].shape)}")
    return named


@torch.no_grad()
def apply_mask(pipe, mask: Mask) -> dict[str, torch.Tensor]:
    """Zero the masked entries in place; returns their previous values (for ``remove_mask``)."""
    named, saved = _params(pipe, mask), {}
    for n, i in mask.indices.items():
        flat = named[n].data.view(-1)
        i = i.to(flat.device)
        saved[n] = flat[i].clone()
        flat[i] = 0
    return saved


@torch.no_grad()
def remove_mask(pipe, mask: Mask, saved: dict[str, torch.Tensor]) -> None:
    """Write back the values ``apply_mask`` zeroed: the unpruned model, bit for bit."""
    named = _params(pipe, mask)
    for n, i in mask.indices.items():
        named[n].data.view(-1)[i.to(named[n].device)] = saved[n].to(named[n].device)


def masked_tensors(pipe, mask: Mask) -> dict[str, torch.Tensor]:
    """The pruned parameters at their current values, keyed for a delta (``unet.<name>``)."""
    named = _params(pipe, mask)
    return {PREFIX + n: named[n].detach().clone() for n in mask.indices}


def save_mask(path: str | Path, mask: Mask, meta: dict) -> None:
    """Indices, then metadata (written last: it marks completeness, and holds the checksum)."""
    from safetensors.torch import save_file
    with atomic_path(path) as tmp:
        save_file({PREFIX + n: i.contiguous() for n, i in mask.indices.items()}, str(tmp))
    write_json(Path(path).with_suffix(".json"),
               {**meta, "shapes": {PREFIX + n: list(s) for n, s in mask.shapes.items()}, "sha256": sha256(path)})


def load_mask(path: str | Path) -> tuple[Mask, dict]:
    from safetensors.torch import load_file
    path = Path(path)
    meta = read_json(path.with_suffix(".json"))
    if not path.is_file() or sha256(path) != meta.get("sha256"):
        raise ArtifactError(f"{path}: missing, truncated or corrupted (checksum differs from "
                            f"{path.with_suffix('.json')}); rerun its prune job")
    tensors = load_file(str(path))
    return Mask({k.removeprefix(PREFIX): v for k, v in tensors.items()},
                {k.removeprefix(PREFIX): tuple(s) for k, s in meta["shapes"].items()}), meta


# parameter set -> module name suffixes of the linear layers pruned (the input X is hooked)
PRUNED_LAYERS = {"ffn": ("ff.net.2",), "xattn-kv": ("attn2.to_k", "attn2.to_v"),
                  "ffn+xattn-kv": ("ff.net.2", "attn2.to_k", "attn2.to_v")}


def linear_layers(unet, parameters: str) -> list[tuple[str, torch.nn.Linear]]:
    suffixes = PRUNED_LAYERS[parameters]
    layers = [(n, m) for n, m in unet.named_modules() if any(n.endswith("." + s) for s in suffixes)]
    if not layers:
        raise ValueError(f"parameter set {parameters!r} matches no layer of this UNet")
    return layers
