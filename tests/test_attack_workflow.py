"""Attacks in the DAG: text-encoder attacks computed once and shared, per-variant attacks per variant, reruns."""
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

from eraselab import plan
from test_workflow import ROOT, SMALL, planned, snakemake, workdir

ATTACKS_SMALL = ROOT / "tests" / "configs" / "attacks_small.yaml"
SHARING = ["--config", "run={'models': ['conceptworld'], 'targets': ['triangle', 'Brellin'], "
           "'methods': ['esd-x', 'esd-u', 'esd-x-strict'], 'preserve': ['circle'], "
           "'attacks': ['ringabell', 'unlearndiff']}",
           "methods={'esd-x': {'algorithm': 'esd', 'train': 'xattn'}, 'esd-u': {'algorithm': 'esd', "
           "'train': 'noxattn'}, 'esd-x-strict': {'algorithm': 'esd', 'train': 'xattn-strict'}}"]


def test_ringabell_is_computed_once_for_the_models_sharing_a_text_encoder(tmp_path):
    wd = workdir(tmp_path)
    proc = snakemake(wd, "-n", "-p", *SHARING)
    jobs = planned(proc)
    # 2 targets x 3 UNet-only ESD variants: Ring-A-Bell once per target, UnlearnDiff once per variant
    assert jobs["attack_shared"] == 2 and jobs["attack"] == 6
    assert jobs["attack_generate"] == jobs["attack_score"] == 12
    text = proc.stdout + proc.stderr
    for target in ("triangle", "Brellin"):
        shared = f"--adversarial results/conceptworld/attacks/ringabell/{target}/seed0/adversarial.safetensors"
        assert text.count(shared) == 3, target            # every variant of the target reads the one result
    assert "esd-x/attacks/ringabell/adversarial.safetensors" not in text


def test_a_method_that_may_change_the_text_encoder_gets_its_own_run():
    cfg = {"methods": {"esd-x": {"algorithm": "esd"}, "te-edit": {"algorithm": "advunlearn"}},
           "attacks": {"rab": {"algorithm": "ringabell"}, "ud": {"algorithm": "unlearndiff"}}}
    assert plan.adversarial_path(cfg, "cw", "night/seed0/none/esd-x", "rab") == \
        "results/cw/attacks/rab/night/seed0/adversarial.safetensors"
    assert plan.adversarial_path(cfg, "cw", "night/seed0/none/te-edit", "rab") == \
        "results/cw/night/seed0/none/te-edit/attacks/rab/adversarial.safetensors"
    assert plan.adversarial_path(cfg, "cw", "night/seed0/none/esd-x", "ud") == \
        "results/cw/night/seed0/none/esd-x/attacks/ud/adversarial.safetensors"
    # AdvUnlearn trained on a UNet set leaves the text encoder alone: it shares the base model's run
    cfg["methods"]["unet-edit"] = {"algorithm": "advunlearn", "train": "xattn"}
    assert plan.adversarial_path(cfg, "cw", "night/seed0/none/unet-edit", "rab") == \
        "results/cw/attacks/rab/night/seed0/adversarial.safetensors"


def test_a_shared_attack_refuses_a_variant_with_another_text_encoder(tmp_path):
    from eraselab.artifacts import ArtifactError
    from eraselab.generate import check_shared
    from eraselab.delta import save_delta
    save_delta(tmp_path / "unet.safetensors", {"unet.conv_in.weight": torch.zeros(2)}, {})
    check_shared(tmp_path / "unet.safetensors", "rab.safetensors")
    save_delta(tmp_path / "te.safetensors", {"text_encoder.final_layer_norm.weight": torch.zeros(2)}, {})
    with pytest.raises(ArtifactError, match="changes it"):
        check_shared(tmp_path / "te.safetensors", "rab.safetensors")


@pytest.mark.slow
def test_small_attack_run_then_incremental_reruns(tmp_path):
    wd = workdir(tmp_path)
    configs = ["--configfile", str(SMALL), str(ATTACKS_SMALL)]
    snakemake(wd, "--cores", "2", *configs)
    table = pd.read_csv(wd / "results/report/attacks.csv")
    assert table.attack.tolist() == ["unlearndiff", "ringabell", "ringabell-embed", "cce"]
    assert (table.n == 8).all() and table.shared.tolist() == [False, True, True, False]
    assert ((table.asr >= table.pre_rate) & (table.asr >= table.attack_rate)).all()
    assert (wd / "results/report/attacks.png").stat().st_size > 10_000
    assert "ASR = (pre-attack successes" in (wd / "results/report/attacks.md").read_text()
    variant = wd / "results/conceptworld/triangle/seed0/none/esd-x/attacks"
    ud = json.loads((variant / "unlearndiff/adversarial.json").read_text())
    assert ud["timesteps"] == [250, 750] and len(ud["rows"]) == 8 and "peak_rss_mb" in ud
    adv = pd.read_csv(variant / "unlearndiff/adversarial.csv")
    assert {"adversarial_prompt", "attack_success", "seconds"} <= set(adv.columns)
    rates = json.loads((variant / "cce/rates.json").read_text())
    assert rates["detector"]["kind"] == "conceptworld" and rates["attack"]["algorithm"] == "concept_inversion"

    assert planned(snakemake(wd, "-n", *configs)) == {}
    # an UnlearnDiff setting changes: only its attack on each variant reruns, then the report
    # (overrides go in a config file: Snakemake 9 reads nested --config values as strings)
    (wd / "ud.yaml").write_text("attacks: {unlearndiff: {prefix_tokens: 2}}\n")
    changed = snakemake(wd, "-n", *configs, str(wd / "ud.yaml"))
    assert planned(changed) == {"attack": 1, "attack_generate": 1, "attack_score": 1, "report": 1, "all": 1}
