"""Content fingerprints: source data digests, and the code each job runs."""
import ast
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eraselab import fingerprint, plan
from eraselab.config import load_config
from eraselab.fingerprint import closure, digest, import_cycles, normalized

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(fingerprint.__file__).resolve().parents[1]


def test_digest_is_content_not_file_times(tmp_path):
    a = tmp_path / "a.csv"
    a.write_text("prompt,evaluation_seed\na triangle,1\n")
    before = digest(a)
    os.utime(a, (1, 1))
    shutil.copy(a, tmp_path / "b.csv")
    assert digest(a) == before == digest(tmp_path / "b.csv")
    a.write_text("prompt,evaluation_seed\na triangle,2\n")
    assert digest(a) != before


def test_directory_digest_covers_names_and_contents(tmp_path):
    d = tmp_path / "model"
    (d / "unet").mkdir(parents=True)
    (d / "unet" / "w.bin").write_bytes(b"\x00\x01")
    first = digest(d)
    (d / "unet" / "w.bin").rename(d / "unet" / "v.bin")
    assert digest(d) != first
    (d / "unet" / "v.bin").rename(d / "unet" / "w.bin")
    assert digest(d) == first


def test_the_package_has_no_import_cycle():
    """Strongly connected components of the import graph, imports inside functions included."""
    assert import_cycles() == []


def test_a_cycle_would_be_found(monkeypatch):
    graph = {"eraselab.a": frozenset({"eraselab.b"}), "eraselab.b": frozenset({"eraselab.a"}), "eraselab.c": frozenset()}
    monkeypatch.setattr(fingerprint, "modules", lambda: sorted(graph))
    monkeypatch.setattr(fingerprint, "module_imports", graph.__getitem__)
    assert import_cycles() == [["eraselab.a", "eraselab.b"]]


def defined_functions() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in sorted(SRC.joinpath("eraselab").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef):
                out.setdefault(node.name, []).append(str(path.relative_to(SRC)))
    return out


def test_shared_helpers_exist_once():
    defined = defined_functions()
    for helper in ("check_finite", "encode_prompts", "sidecar", "sha256", "concept_pairs"):
        assert len(defined.get(helper, [])) == 1, f"{helper} defined in {defined.get(helper)}"


def test_every_registered_algorithm_imports():
    from eraselab.attacks import ATTACKS
    from eraselab.erase import METHODS
    from eraselab.models import SOURCES
    from eraselab.prune import KINDS
    from eraselab.registry import load
    from eraselab.score import DETECTORS, FEATURES
    for table in (ATTACKS, METHODS, SOURCES, KINDS, DETECTORS, FEATURES):
        for name in table:
            assert callable(load(table, name, "algorithm"))
    with pytest.raises(ValueError, match="unknown erasure algorithm 'esdx'; allowed: esd, all-but-one"):
        load(METHODS, "esdx", "erasure algorithm")


def test_every_stage_entry_point_takes_its_options():
    """`eraselab <stage> --x ...` calls the stage's function with x=...: the names must match."""
    import inspect

    from eraselab.cli import STAGES, make_parser
    parser = make_parser()
    for stage, (target, _, options) in STAGES.items():
        module, _, function = target.partition(":")
        params = set(inspect.signature(getattr(importlib.import_module(module), function)).parameters)
        wanted = {"spec"} | {o.rstrip("?=").lstrip("-").replace("-", "_") for o in options.split()}
        assert wanted == params, f"{stage}: options {sorted(wanted)} vs {target}{sorted(params)}"
    assert parser.parse_args(["report", "--spec", "{}", "--out", "r"]).stage == "report"


@pytest.fixture(scope="module")
def default_cfg():
    return load_config(ROOT / "config" / "config.yaml", root=ROOT)


