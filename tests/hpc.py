"""Helpers for the HPC and sharing tests: project copies under git and DVC, and the tools run in them.

Every command runs in a copy of the project with that copy's own code on PYTHONPATH, so a test can
edit a source file, and so Snakemake's fingerprints of the code are those of the copy.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--configfile", "tests/configs/small.yaml"]
TWO_METHODS = ["--configfile", "tests/configs/small.yaml", "tests/configs/two-methods.yaml"]


def env(project: Path) -> dict:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONPATH": str(project / "src"), "OMP_NUM_THREADS": "1",
            "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.org",
            "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.org"}


def run(project: Path, *cmd: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=project, env=env(project), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed in {project}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def snakemake(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(project, sys.executable, "-m", "snakemake", *args, check=check)


def dvc(project: Path, *args: str) -> subprocess.CompletedProcess:
    return run(project, sys.executable, "-m", "dvc", *args)


def git(project: Path, *args: str) -> subprocess.CompletedProcess:
    return run(project, "git", *args)


def project_copy(dest: Path) -> Path:
    """The repository's files (tracked, and new ones git does not ignore) as a fresh git repository."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        src, dst = ROOT / name, dest / name
        if src.exists() or src.is_symlink():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst, follow_symlinks=False)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "project")
    return dest


def clone(origin: Path, dest: Path, remote: Path, cache: Path | None = None, pull: bool = True) -> Path:
    """A fresh clone of origin, set up for sharing (scripts/share.sh) and, if asked, pulled."""
    git(origin.parent, "clone", "-q", str(origin), str(dest))
    run(dest, "scripts/share.sh", str(remote), *([str(cache)] if cache else []))
    if pull:
        dvc(dest, "pull", "-q")
    return dest


def planned(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """The job counts per rule from a dry run's 'Job stats' table ({} when nothing is to be done)."""
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def jobs(proc: subprocess.CompletedProcess) -> list[dict]:
    """Every job a dry run plans: its rule, wildcards, inputs and outputs."""
    out = []
    for block in re.split(r"^(?:local)?(?:rule|checkpoint) ", proc.stdout + proc.stderr, flags=re.M)[1:]:
        field = lambda name: re.search(rf"^\s+{name}: (.*)$", block, re.M)
        files = lambda name: [f.strip() for f in field(name).group(1).split(",")] if field(name) else []
        wildcards = dict(kv.split("=", 1) for kv in field("wildcards").group(1).split(", ")) if field("wildcards") else {}
        out.append({"rule": block.split(":", 1)[0], "wildcards": wildcards, "input": files("input"),
                    "output": files("output")})
    return out


def planned_outputs(proc: subprocess.CompletedProcess, rule: str) -> set[str]:
    """The outputs of the jobs of one rule that a dry run plans."""
    return {f for j in jobs(proc) if j["rule"] == rule for f in j["output"]}


def completed(project: Path, *configs: str) -> None:
    """Make a config's whole DAG look run, in seconds: every output exists (empty) and Snakemake holds
    the record of each job as run now (`--touch`), with its params and code fingerprints. What a later
    dry run offers is then exactly what Snakemake's rerun triggers see as changed since."""
    dry = snakemake(project, "-n", "--forceall", "--cores", "1", *configs)
    for name in {f for j in jobs(dry) for f in j["output"]}:
        path = project / name
        if "." not in Path(name).name:   # directory outputs (models, the report's dvc/) have no suffix
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    snakemake(project, "--touch", "--forceall", "--cores", "1", *configs)
    assert planned(snakemake(project, "-n", *configs)) == {}
