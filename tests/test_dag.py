"""plan.upstream restates Snakemake's DAG (it feeds each job's lineage): checked against Snakemake's own
job graph, from a dry run of every shipped preset. A job depends on the jobs whose outputs it reads."""
import pytest

from eraselab import plan
from eraselab.config import load_config

from hpc import jobs
from test_workflow import ROOT, snakemake, workdir

# Every preset that plans offline (config/attacks-sd14.yaml needs Ring-A-Bell's pair files, an external asset).
PRESETS = [["config.yaml"], ["methods.yaml"], ["attacks.yaml"], ["pruning.yaml"], ["sd14.yaml"],
           ["sd14.yaml", "sd15.yaml"], ["sd14.yaml", "sd21.yaml"], ["sd14-random.yaml"],
           ["attacks.yaml", "replicates.yaml"], ["pruning.yaml", "replicates.yaml"],
           ["sd14.yaml", "protocols/unlearndiff-nudity.yaml"], ["methods.yaml", "baselines.yaml"]]


def snakemake_jobs(wd, presets: list[str]) -> list[dict]:
    """Every job of a dry run (--forceall): rule, wildcards, inputs, outputs."""
    args = ["--configfile", *[f"config/{p}" for p in presets]] if presets != ["config.yaml"] else []
    return jobs(snakemake(wd, "-n", "--forceall", "--cores", "1", *args))


def key(rule: str, wildcards: dict) -> tuple:
    return rule, tuple(sorted(wildcards.items()))


@pytest.mark.parametrize("presets", PRESETS, ids=lambda p: "+".join(x.removesuffix(".yaml") for x in p))
def test_lineage_follows_snakemakes_dag(presets, tmp_path):
    planned = snakemake_jobs(workdir(tmp_path), presets)
    producer = {f: key(j["rule"], j["wildcards"]) for j in planned for f in j["output"]}
    cfg = load_config(*[ROOT / "config" / p for p in dict.fromkeys(["config.yaml", *presets])], root=ROOT)
    checked = 0
    for j in planned:
        if j["rule"] not in plan.SPECS:   # all, prune_report: no lineage
            continue
        dag = {producer[f] for f in j["input"] if f in producer}
        ours = {key(r, w) for r, w in plan.upstream(cfg, j["rule"], **j["wildcards"]) if r != "local_model"}
        assert ours == dag, f"{j['rule']} {j['wildcards']}: plan.upstream {sorted(ours)} vs Snakemake {sorted(dag)}"
        checked += 1
    assert checked >= 5


def test_seeds_replicate_erasure_pruning_and_attacks_not_the_base_model(tmp_path):
    """3 seeds: every mask, erasure and attack three times, each under its seed's directory; the base
    model, its images and its attribution once; one report over all of them."""
    planned = snakemake_jobs(workdir(tmp_path), ["pruning.yaml", "replicates.yaml"])
    count = lambda rule: sum(j["rule"] == rule for j in planned)
    assert (count("prune"), count("erase"), count("attack"), count("attack_score")) == (3 * 3, 8 * 3, 8 * 3, 8 * 3)
    assert (count("base_model"), count("attribute_base"), count("report")) == (1, 1, 1)
    assert count("generate") == 1 + 8 * 3
    seeds = {j["wildcards"].get("seed") for j in planned if j["rule"] in ("prune", "erase")}
    assert seeds == {"0", "1", "2"}
    erase = next(j for j in planned if j["rule"] == "erase" and j["wildcards"]["prune"] == "wanda"
                 and j["wildcards"]["seed"] == "2")
    assert erase["output"][0] == f"results/conceptworld/triangle/seed2/wanda/{erase['wildcards']['method']}/delta.safetensors"
    assert "results/conceptworld/triangle/seed2/wanda/mask.safetensors" in erase["input"]
    report = next(j for j in planned if j["rule"] == "report")
    assert sum(f.endswith("/scores.csv") and "/attacks/" not in f for f in report["input"]) == 1 + 8 * 3


def test_pruned_methods_limit_the_pruned_variants_and_text_encoder_attacks_are_shared(tmp_path):
    """The baselines grid: 7 methods unpruned and only ESD-x on P-ESD's mask (run.pruned_methods), on 3
    targets. Ring-A-Bell reads only the text encoder: it runs once per target on the base model, and again
    only for AdvUnlearn, which trains the text encoder; P4D, UnlearnDiff and CCE run on every variant."""
    planned = snakemake_jobs(workdir(tmp_path), ["methods.yaml", "baselines.yaml"])
    erased = {(j["wildcards"]["target"], j["wildcards"]["prune"], j["wildcards"]["method"])
              for j in planned if j["rule"] == "erase"}
    targets = {"triangle", "Brellin", "night"}
    assert {e for e in erased if e[1] != "none"} == {(t, "pesd", "esd-x") for t in targets}
    assert len(erased) == 3 * (7 + 1)
    own = [j["wildcards"] for j in planned if j["rule"] == "attack"]
    assert sorted((w["attack"], w["variant"].split("/")[-1]) for w in own if w["attack"] == "ringabell") == \
        [("ringabell", "advunlearn")] * 3
    assert sum(w["attack"] == "p4d" for w in own) == 3 * 8
    assert sum(j["rule"] == "attack_shared" for j in planned) == 3
