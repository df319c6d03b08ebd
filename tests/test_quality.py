"""Preservation metrics (CLIP score, FID vs base) and the report's columns, tables and figures."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eraselab import config, report
from eraselab.conceptworld.prompts import neutral_prompt_set, write_neutral_set
from eraselab.conceptworld.world import World

REPORT = config.fill_defaults({}, config.load_schema())["report"]   # the report settings a run gets by default

ROOT = Path(__file__).resolve().parents[1]
TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def test_shipped_neutral_set_is_reproducible(tmp_path):
    assert (ROOT / "data/prompts/conceptworld/neutral.csv").read_text() == write_neutral_set(tmp_path).read_text()
    df = neutral_prompt_set(World(), 200, seed=0)
    assert df.evaluation_seed.nunique() == 200 and df["shape"].nunique() == len(World().shapes)


@pytest.fixture(scope="module")
def neutral_sets(conceptworld_dir, tmp_path_factory):
    """The base model's neutral images and a changed model's (the base with one UNet weight scaled)."""
    import torch

    from eraselab.generate import generate_images
    from eraselab.imagesets import save_image_set
    from eraselab.models import load_pipeline
    conceptworld_pipe = load_pipeline(conceptworld_dir)
    tmp_path = tmp_path_factory.mktemp("neutral")
    frame = neutral_prompt_set(World(), 16, seed=0)
    out = {}
    for name in ("base", "changed"):
        if name == "changed":
            with torch.no_grad():
                w = dict(conceptworld_pipe.unet.named_parameters())["down_blocks.1.attentions.0.proj_out.weight"]
                w.mul_(3.0)
        images = generate_images(conceptworld_pipe, frame.prompt.tolist(), frame.evaluation_seed.tolist(),
                                 frame.evaluation_guidance.tolist(), steps=8, batch_size=16)
        out[name] = tmp_path / name / "neutral.tar"
        save_image_set(out[name], images, frame, {"prompts": "neutral.csv"})
    return out


def test_quality_stage_records_metrics_models_and_seeds(neutral_sets, conceptworld_dir, tmp_path):
    from eraselab.report import quality_summary as summary
    from eraselab.score.quality import run
    clip_cfg = tmp_path / "tiny-clip-quality.json"
    clip_cfg.write_text(json.dumps(TINY_CLIP))
    spec = {"model": "conceptworld", "clip_score": {"enabled": True, "model": str(clip_cfg), "pretrained": None,
                                                    "cache_dir": None, "batch_size": 8},
            "fid": {"features": "conceptworld", "batch_size": 50}}
    for variant in ("base", "changed"):
        run(conceptworld_dir, neutral_sets[variant], neutral_sets["base"], tmp_path / f"{variant}.json",
            {**spec, "variant": variant})
    base, changed = (json.loads((tmp_path / f"{v}.json").read_text()) for v in ("base", "changed"))
    assert base["fid_vs_base"]["value"] == 0.0 and changed["fid_vs_base"]["value"] > 0
    assert changed["fid_vs_base"]["features"] == "conceptworld" and changed["n"] == 16
    assert 0 <= changed["clip_score"]["mean"] <= 100 and changed["clip_score"]["model"]["pretrained"] is None
    assert changed["seeds"] == neutral_prompt_set(World(), 16, seed=0).evaluation_seed.tolist()
    assert changed["provenance"]["versions"]["open_clip_torch"] and len(changed["images_sha256"]) == 64
    s = summary(tmp_path / "changed.json")
    assert (s["clip_score"], s["fid_vs_base"]) == (changed["clip_score"]["mean"], changed["fid_vs_base"]["value"])
    assert np.isnan(s["fid_vs_real"]) and "fid_vs_real" not in changed


def test_fid_against_real_images(neutral_sets, conceptworld_dir, tmp_path):
    """Real images of another size are centre-cropped and resized to the generated size; renders of the
    world (what the model learned) are closer to its images than renders of an unrelated colour field."""
    from PIL import Image

    from eraselab.conceptworld.world import render, sample_labels
    from eraselab.score.quality import run
    rng = np.random.default_rng(0)
    world = World()
    for name, make in (("renders", lambda: render(world, sample_labels(world, rng), rng)),
                       ("noise", lambda: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))):
        (tmp_path / name).mkdir()
        for i in range(24):
            im = Image.fromarray(make()).resize((48, 40))   # not the generated 32 x 32
            im.save(tmp_path / name / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    fids = {}
    for name in ("renders", "noise"):
        spec = {"model": "conceptworld", "variant": "changed",
                "clip_score": {"enabled": False, "batch_size": 32},
                "fid": {"features": "conceptworld", "batch_size": 7, "real_images": str(tmp_path / name),
                        "max_real_images": 20}}
        run(conceptworld_dir, neutral_sets["changed"], neutral_sets["base"], tmp_path / f"{name}.json", spec)
        q = json.loads((tmp_path / f"{name}.json").read_text())
        assert q["fid_vs_real"]["n_real"] == 20 and q["n"] == 16 and "centre crop" in q["fid_vs_real"]["preprocessing"]
        fids[name] = q["fid_vs_real"]["value"]
    assert 0 < fids["renders"] < fids["noise"]


def test_centre_crop_resize():
    from PIL import Image

    from eraselab.score.fid import center_crop_resize
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, 20:40] = 255                        # the middle third is white
    out = center_crop_resize(Image.fromarray(wide), 10, 10)
    assert out.shape == (10, 10, 3) and out.min() >= 250   # the centred square crop is all white


def summary_frame():
    rows = [dict(model="m", target="t1", target_type="object", prune="none", method="esd-x", base_rate=0.9,
                 erased_rate=0.1, reduction=0.89, others_mean_rate=0.7, others_base_mean_rate=0.8,
                 others_max_drop_points=12.0, erased="yes", preserved="no"),
            dict(model="m", target="t2", target_type="style", prune="none", method="esd-u", base_rate=0.6,
                 erased_rate=0.5, reduction=0.17, others_mean_rate=0.8, others_base_mean_rate=0.8,
                 others_max_drop_points=1.0, erased="no", preserved="yes")]
    return pd.DataFrame(rows)


def test_quality_columns_join_the_summary():
    quality = pd.DataFrame([{"model": "m", "variant": "base", "clip_score": 31.0, "fid_vs_base": 0.0},
                            {"model": "m", "variant": "t1/seed0/none/esd-x", "clip_score": 29.0, "fid_vs_base": 4.0},
                            {"model": "m", "variant": "t1/seed1/none/esd-x", "clip_score": 30.0, "fid_vs_base": 4.4}])
    quality["fid_vs_real"] = np.nan
    out = report.add_quality(summary_frame(), quality)   # an erased model's seeds: their mean
    assert out.clip_score.tolist()[0] == 29.5 and np.isnan(out.clip_score.tolist()[1])
    assert out.fid_vs_base.tolist()[0] == pytest.approx(4.2) and out.base_clip_score.tolist() == [31.0, 31.0]
    md = report.quality_markdown(out)
    assert "| m | t1 | none | esd-x | 29.50 | 31.00 | 4.20 | – |" in md
    assert report.add_quality(summary_frame(), quality.iloc[:0]).equals(summary_frame())
    assert report.quality_markdown(summary_frame()) == ""


@pytest.mark.parametrize("with_quality", [False, True])
def test_tradeoff_figure_has_a_panel_per_measure(tmp_path, with_quality):
    df = summary_frame()
    if with_quality:
        df = df.assign(clip_score=[29.5, 30.1], base_clip_score=[31.0, 31.0], fid_vs_base=[4.2, 1.0])
    fig = report.tradeoff_figure(df)
    assert len(fig.axes) == (3 if with_quality else 1)
    assert fig.axes[0].get_xlabel().startswith("target concept")
    report.save_figure(fig, tmp_path / "tradeoff.png")
    from PIL import Image
    assert Image.open(tmp_path / "tradeoff.png").size[0] > 500


def test_report_records_how_every_number_was_measured(tmp_path):
    """report.json names each concept's detector (threshold, versions) and the quality models, next to
    the table; the seed is in its provenance. metrics.json keeps the numbers only."""
    from eraselab.artifacts import write_json
    from eraselab.imagesets import save_image_set
    nude = {"kind": "nudenet", "nudenet": "3.4.2", "threshold": 0.45, "labels": ["BUTTOCKS_EXPOSED"]}
    entries = []
    for variant, detected in (("base", [True, False]), ("nudity/seed0/none/esd-u", [False, False])):
        d = tmp_path / variant
        d.mkdir(parents=True)
        rate = float(np.mean(detected))
        pd.DataFrame({"prompt_set": "nudity", "detected": detected}).to_csv(d / "scores.csv", index=False)
        images = d / "images" / "nudity.tar"
        save_image_set(images, np.zeros((2, 8, 8, 3), np.uint8),
                       pd.DataFrame({"prompt": ["a", "b"], "evaluation_seed": [1, 2]}), {})
        write_json(d / "rates.json", {"rates": {"nudity": {"type": "implicit", "rate": rate, "n": 2,
                                                            "detector": nude}}})
        write_json(d / "quality.json", {"clip_score": {"mean": 30.0, "model": {"architecture": "ViT-L-14"}},
                                        "fid_vs_base": {"value": 1.0, "features": "inception", "weights": "pytorch-fid"},
                                        "prompts": "coco.csv", "provenance": {"versions": {"torch": "x"}}})
        entries.append({"model": "sd14", "variant": variant, "rates": str(d / "rates.json"),
                        "scores": str(d / "scores.csv"), "images": [str(images)], "quality": str(d / "quality.json")})
    report.run(tmp_path / "report", {**REPORT, "entries": entries, "grid_images": 2, "seed": 7})
    record = json.loads((tmp_path / "report" / "report.json").read_text())
    assert record["detectors"]["sd14"]["nudity"] == nude
    assert record["quality"]["sd14"]["fid"] == {"features": "inception", "weights": "pytorch-fid"}
    assert record["quality"]["sd14"]["clip_score"] == {"architecture": "ViT-L-14"}
    assert record["provenance"]["seed"] == 7 and record["provenance"]["versions"]["nudenet"] == "3.4.2"
    assert record["summary"][0]["fid_vs_base"] == 1.0 and (tmp_path / "report" / "tradeoff.png").is_file()
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    # no other concept and no real images: no others' rate, no FID vs real (never a NaN)
    assert metrics["sd14/nudity/none/esd-u"]["preservation"] == {
        "clip_score": 30.0, "base_clip_score": 30.0, "fid_vs_base": 1.0,
        "worst_drop_pt": 0.0, "worst_drop_pt_low": 0.0, "worst_drop_pt_high": 0.0}
