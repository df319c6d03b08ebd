"""Fault injection: bad input, kills, divergence, corruption, concurrent runs and a full disk.

Every fault must stop the work early with a message naming what is wrong (the key or file, the
value, what is allowed or what to do), must leave no output that Snakemake would take as
complete, and the rerun must carry on from where the fault left it, to the same bytes.
Stages run as the rules run them: `eraselab <stage>` in a subprocess, killed with real signals.
Two workspaces sharing one DVC cache: tests/test_sharing.py
(test_two_workspaces_sharing_one_cache_keep_it_intact). docs/reliability.md lists
what this module tries.
"""
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from eraselab.artifacts import ArtifactError, write_manifest
from eraselab.checkpoint import checkpoint_dir_for

from conftest import ROOT, SHIPPED
from test_config import cfg, problems, root, set_key  # noqa: F401 (fixtures: the default config, its files)
from test_workflow import SMALL, planned, snakemake, workdir

ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
       "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


# --- bad input: each names the key or file, the value, and what is allowed ------------------------
# tests/test_config.py tries 34 bad config values and tests/test_prompts.py 11 bad prompt files;
# these are the kinds they do not try.

class File:
    """A prompt CSV to write into the working directory; the config points at it."""

    def __init__(self, name: str, text: str):
        self.name, self.text = name, text


NO_SEED = File("no_seed.csv", "prompt,seed\na red triangle,3\n")
BAD_SEED = File("bad_seed.csv", "prompt,evaluation_seed\na red triangle,3\na blue triangle,seven\n")
NO_PROMPT = File("no_prompt.csv", "text,evaluation_seed\na circle,1\n")
CLIP = {"kind": "clip", "candidates": ["a circle", "a square"], "target": "a triangle"}

BAD = [
    ("methods.esd-x.algorithm", "esd2", ["methods.esd-x.algorithm", "'esd2'", "allowed values", "'esd'", "'rece'"]),
    ("concepts.triangle.detector.value", "hexagon",
     ["concepts.triangle.detector.value", "'hexagon'", "allowed values", "'triangle'", "'none'"]),
    ("concepts.triangle.colour", "red", ["concepts.triangle.colour", "unknown key 'colour'", "allowed keys here"]),
    ("attacks.unlearndiff.learning_rate", 0.1,
     ["attacks.unlearndiff.learning_rate", "unknown key", "allowed keys here", "lr"]),
    ("methods", ["esd"], ["methods", "['esd']", "type list", "expected object"]),
    ("generation.guidance", "high", ["generation.guidance", "'high'", "expected number"]),
    ("run.targets", [], ["run.targets", "[]", "at least 1 required"]),
    ("concepts.triangle.anchor", 5, ["concepts.triangle.anchor", "5", "allowed types: string, array"]),
    ("run.preserve", ["hexagon"], ["run.preserve", "'hexagon'", "not defined", "'circle'"]),
    ("methods.none", {"algorithm": "esd"}, ["methods.none", "invalid name", "letters, digits"]),
    ("concepts.triangle.detector", CLIP, ["concepts.triangle.detector.target", "'a triangle'", "'a circle'"]),
    ("models.mine", {"source": "local"}, ["models.mine.path", "required for source 'local'"]),
    ("models.sd", {"source": "random"}, ["models.sd", "'architecture' is a required property"]),
    ("models.conceptworld.path", "data/prompts",
     ["models.conceptworld.path", "'data/prompts'", "not a conceptworld model directory", "model_index.json"]),
    ("concepts.triangle.prompts", NO_SEED,
     ["concepts.triangle.prompts", "no_seed.csv", "missing column", "evaluation_seed or sd_seed",
      "found columns: prompt, seed"]),
    ("concepts.triangle.prompts", BAD_SEED,
     ["concepts.triangle.prompts", "bad_seed.csv", "line 3", "'seven'", "an integer from 0"]),
    ("concepts.circle.prompts", NO_PROMPT, ["concepts.circle.prompts", "no_prompt.csv", "missing column", "prompt"]),
]


