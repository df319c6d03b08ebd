"""Content fingerprints: source data digests, and the code each stage runs."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from eraselab import fingerprint
from eraselab.fingerprint import digest, normalized, stage_modules, stage_of

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


def test_a_stage_runs_its_modules_and_their_imports_only():
    erase, score = set(stage_modules("erase")), set(stage_modules("score"))
    assert {"eraselab.erase.stage", "eraselab.erase.esd", "eraselab.models", "eraselab.delta"} <= erase
    # RECE validates on generated images with the concept's detector: erasure runs that code too
    assert {"eraselab.erase.validation", "eraselab.generate"} <= erase
    assert not any(m.startswith(("eraselab.report", "eraselab.attacks")) for m in erase)
    assert {"eraselab.score.conceptworld", "eraselab.conceptworld.classifier"} <= score
    assert not any(m.startswith("eraselab.erase") for m in score)
    # the CLI dispatches to every stage: following it would make every stage depend on all code
    assert "eraselab.cli" not in erase | score


def test_normalized_code_ignores_comments_docstrings_and_layout():
    code = 'def f(x):\n    """Twice x."""\n    return 2 * x\n'
    same = '# doubling\ndef f(x):  # x: a number\n    """Double x, documented differently."""\n\n    return 2*x\n'
    assert normalized(code) == normalized(same)
    assert normalized(code) != normalized(code.replace("2 * x", "3 * x"))


def fingerprints(src: Path) -> dict[str, str]:
    """Every stage's fingerprint as computed from a copy of the package (a fresh process)."""
    out = subprocess.run([sys.executable, "-c", "from eraselab.fingerprint import code_fingerprint as c, stages\n"
                          "for s in stages(): print(s, c(s))"], env={**os.environ, "PYTHONPATH": str(src)},
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split() for line in out.splitlines())


def test_editing_a_module_changes_the_stages_that_run_it(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(SRC / "eraselab", src / "eraselab", ignore=shutil.ignore_patterns("__pycache__"))
    before = fingerprints(src)
    esd = src / "eraselab" / "erase" / "esd.py"
    esd.write_text(esd.read_text() + "\n# a comment\n")
    assert fingerprints(src) == before
    esd.write_text(esd.read_text() + "\nSCALE = 2\n")
    after = fingerprints(src)
    # prune runs ESD's objective for learned masks (P-ESD)
    assert {s for s in before if before[s] != after[s]} == {"erase", "prune"}
    artifacts = src / "eraselab" / "artifacts.py"  # shared by every stage
    artifacts.write_text(artifacts.read_text() + "\nLIMIT = 1\n")
    assert all(a != b for a, b in zip(after.values(), fingerprints(src).values()))


def test_stage_of_a_rule_command():
    assert stage_of("eraselab --threads {threads} erase --base {input.base} > {log} 2>&1") == "erase"
    assert stage_of("eraselab report --spec {params.spec:q} --out {params.out}") == "report"
    assert stage_of("cp {input} {output}") is None
