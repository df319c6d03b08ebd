"""Config validation: every bad input stops the run with a message naming the key, the value and what is allowed."""
import copy
from pathlib import Path

import pytest
import yaml

from eraselab.config import ConfigError, validate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cfg():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


@pytest.fixture
def root(tmp_path):
    """A working directory with the default config's files (prompt CSVs, a model directory)."""
    (tmp_path / "data" / "conceptworld" / "pipeline").mkdir(parents=True)
    (tmp_path / "data" / "conceptworld" / "pipeline" / "model_index.json").write_text("{}")
    (tmp_path / "data" / "prompts").symlink_to(ROOT / "data" / "prompts")
    return tmp_path


def problems(cfg, root):
    with pytest.raises(ConfigError) as e:
        validate(cfg, root)
    return str(e.value)


def test_default_config_is_valid_and_gets_defaults(cfg, root):
    out = validate(cfg, root)
    assert out["generation"]["images_per_prompt"] == 1          # filled from the schema
    assert out["methods"]["esd-x"]["start_guidance"] == 3.0     # per-algorithm defaults too
    assert out["concepts"]["circle"]["erase"] == ["circle"]      # erase prompts default to the name
    assert out["run"]["prunings"] == ["none"]


def set_key(cfg, path, value):
    *parents, last = path.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value


DELETE = object()

# (key to change, new value, fragments the message must contain)
BAD = [
    ("bogus", 1, ["bogus", "unknown key", "allowed keys here"]),
    ("seed", "zero", ["seed", "'zero'", "expected integer"]),
    ("seed", -1, ["seed", "-1", "minimum"]),
    ("run.targets", "triangle", ["run.targets", "expected array"]),
    ("run.targets", ["dog"], ["run.targets", "'dog'", "not defined", "'triangle'"]),
    ("run.methods", ["esd-z"], ["run.methods", "'esd-z'", "'esd-x'"]),
    ("run.models", ["sd99"], ["run.models", "'sd99'", "'conceptworld'"]),
    ("run.preserve", ["triangle"], ["run.preserve", "triangle", "also in run.targets"]),
    ("run.pruned_methods", ["esd-x", "uce"], ["run.pruned_methods", "'uce' not in run.methods", "'esd-u'"]),
    ("run.attacks", ["p5d"], ["run.attacks", "'p5d'", "'none'", "'unlearndiff'"]),
    ("attacks.unlearndiff.prefix_tokens", 0, ["attacks.unlearndiff.prefix_tokens", "0", "minimum"]),
    ("attacks.unlearndiff.vocabulary", "emoji", ["attacks.unlearndiff.vocabulary", "'emoji'", "'words'", "'all'"]),
    ("attacks.ringabell.mode", "guess", ["attacks.ringabell.mode", "'guess'", "'prompt'", "'embedding'"]),
    ("attacks.ringabell.pairs", DELETE, ["attacks.ringabell", "pairs", "required"]),
    ("attacks.cce.step", 3, ["attacks.cce", "step", "unknown key", "steps"]),
    ("attacks.mma", {"algorithm": "mma"}, ["attacks.mma.algorithm", "'mma'", "'unlearndiff'", "'p4d'"]),
    ("run.colour", 1, ["run.colour", "unknown key"]),
    ("methods.esd-x.lr", "fast", ["methods.esd-x.lr", "'fast'", "expected number"]),
    ("methods.esd-x.lr", 0, ["methods.esd-x.lr", "exclusiveMinimum"]),
    ("methods.esd-x.train", "attn9", ["methods.esd-x.train", "'attn9'", "'xattn'", "'noxattn'"]),
    ("methods.esd-x.sampling", "ancestral", ["methods.esd-x.sampling", "'ddim'", "'frozen'"]),
    ("methods.esd-x.iterations", 2.5, ["methods.esd-x.iterations", "2.5", "expected integer"]),
    ("methods.esd-x.learning_rate", 1e-4, ["methods.esd-x", "learning_rate", "unknown key"]),
    ("methods.esd-x.algorithm", "magic", ["methods.esd-x.algorithm", "'magic'", "'esd'"]),
    ("methods.esd-x.algorithm", DELETE, ["methods.esd-x", "algorithm", "required"]),
    ("models.conceptworld.source", "ftp", ["models.conceptworld.source", "'ftp'", "'hub'"]),
    ("models.conceptworld.path", "nowhere/at/all", ["models.conceptworld.path", "nowhere/at/all", "not found"]),
    ("models.sd", {"source": "hub", "repo_id": "CompVis/stable-diffusion-v1-4"},
     ["models.sd.revision", "required for source 'hub'"]),
    ("models.bad name", {"source": "local", "path": "x"}, ["models.bad name", "invalid name"]),
    ("concepts.triangle.type", "animal", ["concepts.triangle.type", "'animal'", "'object'", "'implicit'"]),
    ("concepts.triangle.prompts", "data/prompts/none.csv", ["concepts.triangle.prompts", "none.csv", "not found"]),
    ("concepts.triangle.detector", {"kind": "conceptworld", "attribute": "size", "value": "big"},
     ["concepts.triangle.detector.attribute", "'size'", "'shape'"]),
    ("concepts.triangle.detector", {"kind": "oracle"}, ["concepts.triangle.detector.kind", "'oracle'"]),
    ("generation.steps", 0, ["generation.steps", "0", "minimum"]),
    ("generation.scheduler", "euler-a", ["generation.scheduler", "'euler-a'", "'ddim'"]),
    ("expected", [{"source": "p", "target": "triangle", "method": "rece", "measure": "erased_rate", "value": 0.1,
                   "tolerance": 0.05}], ["expected[0].method", "'rece' is not in this run", "'esd-x'"]),
    ("expected", [{"source": "p", "target": "triangle", "method": "esd-x", "measure": "asr", "value": 0.7,
                   "tolerance": 0.05}], ["expected[0].attack", "None is not in this run", "the run has no attacks",
                                         "measure 'asr' is measured under an attack"]),
    ("expected", [{"source": "p", "target": "triangle", "method": "esd-x", "measure": "ASR", "value": 0.7,
                   "tolerance": 0.05}], ["expected.0.measure", "'ASR' is not allowed", "'asr'"]),
    ("expected", [{"source": "p", "target": "triangle", "method": "esd-x", "measure": "asr", "value": 0.7}],
     ["expected.0", "'tolerance' is a required property"]),
]


