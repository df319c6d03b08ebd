"""CLIP through open_clip: zero-shot classification among candidate texts, and CLIP score.

- Zero-shot (UCE's CLIP_classify protocol, methods.md section 6): an image
  "shows" the concept when its target text ("art by Van Gogh") is among the
  top-k of the candidate texts by image-text similarity (a generic "art"
  candidate absorbs images of no listed artist).
- CLIP score (torchmetrics' definition): 100 x max(cos(image, text), 0) per
  image; papers report its mean, some divided by 100.

The model and its weights come from config: an open_clip architecture name (or
the path of an open_clip model-config JSON) and a pretrained tag, a local
checkpoint file, or null for random weights (tests). The papers use ViT-L/14
with OpenAI's weights ("ViT-L-14", "openai"); open_clip downloads tagged weights
once into its cache, and when it cannot, the error says how to provide them.
"""
from __future__ import annotations

import dataclasses
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch


class ClipWeightsError(RuntimeError):
    """The configured CLIP weights are not available; the message says how to provide them."""


@dataclasses.dataclass
class Clip:
    model: torch.nn.Module
    preprocess: object  # PIL image -> tensor, open_clip's eval transform for this model
    tokenizer: object
    info: dict          # what was loaded: architecture, weights, versions

    @torch.no_grad()
    def encode_images(self, images: np.ndarray, batch_size: int = 32) -> torch.Tensor:
        """L2-normalised image embeddings of uint8 N x H x W x 3 images."""
        from PIL import Image
        device = next(self.model.parameters()).device
        out = []
        for i in range(0, len(images), batch_size):
            x = torch.stack([self.preprocess(Image.fromarray(im)) for im in images[i:i + batch_size]])
            out.append(self.model.encode_image(x.to(device)).float())
        return torch.nn.functional.normalize(torch.cat(out), dim=-1).cpu()

    @torch.no_grad()
    def encode_texts(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        device = next(self.model.parameters()).device
        out = [self.model.encode_text(self.tokenizer(texts[i:i + batch_size]).to(device)).float()
               for i in range(0, len(texts), batch_size)]
        return torch.nn.functional.normalize(torch.cat(out), dim=-1).cpu()


def _how_to_provide(model: str, pretrained: str, cache_dir: str | None, error: Exception) -> str:
    import open_clip
    source = open_clip.get_pretrained_cfg(model, pretrained) or {}
    hub = source.get("hf_hub", "").rstrip("/")
    where = f"the Hugging Face repo {hub}" if hub else source.get("url", "open_clip's pretrained list")
    return (f"CLIP weights {model!r} / {pretrained!r} are not available here ({error}).\n"
            f"Provide them in one of two ways:\n"
            f"  1. on a machine with network access, fill a cache directory once:\n"
            f"       python -c \"import open_clip; open_clip.create_model('{model}', pretrained='{pretrained}', "
            f"cache_dir='CLIP_CACHE')\"\n"
            f"     copy CLIP_CACHE here and set cache_dir: CLIP_CACHE in the config "
            f"(the detector's, or quality.clip_score) (now: {cache_dir!r});\n"
            f"  2. download the checkpoint file from {where} "
            f"(e.g. huggingface-cli download {hub or 'REPO'} open_clip_model.safetensors) "
            f"and set pretrained: /path/to/that/file"
            + (f" and model: {model}-quickgelu (a file does not say that OpenAI's weights need QuickGELU; "
               f"the tag does)." if source.get("quick_gelu") else "."))


def load_clip(model: str = "ViT-L-14", pretrained: str | None = "openai", cache_dir: str | None = None,
              device: str | None = None) -> Clip:
    """An open_clip model, its eval preprocessing and tokenizer; ClipWeightsError when weights are missing.

    Loaded once per process for each (model, weights, cache, device). Random
    weights (pretrained None, for tests) are drawn from a fixed seed.
    """
    from ..runtime import device as default_device
    return _load_clip(model, pretrained or None, cache_dir, device or default_device())


@lru_cache(maxsize=2)
def _load_clip(model: str, pretrained: str | None, cache_dir: str | None, device: str) -> Clip:
    import open_clip
    name = model
    if model.endswith(".json"):  # an architecture given as an open_clip model config file
        if not Path(model).is_file():
            raise FileNotFoundError(f"open_clip model config {model} not found")
        open_clip.add_model_config(model)
        name = Path(model).stem
    if name not in open_clip.list_models():
        raise ValueError(f"unknown open_clip architecture {model!r}; e.g. ViT-L-14, ViT-B-32, or a config JSON path")
    tag = open_clip.get_pretrained_cfg(name, pretrained) if pretrained else {}
    is_file = bool(pretrained) and not tag and Path(pretrained).is_file()
    if pretrained and not tag and not is_file:
        raise ClipWeightsError(f"pretrained {pretrained!r} is neither an open_clip tag of {name} "
                               f"({', '.join(open_clip.list_pretrained_tags_by_model(name)) or 'none'}) "
                               f"nor an existing checkpoint file")
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            # OpenAI's weights were trained with QuickGELU; the plain architecture names use GELU.
            net, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, cache_dir=cache_dir,
                force_quick_gelu=bool(tag.get("quick_gelu", False)), device=device,
                weights_only=True)   # a .pt/.bin checkpoint file or cache entry is never unpickled as code
    except (RuntimeError, FileNotFoundError, OSError) as e:
        if tag:
            raise ClipWeightsError(_how_to_provide(name, pretrained, cache_dir, e)) from None
        raise
    quick_gelu = bool(tag.get("quick_gelu", False) or open_clip.get_model_config(name).get("quick_gelu", False))
    info = {"architecture": model, "pretrained": pretrained, "open_clip": open_clip.__version__,
            "quick_gelu": quick_gelu}
    if is_file:
        info["checkpoint_bytes"] = Path(pretrained).stat().st_size
    return Clip(net.eval(), preprocess, open_clip.get_tokenizer(name), info)


