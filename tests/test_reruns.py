"""A code edit reruns exactly the jobs that execute the edited code (dry runs on a completed DAG, seconds each).

Each test starts from `completed` (tests/hpc.py): a project copy whose whole DAG Snakemake takes as
run, so a dry run after an edit offers what a real rerun would. Registries name algorithms as strings
(eraselab.registry), so a job's code is its stage and only the algorithms it selects.
"""
from pathlib import Path

import pytest

from hpc import completed, git, planned, planned_outputs, project_copy, snakemake

METHODS = ["--configfile", "config/methods.yaml", "config/no-tuning.yaml"]
ATTACKS = ["--configfile", "config/attacks.yaml"]
SD14 = ["--configfile", "config/sd14.yaml"]


def append_line(project: Path, *modules: str) -> None:
    """A line of logic (not a comment: those change no fingerprint) at the end of each module."""
    for module in modules:
        path = project / "src" / "eraselab" / module
        path.write_text(path.read_text() + "\nEDITED = 1\n")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return project_copy(tmp_path_factory.mktemp("reruns") / "project")


@pytest.fixture(scope="module")
def completed_default(tmp_path_factory):
    copy = project_copy(tmp_path_factory.mktemp("reruns") / "default")
    completed(copy)
    return copy


@pytest.fixture
def default_run(completed_default):
    """The default config's DAG, completed; each test's edits are undone after it."""
    yield completed_default
    git(completed_default, "checkout", "-q", "--", "src")


# Modules the default grid (ESD-x and ESD-u on ConceptWorld's shipped weights) never executes.
NOT_RUN_BY_DEFAULT = ["conceptworld/captions.py", "conceptworld/train.py", "conceptworld/pairs.py",
                      "conceptworld/prompts.py", "conceptworld/architecture.py", "hub.py", "erase/uce.py",
                      "erase/rece.py", "erase/abo.py", "erase/closed_form.py", "erase/validation.py",
                      "attacks/unlearndiff.py", "attacks/ringabell.py", "attacks/concept_inversion.py", "attacks/p4d.py",
                      "erase/advunlearn.py", "erase/salun.py", "validate.py", "select.py", "tuning.py",
                      "attacks/prefix.py", "attacks/common.py", "attacks/stage.py", "score/nudenet.py",
                      "score/clip.py", "score/fid.py", "score/quality.py", "prune/wanda.py", "prune/guided.py",
                      "prune/learned.py", "prune/stage.py", "prune/report.py", "attribute/hooks.py",
                      "attribute/stage.py"]


@pytest.mark.parametrize("module", ["conceptworld/captions.py", "erase/uce.py", "score/nudenet.py"])
def test_an_edit_in_code_the_default_run_never_executes_offers_nothing(default_run, module):
    append_line(default_run, module)
    assert planned(snakemake(default_run, "-n")) == {}


def test_edits_in_every_module_the_default_run_never_executes_offer_nothing(default_run):
    append_line(default_run, *NOT_RUN_BY_DEFAULT)
    assert planned(snakemake(default_run, "-n")) == {}


def test_an_esd_edit_offers_the_esd_erasures_and_what_follows(default_run):
    append_line(default_run, "erase/esd.py")
    proc = snakemake(default_run, "-n")
    assert planned(proc) == {"erase": 6, "generate": 6, "score": 6, "report": 1, "all": 1}
    assert "results/conceptworld/base/scores.csv" not in planned_outputs(proc, "score")


def test_a_detector_edit_offers_the_scoring_jobs(default_run):
    append_line(default_run, "score/conceptworld.py")
    assert planned(snakemake(default_run, "-n")) == {"score": 7, "report": 1, "all": 1}


@pytest.mark.slow
def test_a_uce_edit_offers_only_the_uce_based_erasures(project, tmp_path):
    copy = project_copy(tmp_path / "p")
    completed(copy, *METHODS)
    append_line(copy, "erase/uce.py")
    proc = snakemake(copy, "-n", *METHODS)
    assert planned(proc) == {"erase": 9, "generate": 9, "score": 9, "report": 1, "all": 1}
    assert {p.split("/")[5] for p in planned_outputs(proc, "erase")} == {"uce", "uce-last-subject", "rece"}


@pytest.mark.slow
def test_a_ringabell_edit_offers_only_the_ringabell_attacks(project, tmp_path):
    copy = project_copy(tmp_path / "p")
    completed(copy, *ATTACKS)
    before = planned(snakemake(copy, "-n", "--forceall", *ATTACKS))
    append_line(copy, "attacks/ringabell.py")
    proc = snakemake(copy, "-n", *ATTACKS)
    jobs = planned(proc)
    assert set(jobs) == {"attack_shared", "attack_generate", "attack_score", "report", "all"}
    assert jobs["attack_shared"] == before["attack_shared"]   # every shared attack is a Ring-A-Bell one
    assert all("ringabell" in p for p in planned_outputs(proc, "attack_generate"))


@pytest.mark.slow
def test_on_stable_diffusion_conceptworld_edits_offer_nothing(project, tmp_path):
    copy = project_copy(tmp_path / "p")
    completed(copy, *SD14)
    append_line(copy, *[str(p.relative_to(copy / "src" / "eraselab"))
                        for p in (copy / "src" / "eraselab" / "conceptworld").glob("*.py")], "score/conceptworld.py")
    assert planned(snakemake(copy, "-n", *SD14)) == {}
    append_line(copy, "score/nudenet.py")
    assert planned(snakemake(copy, "-n", *SD14)).get("score")


def test_file_times_decide_nothing(default_run):
    """Every input newer than every output (as after `dvc pull` or a copy) reruns nothing. Snakemake
    9.27 still compares times, checking contents only of files up to --max-checksum-file-size (1 MB)
    and never of directories; common.smk's ignore_file_times is what makes this pass, so this test
    fails loudly when a Snakemake release changes how it decides that an input is newer."""
    import os
    import time
    future = time.time() + 3600
    inputs = [default_run / "resources/models/conceptworld", *(default_run / "data").rglob("*"),
              *(default_run / "results").rglob("*.tar"), *(default_run / "results").rglob("*.safetensors")]
    for path in inputs:
        os.utime(path, (future, future))
    assert planned(snakemake(default_run, "-n")) == {}