def test_a_job_runs_its_stage_and_the_algorithms_it_selects(default_cfg):
    cfg = load_config(ROOT / "config" / "config.yaml", ROOT / "config" / "methods.yaml", root=ROOT)
    esd = set(closure(plan.job_modules(cfg, "erase", model="conceptworld", target="triangle", prune="none",
                                       method="esd-x")))
    assert {"eraselab.erase.stage", "eraselab.erase.esd", "eraselab.erase.finetune", "eraselab.models",
            "eraselab.delta"} <= esd
    assert not esd & {"eraselab.erase.uce", "eraselab.erase.rece", "eraselab.generate", "eraselab.score.conceptworld"}
    assert not any(m.startswith(("eraselab.attacks", "eraselab.report", "eraselab.conceptworld")) for m in esd)
    # RECE validates on generated images with the concept's detector: its jobs run that code too
    rece = set(closure(plan.job_modules(cfg, "erase", model="conceptworld", target="triangle", prune="none",
                                        method="rece")))
    assert {"eraselab.erase.uce", "eraselab.erase.validation", "eraselab.generate", "eraselab.score.conceptworld"} <= rece
    assert "eraselab.erase.esd" not in rece
    score = set(closure(plan.job_modules(default_cfg, "score", model="conceptworld", variant="base")))
    assert {"eraselab.score.stage", "eraselab.score.conceptworld", "eraselab.conceptworld.classifier"} <= score
    assert not score & {"eraselab.score.nudenet", "eraselab.score.clip", "eraselab.conceptworld.captions"}
    base = set(closure(plan.job_modules(default_cfg, "base_model", model="conceptworld")))
    assert "eraselab.conceptworld.assemble" in base and "eraselab.hub" not in base
    assert "eraselab.conceptworld.train" not in base


def job_codes(src: Path, configs: list[str]) -> dict[str, str]:
    """Every job's code fingerprint for a config, computed from a copy of the package (a fresh process)."""
    script = ("import sys, json\nfrom pathlib import Path\nfrom eraselab import plan, layout\n"
              "from eraselab.config import load_config\n"
              f"cfg = load_config(*{[str(ROOT / c) for c in configs]!r}, root={str(ROOT)!r})\n"
              "jobs = [('erase', dict(model=m, target=t, seed=str(s), prune=p, method=e)) for m in cfg['run']['models'] "
              "for t in cfg['run']['targets'] for s in cfg['run']['seeds'] for p in cfg['run']['prunings'] "
              "for e in cfg['run']['methods']]\n"
              "jobs += [(r, dict(model=m, variant=v)) for m, v in layout.grid(cfg['run']) for r in ('generate', 'score')]\n"
              "jobs += [('base_model', dict(model=m)) for m in cfg['run']['models']] + [('report', {})]\n"
              "print(json.dumps({r + ' ' + '/'.join(w.values()): plan.job_code(cfg, r, **w) for r, w in jobs}))\n")
    out = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(src)},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_editing_a_module_changes_the_jobs_that_run_it(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(SRC / "eraselab", src / "eraselab", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "workflow" / "schemas", tmp_path / "workflow" / "schemas")   # found beside the package
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "assets.yaml", tmp_path / "config")                    # so is the asset registry
    configs = ["config/config.yaml", "config/methods.yaml"]
    before = job_codes(src, configs)
    uce = src / "eraselab" / "erase" / "uce.py"
    uce.write_text(uce.read_text() + "\n# a comment\n")
    assert job_codes(src, configs) == before
    uce.write_text(uce.read_text() + "\nSCALE = 2\n")
    after = job_codes(src, configs)
    changed = {job for job in before if before[job] != after[job]}
    assert changed == {f"erase conceptworld/{t}/0/none/{m}" for t in ("triangle", "Brellin", "night")
                       for m in ("uce", "uce-last-subject", "rece")}
    runtime = src / "eraselab" / "runtime.py"  # run by every job
    runtime.write_text(runtime.read_text() + "\nLIMIT = 1\n")
    assert all(after[job] != code for job, code in job_codes(src, configs).items())


def test_normalized_code_ignores_comments_docstrings_and_layout():
    code = 'def f(x):\n    """Twice x."""\n    return 2 * x\n'
    same = '# doubling\ndef f(x):  # x: a number\n    """Double x, documented differently."""\n\n    return 2*x\n'
    assert normalized(code) == normalized(same)
    assert normalized(code) != normalized(code.replace("2 * x", "3 * x"))
