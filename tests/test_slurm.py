"""The workflow on a real SLURM cluster: one node brought up from Debian's packages by
tests/slurm/start_slurm.sh, driven through the shipped profile (profiles/slurm) with the test
cluster's settings on top (tests/slurm/profile: squeue for job states, no accounts, no GPUs).

The cluster needs root; where SLURM cannot start, the tests are skipped with the reason, except
under CI (CI=true), where they fail with it: CI must not pass without having run them.
"""
import os
import re
import subprocess
from collections.abc import Mapping

import pandas as pd
import pytest

from hpc import ROOT, SMALL, clone, planned, snakemake

SLURM = ["--profile", "slurm", "--profile", "tests/slurm/profile"]


def in_ci(environ: Mapping[str, str]) -> bool:
    """CI=true (GitHub Actions, GitLab CI and most others set it); unset, empty, 0, false or no: not CI."""
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def cluster_cannot_start(reason: str, environ: Mapping[str, str] = os.environ) -> None:
    """Skip the SLURM tests with the reason, or, under CI, fail them with it."""
    message = f"SLURM cannot start on this machine: {reason}"
    if in_ci(environ):
        pytest.fail(f"{message} (CI is set: the SLURM tests must run in CI, not be skipped)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm")
    proc = subprocess.run([ROOT / "tests/slurm/start_slurm.sh", state], capture_output=True, text=True, timeout=900)
    if proc.returncode == 3:
        cluster_cannot_start(proc.stderr.strip())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield state
    subprocess.run([ROOT / "tests/slurm/stop_slurm.sh", state], timeout=120)


def slurm_jobs(proc: subprocess.CompletedProcess) -> list[dict]:
    """The SLURM jobs a Snakemake run submitted: rule, memory, time limit, CPUs, state."""
    run_id = re.search(r"SLURM run ID: (\S+)", proc.stdout + proc.stderr).group(1)
    rows = subprocess.run(["squeue", "-h", "-t", "all", "--name", run_id, "-o", "%k|%m|%l|%C|%T"],
                          capture_output=True, text=True, check=True).stdout.split()
    return [dict(zip(("rule", "mem", "time", "cpus", "state"), r.split("|"))) for r in rows]


@pytest.mark.slow
def test_dag_on_slurm_matches_the_local_run(cluster, shared_origin, tmp_path):
    project = clone(shared_origin.origin, tmp_path / "on-slurm", shared_origin.remote, pull=False)
    proc = snakemake(project, *SLURM, *SMALL)

    # every job but `all` ran as a SLURM job, asking for what config `resources:` says
    jobs = slurm_jobs(proc)
    assert sorted(j["rule"].split("_wildcards")[0] for j in jobs) == [
        "rule_base_model", "rule_erase", "rule_generate", "rule_generate", "rule_report", "rule_score", "rule_score"]
    assert all(j["state"] == "COMPLETED" for j in jobs)
    erase = next(j for j in jobs if j["rule"].startswith("rule_erase"))
    score = next(j for j in jobs if j["rule"].startswith("rule_score"))
    assert (erase["mem"], erase["time"], erase["cpus"]) == ("3000M", "30:00", "1")
    assert (score["mem"], score["time"]) == ("2000M", "15:00")

    # the same numbers as the local run: the pipeline is deterministic on a CPU
    key = ["model", "target", "prune", "method", "concept"]
    on_slurm = pd.read_csv(project / "results/report/rates.csv")
    local = pd.read_csv(shared_origin.origin / "results/report/rates.csv")
    both = on_slurm.merge(local, on=key, suffixes=("", "_local"))
    assert len(both) == len(on_slurm) == 4  # base and esd-x, on triangle and circle
    assert (both.rate == both.rate_local).all() and (both.n == both.n_local).all()


@pytest.mark.slow
def test_job_killed_at_its_time_limit_leaves_no_output(cluster, shared_origin, tmp_path):
    project = clone(shared_origin.origin, tmp_path / "time-limit", shared_origin.remote)  # the base model is there
    (project / "slow.yaml").write_text("methods: {esd-slow: {algorithm: esd, iterations: 100000, sampling: frozen, "
                                       "ddim_steps: 10, cache_trajectories: 4}}\n")
    delta = project / "results/conceptworld/triangle/seed0/none/esd-slow/delta.safetensors"
    target = str(delta.relative_to(project))
    # one attempt, one minute (SLURM's shortest limit); status checks timed to see the kill soon after
    proc = snakemake(project, target, *SLURM, "--retries", "0", "--set-resources", "erase:runtime=1", "erase:gpu=0",
                     "--slurm-init-seconds-before-status-checks", "30", *SMALL, "slow.yaml", check=False)

    assert proc.returncode != 0
    assert [j["state"] for j in slurm_jobs(proc)] == ["TIMEOUT"]
    assert "SLURM status is: 'TIMEOUT'" in proc.stdout + proc.stderr
    # nothing that looks finished, no half-written temporary: at most the checkpoints a retry resumes from
    assert [p.name for p in delta.parent.iterdir() if p.name != ".delta.safetensors.ckpt"] == []
    assert planned(snakemake(project, target, "-n", *SMALL, "slow.yaml")) == {"erase": 1}


@pytest.mark.parametrize("ci,outcome", [(None, "skipped"), ("", "skipped"), ("false", "skipped"), ("0", "skipped"),
                                        ("true", "failed"), ("1", "failed"), ("True", "failed")])
def test_a_cluster_that_cannot_start_is_skipped_except_in_ci(ci, outcome):
    environ = {} if ci is None else {"CI": ci}
    try:   # caught here, so that a wrong skip fails this test instead of skipping it
        cluster_cannot_start("slurmd must run as root", environ)
        raised = None
    except (pytest.skip.Exception, pytest.fail.Exception) as e:
        raised = e
    assert type(raised) is (pytest.skip.Exception if outcome == "skipped" else pytest.fail.Exception), raised
    assert "SLURM cannot start on this machine: slurmd must run as root" in str(raised)
