"""What erasure methods share: the concept they erase, and which parameters they train."""
from __future__ import annotations

import dataclasses
import re

import torch



@dataclasses.dataclass(frozen=True)
class Concept:
    name: str
    type: str                      # object | style | implicit
    erase: tuple[str, ...]         # prompts the method is given
    anchor: str | tuple[str, ...] = ""  # what it is mapped to ("" = unconditional); one per erase prompt, or shared
    preserve: tuple[str, ...] = ()  # prompts closed-form methods must keep

    @classmethod
    def from_config(cls, name: str, cfg: dict) -> "Concept":
        anchor = cfg.get("anchor", "")
        return cls(name=name, type=cfg["type"], erase=tuple(cfg.get("erase") or [name]),
                   anchor=anchor if isinstance(anchor, str) else tuple(anchor),
                   preserve=tuple(cfg.get("preserve", ())))

    def guides(self) -> list[str]:
        """The anchor of each erase prompt (a single anchor is shared by all of them)."""
        if isinstance(self.anchor, str):
            return [self.anchor] * len(self.erase)
        if len(self.anchor) != len(self.erase):
            raise ValueError(f"concept {self.name!r}: {len(self.anchor)} anchors for {len(self.erase)} erase "
                             f"prompts; give one anchor, or one per erase prompt")
        return list(self.anchor)


# Which UNet parameters each ESD-style train method updates. noxattn follows the paper-era
# CompVis code: everything but cross-attention, the time embedding and the output layers.
PARAMETER_SETS = {
    "xattn": (r"attn2\.", None),
    "xattn-strict": (r"attn2\.to_[kv]\.", None),
    "noxattn": (r"", r"attn2\.|^time_embedding\.|^conv_norm_out\.|^conv_out\."),
    "selfattn": (r"attn1\.", None),
    "full": (r"", None),
    "mask-scores": (r"\.scores$", None),   # learned pruning masks (prune/learned.py): only the scores train
}


def select_parameters(unet: torch.nn.Module, train: str) -> list[str]:
    """Names of the UNet parameters a train method updates, in model order."""
    if train not in PARAMETER_SETS:
        raise ValueError(f"unknown parameter set {train!r}; allowed: {', '.join(PARAMETER_SETS)}")
    include, exclude = PARAMETER_SETS[train]
    names = [n for n, _ in unet.named_parameters()
             if re.search(include, n) and not (exclude and re.search(exclude, n))]
    if not names:
        raise ValueError(f"parameter set {train!r} matches no parameter of this UNet")
    return names


def cross_attention_kv(unet: torch.nn.Module) -> list[str]:
    """Names of every cross-attention key and value projection weight (UCE/RECE edit these)."""
    return [n for n in select_parameters(unet, "xattn-strict") if n.endswith(".weight")]

