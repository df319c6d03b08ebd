"""SalUn: the mask holds the declared fraction, only salient weights move, runs reproduce and resume,
bad settings are refused, and on ConceptWorld the triangle goes."""
import copy

import pytest
import torch
import yaml

from eraselab.config import ConfigError, fill_defaults, load_schema, validate
from eraselab.erase.common import Concept
from eraselab.erase.salun import make_data, relabel_prompts, saliency_mask, salun, top_fraction
from eraselab.models import encode_prompts, load_pipeline

from conftest import KillAt, ROOT

CONCEPT = Concept(name="triangle", type="object", erase=("triangle", "a red triangle"),
                  preserve=("a circle", "a square"))
FAST = dict(algorithm="salun", images=6, image_steps=2, image_guidance=3.0, image_batch_size=4, relabel=None,
            threshold=0.3, mask_guidance=7.5, train="full", alpha=0.5, epochs=2, lr=1e-3, batch_size=4,
            checkpoint_every=100)


def salient_mask(pipe, params, seed):
    """The saliency mask salun computes, recomputed on a fresh copy of the base model."""
    relabel = relabel_prompts(CONCEPT, params["relabel"])
    data = make_data(pipe, CONCEPT, relabel, params, seed)
    return saliency_mask(pipe, data, encode_prompts(pipe, list(CONCEPT.erase)), encode_prompts(pipe, [""]),
                         params, seed)


def test_top_fraction_keeps_exactly_the_fraction_with_ties():
    scores = {"a": torch.tensor([[3.0, 1.0], [1.0, 0.0]]), "b": torch.tensor([1.0, 5.0, 0.0, 1.0])}
    m = top_fraction(scores, 0.5)   # 4 of 8: 5, 3 and the first two of the four tied 1s (model order)
    assert m["a"].tolist() == [[True, True], [True, False]] and m["b"].tolist() == [False, True, False, False]
    assert sum(int(x.sum()) for x in top_fraction(scores, 0.01).values()) == 0
    assert all(x.all() for x in top_fraction(scores, 1.0).values())


def test_mask_keeps_the_declared_fraction_of_the_unet(tiny_pipe):
    total = sum(p.numel() for p in tiny_pipe.unet.parameters())
    _, record = salun(tiny_pipe, CONCEPT, FAST, seed=0)
    s = record["saliency"]
    assert s["unet_parameters"] == total and s["salient"] == int(total * 0.3) == s["trained"]
    assert sum(s["tensors"].values()) == s["salient"]


def test_only_salient_weights_change(tiny_pipe_dir):
    pipe = load_pipeline(tiny_pipe_dir)
    before = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    mask = salient_mask(load_pipeline(tiny_pipe_dir), FAST, seed=3)
    tensors, record = salun(pipe, CONCEPT, FAST, seed=3)
    assert record["iterations"] == 4 and len(record["losses"]) == 4   # 2 epochs x ceil(6 / 4)
    assert set(tensors) == {f"unet.{n}" for n, m in mask.items() if m.any()}
    moved = 0
    for n, p in pipe.unet.named_parameters():
        assert torch.equal(p[~mask[n]], before[n][~mask[n]]), n   # bit-identical outside the mask
        moved += int((p[mask[n]] != before[n][mask[n]]).sum())
    assert moved > 0.9 * record["saliency"]["salient"]


def test_xattn_trains_only_salient_cross_attention(tiny_pipe):
    before = {n: p.detach().clone() for n, p in tiny_pipe.unet.named_parameters()}
    tensors, record = salun(tiny_pipe, CONCEPT, {**FAST, "train": "xattn"}, seed=0)
    assert tensors and all("attn2." in k for k in tensors)
    assert record["saliency"]["trained"] < record["saliency"]["salient"]
    for n, p in tiny_pipe.unet.named_parameters():
        if "attn2." not in n:
            assert torch.equal(p, before[n]), n


def test_pruned_weights_stay_zero(tiny_pipe):
    name, p = next((n, p) for n, p in tiny_pipe.unet.named_parameters() if n.endswith("attn2.to_k.weight"))
    keep = torch.ones_like(p)
    keep[0] = 0
    with torch.no_grad():
        p[0] = 0
    salun(tiny_pipe, CONCEPT, {**FAST, "threshold": 0.9}, seed=0, masks={name: keep})
    assert torch.all(p[0] == 0)


def test_same_seed_same_result(tiny_pipe_dir):
    a, ra = salun(load_pipeline(tiny_pipe_dir), CONCEPT, FAST, seed=1)
    b, rb = salun(load_pipeline(tiny_pipe_dir), CONCEPT, FAST, seed=1)
    c, _ = salun(load_pipeline(tiny_pipe_dir), CONCEPT, FAST, seed=2)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) and ra["losses"] == rb["losses"]
    assert a.keys() != c.keys() or any(not torch.equal(a[k], c[k]) for k in a)   # another seed, another run


