"""P4D: PEZ-style hard tokens, the base model's prediction as the target, P4D-K's layout, independent of
batching, resumable, and it brings an erased concept back on ConceptWorld."""
import copy
import tempfile

import numpy as np
import pandas as pd
import pytest
import torch

from eraselab.adversarial import encode
from eraselab.attacks.common import AttackInputs, noised, prompt_ids, token_ids
from eraselab.attacks.p4d import HardTokens, base_target, p4d

from conftest import KillAt, ROOT

ROWS = pd.DataFrame({"case_number": [0, 1, 2], "prompt": ["a red triangle", "a moonlit square", "a blue cross"],
                     "evaluation_seed": [1, 2, 3], "evaluation_guidance": [5.0, 5.0, 5.0]})
FAST = dict(algorithm="p4d", prefix_tokens=2, insert_every=0, timesteps=3, iterations=2, lr=0.01, weight_decay=0.1,
            optimizer="adam", vocabulary="words", skip_successful=True, batch_size=3, checkpoint_every=1)


def perturbed(unet, scale=0.05, seed=0):
    """A copy of the UNet with its cross-attention values moved: a stand-in for an erased model."""
    out = copy.deepcopy(unet)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, w in out.named_parameters():
            if "attn2.to_v" in name:
                w += scale * torch.randn(w.shape, generator=g)
    return out


def inputs(pipe, size=16, **kw):
    images = np.random.default_rng(0).integers(0, 256, (len(ROWS), size, size, 3), dtype=np.uint8)
    return AttackInputs(prompts=ROWS, reference=images, base_unet=perturbed(pipe.unet), **kw)


def test_forward_uses_exact_vocabulary_embeddings_and_the_gradient_reaches_the_continuous_ones(tiny_pipe):
    table = tiny_pipe.text_encoder.get_input_embeddings().weight.detach()
    allowed = torch.arange(100, 400)
    tokens = HardTokens(allowed, table[allowed], seed=0)
    x = tokens.init([0, 1], 3)
    assert x.shape == (2, 3, table.shape[1])
    assert all(any(torch.equal(row, w) for w in table[allowed]) for row in x.reshape(-1, x.shape[-1]))  # random tokens
    x = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))   # off the vocabulary
    leaf, embeds = tokens.embed(x, [])
    ids = tokens.hard(x)
    assert torch.equal(embeds, table[allowed][ids])                     # the forward sees vocabulary rows
    cos = torch.nn.functional.normalize(x, dim=-1) @ torch.nn.functional.normalize(table[allowed], dim=-1).T
    assert torch.equal(ids, cos.argmax(-1))                             # nearest by cosine similarity
    (embeds ** 2).sum().backward()
    assert torch.allclose(leaf.grad, 2 * embeds)                        # gradient of the hard embeddings
    assert torch.equal(tokens.project(x), x)                            # x itself stays continuous
    assert torch.equal(tokens.init([0, 1], 3), tokens.init([0, 1], 3))  # seeded by (seed, case)


def test_target_is_the_base_models_prediction_for_the_plain_prompt(tiny_pipe):
    """With erased == base the erased model's prediction for the plain prompt embedding is the target
    (loss 0); with another base UNet, or the base text encoder the erasure changed, it is that model's."""
    pipe, tok = tiny_pipe, tiny_pipe.tokenizer
    plain = prompt_ids(tok, ROWS.prompt.tolist())
    x_t = noised(pipe, torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0)),
                 torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([100, 500, 900]))
    t, rows = torch.tensor([100, 500, 900]), torch.tensor([2, 0, 1])
    with torch.no_grad():
        mine = pipe.unet(x_t, t, encode(pipe.text_encoder, plain[rows])).sample
        same = base_target(AttackInputs(prompts=ROWS, base_unet=pipe.unet))(pipe, plain)(x_t, t, rows, None)
        assert float(((mine - same) ** 2).mean()) < 1e-10
        other = perturbed(pipe.unet)
        want = other(x_t, t, encode(pipe.text_encoder, plain[rows])).sample
        got = base_target(AttackInputs(prompts=ROWS, base_unet=other))(pipe, plain)(x_t, t, rows, None)
        assert torch.allclose(got, want, atol=1e-5) and not torch.allclose(got, mine, atol=1e-3)
        te = copy.deepcopy(pipe.text_encoder)
        te.get_input_embeddings().weight.mul_(1.5)
        via_te = base_target(AttackInputs(prompts=ROWS, base_unet=pipe.unet, base_text_encoder=te))(pipe, plain)
        assert torch.allclose(via_te(x_t, t, rows, None), pipe.unet(x_t, t, encode(te, plain[rows])).sample, atol=1e-5)
    with pytest.raises(ValueError, match="base_unet"):
        p4d(pipe, AttackInputs(prompts=ROWS), FAST, seed=0)


