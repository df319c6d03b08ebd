"""ConceptWorld's exact scorer, the attribute classifier trained on the renders, and its features for FID."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..artifacts import REBUILD_MODEL, verify_manifest
from ..conceptworld.classifier import load_classifier, to_tensor


@lru_cache(maxsize=4)
def _classifier(directory: str):
    return load_classifier(directory)


class ConceptWorldDetector:
    """Detected when the classifier's top class for ``attribute`` is ``value``."""

    def __init__(self, cfg: dict, model_dir: Path):
        self.attribute, self.value = cfg["attribute"], cfg["value"]
        self.directory = model_dir / "classifier"
        verify_manifest(model_dir, prefix="classifier/", what="base model", fix=REBUILD_MODEL)
        self.model, self.world = _classifier(str(self.directory))
        classes = self.world.values(self.attribute)
        if self.value not in classes:
            raise ValueError(f"detector value {self.value!r} is not a {self.attribute} of this world; "
                             f"allowed: {', '.join(classes)}")
        self.index = classes.index(self.value)

    def describe(self) -> dict:
        return {"kind": "conceptworld", "attribute": self.attribute, "value": self.value,
                "classifier": str(self.directory), "rule": "argmax class == value"}

    @torch.no_grad()
    def __call__(self, images: np.ndarray, batch: int = 256) -> pd.DataFrame:
        rows = []
        for i in range(0, len(images), batch):
            logits = self.model(to_tensor(images[i:i + batch]))
            prob = logits[self.attribute].softmax(1)[:, self.index]
            labels = {a: [self.world.values(a)[j] for j in l.argmax(1).tolist()] for a, l in logits.items()}
            for j in range(len(prob)):
                rows.append({"detected": labels[self.attribute][j] == self.value,
                             "score": float(prob[j]), **{f"pred_{a}": v[j] for a, v in labels.items()}})
        return pd.DataFrame(rows)


class ConceptWorldFeatures:
    """The penultimate features of ConceptWorld's attribute classifier (in the base model's directory)."""

    def __init__(self, cfg: dict, model_dir: Path):
        self.directory = Path(model_dir) / "classifier"
        self.model, _ = load_classifier(self.directory)
        self.batch_size = int(cfg.get("batch_size", 50))

    def describe(self) -> dict:
        return {"features": "conceptworld", "classifier": str(self.directory),
                "dims": self.model.heads["shape"].in_features}

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        return torch.cat([self.model.features(to_tensor(images[i:i + self.batch_size]))
                          for i in range(0, len(images), self.batch_size)]).double().numpy()