@pytest.mark.parametrize("key,value,fragments", BAD, ids=[f"{k}={getattr(v, 'name', v)!r}"[:40] for k, v, _ in BAD])
def test_bad_input_is_rejected_naming_key_value_and_what_is_allowed(cfg, root, key, value, fragments):
    if isinstance(value, File):
        (root / value.name).write_text(value.text)
        value = value.name
    set_key(cfg, key, value)
    message = problems(cfg, root)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


# Bad input given to snakemake itself: the run stops while the workflow is read, before any job.
BAD_RUNS = {
    "unknown method": ("run: {methods: [esd-z]}\n", ["run.methods", "'esd-z'", "'esd-x'"]),
    "prompt file with a bad seed": (f"concepts: {{triangle: {{prompts: {BAD_SEED.name}}}}}\n",
                                    ["concepts.triangle.prompts", "bad_seed.csv", "line 3", "'seven'"]),
    "resources of no rule": ("resources: {erse: {mem_mb: 100}}\n", ["resources: erse is not a rule", "erase"]),
    # Snakemake reads config files before the workflow: its message does not name the file
    "unreadable YAML": ("run: {methods: [esd-x\n", ["Config file is not valid JSON or YAML"]),
}


@pytest.mark.parametrize("case", BAD_RUNS)
def test_snakemake_with_bad_input_fails_before_any_job(tmp_path, case):
    text, fragments = BAD_RUNS[case]
    wd = workdir(tmp_path)
    (wd / BAD_SEED.name).write_text(BAD_SEED.text)
    (wd / "bad.yaml").write_text(text)
    proc = snakemake(wd, "-n", "--configfile", str(wd / "bad.yaml"), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for fragment in fragments:
        assert fragment in out, f"{fragment!r} not in:\n{out[-3000:]}"
    assert "Job stats" not in out and not (wd / "results").exists() and not (wd / "logs").exists()


# --- stages as the rules run them -----------------------------------------------------------------

def start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "eraselab", "--threads", "1", *map(str, args)], env=ENV,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def finish(args: list[str], log: Path, rc: int = 0) -> str:
    proc = start(args, log)
    assert proc.wait(timeout=600) == rc, log.read_text()[-4000:]
    return log.read_text()


def kill_after_checkpoint(args: list[str], state: Path, sig: int, log: Path) -> None:
    """Start a stage, and send it `sig` as soon as it has saved a checkpoint (a new one, if one exists)."""
    def version():
        return (state.stat().st_ino, state.stat().st_mtime_ns) if state.exists() else None

    old = version()
    proc = start(args, log)
    deadline = time.monotonic() + 300
    while version() in (None, old):
        assert proc.poll() is None, f"ended before saving a checkpoint:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint in 300 s"
        time.sleep(0.02)
    proc.send_signal(sig)
    rc = proc.wait(timeout=120)
    assert rc == (143 if sig == signal.SIGTERM else -signal.SIGKILL), (rc, log.read_text()[-3000:])
    if sig == signal.SIGTERM:  # unwound: it says so, and its checkpoints are its only trace
        assert "terminated; no output was written" in log.read_text()


def kill_twice_then_finish(args: list[str], out: Path, state: Path, logs: Path, temporaries: bool = False) -> list[int]:
    """Kill a stage with SIGTERM after a checkpoint; rerun it and kill it with SIGKILL after a later one;
    rerun it to the end. After each kill no output is left. Returns the steps the two reruns resumed from."""
    kill_after_checkpoint(args, state, signal.SIGTERM, logs / "SIGTERM.log")
    only_checkpoints_left(out.parent, temporaries)
    kill_after_checkpoint(args, state, signal.SIGKILL, logs / "SIGKILL.log")
    only_checkpoints_left(out.parent, temporaries)
    steps = [resumed_step((logs / "SIGKILL.log").read_text()), resumed_step(finish(args, logs / "rerun.log"))]
    assert steps[0] < steps[1], steps          # the second run got further before it was killed
    return steps


