"""plan.upstream restates Snakemake's DAG (it feeds each job's lineage): checked against Snakemake's own
job graph, from a dry run of every shipped preset. A job depends on the jobs whose outputs it reads."""
import pytest

from eraselab import plan
from eraselab.config import load_config

from hpc import jobs
from test_workflow import ROOT, snakemake, workdir

# Every preset that plans offline (config/attacks-sd14.yaml needs Ring-A-Bell's pair files, an external asset).
PRESETS = [["config.yaml"], ["methods.yaml"], ["attacks.yaml"], ["pruning.yaml"], ["tuning.yaml"], ["sd14.yaml"],
           ["sd14.yaml", "sd15.yaml"], ["sd14.yaml", "sd21.yaml"], ["sd14-random.yaml"]]


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
