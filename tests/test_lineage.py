"""What a job depends on upstream (plan.lineage), and what it asks of a cluster (plan.resources)."""
import copy
import shutil
from pathlib import Path

import pytest
import yaml

from eraselab import plan
from eraselab.config import validate

ROOT = Path(__file__).resolve().parents[1]
ERASED = "triangle/seed0/none/esd-x"


@pytest.fixture
def cfg():
    return validate(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()), root=ROOT)


def changed(cfg, edit) -> dict:
    """Which jobs' lineage an edit of the config changes."""
    new = copy.deepcopy(cfg)
    edit(new)
    jobs = {"erase": {"model": "conceptworld", "target": "triangle", "seed": "0", "prune": "none", "method": "esd-x"},
            "generate base": {"model": "conceptworld", "variant": "base"},
            "generate erased": {"model": "conceptworld", "variant": ERASED},
            "score erased": {"model": "conceptworld", "variant": ERASED}, "report": {}}
    return {name for name, w in jobs.items()
            if plan.lineage(cfg, name.split()[0], **w) != plan.lineage(new, name.split()[0], **w)}


def test_an_erasure_setting_reaches_every_job_downstream_of_that_erasure(cfg):
    assert changed(cfg, lambda c: c["methods"]["esd-x"].update(iterations=201)) == {
        "generate erased", "score erased", "report"}


def test_a_generation_setting_reaches_scores_and_report_not_erasures(cfg):
    assert changed(cfg, lambda c: c["generation"].update(steps=26)) == {"score erased", "report"}


def test_code_of_an_upstream_job_is_part_of_the_lineage(cfg, monkeypatch):
    def lineages(erase_code: str) -> tuple[str, str]:
        monkeypatch.setattr(plan, "job_code", lambda cfg, rule, **w: erase_code if rule == "erase" else "same")
        return (plan.lineage(cfg, "generate", model="conceptworld", variant=ERASED),
                plan.lineage(cfg, "generate", model="conceptworld", variant="base"))
    (erased_a, base_a), (erased_b, base_b) = lineages("aaa"), lineages("bbb")
    assert erased_a != erased_b and base_a == base_b


def test_source_files_enter_the_specs_by_content(cfg, tmp_path):
    shutil.copytree(ROOT / "data" / "prompts", tmp_path / "prompts")
    csv = tmp_path / "prompts" / "conceptworld" / "circle.csv"
    cfg["concepts"]["circle"]["prompts"] = str(csv)
    spec = plan.generate_spec(cfg, "conceptworld", "base")
    csv.touch()
    assert plan.generate_spec(cfg, "conceptworld", "base") == spec
    csv.write_text(csv.read_text().replace("circle", "ring", 1))
    assert plan.generate_spec(cfg, "conceptworld", "base")["prompts_sha256"]["circle"] != spec["prompts_sha256"]["circle"]
    assert "weights_sha256" in plan.base_model_spec(cfg, "conceptworld")


def test_weights_fingerprint_ignores_the_records_beside_them(cfg, tmp_path):
    weights = tmp_path / "weights"
    shutil.copytree(ROOT / "data" / "conceptworld", weights)
    cfg["models"]["conceptworld"]["path"] = str(weights)
    spec = plan.base_model_spec(cfg, "conceptworld")
    (weights / "quality.json").write_text("{}")              # a new measurement of the same weights
    (weights / "eraselab_checksums.json").write_text("{}")
    assert plan.base_model_spec(cfg, "conceptworld") == spec
    (weights / "world.json").write_text((weights / "world.json").read_text() + " ")
    assert plan.base_model_spec(cfg, "conceptworld") != spec


def test_resources_per_rule_with_retries_asking_for_more(cfg):
    assert plan.resources(cfg, "erase") == {"threads": 1, "mem_mb": 3000, "runtime": 30, "gpu": 1}
    assert plan.resources(cfg, "erase", attempt=2) == {"threads": 1, "mem_mb": 6000, "runtime": 60, "gpu": 1}
    assert plan.resources(cfg, "score") == {"threads": 1, "mem_mb": 2000, "runtime": 15}  # default: a CPU job
    cfg["resources"]["erase"]["gpu_model"] = "a100"
    assert plan.resources(cfg, "erase")["gpu_model"] == "a100"
    cfg["resources"]["erase"]["gpu"] = 0  # no GPU, so no model either (SLURM would get --gpus=a100:0)
    assert "gpu_model" not in plan.resources(cfg, "erase") and "gpu" not in plan.resources(cfg, "erase")


def test_resources_are_validated(cfg):
    from eraselab.config import ConfigError
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    raw["resources"]["erase"]["gpus"] = 2
    with pytest.raises(ConfigError, match=r"resources.erase.gpus: unknown key 'gpus'; allowed keys here: gpu, gpu_model"):
        validate(raw, root=ROOT)


def test_memoised_lineage_equals_the_computed_one_for_every_job(cfg):
    """Snakemake passes a memo (one per run) so that a large grid hashes each upstream job once."""
    from eraselab import layout
    memo = {}
    jobs = [("report", {})] + [(r, {"model": m, "variant": v}) for m, v in layout.grid(cfg["run"])
                               for r in ("generate", "score")]
    for rule, w in jobs * 2:   # the second pass reads the memo
        assert plan.lineage(cfg, rule, memo=memo, **w) == plan.lineage(cfg, rule, **w)
    assert len(memo) > len(jobs) // 2


def test_preserve_prompts_rerun_only_the_erasers_that_read_them(cfg):
    cfg["methods"]["uce"] = {"algorithm": "uce"}
    new = copy.deepcopy(cfg)
    new["concepts"]["triangle"]["preserve"] = ["a circle", "a hexagon"]
    spec = lambda c, method: plan.erase_spec(c, "conceptworld", "triangle", "0", "none", method)
    assert spec(cfg, "esd-x") == spec(new, "esd-x")          # ESD never reads them
    assert spec(cfg, "uce") != spec(new, "uce")
    assert spec(new, "uce")["concept"]["preserve"] == ["a circle", "a hexagon"]