def resumed_step(log_text: str) -> int:
    found = re.findall(r"\[checkpoint\] resuming from step (\d+)", log_text)
    assert found, f"the rerun did not resume:\n{log_text[-3000:]}"
    return int(found[-1])


def only_checkpoints_left(directory: Path, temporaries: bool = False) -> None:
    """After a kill: no output, complete or not; only hidden checkpoint directories and, after a
    SIGKILL during a write, hidden temporaries (which the next write removes)."""
    left = sorted(p.name for p in directory.iterdir())
    hidden = (".ckpt", ".tmp") if temporaries else (".ckpt",)
    assert all(name.startswith(".") and name.endswith(hidden) for name in left), left


@pytest.fixture(scope="module")
def tiny_base(tiny_pipe_dir, tmp_path_factory):
    """The tiny random pipeline as a base model directory with a checksum manifest, and a ConceptWorld
    classifier that never sees a triangle (its shape head always says "none"), so an attack on it
    runs its whole budget instead of stopping at its first success."""
    from eraselab.conceptworld.classifier import AttributeClassifier, save_classifier
    from eraselab.conceptworld.world import ATTRIBUTES, World
    base = tmp_path_factory.mktemp("base") / "tiny"
    shutil.copytree(tiny_pipe_dir, base)
    world = World()
    clf = AttributeClassifier({a: len(world.values(a)) for a in ATTRIBUTES}, width=4).eval()
    with torch.no_grad():
        for head in clf.heads.values():
            head.weight.zero_(), head.bias.zero_()
        clf.heads["shape"].bias[world.values("shape").index("none")] = 1.0
    save_classifier(clf, world, base / "classifier")
    write_manifest(base)
    return base


ESD = dict(algorithm="esd", train="xattn", iterations=160, lr=1e-3, negative_guidance=1.0, sampling="frozen",
           ddim_steps=4, start_guidance=3.0, batch_size=2, cache_trajectories=2, checkpoint_every=20)


def erase_args(base: Path, out: Path, **method) -> list:
    spec = {"method_name": "esd-x", "method": {**ESD, **method}, "prune": "none", "seed": 0, "model": "tiny",
            "concept": {"name": "triangle", "type": "object", "erase": ["triangle"]}}
    return ["erase", "--base", base, "--spec", json.dumps(spec), "--out", out]


@pytest.fixture(scope="module")
def esd_whole(tiny_base, tmp_path_factory):
    """An uninterrupted ESD run: the bytes every resumed run must reproduce."""
    out = tmp_path_factory.mktemp("esd_whole") / "delta.safetensors"
    finish(erase_args(tiny_base, out), out.parent / "log")
    return out


@pytest.mark.slow
def test_killed_erasure_leaves_no_output_and_resumes_to_the_same_delta(tiny_base, esd_whole, tmp_path):
    out = tmp_path / "results" / "delta.safetensors"
    ckpt = checkpoint_dir_for(out)
    steps = kill_twice_then_finish(erase_args(tiny_base, out), out, ckpt / "state.pt", tmp_path)
    assert 20 <= steps[0] and steps[-1] < ESD["iterations"]
    assert json.loads(out.with_suffix(".json").read_text())["resumed_from_step"] == steps[-1]
    assert out.read_bytes() == esd_whole.read_bytes()      # bit for bit the uninterrupted delta
    assert not ckpt.exists()                               # complete: its checkpoint is gone


UNLEARNDIFF = dict(algorithm="unlearndiff", prefix_tokens=2, timesteps=8, iterations=3, lr=0.01, weight_decay=0.1,
                   vocabulary="all", skip_successful=True, batch_size=4, max_prompts=None, checkpoint_every=1)


@pytest.fixture(scope="module")
def attack_files(tiny_base, tmp_path_factory):
    """The target's prompt set and the base model's reference images of it."""
    from eraselab.imagesets import save_image_set
    d = tmp_path_factory.mktemp("attack_inputs")
    rows = pd.DataFrame({"case_number": [0, 1, 2], "prompt": ["a red triangle", "a moonlit square", "a blue cross"],
                         "evaluation_seed": [1, 2, 3], "evaluation_guidance": [5.0, 5.0, 5.0]})
    rows.to_csv(d / "triangle.csv", index=False)
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    save_image_set(d / "reference.tar", images, rows, {}, preview=0)
    return d


