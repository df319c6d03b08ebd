"""FID between two image sets, with a pluggable feature extractor.

FID is the Fréchet distance between Gaussians fitted to the features of two
image sets: |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2). Extractors
(each ``(cfg, model_dir)`` -> callable on uint8 N x H x W x 3 images, and
``describe()``):

- ``inception``: Inception-v3's 2048-d pool features, as the papers' FID. With
  ``pytorch-fid`` weights (the TF-Inception port pytorch-fid and clean-fid use)
  numbers are comparable with the papers'; ``torchvision`` weights are
  torchvision's ImageNet Inception-v3 (similar, not comparable).
- ``conceptworld``: the penultimate features of ConceptWorld's attribute
  classifier, which knows exactly what ConceptWorld's images are made of.

Weights are never downloaded inside a scoring job (cluster nodes are often
offline): they come from torch hub's cache or a local checkpoint file, and the
error says how to put them there.
"""
from __future__ import annotations

import contextlib
import functools
import os
import pickle
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch.nn import functional as F


class FeatureWeightsError(RuntimeError):
    """A feature extractor's weights are not available; the message says how to provide them."""


def gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64) of N x D features."""
    f = np.asarray(features, np.float64)
    if len(f) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {len(f)}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2), and the latter matrix is
    symmetric PSD, so symmetric eigendecompositions suffice (stable, no scipy).
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    r1 = _psd_sqrt(s1)
    inner = r1 @ s2 @ r1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean, 0.0))


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(*gaussian(a), *gaussian(b))


# --- feature extractors -------------------------------------------------------------------------

INCEPTION_FILES = {  # weights file name in torch hub's cache, and where it comes from
    "pytorch-fid": ("pt_inception-2015-12-05-6726825d.pth",
                    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                    "pt_inception-2015-12-05-6726825d.pth"),
    "torchvision": ("inception_v3_google-0cc3c7bd.pth",
                    "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"),
}


def _hub_file(name: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _weights_file(weights: str, checkpoint: str | None) -> Path:
    name, url = INCEPTION_FILES[weights]
    path = Path(checkpoint) if checkpoint else _hub_file(name)
    if not path.is_file():
        raise FeatureWeightsError(
            f"Inception weights for FID ({weights}) not found at {path}.\n"
            f"Provide them in one of two ways:\n"
            f"  1. on a machine with network access: python -c \"import torch; "
            f"torch.hub.load_state_dict_from_url('{url}')\", then copy "
            f"$TORCH_HOME/hub/checkpoints/{name} to {_hub_file(name)} here;\n"
            f"  2. download {url} anywhere and set quality.fid.checkpoint: /path/to/{name}.")
    return path


@contextlib.contextmanager
def _hub_dir_with(file: Path, name: str):
    """A temporary torch hub directory in which ``name`` is ``file``: pytorch-fid loads its weights
    by URL from the hub cache, so a local checkpoint is offered to it there."""
    old = torch.hub.get_dir()
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "checkpoints").mkdir()
        os.symlink(file.resolve(), Path(d) / "checkpoints" / name)
        torch.hub.set_dir(d)
        try:
            yield
        finally:
            torch.hub.set_dir(old)


def _pytorch_fid_net(file: Path) -> torch.nn.Module:
    try:
        from pytorch_fid import inception as fid_inception
        from pytorch_fid.inception import InceptionV3
    except ImportError:
        raise FeatureWeightsError("quality.fid.inception_weights: pytorch-fid needs the pytorch-fid package: "
                                  "pip install pytorch-fid==0.3.0 (or pip install 'eraselab[fid]'), "
                                  "or set inception_weights: torchvision") from None
    name = INCEPTION_FILES["pytorch-fid"][0]
    # pytorch-fid loads the file with torch.hub's default weights_only=False, which would run code pickled
    # into it (the file may come from a shared cache or a colleague's path): make it weights_only=True
    weights_only = functools.partial(torch.hub.load_state_dict_from_url, weights_only=True)
    with _hub_dir_with(file, name), mock.patch.object(fid_inception, "load_state_dict_from_url", weights_only):
        try:
            net = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True)
        except pickle.UnpicklingError as e:
            raise FeatureWeightsError(f"{file}: refused by torch.load(weights_only=True), not plain weights "
                                      f"({str(e).strip().splitlines()[0]})") from None

    class PoolFeatures(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):  # x in [0, 1]; pytorch-fid resizes to 299 and scales to [-1, 1] itself
            return self.net(x)[0].flatten(1)
    return PoolFeatures()


def _torchvision_net(file: Path) -> torch.nn.Module:
    from torchvision.models import Inception3
    net = Inception3(aux_logits=True, transform_input=False, init_weights=False)
    try:
        net.load_state_dict(torch.load(file, map_location="cpu", weights_only=True))
    except Exception as e:
        raise FeatureWeightsError(f"{file}: not torchvision Inception-v3 weights ({e})") from None
    net.fc = torch.nn.Identity()

    class PoolFeatures(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):  # x in [0, 1] -> 299 px in [-1, 1], what Google's Inception was trained on
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            return self.net(2 * x - 1)
    return PoolFeatures()


class InceptionFeatures:
    """Inception-v3 pool3 features (2048-d), from pytorch-fid's or torchvision's weights."""

    def __init__(self, cfg: dict, model_dir: Path | None = None):
        from ..runtime import device
        self.weights = cfg.get("inception_weights", "pytorch-fid")
        if self.weights not in INCEPTION_FILES:
            raise ValueError(f"inception_weights {self.weights!r}; allowed: {', '.join(INCEPTION_FILES)}")
        self.file = _weights_file(self.weights, cfg.get("checkpoint"))
        build = _pytorch_fid_net if self.weights == "pytorch-fid" else _torchvision_net
        self.device = device()
        self.net = build(self.file).eval().to(self.device)
        self.batch_size = int(cfg.get("batch_size", 50))

    def describe(self) -> dict:
        from ..artifacts import sha256
        return {"features": "inception", "weights": self.weights, "file": str(self.file),
                "file_sha256": sha256(self.file), "dims": 2048}

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), self.batch_size):
            x = torch.from_numpy(images[i:i + self.batch_size]).permute(0, 3, 1, 2).float().div(255)
            out.append(self.net(x.to(self.device)).double().cpu())
        return torch.cat(out).numpy()


def make_features(cfg: dict, model_dir: str | Path):
    """The feature extractor ``cfg["features"]`` names (eraselab.score.FEATURES)."""
    from ..registry import load
    from . import FEATURES
    return load(FEATURES, cfg["features"], "FID features")(cfg, Path(model_dir))


def fid(images_a: np.ndarray, images_b: np.ndarray, extractor) -> float:
    """FID between two uint8 image sets under a feature extractor."""
    return fid_from_features(extractor(images_a), extractor(images_b))


def features_of(batches, extractor) -> np.ndarray:
    """Features of a stream of uint8 image batches (a set never has to fit in memory)."""
    return np.concatenate([extractor(b) for b in batches])


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def center_crop_resize(image, width: int, height: int) -> np.ndarray:
    """The largest centred crop of the target aspect ratio, resized (bicubic) to width x height."""
    from PIL import Image
    w, h = image.size
    scale = min(w / width, h / height)
    cw, ch = round(width * scale), round(height * scale)
    left, top = (w - cw) // 2, (h - ch) // 2
    crop = image.convert("RGB").crop((left, top, left + cw, top + ch))
    return np.asarray(crop.resize((width, height), Image.BICUBIC))


def real_image_batches(directory: str | Path, width: int, height: int, batch_size: int, limit: int | None = None):
    """Real images (e.g. COCO val2014) from a directory, sorted by path, cropped and resized to the
    generated images' size as the papers do before computing FID against real images."""
    from PIL import Image
    files = sorted(p for p in Path(directory).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if len(files) < 2:
        raise FileNotFoundError(f"{directory}: fewer than 2 images ({', '.join(IMAGE_SUFFIXES)}) for FID "
                                f"against real images (quality.fid.real_images)")
    for i in range(0, len(files), batch_size):
        yield np.stack([center_crop_resize(Image.open(f), width, height) for f in files[i:i + batch_size]])