def test_prompts_do_not_depend_on_their_batch(tiny_pipe):
    """Each prompt keeps its own parameters, Adam state and noise: the same losses up to floating-point
    rounding in any batch (not bit for bit: kernels sum in another order with another batch size)."""
    together, record = p4d(tiny_pipe, inputs(tiny_pipe), FAST, seed=0)
    alone, record_alone = p4d(tiny_pipe, inputs(tiny_pipe), {**FAST, "batch_size": 1}, seed=0)
    curves = np.array([r["loss_curve"] for r in record["rows"]])
    assert curves.min() > 0
    assert np.allclose(curves, [r["loss_curve"] for r in record_alone["rows"]], rtol=1e-4, atol=0)
    tok = tiny_pipe.tokenizer
    assert prompt_ids(tok, together.prompts).tolist() == together.input_ids.tolist()   # typable: re-tokenises
    assert all(p.endswith(q) for p, q in zip(together.prompts, ROWS.prompt))           # P4D-N: a prefix
    assert all(len(token_ids(tok, p)) == len(token_ids(tok, q)) + 2 for p, q in zip(together.prompts, ROWS.prompt))
    assert [r["steps"] for r in record["rows"]] == [6, 6, 6]


def test_p4d_k_inserts_a_token_before_every_k_prompt_tokens(tiny_pipe):
    """insert_every 2: "a blue cross on green" (5 tokens) gets 5 // 2 + 1 = 3 learned tokens,
    [w a blue w cross on w green]; "a red triangle" (3 tokens) gets 2, [w a red w triangle]. (Whole-word
    prompts: a token inserted inside a word splits it when the text is tokenized again, as in the
    official code, which also decodes its prompts to text.)"""
    tok = tiny_pipe.tokenizer
    rows = ROWS.assign(prompt=["a red triangle", "a blue cross on green", "a big square"])
    run = AttackInputs(prompts=rows, reference=inputs(tiny_pipe).reference, base_unet=perturbed(tiny_pipe.unet))
    adv, record = p4d(tiny_pipe, run, {**FAST, "insert_every": 2}, seed=0)
    for prompt, ids in zip(rows.prompt, adv.input_ids.tolist()):
        plain = token_ids(tok, prompt)
        n = len(plain) // 2 + 1
        body = ids[1:1 + len(plain) + n]
        assert len(body[::3]) == n and [i for j, i in enumerate(body) if j % 3] == plain
        assert ids[1 + len(plain) + n] == tok.eos_token_id
    assert prompt_ids(tok, adv.prompts).tolist() == adv.input_ids.tolist()
    assert [len(r["loss_curve"]) for r in record["rows"]] == [3, 3, 3]
    run.base_unet = perturbed(tiny_pipe.unet)
    alone, record_alone = p4d(tiny_pipe, run, {**FAST, "insert_every": 2, "batch_size": 1}, seed=0)
    assert np.allclose([r["loss_curve"] for r in record["rows"]], [r["loss_curve"] for r in record_alone["rows"]],
                       rtol=1e-4, atol=0)


def test_resumed_attack_equals_an_uninterrupted_one(tiny_pipe, tmp_path):
    from eraselab.checkpoint import Checkpointer
    whole, _ = p4d(tiny_pipe, inputs(tiny_pipe), {**FAST, "optimizer": "adamw"}, seed=1)

    params = {**FAST, "optimizer": "adamw"}
    ckpt = Checkpointer(tmp_path / "ckpt", params, 1)
    with pytest.raises(KeyboardInterrupt):
        p4d(tiny_pipe, inputs(tiny_pipe), params, seed=1, progress=KillAt(6), ckpt=ckpt)
    assert ckpt.load()["batch"]["next_t"] == 1
    resumed, _ = p4d(tiny_pipe, inputs(tiny_pipe), params, seed=1, ckpt=ckpt)
    assert torch.equal(whole.input_ids, resumed.input_ids)


def test_attack_stage_loads_the_base_unet_and_the_text_encoder_only_when_changed(tiny_pipe_dir, tmp_path):
    from eraselab.attacks.stage import load_with_base
    from eraselab.delta import save_delta
    from eraselab.models import load_pipeline
    base = load_pipeline(tiny_pipe_dir)
    name = next(n for n, _ in base.unet.named_parameters() if "attn2.to_v" in n)
    w = dict(base.unet.named_parameters())[name].detach()
    te_name, te_w = next((n, v.detach()) for n, v in base.text_encoder.named_parameters() if "layers.0" in n)
    save_delta(tmp_path / "unet.safetensors", {f"unet.{name}": w + 1}, {})
    save_delta(tmp_path / "both.safetensors", {f"unet.{name}": w + 1, f"text_encoder.{te_name}": te_w * 2}, {})
    pipe, parts = load_with_base(tiny_pipe_dir, tmp_path / "unet.safetensors", "float32")
    assert set(parts) == {"base_unet"}
    assert torch.equal(dict(parts["base_unet"].named_parameters())[name], w)
    assert torch.equal(dict(pipe.unet.named_parameters())[name], w + 1)
    pipe, parts = load_with_base(tiny_pipe_dir, tmp_path / "both.safetensors", "float32")
    assert set(parts) == {"base_unet", "base_text_encoder"}
    assert torch.equal(dict(parts["base_text_encoder"].named_parameters())[te_name], te_w)
    assert torch.equal(dict(pipe.text_encoder.named_parameters())[te_name], te_w * 2)