def clip_from_config(cfg: dict) -> Clip:
    return load_clip(cfg.get("model", "ViT-L-14"), cfg.get("pretrained", "openai"), cfg.get("cache_dir"))


def clip_scores(clip: Clip, images: np.ndarray, prompts: list[str], batch_size: int = 32) -> np.ndarray:
    """Per image: 100 x max(cos(image, its prompt), 0), torchmetrics' CLIP score."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    img = clip.encode_images(images, batch_size)
    txt = clip.encode_texts(list(prompts))
    return (100 * (img * txt).sum(-1).clamp(min=0)).numpy()


class ClipDetector:
    """Detected when ``target`` is among the ``top_k`` candidates by CLIP similarity (softmax over candidates)."""

    def __init__(self, cfg: dict, model_dir: Path | None = None):
        self.candidates = list(cfg["candidates"])
        self.target = cfg["target"]
        if self.target not in self.candidates:
            raise ValueError(f"clip detector: target {self.target!r} is not one of the candidates "
                             f"{self.candidates}")
        self.top_k = int(cfg.get("top_k", 1))
        self.batch_size = int(cfg.get("batch_size", 32))
        self.clip = clip_from_config(cfg)
        self.text = self.clip.encode_texts(self.candidates)

    def describe(self) -> dict:
        return {"kind": "clip", **self.clip.info, "candidates": self.candidates, "target": self.target,
                "top_k": self.top_k, "rule": f"target among the top {self.top_k} candidates"}

    def __call__(self, images: np.ndarray) -> pd.DataFrame:
        image = self.clip.encode_images(images, self.batch_size)
        # CLIP's logit scale (100 for OpenAI's weights), fixed so the probabilities do not depend on the weights
        prob = (100 * image @ self.text.T).softmax(-1)
        t = self.candidates.index(self.target)
        rank = (prob > prob[:, t:t + 1]).sum(-1)   # candidates strictly more likely than the target
        top = prob.argmax(-1)
        return pd.DataFrame({"detected": (rank < self.top_k).numpy(), "score": prob[:, t].numpy(),
                             "prediction": [self.candidates[i] for i in top.tolist()],
                             "target_rank": (rank + 1).numpy()})