def attack_args(base: Path, files: Path, out: Path) -> list:
    spec = {"attack_name": "unlearndiff", "attack": UNLEARNDIFF, "prompts": str(files / "triangle.csv"),
            "concept": {"name": "triangle", "type": "object",
                        "detector": {"kind": "conceptworld", "attribute": "shape", "value": "triangle"}},
            "generation": {"steps": 2, "batch_size": 8, "guidance": 5.0, "scheduler": "ddim", "max_prompts": None},
            "seed": 0, "dtype": "float32", "model": "tiny", "variant": "triangle/seed0/none/esd-x"}
    return ["attack", "--base", base, "--reference", files / "reference.tar", "--spec", json.dumps(spec), "--out", out]


def attack_result(out: Path) -> tuple[bytes, list]:
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    return out.read_bytes(), [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.slow
def test_killed_attack_leaves_no_output_and_resumes_to_the_same_prompts(tiny_base, attack_files, tmp_path):
    whole = tmp_path / "whole" / "adversarial.safetensors"
    finish(attack_args(tiny_base, attack_files, whole), tmp_path / "whole.log")
    out = tmp_path / "results" / "adversarial.safetensors"
    args = attack_args(tiny_base, attack_files, out)
    steps = kill_twice_then_finish(args, out, checkpoint_dir_for(out) / "state.pt", tmp_path)
    assert 1 <= steps[0] and steps[-1] < UNLEARNDIFF["timesteps"]
    assert json.loads(out.with_suffix(".json").read_text())["resumed_from_step"] == steps[-1]
    assert attack_result(out) == attack_result(whole)
    assert [r["steps"] for r in attack_result(out)[1]] == [24] * 3   # the whole budget: 8 timesteps x 3


TRAIN = dict(seed=0, n_images=32, captions_per_image=1, classifier_steps=2, classifier_batch=8, vae_steps=10,
             vae_batch=4, unet_steps=60, unet_batch=4, warmup_steps=5, eval_prompts=2, eval_steps=2,
             eval_classifier_images=16, checkpoint_every=10,
             architecture=dict(vae_channels=[8, 8], unet_channels=[16, 16], norm_groups=4, unet_heads=2,
                               text_width=16, text_layers=1, text_heads=2))


def train_args(out: Path, **settings) -> list:
    return ["train_conceptworld", "--spec", json.dumps({**TRAIN, **settings}), "--out", out]


def trained_files(out: Path) -> dict[str, bytes]:
    """Every file of a trained weights directory; the quality record without its timing."""
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    quality = json.loads(files.pop("quality.json"))
    quality.pop("provenance")
    files.pop("eraselab_checksums.json")   # it lists quality.json's checksum
    return {**files, "quality": json.dumps(quality, sort_keys=True).encode()}


@pytest.mark.slow
def test_killed_conceptworld_training_resumes_to_the_same_weights(tmp_path):
    whole = tmp_path / "whole" / "trained"
    finish(train_args(whole), tmp_path / "whole.log")
    out = tmp_path / "results" / "trained"
    # the weights are trained inside a temporary directory: after a SIGKILL a stale one is left
    steps = kill_twice_then_finish(train_args(out), out, checkpoint_dir_for(out) / "denoiser" / "state.pt", tmp_path,
                                   temporaries=True)
    assert 10 <= steps[0] and steps[-1] < TRAIN["unet_steps"]
    rerun = (tmp_path / "rerun.log").read_text()
    assert len(re.findall(r"\[checkpoint\] resuming", rerun)) == 3   # the classifier, the VAE and the denoiser
    assert trained_files(out) == trained_files(whole)
    assert [p.name for p in out.parent.iterdir()] == ["trained"]   # checkpoints and stale temporary gone


# --- numerical faults -----------------------------------------------------------------------------

def test_diverging_erasure_stops_with_a_clear_error_and_no_output(tiny_base, tmp_path):
    out = tmp_path / "delta.safetensors"
    log = finish(erase_args(tiny_base, out, lr=1e30, iterations=50), tmp_path / "log", rc=1)
    assert re.search(r"DivergenceError: ESD diverged at step \d+: loss is (nan|inf)", log), log[-2000:]
    assert "lower the learning rate (nothing was saved)" in log and "Traceback" not in log
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_diverging_conceptworld_training_stops_with_a_clear_error_and_no_output(tmp_path):
    out = tmp_path / "trained"
    log = finish(train_args(out, vae_lr=1e30, unet_steps=1), tmp_path / "log", rc=1)
    assert re.search(r"ConceptWorld VAE training diverged at step \d+: loss is (nan|inf)", log), log[-2000:]
    assert "lower conceptworld.vae_lr" in log and "Traceback" not in log
    assert not out.exists()


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip(path: Path) -> None:
    """One bit changed in the middle: the size is right, only the checksum can tell."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _delta(d, base):
    from eraselab.delta import load_delta, save_delta
    save_delta(d / "delta.safetensors", {"unet.w": torch.randn(64, 64)}, {})
    return d / "delta.safetensors", lambda: load_delta(d / "delta.safetensors")


def _image_set(d, base):
    from eraselab.imagesets import load_image_set, save_image_set
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    save_image_set(d / "set.tar", images, pd.DataFrame({"prompt": list("abcd")}), {}, preview=0)
    return d / "set.tar", lambda: load_image_set(d / "set.tar")


def _adversarial_set(d, base):
    from eraselab.adversarial import AdversarialSet, load_adversarial, save_adversarial
    rows = pd.DataFrame({"case_number": [0], "prompt": ["a"], "evaluation_seed": [1], "evaluation_guidance": [5.0]})
    save_adversarial(d / "adv.safetensors", AdversarialSet(torch.arange(77)[None], ["a"]), rows, {})
    return d / "adv.safetensors", lambda: load_adversarial(d / "adv.safetensors")


def _base_weights(d, base):
    from eraselab.models import load_pipeline
    shutil.copytree(base, d / "base")
    return d / "base" / "unet" / "diffusion_pytorch_model.safetensors", lambda: load_pipeline(d / "base")


def _classifier_weights(d, base):
    from eraselab.score import make_detector
    shutil.copytree(base, d / "base")
    detector = {"kind": "conceptworld", "attribute": "shape", "value": "triangle"}
    return d / "base" / "classifier" / "classifier.safetensors", lambda: make_detector(detector, d / "base")


def _conceptworld_weights(d, base):
    from eraselab.conceptworld.assemble import assemble_conceptworld
    shutil.copytree(SHIPPED, d / "weights")
    write_manifest(d / "weights")
    return (d / "weights" / "pipeline" / "text_encoder" / "model.safetensors",
            lambda: assemble_conceptworld(d / "weights", d / "assembled"))


ARTIFACTS = {"delta": _delta, "image set": _image_set, "adversarial set": _adversarial_set,
             "base model weights": _base_weights, "classifier weights": _classifier_weights,
             "ConceptWorld weights": _conceptworld_weights}


@pytest.mark.parametrize("damage", [truncate, flip], ids=["truncated", "bit-flipped"])
@pytest.mark.parametrize("kind", ARTIFACTS)
def test_damaged_artifact_is_caught_on_load_naming_the_file(tiny_base, tmp_path, kind, damage):
    victim, load = ARTIFACTS[kind](tmp_path, tiny_base)
    load()                                                   # intact: loads
    damage(victim)
    with pytest.raises(ArtifactError) as e:
        load()
    assert str(victim) in str(e.value) and "checksum mismatch" in str(e.value)
    assert re.search(r"rerun|rebuild|retrain", str(e.value)), e.value   # and what to do about it


def test_stage_reading_a_damaged_artifact_stops_without_a_traceback(tiny_base, attack_files, tmp_path):
    images = tmp_path / "triangle.tar"
    for suffix in (".tar", ".json"):
        shutil.copy(attack_files / f"reference{suffix}", images.with_suffix(suffix))
    flip(images)
    spec = {"concepts": {"triangle": {"type": "object",
                                      "detector": {"kind": "conceptworld", "attribute": "shape", "value": "triangle"}}},
            "variant": "base", "model": "tiny"}
    log = finish(["score", "--base", tiny_base, "--images", f"triangle={images}", "--scores", tmp_path / "s.csv",
                  "--rates", tmp_path / "r.json", "--spec", json.dumps(spec)], tmp_path / "log", rc=1)
    assert f"ArtifactError: {images}: checksum mismatch" in log and "rerun its generate job" in log
    assert "Traceback" not in log and not (tmp_path / "s.csv").exists() and not (tmp_path / "r.json").exists()


# --- determinism ----------------------------------------------------------------------------------

CHEAP = "methods: {esd-x: {iterations: 10}}\ngeneration: {steps: 4, max_prompts: 6}\n"


@pytest.mark.slow
def test_same_config_and_seed_give_identical_tables(tmp_path):
    """The small DAG (cut down further), run twice at once in two working directories."""
    runs = {}
    for name in ("first", "second"):
        wd = tmp_path / name
        wd.mkdir()
        workdir(wd)
        (wd / "cheap.yaml").write_text(CHEAP)
        runs[wd] = subprocess.Popen([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory",
                                     str(wd), "--cores", "1", "--configfile", str(SMALL), str(wd / "cheap.yaml")],
                                    env=ENV, stdout=(wd / "run.log").open("w"), stderr=subprocess.STDOUT)
    for wd, proc in runs.items():
        assert proc.wait(timeout=900) == 0, (wd / "run.log").read_text()[-3000:]
    a, b = runs
    for table in ("results/report/rates.csv", "results/report/summary.csv",
                  "results/conceptworld/triangle/seed0/none/esd-x/delta.safetensors"):
        assert (a / table).read_bytes() == (b / table).read_bytes(), table
    assert len(pd.read_csv(a / "results/report/rates.csv")) == 4   # base and esd-x, on triangle and circle


# --- concurrency ----------------------------------------------------------------------------------

def test_second_run_in_the_same_directory_is_refused_until_unlocked(tmp_path):
    """A run holds the working directory's lock; a second is refused and told about --unlock. After a
    crash (the whole process group killed, as when a node dies) the stale lock refuses runs until
    `--unlock`; then the run is planned again."""
    wd = workdir(tmp_path)
    (wd / "cheap.yaml").write_text(CHEAP)
    args = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(wd),
            "--configfile", str(SMALL), str(wd / "cheap.yaml")]
    first = subprocess.Popen([*args, "--cores", "1"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        locks = wd / ".snakemake" / "locks"
        deadline = time.monotonic() + 120
        while not (locks.is_dir() and any(locks.iterdir())):
            assert first.poll() is None and time.monotonic() < deadline, "the first run took no lock"
            time.sleep(0.1)
        # --rerun-incomplete: on a loaded machine the first run's job may still be running when the
        # second builds its DAG, which would stop it earlier, at the job's incomplete marker
        second = subprocess.run([*args, "--cores", "1", "--rerun-incomplete"], env=ENV, capture_output=True, text=True)
        out = second.stdout + second.stderr
        assert second.returncode != 0 and "cannot be locked" in out and "--unlock" in out, out[-3000:]
    finally:
        os.killpg(first.pid, signal.SIGKILL)               # snakemake and its job, like a dead node
        first.wait()
    again = subprocess.run([*args, "--cores", "1"], env=ENV, capture_output=True, text=True)
    assert again.returncode != 0 and "--unlock" in again.stdout + again.stderr
    subprocess.run([*args, "--unlock"], env=ENV, check=True, capture_output=True)
    plan = subprocess.run([*args, "-n"], env=ENV, capture_output=True, text=True)
    assert plan.returncode == 0 and planned(plan)["report"] == 1, plan.stdout[-3000:]


# --- a full disk ----------------------------------------------------------------------------------

def limit_file_size(max_bytes: int):
    """For preexec_fn: files may not grow past max_bytes, and a write past it fails with EFBIG
    (SIGXFSZ ignored) the way a write to a full disk fails with ENOSPC."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


WRITERS = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np, pandas as pd, torch
    from eraselab.artifacts import write_json
    from eraselab.checkpoint import Checkpointer
    from eraselab.delta import save_delta
    from eraselab.imagesets import save_image_set
    d = Path(sys.argv[1])
    big = torch.randn(256, 256)                      # 256 KB: past the limit
    images = np.random.default_rng(1).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    writers = {
        "delta": lambda: save_delta(d / "delta.safetensors", {"unet.w": big}, {"version": 2}),
        "image set": lambda: save_image_set(d / "set.tar", images, pd.DataFrame({"i": range(64)}), {"version": 2}),
        "checkpoint": lambda: Checkpointer(d / "ckpt", "key", 1).save(2, {"w": big}),
        "json": lambda: write_json(d / "table.json", {"version": 2, "rows": list(range(100000))}),
    }
    failures = {}
    for name, write in writers.items():
        try:
            write()
        except Exception as e:
            failures[name] = f"{type(e).__name__}: {e}"
    print(json.dumps(failures))
""")


def test_full_disk_leaves_the_previous_artifacts_intact_and_no_temporaries(tmp_path):
    from eraselab.artifacts import read_json
    from eraselab.checkpoint import Checkpointer
    from eraselab.delta import load_delta, save_delta
    from eraselab.imagesets import load_image_set, save_image_set
    from eraselab.artifacts import write_json
    save_delta(tmp_path / "delta.safetensors", {"unet.w": torch.ones(4)}, {"version": 1})
    save_image_set(tmp_path / "set.tar", np.zeros((1, 8, 8, 3), np.uint8), pd.DataFrame({"i": [0]}), {"version": 1})
    Checkpointer(tmp_path / "ckpt", "key", 1).save(1, {"w": torch.ones(4)})
    write_json(tmp_path / "table.json", {"version": 1})
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    proc = subprocess.run([sys.executable, "-c", WRITERS, str(tmp_path)], env=ENV, capture_output=True, text=True,
                          preexec_fn=limit_file_size(64 * 1024), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    failures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(failures) == {"delta", "image set", "checkpoint", "json"}, failures
    assert all("File too large" in message or "disk full" in message for message in failures.values()), failures

    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before   # no temporaries
    assert load_delta(tmp_path / "delta.safetensors")[1]["version"] == 1             # checksums still agree
    assert load_image_set(tmp_path / "set.tar")[2]["version"] == 1
    assert Checkpointer(tmp_path / "ckpt", "key", 1).load()["step"] == 1
    assert read_json(tmp_path / "table.json") == {"version": 1}


def test_full_disk_during_an_erasure_keeps_the_previous_delta(tiny_base, esd_whole, tmp_path):
    """The job fails at its first checkpoint; the delta of the earlier run stays, whole and valid."""
    from eraselab.delta import load_delta
    out = tmp_path / "delta.safetensors"
    for suffix in (".safetensors", ".json"):
        shutil.copy(esd_whole.with_suffix(suffix), out.with_suffix(suffix))
    log = tmp_path / "log"
    proc = subprocess.run([sys.executable, "-m", "eraselab", "--threads", "1",
                           *map(str, erase_args(tiny_base, out, lr=2e-3))], env=ENV, stdout=log.open("w"),
                          stderr=subprocess.STDOUT, preexec_fn=limit_file_size(8 * 1024), timeout=600)
    assert proc.returncode != 0 and "could not write the checkpoint (disk full or over quota?)" in log.read_text()
    assert out.read_bytes() == esd_whole.read_bytes() and load_delta(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".delta.safetensors.ckpt", "delta.json",
                                                           "delta.safetensors", "log"]
    assert not list(checkpoint_dir_for(out).iterdir())      # nor a partial checkpoint
