"""Preservation metrics of one variant on the neutral prompt set: CLIP score, and FID against the base model.

Both answer "what did the erasure cost elsewhere": the CLIP score says whether
images still match their (neutral) prompts, and FID against the base model's
images of the same prompts and seeds says how far the image distribution
moved. (Papers also report FID against real COCO images; with the base
model's images as reference, the base model scores 0 by construction.)
"""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

# Each metric's code, imported only when the config enables it, so that a job's code fingerprint
# (plan.job_modules) covers the metrics it computes and no other.
METRICS = {"clip_score": "eraselab.score.clip", "fid": "eraselab.score.fid"}


def metric(name: str):
    return importlib.import_module(METRICS[name])


def run(base: str | Path, images: str | Path, reference: str | Path, out: str | Path, spec: dict) -> None:
    """spec: {clip_score: {...}, fid: {...}, model, variant}; writes a JSON with each metric and its provenance.

    Images are streamed in batches, so 10k-image sets at 512 px need no more memory than one batch.
    """
    from ..artifacts import read_json, write_json
    from ..artifacts import sidecar
    from ..imagesets import iter_image_batches
    from ..runtime import stage
    with stage("quality", spec) as run_info:
        meta = read_json(sidecar(images, ".json"))
        clip_cfg, fid_cfg = spec["clip_score"], spec["fid"]
        clip = metric("clip_score").clip_from_config(clip_cfg) if clip_cfg["enabled"] else None
        extractor = metric("fid").make_features(fid_cfg, base) if fid_cfg["features"] != "none" else None
        batch = min(clip_cfg["batch_size"], fid_cfg["batch_size"])
        scores, feats, seeds, prompts = [], [], [], []
        for imgs, rows in iter_image_batches(images, batch):
            seeds += [int(x) for x in rows["evaluation_seed"]]
            if clip is not None:
                scores.append(metric("clip_score").clip_scores(clip, imgs, rows["prompt"].astype(str).tolist(),
                                                               len(imgs)))
            if extractor is not None:
                feats.append(extractor(imgs))
        result = {"model": spec["model"], "variant": spec["variant"], "n": len(seeds), "images": str(images),
                  "images_sha256": meta["sha256"], "prompts": meta.get("prompts"), "seeds": seeds}
        if clip is not None:
            s = np.concatenate(scores)
            result["clip_score"] = {"mean": float(s.mean()), "std": float(s.std()), "n": len(s),
                                    "model": clip.info, "definition": "100 * max(cos(image, prompt), 0)"}
        if extractor is not None:
            result.update(_fids(np.concatenate(feats), images, reference, meta, fid_cfg, extractor))
        write_json(out, {**result, "provenance": run_info.record()})


def _fids(feats: np.ndarray, images, reference, meta: dict, cfg: dict, extractor) -> dict:
    """FID against the base model's images of the same prompts, and against real images if configured."""
    from ..imagesets import iter_image_batches
    fid = metric("fid")
    features_of, fid_from_features, real_image_batches = fid.features_of, fid.fid_from_features, fid.real_image_batches
    out = {}
    if Path(images).resolve() == Path(reference).resolve():
        value = 0.0   # the base model against itself
    else:
        ref = features_of((b for b, _ in iter_image_batches(reference, cfg["batch_size"])), extractor)
        value = fid_from_features(feats, ref)
    out["fid_vs_base"] = {"value": value, "reference": str(reference), **extractor.describe()}
    if cfg.get("real_images"):
        height, width = meta["shape"][:2]
        real = features_of(real_image_batches(cfg["real_images"], width, height, cfg["batch_size"],
                                              cfg.get("max_real_images")), extractor)
        out["fid_vs_real"] = {"value": fid_from_features(feats, real), "reference": cfg["real_images"],
                              "n_real": len(real), "preprocessing": f"centre crop, bicubic resize to {width}x{height}",
                              **extractor.describe()}
    return out
