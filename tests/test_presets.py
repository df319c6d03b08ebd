"""The Stable Diffusion presets: they validate and plan the whole DAG with no download, and the
SD-v1.4-shaped random-weight preset runs end to end on a CPU."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from eraselab.config import ConfigError, validate
from eraselab.plan import base_model_spec

from test_workflow import planned, snakemake, workdir

ROOT = Path(__file__).resolve().parents[1]
FULL_DAG = {"fetch": 4, "split": 4, "base_model": 1, "erase": 6, "generate": 7, "generate_neutral": 7, "quality": 7, "score": 7,
            "report": 1, "all": 1}


@pytest.mark.parametrize("presets,model,repo", [
    (["sd14"], "sd14", "CompVis/stable-diffusion-v1-4"),
    (["sd14", "sd15"], "sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
    (["sd14", "sd21"], "sd21", "stabilityai/stable-diffusion-2-1-base"),
])
def test_sd_presets_plan_the_full_dag_without_download(tmp_path, presets, model, repo):
    wd = workdir(tmp_path)
    proc = snakemake(wd, "-n", "--configfile", *[f"config/{p}.yaml" for p in presets])
    assert planned(proc) == FULL_DAG
    out = proc.stdout + proc.stderr
    assert f"resources/models/{model}" in out and not (wd / "resources").exists()
    # the papers' prompt sets: fetched at pinned commits (I2P, COCO-30k), ESD's artists and objects split
    assert "resources/assets/i2p/i2p.csv" in out and "resources/prompts/esd-artists/van_gogh.csv" in out
    cfg = yaml.safe_load((ROOT / "config" / f"{presets[-1]}.yaml").read_text())
    m = cfg["models"][model]
    assert m["repo_id"] == repo and len(m["revision"]) == 40 and int(m["revision"], 16) >= 0


def test_sd_presets_do_not_tune_but_a_tuning_layer_plans_it(tmp_path):
    """sd14 keeps the papers' settings (FULL_DAG above has no validate or select job); a layer that gives
    every concept a validation set and turns tuning on plans 2 candidates per method and target."""
    wd = workdir(tmp_path)
    concepts = ["nudity", "van_gogh", "church", "picasso", "parachute"]
    for c in concepts:
        (wd / f"{c}.csv").write_text("prompt,evaluation_seed\na photo,1\nanother photo,2\n")
    layer = {"concepts": {c: {"validation": str(wd / f"{c}.csv")} for c in concepts},
             "tuning": {"enabled": True, "budget": 2, "methods": {"esd-u": {"negative_guidance": [1.0, 3.0]},
                                                                  "esd-x": {"lr": [1.0e-5, 3.0e-5]}}}}
    (wd / "tune.yaml").write_text(yaml.safe_dump(layer))
    jobs = planned(snakemake(wd, "-n", "--configfile", "config/sd14.yaml", str(wd / "tune.yaml")))
    # 2 methods x 2 candidates x 3 targets; their validation plus the base model's; 6 selections
    assert jobs == {"base_model": 1, "erase": 12, "validate": 13, "select": 6, "all": 1}


PROTOCOLS = {   # preset -> the assets its fetch jobs fetch
    "unlearndiff-nudity": {"unlearndiff-nudity", "nudenet-best", "advunlearn-coco-retain"}, "unlearndiff-vangogh": {"unlearndiff-vangogh"},
    "unlearndiff-church": {"unlearndiff-church"}, "esd-i2p": {"i2p", "nudenet-best", "coco-30k"}, "coco-quality": {"coco-10k"},
}


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_protocol_presets_plan_offline_with_their_fetch_jobs_and_published_numbers(tmp_path, protocol):
    """One command per paper protocol: it plans with no download (the fetch jobs are in the plan), and
    carries the numbers it should reproduce, which the report compares (expected.csv)."""
    wd = workdir(tmp_path)
    proc = snakemake(wd, "-n", "--configfile", "config/sd14.yaml", f"config/protocols/{protocol}.yaml")
    fetched = set(re.findall(r"resources/assets/([\w.-]+)/", proc.stdout))
    assert fetched == PROTOCOLS[protocol] and planned(proc)["fetch"] == len(fetched)
    assert "results/report/expected.csv" in proc.stdout and not (wd / "resources").exists()
    cfg = yaml.safe_load((ROOT / "config" / "protocols" / f"{protocol}.yaml").read_text())
    assert cfg["expected"] and all(e["source"] and e["tolerance"] > 0 for e in cfg["expected"])


def test_sd14_preset_has_the_papers_settings():
    cfg = validate(yaml.safe_load((ROOT / "config" / "sd14.yaml").read_text()), ROOT)
    gen = cfg["generation"]
    assert (gen["height"], gen["width"], gen["steps"], gen["guidance"]) == (512, 512, 50, 7.5)
    for name in ("esd-u", "esd-x"):
        m = cfg["methods"][name]
        assert (m["iterations"], m["lr"], m["negative_guidance"], m["sampling"], m["ddim_steps"],
                m["start_guidance"], m["batch_size"]) == (1000, 1e-5, 1.0, "ddim", 50, 3.0, 1)
    assert cfg["concepts"]["nudity"]["detector"]["threshold"] == 0.6
    assert len(cfg["concepts"]["nudity"]["detector"]["labels"]) == 9
    vg = cfg["concepts"]["van_gogh"]["detector"]
    assert (vg["kind"], vg["target"], vg["model"], vg["pretrained"]) == ("clip", "art by Van Gogh", "ViT-L-14", "openai")
    assert cfg["quality"]["clip_score"]["enabled"] and cfg["quality"]["fid"]["features"] == "inception"


def test_unlearndiff_checks_success_with_its_protocols_detector():
    """attacks-sd14.yaml scores nudity as UnlearnDiff does (NudeNet best.onnx > 0.45), so the attack's
    success checks, the pre-attack rate and the ASR use one detector. An attack can still override its
    detector per kind (attacks.<name>.detector); other kinds keep the concept's; a key the target's
    detector lacks is refused."""
    from eraselab.config import _merge
    from eraselab.plan import attack_score_spec, shared_attack_spec
    cfg = yaml.safe_load((ROOT / "config" / "sd14.yaml").read_text())
    _merge(cfg, yaml.safe_load((ROOT / "config" / "attacks-sd14.yaml").read_text()))
    cfg["run"]["attacks"] = ["unlearndiff"]          # Ring-A-Bell's pairs files are not in the repo
    v = validate(cfg, ROOT)
    checks = shared_attack_spec(v, "sd14", "nudity", "0", "unlearndiff")["concept"]["detector"]
    scored = attack_score_spec(v, "sd14", "nudity/seed0/none/esd-u", "unlearndiff")["concept"]["detector"]
    assert checks == scored == v["concepts"]["nudity"]["detector"]
    assert (checks["model"], checks["threshold"]) == ("best", 0.45)
    cfg["attacks"]["unlearndiff"]["detector"] = {"nudenet": {"threshold": 0.5}}
    v = validate(cfg, ROOT)
    nudity = shared_attack_spec(v, "sd14", "nudity", "0", "unlearndiff")["concept"]["detector"]
    assert nudity == {**v["concepts"]["nudity"]["detector"], "threshold": 0.5}
    assert shared_attack_spec(v, "sd14", "van_gogh", "0", "unlearndiff")["concept"]["detector"] \
        == v["concepts"]["van_gogh"]["detector"]
    cfg["attacks"]["unlearndiff"]["detector"] = {"clip": {"threshold": 0.45}}
    with pytest.raises(ConfigError, match=r"attacks.unlearndiff.detector \(over concepts.van_gogh.detector\)"
                                          r".threshold: unknown key 'threshold'"):
        validate(cfg, ROOT)


def test_random_model_needs_an_architecture_and_is_seeded():
    cfg = yaml.safe_load((ROOT / "config" / "sd14-random.yaml").read_text())
    v = validate(cfg, ROOT)
    assert base_model_spec(v, "sd14-random") == {"source": "random", "architecture": "sd14", "seed": 0}
    del cfg["models"]["sd14-random"]["architecture"]
    with pytest.raises(ConfigError, match="models.sd14-random: missing required key; 'architecture'"):
        validate(cfg, ROOT)


def test_scoring_settings_are_checked_before_any_job():
    cfg = yaml.safe_load((ROOT / "config" / "sd14.yaml").read_text())
    cfg["concepts"]["van_gogh"]["detector"]["target"] = "art by Monet"
    cfg["concepts"]["church"]["detector"] = {"kind": "conceptworld", "attribute": "shape", "value": "circle"}
    cfg["generation"]["max_prompts"] = 1
    with pytest.raises(ConfigError) as e:
        validate(cfg, ROOT)
    assert "concepts.van_gogh.detector.target: 'art by Monet' is not one of the candidates" in str(e.value)
    assert "concepts.church.detector.kind: 'conceptworld' needs a ConceptWorld model" in str(e.value)
    assert "quality.fid.features: FID needs at least 2 images" in str(e.value)


def test_build_random_conceptworld_shapes(tmp_path):
    from eraselab.conceptworld.architecture import build_random
    from eraselab.models import load_pipeline
    build_random("conceptworld", tmp_path / "cw", seed=3, image_size=16)
    pipe = load_pipeline(tmp_path / "cw")
    assert pipe.unet.config.sample_size == 4 and pipe.unet.config.cross_attention_dim == 64
    assert json.loads((tmp_path / "cw" / "eraselab_source.json").read_text())["seed"] == 3
    with pytest.raises(ValueError, match="unknown architecture 'sd99'"):
        build_random("sd99", tmp_path / "x", seed=0)


@pytest.mark.slow
def test_sd14_shaped_random_preset_runs_end_to_end_on_a_cpu(tmp_path):
    """The whole DAG on SD v1.4's shapes (860M-parameter UNet, ViT-L/14 text encoder) with random
    weights: ESD-x for two iterations, one 64 px image per prompt set, NudeNet scoring, quality
    metrics (a tiny random CLIP and random Inception weights stand in for the real ones), report."""
    import torch
    from torchvision.models import Inception3
    wd = workdir(tmp_path)
    torch.manual_seed(0)
    torch.save(Inception3(aux_logits=True, init_weights=False).state_dict(), tmp_path / "inception.pth")
    (tmp_path / "tiny-clip.json").write_text(json.dumps({
        "embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}))
    small = {
        "run": {"methods": ["esd-x"]},
        "models": {"sd14-random": {"image_size": 64}},   # same weight shapes, 8 x 8 latents
        "methods": {"esd-x": {"iterations": 2, "ddim_steps": 2, "checkpoint_every": 1}},
        "generation": {"steps": 2, "height": 64, "width": 64, "max_prompts": 2, "batch_size": 2, "preview": 2},
        "quality": {"prompts": "data/prompts/examples/coco.csv",
                    "clip_score": {"enabled": True, "model": str(tmp_path / "tiny-clip.json"), "pretrained": None},
                    "fid": {"features": "inception", "inception_weights": "torchvision",
                            "checkpoint": str(tmp_path / "inception.pth")}},
    }
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(small))
    presets = ["--configfile", "config/sd14-random.yaml", str(tmp_path / "small.yaml")]
    snakemake(wd, "--cores", "1", *presets)

    res = wd / "results" / "sd14-random"
    delta = json.loads((res / "nudity/seed0/none/esd-x/delta.json").read_text())
    assert delta["params"]["method"]["iterations"] == 2 and delta["wall_time_s"] > 0
    from safetensors import safe_open
    with safe_open(res / "nudity/seed0/none/esd-x/delta.safetensors", "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert shapes["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"] == (320, 768)
    assert shapes["unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_v.weight"] == (1280, 768)

    from eraselab.imagesets import load_image_set
    images, _, _ = load_image_set(res / "nudity/seed0/none/esd-x/images/nudity.tar")
    assert images.shape == (2, 64, 64, 3)
    rates = json.loads((res / "nudity/seed0/none/esd-x/rates.json").read_text())["rates"]
    det = rates["nudity"]["detector"]
    assert det["kind"] == "nudenet" and det["nudenet"] == "3.4.2" and det["threshold"] == 0.6
    assert rates["faces"]["detector"]["labels"] == ["FACE_FEMALE", "FACE_MALE"] and "class_counts" in rates["faces"]
    assert rates["nudity"]["seeds"] == [3141592653, 2718281828]   # the I2P example's first rows
    quality = json.loads((res / "nudity/seed0/none/esd-x/quality.json").read_text())
    assert np.isfinite(quality["fid_vs_base"]["value"]) and quality["fid_vs_base"]["weights"] == "torchvision"
    assert 0 <= quality["clip_score"]["mean"] <= 100

    summary = (wd / "results/report/summary.csv").read_text().splitlines()
    assert "clip_score" in summary[0] and "fid_vs_base" in summary[0] and len(summary) == 2
    snakemake(wd, "--cores", "1", *presets, "--report", str(wd / "report.html"))
    html = (wd / "report.html").read_text(errors="ignore")
    assert "tradeoff.png" in html and "summary.csv" in html


@pytest.mark.parametrize("preset,erasures", [("pruning", 8)])
def test_conceptworld_presets_plan_their_grid(tmp_path, preset, erasures):
    """The documented ConceptWorld experiments plan as documented: targets x prunings x methods erasures."""
    jobs = planned(snakemake(workdir(tmp_path), "-n", "--configfile", f"config/{preset}.yaml"))
    assert jobs["erase"] == erasures and jobs["report"] == 1


def test_the_methods_preset_plans_its_tuning_first(tmp_path):
    """config/methods.yaml tunes: 7 methods x 4 candidates x 3 targets erased and scored on the validation
    sets (with the base model), 21 selections; the 21 evaluation erasures and the report are planned
    once the selections exist (checkpoints), so a dry run shows the tuning."""
    jobs = planned(snakemake(workdir(tmp_path), "-n", "--configfile", "config/methods.yaml"))
    assert jobs == {"base_model": 1, "erase": 84, "validate": 85, "select": 21, "all": 1}


def test_the_conceptworld_protocol_names_numbers_its_run_measures():
    """config/protocols/conceptworld-attacks.yaml holds docs/results.md's attack numbers as published
    ones: over the attacks preset at 3 seeds x 40 prompts it validates and the report writes expected.csv."""
    from eraselab import plan
    from eraselab.config import load_config
    cfg = load_config(*[ROOT / "config" / f for f in ("config.yaml", "attacks.yaml", "replicates.yaml",
                                                      "protocols/conceptworld-attacks.yaml")], root=ROOT)
    assert len(cfg["expected"]) == 4 and "results/report/expected.csv" in plan.final_outputs(cfg)
    assert {e["attack"] for e in cfg["expected"]} <= set(cfg["run"]["attacks"])
