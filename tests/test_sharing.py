"""Sharing artifacts through DVC, and rerunning exactly what a change touches, without file times.

All start from `shared_origin` (conftest.py): a project copy that ran the small DAG with two
erasures, committed the artifacts with DVC and pushed them to a directory remote.
"""
import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpc import TWO_METHODS, clone, dvc, env, planned, planned_outputs, snakemake

pytestmark = pytest.mark.slow
ESD_SHORT = "results/conceptworld/triangle/seed0/none/esd-x-short"
ESD = "results/conceptworld/triangle/seed0/none/esd-x"


@pytest.fixture
def pulled(shared_origin, tmp_path):
    """A fresh clone after `dvc pull`: every artifact back, every file time new."""
    return clone(shared_origin.origin, tmp_path / "clone", shared_origin.remote)


def write_config(project: Path, name: str, text: str) -> list[str]:
    """A config file layered on the test configs: the arguments that use it."""
    (project / name).write_text(text)
    return [*TWO_METHODS, name]


def test_fresh_clone_after_pull_has_nothing_to_do(shared_origin, tmp_path):
    start = time.time() - 1
    pulled = clone(shared_origin.origin, tmp_path / "clone", shared_origin.remote)
    assert (pulled / ESD / "delta.safetensors").read_bytes() == (shared_origin.origin / ESD / "delta.safetensors").read_bytes()
    # DVC does not restore file times: every artifact is newer than the run that made it
    assert min(p.stat().st_mtime for p in (pulled / "results").rglob("*") if p.is_file()) >= start
    assert planned(snakemake(pulled, "-n", *TWO_METHODS)) == {}
    for command in (["metrics", "show", "--json"], ["exp", "show", "--json"]):
        shown = dvc(pulled, *command).stdout
        assert "conceptworld/triangle/none/esd-x-short" in shown and "reduction" in shown


def test_changed_erasure_parameter_reruns_only_that_erasure_and_what_follows(pulled):
    config = write_config(pulled, "change.yaml", "methods: {esd-x-short: {iterations: 11}}\n")
    proc = snakemake(pulled, "-n", *config)
    assert planned(proc) == {"erase": 1, "generate": 1, "score": 1, "report": 1, "all": 1}
    assert planned_outputs(proc, "erase") == {f"{ESD_SHORT}/delta.safetensors", f"{ESD_SHORT}/delta.json"}
    assert planned_outputs(proc, "score") == {f"{ESD_SHORT}/scores.csv", f"{ESD_SHORT}/rates.json"}
    # resources are not results: asking for more time reruns nothing
    config = write_config(pulled, "resources.yaml", "resources: {erase: {runtime: 600}}\n")
    assert planned(snakemake(pulled, "-n", *config)) == {}


def test_upstream_change_made_in_an_earlier_run_still_reruns_downstream(pulled):
    # rescore with circle's concept type changed, targeting the scores only (as an interrupted run
    # would leave it): the report, made from the old scores, must still be redone next time
    config = write_config(pulled, "change.yaml", "concepts: {circle: {type: style}}\n")
    rates = [f"results/conceptworld/{v}/rates.json" for v in ("base", "triangle/seed0/none/esd-x", "triangle/seed0/none/esd-x-short")]
    snakemake(pulled, *rates, "--cores", "2", *config)
    assert planned(snakemake(pulled, "-n", *config)) == {"report": 1, "all": 1}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path} no longer contains {old!r}"
    path.write_text(text.replace(old, new, 1))


def test_edited_stage_code_offers_the_jobs_that_run_it(pulled):
    scorer = pulled / "src/eraselab/score/conceptworld.py"
    edit(scorer, '"""', '"""A docstring line that changes nothing.\n')
    scorer.write_text(scorer.read_text() + "\n# a comment changes nothing either\n")
    assert planned(snakemake(pulled, "-n", *TWO_METHODS)) == {}

    scorer.write_text(scorer.read_text() + "\n\ndef unused_helper():\n    return 0\n")
    scores = {f"results/conceptworld/{v}/{f}" for v in ("base", "triangle/seed0/none/esd-x", "triangle/seed0/none/esd-x-short")
              for f in ("scores.csv", "rates.json")}
    # ESD never runs a detector: its erasures are not offered (code is fingerprinted per job)
    proc = snakemake(pulled, "-n", *TWO_METHODS)
    assert planned_outputs(proc, "score") == scores
    assert planned(proc) == {"score": 3, "report": 1, "all": 1}


def test_edited_erasure_code_reruns_erasures_and_what_follows(pulled):
    edit(pulled / "src/eraselab/erase/esd.py", "def esd(", "def _unused():\n    return 0\n\n\ndef esd(")
    proc = snakemake(pulled, "-n", *TWO_METHODS)
    assert planned(proc) == {"erase": 2, "generate": 2, "score": 2, "report": 1, "all": 1}
    assert planned_outputs(proc, "erase") == {f"{d}/delta.{ext}" for d in (ESD, ESD_SHORT)
                                              for ext in ("safetensors", "json")}


def cache_is_intact(cache: Path) -> int:
    """Every file in a DVC cache holds the content its name says; returns how many were checked."""
    files = [p for p in (cache / "files" / "md5").rglob("*") if p.is_file()]
    for p in files:
        name = (p.parent.name + p.name).removesuffix(".dir")
        assert hashlib.md5(p.read_bytes()).hexdigest() == name, f"{p} was changed in place"
    return len(files)


def start(ws: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ws, env=env(ws), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_two_workspaces_sharing_one_cache_keep_it_intact(shared_origin, tmp_path):
    cache = tmp_path / "shared-cache"
    a = clone(shared_origin.origin, tmp_path / "a", shared_origin.remote, cache)
    b = clone(shared_origin.origin, tmp_path / "b", shared_origin.remote, cache)
    for ws in (a, b):  # artifacts and Snakemake's records are links into the one cache
        assert (ws / ESD / "delta.safetensors").is_symlink()
        assert all(p.is_symlink() for p in (ws / ".snakemake" / "metadata").iterdir())
    before = cache_is_intact(cache)

    # both redo their report at once, each with its own setting, then record it in the cache at once
    configs = {a: write_config(a, "grid.yaml", "report: {grid_images: 1}\n"),
               b: write_config(b, "grid.yaml", "report: {grid_images: 2}\n")}
    for proc in [start(ws, "snakemake", "--cores", "1", *config) for ws, config in configs.items()]:
        out = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, out[-3000:]
    for proc in [start(ws, "dvc", "commit", "-f", "-q", "pipeline") for ws in (a, b)]:
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, out[-3000:]

    assert cache_is_intact(cache) > before
    assert (a / "results/report/grid_conceptworld.png").read_bytes() != (b / "results/report/grid_conceptworld.png").read_bytes()
    for ws, config in configs.items():  # each workspace holds what it made; the other's did not leak in
        dvc(ws, "status", "-q")
        assert planned(snakemake(ws, "-n", *config)) == {}
