"""The attack stage: an erased model and its target's prompt set -> an adversarial set.

The model is base + delta (for text-encoder attacks, rule attack_shared, the base
model alone). The attack, named by ``attack.algorithm``, is imported from its own
module (``eraselab.attacks.ATTACKS``); the result is saved with
``adversarial.save_adversarial``. Generation under attack is the generation
stage's (``eraselab.generate.run_attacked``); scoring under attack the scoring
stage's (``eraselab.score.stage.run_attacked``).
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd

from ..artifacts import ArtifactError
from ..checkpoint import Checkpointer, checkpoint_dir_for
from ..generate import set_scheduler
from ..imagesets import load_image_set
from ..delta import apply_tensors, load_delta
from ..models import load_pipeline, load_variant
from ..prompts import load_prompts
from ..runtime import progress, stage
from ..score import make_detector
from . import NEEDS, attack
from ..adversarial import save_adversarial
from .common import AttackInputs


def attack_rows(spec: dict) -> pd.DataFrame:
    """The rows of the target's prompt set that are attacked (and later generated under attack)."""
    gen, limit = spec["generation"], spec["attack"].get("max_prompts")
    frame = load_prompts(spec["prompts"], gen["guidance"], gen["max_prompts"]).frame
    return frame.head(limit) if limit else frame


def reference_images(path: str | Path, rows: pd.DataFrame) -> np.ndarray:
    """The base model's image for each row (its first image), from the base model's image set."""
    images, index, _ = load_image_set(path)
    first = index.reset_index().drop_duplicates("case_number").set_index("case_number")["index"]
    missing = sorted(set(rows["case_number"]) - set(first.index))
    if missing:
        raise ArtifactError(f"{path}: no reference image for prompt rows {missing[:5]}; "
                            f"was it generated from the same prompt set?")
    return images[first.loc[rows["case_number"]].to_numpy()]


def load_with_base(base, delta, dtype: str) -> tuple[object, dict]:
    """The erased model (base + delta) and the base model's parts the attack compares it with: its UNet,
    and its text encoder only where the delta changes it (at SD scale one extra UNet, no second VAE)."""
    pipe = load_pipeline(base, dtype)
    tensors = load_delta(delta)[0] if delta else {}
    parts = {"base_unet": copy.deepcopy(pipe.unet).requires_grad_(False).eval()}
    if any(key.startswith("text_encoder.") for key in tensors):
        parts["base_text_encoder"] = copy.deepcopy(pipe.text_encoder).requires_grad_(False).eval()
    apply_tensors(pipe, tensors, str(delta))
    return pipe, parts


def run(base, out, spec: dict, delta=None, reference=None, pairs=None) -> None:
    """The attack stage. spec: attack_name, attack {algorithm, ...}, concept {name, detector, ...}, prompts,
    generation, seed."""
    params, seed = spec["attack"], spec["seed"]
    needs = NEEDS[params["algorithm"]]
    with stage("attack", spec, seed) as run_info:
        dtype = spec.get("dtype", "float32")
        pipe, base_parts = load_with_base(base, delta, dtype) if "base" in needs else \
            (load_variant(base, delta, dtype=dtype), {})
        set_scheduler(pipe, spec["generation"]["scheduler"])
        rows = attack_rows(spec)
        inputs = AttackInputs(
            prompts=rows, generation=spec["generation"],
            reference=reference_images(reference, rows) if "reference" in needs else None,
            detector=make_detector(spec["concept"]["detector"], base) if "detector" in needs else None,
            pairs=pd.read_csv(pairs, keep_default_na=False) if "pairs" in needs else None, **base_parts)
        ckpt = Checkpointer(checkpoint_dir_for(out), spec, params.get("checkpoint_every", 100))
        bar = progress(None, f"attack {spec['variant']} with {spec['attack_name']}")
        adv, record = attack(params["algorithm"])(pipe, inputs, params, seed, progress=bar, ckpt=ckpt)
        bar.close()
        info = run_info.record()
        save_adversarial(out, adv, rows, {**info, **record, "base": str(base), "delta": delta and str(delta),
                                          "seconds_per_prompt": round(info["wall_time_s"] / len(rows), 3),
                                          "resumed_from_step": ckpt.resumed_from})
        ckpt.clear()