def test_bad_p4d_settings_are_rejected_with_the_key(tmp_path):
    import yaml
    from eraselab.config import ConfigError, validate
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    (tmp_path / "data" / "conceptworld" / "pipeline").mkdir(parents=True)
    (tmp_path / "data" / "conceptworld" / "pipeline" / "model_index.json").write_text("{}")
    (tmp_path / "data" / "prompts").symlink_to(ROOT / "data" / "prompts")
    cfg["attacks"]["p4d"] = {"algorithm": "p4d", "optimizer": "sgd", "insert_every": -1, "prefix": 3}
    with pytest.raises(ConfigError) as e:
        validate(cfg, tmp_path)
    message = str(e.value)
    assert "attacks.p4d.optimizer" in message and "adamw" in message
    assert "attacks.p4d.insert_every" in message and "attacks.p4d" in message and "prefix" in message
    cfg["attacks"]["p4d"] = {"algorithm": "p4d"}
    assert validate(cfg, tmp_path)["attacks"]["p4d"]["lr"] == 0.01     # the defaults fill in


@pytest.mark.slow
def test_p4d_raises_a_weakly_erased_conceptworld_models_rate(conceptworld_dir):
    """The triangle erased weakly by ESD-x (config settings, 150 of 600 iterations; tests/test_outcomes.py's
    `weakly_erased`): 30% of the first 20 prompts still show it. P4D (3 prefix tokens, 3 timesteps x 10
    steps, against the paper's 50 x 40) brings it back: the ASR is at least 30 points above the
    pre-attack rate (measured: 85% against 30%; 10 s of attack on 2 shared cores). With the attack
    replaced by the plain prompts the ASR is the pre-attack rate (measured: 30%) and this fails."""
    from eraselab import api
    from eraselab.adversarial import conditioning
    from eraselab.attacks.stage import load_with_base
    from eraselab.generate import generate_images, set_scheduler
    from eraselab.prompts import load_prompts
    from eraselab.score.stage import attack_rates
    cfg = api.config(ROOT / "config" / "config.yaml", ROOT / "config" / "methods.yaml",
                     ROOT / "config" / "attacks.yaml", root=ROOT)
    rows = load_prompts(ROOT / "data" / "prompts" / "conceptworld" / "triangle.csv", 3.0, 20).frame
    g, detector = cfg["generation"], cfg["concepts"]["triangle"]["detector"]

    def detections(pipe, embeds=None):
        set_scheduler(pipe, g["scheduler"])
        images = generate_images(pipe, None if embeds is not None else rows.prompt.tolist(),
                                 rows.evaluation_seed.tolist(), rows.evaluation_guidance.tolist(), g["steps"],
                                 g["batch_size"], prompt_embeds=embeds)
        return images, api.score(images, detector, conceptworld_dir)["detected"].to_numpy(bool)

    base = api.load(conceptworld_dir)
    reference, _ = detections(base)
    tensors, record = api.erase(base, cfg["concepts"]["triangle"] | {"name": "triangle"},
                                cfg["methods"]["esd-x"] | {"iterations": 150})
    with tempfile.TemporaryDirectory() as d:
        api.save_delta(f"{d}/triangle.safetensors", tensors, record)
        pipe, parts = load_with_base(conceptworld_dir, f"{d}/triangle.safetensors", "float32")
    set_scheduler(pipe, g["scheduler"])
    _, pre = detections(pipe)
    params = {**FAST, "prefix_tokens": 3, "timesteps": 3, "iterations": 10, "batch_size": 20}
    run = AttackInputs(prompts=rows, reference=reference, generation={"steps": g["steps"], "batch_size": g["batch_size"]},
                       detector=lambda images: api.score(images, detector, conceptworld_dir), **parts)
    adv, rec = p4d(pipe, run, params, seed=cfg["seed"])
    _, attacked = detections(pipe, conditioning(pipe, adv))
    r = attack_rates(pre, attacked)
    assert r["pre_rate"] <= 0.5, r
    assert r["asr"] >= r["pre_rate"] + 0.3, r