def test_resume_after_interruption_gives_the_same_result(tiny_pipe_dir, tmp_path):
    from eraselab.checkpoint import Checkpointer
    params = {**FAST, "epochs": 4}          # 8 steps
    whole, _ = salun(load_pipeline(tiny_pipe_dir), CONCEPT, params, seed=2)

    ckpt = Checkpointer(tmp_path / "ckpt", params, every=3)
    with pytest.raises(KeyboardInterrupt):
        salun(load_pipeline(tiny_pipe_dir), CONCEPT, params, seed=2, progress=KillAt(5), ckpt=ckpt)
    assert ckpt.load()["step"] == 3
    resumed, record = salun(load_pipeline(tiny_pipe_dir), CONCEPT, params, seed=2, ckpt=ckpt)
    assert len(record["losses"]) == 8 and record["saliency"]["salient"] > 0
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_a_concept_without_other_prompts_is_refused(tiny_pipe):
    alone = Concept(name="triangle", type="object", erase=("triangle",))
    with pytest.raises(ValueError, match="no preserve prompts.*relabel"):
        salun(tiny_pipe, alone, FAST, seed=0)
    assert relabel_prompts(alone, ["a circle"]) == ["a circle"]


@pytest.mark.parametrize("key,value,fragments", [
    ("threshold", 1.5, ["methods.salun.threshold", "1.5", "maximum"]),
    ("relabel", "a circle", ["methods.salun.relabel", "'a circle'", "expected ['array', 'null']"]),
    ("train", "selfattn", ["methods.salun.train", "'selfattn'", "'full'", "'xattn'"]),
    ("mask_fraction", 0.1, ["methods.salun", "mask_fraction", "unknown key", "threshold"]),
])
def test_bad_salun_settings_are_refused(tmp_path, key, value, fragments):
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg.setdefault("methods", {})["salun"] = {"algorithm": "salun", key: copy.deepcopy(value)}
    (tmp_path / "data" / "conceptworld" / "pipeline").mkdir(parents=True)
    (tmp_path / "data" / "conceptworld" / "pipeline" / "model_index.json").write_text("{}")
    (tmp_path / "data" / "prompts").symlink_to(ROOT / "data" / "prompts")
    with pytest.raises(ConfigError) as e:
        validate(cfg, tmp_path)
    for fragment in fragments:
        assert fragment in str(e.value), f"{fragment!r} not in:\n{e.value}"


def test_schema_defaults_are_the_official_sd_settings():
    schema = load_schema()
    p = fill_defaults({"algorithm": "salun"}, {**schema["$defs"]["algorithms"]["salun"], "$defs": schema["$defs"]})
    assert (p["threshold"], p["mask_guidance"], p["lr"], p["batch_size"], p["alpha"], p["epochs"], p["train"]) \
        == (0.5, 7.5, 1e-5, 8, 0.5, 5, "full")


# The proposed ConceptWorld preset (the schema's defaults are SD v1.4's; chosen on the validation sets).
CONCEPTWORLD = dict(images=128, image_steps=25, image_guidance=3.0, image_batch_size=64, lr=1e-3, epochs=5,
                    batch_size=16)


@pytest.mark.slow
def test_salun_erases_the_triangle_on_conceptworld(conceptworld_dir):
    """The triangle (100% on the first 20 evaluation prompts) falls by at least 50 points with the
    proposed ConceptWorld settings (measured: 100% -> 0%; the circle 100% -> 80%, the square stays
    100%). About 50 s on a shared 2-core CPU, the erasure ~35-45 s of it. Fails with salun replaced
    by the identity (checked: 100% -> 100%)."""
    from eraselab import api
    from eraselab.generate import generate_images, set_scheduler
    from eraselab.prompts import load_prompts
    cfg = api.config(ROOT / "config" / "config.yaml", root=ROOT)
    g = cfg["generation"]

    def rate(pipe):
        r = load_prompts(ROOT / "data" / "prompts" / "conceptworld" / "triangle.csv", g["guidance"], 20).frame
        set_scheduler(pipe, g["scheduler"])
        images = generate_images(pipe, r.prompt.tolist(), r.evaluation_seed.tolist(),
                                 r.evaluation_guidance.tolist(), g["steps"], g["batch_size"])
        return float(api.score(images, cfg["concepts"]["triangle"]["detector"], conceptworld_dir)["detected"].mean())

    schema = load_schema()
    params = fill_defaults({"algorithm": "salun", **CONCEPTWORLD},
                           {**schema["$defs"]["algorithms"]["salun"], "$defs": schema["$defs"]})
    pipe = api.load(conceptworld_dir)
    before = rate(pipe)
    api.erase(pipe, cfg["concepts"]["triangle"] | {"name": "triangle"}, params)
    after = rate(pipe)
    assert before >= 0.9 and after <= before - 0.5, (before, after)
