"""Pruning and attribution in the DAG: planned jobs, mask -> erase wiring, lineage, config errors."""
import pytest
import yaml

from eraselab import plan
from eraselab.config import ConfigError, validate
from test_workflow import ROOT, planned, snakemake, workdir

PRESET = ROOT / "config" / "pruning.yaml"


def _config(*overrides: dict) -> dict:
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for o in overrides:
        for k, v in o.items():
            cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) and k in ("run", "methods") else v
    return validate(cfg, root=ROOT)


def test_pruning_preset_plans_masks_before_erasure(tmp_path):
    proc = snakemake(workdir(tmp_path), "-n", "-p", "--configfile", str(PRESET))
    jobs = planned(proc)
    # 1 target x {none, wanda, attr, pesd} x {esd-x, prune-only}; masks for three prunings; one base table
    assert jobs["prune"] == 3 and jobs["attribute_base"] == 1
    assert jobs["erase"] == 8 and jobs["attack"] == 8 and jobs["attribute"] == 8 and jobs["prune_report"] == 1
    text = proc.stdout + proc.stderr
    for pruning in ("wanda", "attr", "pesd"):
        assert text.count(f"--mask results/conceptworld/triangle/seed0/{pruning}/mask.safetensors") == 2
    assert "--attribution results/conceptworld/base/attribution/triangle/concept-vs-neutral.parquet" in text
    assert "--pairs data/prompts/conceptworld/pairs/triangle.csv" in text


def test_default_run_plans_no_pruning_or_attribution(tmp_path):
    jobs = planned(snakemake(workdir(tmp_path), "-n"))
    assert not {"prune", "attribute", "attribute_base", "prune_report"} & set(jobs)


def test_lineage_of_pruned_variants_follows_the_mask():
    preset = yaml.safe_load(PRESET.read_text())
    cfg = _config(preset)
    w = {"model": "conceptworld", "target": "triangle", "seed": "0", "method": "esd-x"}
    before = {p: plan.lineage(cfg, "erase", **w, prune=p) for p in ("none", "wanda", "attr")}
    cfg["prunings"]["wanda"]["ratio"] = 0.05
    assert plan.lineage(cfg, "erase", **w, prune="wanda") != before["wanda"]
    assert plan.lineage(cfg, "erase", **w, prune="none") == before["none"]
    assert plan.lineage(cfg, "erase", **w, prune="attr") == before["attr"]
    cfg["attribution"]["steps"] = 10      # the base table feeds attribution-guided pruning only
    assert plan.lineage(cfg, "erase", **w, prune="attr") != before["attr"]
    assert plan.lineage(cfg, "erase", **w, prune="pesd") == plan.lineage(_config(preset), "erase", **w, prune="pesd")
    assert plan.erase_spec(cfg, "conceptworld", "triangle", "0", "none", "esd-x").get("pruning") is None


def test_pruning_config_errors_name_key_and_value():
    preset = yaml.safe_load(PRESET.read_text())
    bad = {**preset, "prunings": {**preset["prunings"], "wanda": {**preset["prunings"]["wanda"], "parameters": "mlp"}}}
    with pytest.raises(ConfigError, match=r"prunings\.wanda\.parameters: 'mlp' is not allowed; allowed values: 'ffn'"):
        _config(bad)
    with pytest.raises(ConfigError, match=r"attribution\.pairs: required by attribution-guided pruning 'attr'"):
        _config({**preset, "attribution": {"enabled": False}})
    with pytest.raises(ConfigError, match=r"run\.prunings: 'magnitude' is not defined"):
        _config({**preset, "run": {**preset["run"], "prunings": ["magnitude"]}})
    missing = {**preset["prunings"]["wanda"], "pairs": "data/nowhere/{concept}.csv"}
    with pytest.raises(ConfigError, match=r"prunings\.wanda\.pairs: .*nowhere/triangle\.csv' not found"):
        _config({**preset, "prunings": {**preset["prunings"], "wanda": missing}})
