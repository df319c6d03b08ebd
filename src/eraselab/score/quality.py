"""Preservation metrics of one variant on the neutral prompt set: CLIP score, and FID against the base model.

Both answer "what did the erasure cost elsewhere": the CLIP score says whether
images still match their (neutral) prompts, and FID against the base model's
images of the same prompts and seeds says how far the image distribution
moved. (Papers also report FID against real COCO images; with the base
model's images as reference, the base model scores 0 by construction.)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def run(base: str | Path, images: str | Path, reference: str | Path, out: str | Path, spec: dict) -> None:
    """spec: {clip_score: {...}, fid: {...}, model, variant}; writes a JSON with each metric and its provenance."""
    from ..artifacts import write_json
    from ..imagesets import load_image_set
    from ..runtime import stage
    with stage("quality", spec) as run_info:
        imgs, index, meta = load_image_set(images)
        result = {"model": spec["model"], "variant": spec["variant"], "n": len(imgs), "images": str(images),
                  "images_sha256": meta["sha256"], "prompts": meta.get("prompts"),
                  "seeds": [int(s) for s in index["evaluation_seed"]]}
        if spec["clip_score"]["enabled"]:
            from .clip import clip_from_config, clip_scores
            clip = clip_from_config(spec["clip_score"])
            s = clip_scores(clip, imgs, index["prompt"].astype(str).tolist(), spec["clip_score"]["batch_size"])
            result["clip_score"] = {"mean": float(s.mean()), "std": float(s.std()), "n": len(s),
                                    "model": clip.info, "definition": "100 * max(cos(image, prompt), 0)"}
        if spec["fid"]["features"] != "none":
            from .fid import fid, make_features
            extractor = make_features(spec["fid"], base)
            if Path(images).resolve() == Path(reference).resolve():
                value = 0.0   # the base model against itself
            else:
                value = fid(imgs, load_image_set(reference)[0], extractor)
            result["fid_vs_base"] = {"value": value, "reference": str(reference), **extractor.describe()}
        write_json(out, {**result, "provenance": run_info.record()})


def summary(path: str | Path) -> dict:
    """The report's columns from one quality JSON: clip_score, fid_vs_base (NaN when not computed)."""
    from ..artifacts import read_json
    q = read_json(path)
    return {"clip_score": q.get("clip_score", {}).get("mean", np.nan),
            "fid_vs_base": q.get("fid_vs_base", {}).get("value", np.nan)}