@pytest.mark.parametrize("key,value,fragments", BAD, ids=[f"{k}={v!r}"[:40] for k, v, _ in BAD])
def test_bad_config_is_rejected_with_a_precise_message(cfg, root, key, value, fragments):
    set_key(cfg, key, value if value is DELETE else copy.deepcopy(value))
    message = problems(cfg, root)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_all_problems_are_reported_at_once(cfg, root):
    cfg["methods"]["esd-x"]["lr"] = "fast"
    cfg["methods"]["esd-u"]["train"] = "attn9"
    cfg["seed"] = -1
    message = problems(cfg, root)
    assert "esd-x.lr" in message and "esd-u.train" in message and "seed" in message and "3 problems" in message


def test_attack_defaults_and_missing_pairs_file(cfg, root):
    out = validate(cfg, root)
    assert out["attacks"]["unlearndiff"]["lr"] == 0.01 and out["attacks"]["unlearndiff"]["weight_decay"] == 0.1
    assert out["attacks"]["ringabell"]["crossover"] == 0.5 and out["attacks"]["cce"]["attack_template"]
    cfg["run"]["attacks"] = ["ringabell"]
    cfg["attacks"]["ringabell"]["pairs"] = "data/prompts/pairs-{concept}.csv"
    message = problems(cfg, root)
    assert "attacks.ringabell.pairs" in message and "pairs-triangle.csv" in message and "prompt_without" in message


def test_missing_real_images_is_one_problem_and_only_with_quality(cfg, root):
    """FID's real images are checked once, when preservation metrics run (quality.prompts set)."""
    cfg["quality"] = {"prompts": "data/prompts/conceptworld/circle.csv", "fid": {"real_images": "no/such/dir"}}
    with pytest.raises(ConfigError) as e:
        validate(cfg, root)
    assert e.value.problems == [f"quality.fid.real_images: 'no/such/dir' is not a directory ({root / 'no/such/dir'} "
                                "not found)"]
    cfg["quality"]["prompts"] = None
    validate(cfg, root)
