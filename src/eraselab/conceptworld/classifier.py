"""The attribute classifier: ConceptWorld's exact scorer.

A small CNN with one head per attribute (shape incl. "none", colour, style,
background), trained on fresh renders. Its penultimate features also serve as
ConceptWorld's FID feature extractor.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .world import ATTRIBUTES, World, render_batch, sample_labels


class AttributeClassifier(nn.Module):
    def __init__(self, head_sizes: dict[str, int], width: int = 32):
        super().__init__()
        w = width

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(),
                                 nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())
        self.body = nn.Sequential(block(3, w), nn.MaxPool2d(2), block(w, 2 * w), nn.MaxPool2d(2),
                                  block(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.heads = nn.ModuleDict({k: nn.Linear(4 * w, n) for k, n in head_sizes.items()})

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features of images in [-1, 1], N x 3 x H x W."""
        return self.body(images)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(images)
        return {k: head(f) for k, head in self.heads.items()}


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float N x 3 x H x W in [-1, 1] (the pipeline's convention)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def label_indices(world: World, labels: list[dict]) -> dict[str, torch.Tensor]:
    return {a: torch.tensor([world.values(a).index(lab[a]) for lab in labels]) for a in ATTRIBUTES}


def render_labelled(world: World, n: int, seed: int, p_none: float = 0.1):
    rng = np.random.default_rng(seed)
    labels = [sample_labels(world, rng, p_none) for _ in range(n)]
    return render_batch(world, labels, seed), labels


def train_classifier(world: World, steps: int, batch: int, seed: int, lr: float = 2e-3,
                     progress=None) -> AttributeClassifier:
    """Train on a fresh render batch each step: no image is seen twice."""
    torch.manual_seed(seed)
    model = AttributeClassifier({a: len(world.values(a)) for a in ATTRIBUTES})
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for step in range(steps):
        images, labels = render_labelled(world, batch, seed=seed * 1_000_003 + step)
        targets = label_indices(world, labels)
        logits = model(to_tensor(images))
        loss = sum(nn.functional.cross_entropy(logits[a], targets[a]) for a in ATTRIBUTES)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval()


@torch.no_grad()
def predict(model: AttributeClassifier, world: World, images: np.ndarray, batch: int = 256) -> list[dict]:
    """Attribute labels for uint8 images."""
    out = []
    for i in range(0, len(images), batch):
        logits = model(to_tensor(images[i:i + batch]))
        idx = {a: logits[a].argmax(1).tolist() for a in ATTRIBUTES}
        out += [{a: world.values(a)[idx[a][j]] for a in ATTRIBUTES} for j in range(len(idx["shape"]))]
    return out


def accuracy(model: AttributeClassifier, world: World, n: int, seed: int) -> dict[str, float]:
    """Per-attribute and all-attributes accuracy on n fresh held-out renders."""
    images, labels = render_labelled(world, n, seed)
    pred = predict(model, world, images)
    acc = {a: float(np.mean([p[a] == t[a] for p, t in zip(pred, labels) if a == "shape" or t["shape"] != "none"]))
           for a in ATTRIBUTES}
    acc["all"] = float(np.mean([all(p[a] == t[a] for a in ATTRIBUTES if a == "shape" or t["shape"] != "none")
                                for p, t in zip(pred, labels)]))
    return acc


def save_classifier(model: AttributeClassifier, world: World, out_dir) -> None:
    """Weights (safetensors) and the class names of each head (JSON), as one directory."""
    from pathlib import Path

    from safetensors.torch import save_file

    from ..artifacts import write_json
    from .world import world_to_dict
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), out_dir / "classifier.safetensors")
    write_json(out_dir / "classifier.json", {"world": world_to_dict(world),
                                             "heads": {a: list(world.values(a)) for a in ATTRIBUTES},
                                             "width": model.heads["shape"].in_features // 4})


def load_classifier(directory) -> tuple[AttributeClassifier, World]:
    from pathlib import Path

    from safetensors.torch import load_file

    from ..artifacts import ArtifactError, read_json
    from .world import world_from_dict
    directory = Path(directory)
    meta = read_json(directory / "classifier.json")
    world = world_from_dict(meta["world"])
    model = AttributeClassifier({a: len(v) for a, v in meta["heads"].items()}, width=meta["width"])
    try:
        model.load_state_dict(load_file(directory / "classifier.safetensors"))
    except Exception as e:
        raise ArtifactError(f"{directory / 'classifier.safetensors'}: cannot load classifier weights: {e}") from None
    return model.eval(), world
