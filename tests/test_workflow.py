"""The DAG on ConceptWorld: planning, a small real run, incremental reruns, the HTML report."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hpc import jobs, planned

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "tests" / "configs" / "small.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]


def workdir(tmp_path: Path) -> Path:
    """A working directory that sees the repo's config and data, and keeps its own results."""
    for name in ("config", "data"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def snakemake(wd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env_path = str(Path(sys.executable).parent)
    import os
    env = {**os.environ, "PATH": env_path + os.pathsep + os.environ.get("PATH", "")}
    proc = subprocess.run([*SNAKEMAKE, "--directory", str(wd), *args], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def test_default_dag_plans_every_stage(tmp_path):
    jobs = planned(snakemake(workdir(tmp_path), "-n"))
    # 3 targets x 2 methods erased; base + 6 erased variants generated and scored
    assert jobs == {"base_model": 1, "erase": 6, "generate": 7, "score": 7, "report": 1, "all": 1}


def test_bad_config_stops_before_any_job(tmp_path):
    wd = workdir(tmp_path)
    proc = snakemake(wd, "-n", "--config", "seed=-4", "generation={'steps': 'many'}", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "invalid config (2 problems)" in out and "seed: -4" in out and "generation.steps: 'many'" in out
    assert not (wd / "results").exists()


@pytest.mark.slow
def test_small_run_then_incremental_reruns(tmp_path):
    wd = workdir(tmp_path)
    snakemake(wd, "--cores", "2", "--configfile", str(SMALL))
    summary = pd.read_csv(wd / "results" / "report" / "summary.csv")
    assert summary[["target", "method"]].values.tolist() == [["triangle", "esd-x"]]
    rates = pd.read_csv(wd / "results" / "report" / "rates.csv")
    assert set(rates.concept) == {"triangle", "circle"} and (rates.n == 12).all()
    delta_meta = (wd / "results/conceptworld/triangle/seed0/none/esd-x/delta.json").read_text()
    assert '"iterations": 30' in delta_meta and '"torch":' in delta_meta and '"peak_rss_mb"' in delta_meta
    # the provenance names the code the job ran: the fingerprint the workflow compares
    from eraselab import plan
    from eraselab.config import load_config
    cfg = load_config(ROOT / "config" / "config.yaml", SMALL, root=ROOT)
    code = plan.job_code(cfg, "erase", model="conceptworld", target="triangle", prune="none", method="esd-x")
    assert json.loads(delta_meta)["code"] == code

    # a complete run leaves nothing to do
    assert planned(snakemake(wd, "-n", "--configfile", str(SMALL))) == {}
    # an ESD parameter changes: only that erasure and what follows it rerun
    # (overrides go in a config file: Snakemake 9 reads nested --config values as strings)
    (wd / "iterations.yaml").write_text("methods: {esd-x: {iterations: 31}}\n")
    changed = snakemake(wd, "-n", "--configfile", str(SMALL), str(wd / "iterations.yaml"))
    assert planned(changed) == {"erase": 1, "generate": 1, "score": 1, "report": 1, "all": 1}
    # a generation setting changes: every variant regenerates, nothing is erased again
    (wd / "steps.yaml").write_text("generation: {steps: 11}\n")
    regen = snakemake(wd, "-n", "--configfile", str(SMALL), str(wd / "steps.yaml"))
    assert planned(regen) == {"generate": 2, "score": 2, "report": 1, "all": 1}

    # published numbers (a protocol's expected: block) change only the report, which compares them
    measured = summary.iloc[0]
    (wd / "expected.yaml").write_text(yaml.safe_dump({"expected": [
        {"source": "as measured", "target": "triangle", "method": "esd-x", "measure": "erased_rate",
         "value": float(measured.erased_rate), "tolerance": 0.01},
        {"source": "far off", "target": "triangle", "method": "esd-x", "measure": "base_rate",
         "value": float(measured.base_rate_low) - 0.3, "tolerance": 0.1}]}))
    with_expected = ["--configfile", str(SMALL), str(wd / "expected.yaml")]
    assert planned(snakemake(wd, "-n", *with_expected)) == {"report": 1, "all": 1}
    snakemake(wd, "--cores", "2", *with_expected)
    published = pd.read_csv(wd / "results" / "report" / "expected.csv")
    assert published.verdict.tolist() == ["reproduced", "not reproduced"]
    assert published.measured.tolist() == pytest.approx([measured.erased_rate, measured.base_rate], abs=1e-4)
    assert "Published numbers" in (wd / "results" / "report" / "summary.md").read_text()

    # Snakemake's HTML report, with the tables and grids as report items
    snakemake(wd, "--cores", "1", "--configfile", str(SMALL), "--report", str(wd / "report.html"))
    html = (wd / "report.html").read_text(errors="ignore")
    assert "summary.csv" in html and "grid_conceptworld.png" in html


TUNING = ROOT / "tests" / "configs" / "tuning.yaml"


def test_tuning_runs_in_the_dag_and_reruns_only_what_a_change_touches(tmp_path):
    """UCE and RECE, 2 candidates each, scored on the validation sets: a checkpoint picks one per
    method, the evaluation erasures use it and the report's tables name it. A changed search range of
    RECE plans RECE's tuning jobs only (its candidates, their validation, its selection)."""
    wd = workdir(tmp_path)
    before = planned(snakemake(wd, "-n", "--configfile", str(TUNING)))
    assert before == {"base_model": 1, "erase": 4, "validate": 5, "select": 2, "all": 1}   # evaluation: after select
    snakemake(wd, "--cores", "2", "--configfile", str(TUNING))
    for method, key in (("uce", "lamb"), ("rece", "regular_scale")):
        selection = json.loads((wd / f"results/conceptworld/tuning/triangle/{method}/selection.json").read_text())
        assert selection["budget"] == 2 and len(selection["candidates"]) == 2
        assert sum(c["chosen"] for c in selection["candidates"]) == 1 and selection["why"]
        # every candidate was scored on the validation prompts, never on the evaluation ones
        scores = pd.read_csv(wd / f"results/conceptworld/triangle/seed0/none/{method}.tune1/validation/scores.csv")
        validation = pd.read_csv(ROOT / "data/prompts/conceptworld/validation/triangle.csv").prompt.head(6)
        assert scores[scores.prompt_set == "triangle"].prompt.tolist() == validation.tolist()
        # the evaluation erasure ran with the chosen setting
        delta = json.loads((wd / f"results/conceptworld/triangle/seed0/none/{method}/delta.json").read_text())
        assert delta["params"]["method"][key] == selection["overrides"][key]
    tuning = pd.read_csv(wd / "results/report/tuning.csv")
    assert len(tuning) == 4 and tuning.groupby("method").chosen.sum().to_dict() == {"rece": 1, "uce": 1}
    summary = pd.read_csv(wd / "results/report/summary.csv").set_index("method")
    assert summary.loc["uce", "setting"].startswith("uce.tune") and "lamb=" in summary.loc["uce", "setting"]
    assert "Tuning: candidates per method" in (wd / "results/report/summary.md").read_text()

    assert planned(snakemake(wd, "-n", "--configfile", str(TUNING))) == {}
    (wd / "range.yaml").write_text("tuning: {methods: {rece: {regular_scale: [1.0e-3, 0.01]}}}\n")
    changed = snakemake(wd, "-n", "--configfile", str(TUNING), str(wd / "range.yaml"))
    touched = {(j["rule"], j["wildcards"].get("method") or j["wildcards"].get("variant"))
               for j in jobs(changed) if j["rule"] != "all"}
    assert touched == {("erase", "rece.tune2"), ("validate", "triangle/seed0/none/rece.tune2"), ("select", "rece")}


def test_jobs_find_eraselab_without_an_activated_environment(tmp_path):
    """`.venv/bin/snakemake` with the environment not activated: jobs run the eraselab installed
    beside Snakemake's Python, not whatever (nothing) PATH holds."""
    import os
    wd = workdir(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PATH", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/bin:/bin"
    proc = subprocess.run([*SNAKEMAKE, "--directory", str(wd), "--cores", "1", "resources/models/conceptworld"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (wd / "resources" / "models" / "conceptworld" / "model_index.json").is_file()
