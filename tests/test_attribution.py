"""Attribution hooks: the right tensors (shapes, and values against a manual forward), and the summary."""
import numpy as np
import pandas as pd
import pytest
import torch

from eraselab.attribute.hooks import Recorder, hook_points, record
from eraselab.attribute.stage import neuron_table, spearman, summarise

P = {"steps": 4, "record_steps": 2, "batch_size": 2}


def test_hook_points_cover_every_transformer_block(tiny_pipe):
    unet = tiny_pipe.unet
    blocks = [n for n, m in unet.named_modules() if type(m).__name__ == "BasicTransformerBlock"]
    points = hook_points(unet, ["ffn", "to_k"])
    assert sorted(n for n, s, _ in points if s == "ffn") == sorted(f"{b}.ff.net.2" for b in blocks)
    assert sorted(n for n, s, _ in points if s == "to_k") == sorted(f"{b}.attn2.to_k" for b in blocks)
    with pytest.raises(ValueError, match="allowed: ffn"):
        hook_points(unet, ["mlp"])


def test_recorder_matches_manual_forward_of_a_block(tiny_pipe):
    """ffn: the GEGLU output recomputed from the FeedForward's input; to_k: cond @ W_k^T."""
    unet = tiny_pipe.unet
    name, _, ff2 = hook_points(unet, ["ffn"])[0]
    block = unet.get_submodule(name.removesuffix(".ff.net.2"))
    seen = {}
    h = block.ff.register_forward_pre_hook(lambda m, args: seen.setdefault("ff_in", args[0].detach()))
    x = torch.randn(2, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    cond = torch.randn(2, 77, unet.config.cross_attention_dim)
    points = [p for p in hook_points(unet, ["ffn", "to_k"]) if p[0] in (name, name.replace("ff.net.2", "attn2.to_k"))]
    with torch.no_grad(), Recorder(points) as rec:
        rec.step = 0
        unet(x, torch.tensor(500), cond)
    h.remove()
    geglu = block.ff.net[0]
    hidden, gate = geglu.proj(seen["ff_in"]).chunk(2, dim=-1)
    manual_ffn = (hidden * torch.nn.functional.gelu(gate)).reshape(-1, ff2.in_features)
    manual_k = (cond @ block.attn2.to_k.weight.T).reshape(-1, block.attn2.to_k.out_features)
    means = rec.mean_abs()
    assert means[name].shape == (ff2.in_features,)
    torch.testing.assert_close(means[name], manual_ffn.abs().mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(means[name.replace("ff.net.2", "attn2.to_k")], manual_k.abs().mean(0),
                               rtol=1e-5, atol=1e-6)
    unit = manual_ffn / manual_ffn.norm(dim=1, keepdim=True)
    torch.testing.assert_close(rec.column_norms(0)[name], unit.pow(2).sum(0).sqrt(), rtol=1e-5, atol=1e-6)


def test_record_only_conditional_pass_at_chosen_steps(tiny_pipe):
    from eraselab.models import encode_prompts
    points = hook_points(tiny_pipe.unet, ["ffn"])
    cond = encode_prompts(tiny_pipe, ["a", "b", "c"])
    with Recorder(points) as rec:
        record(tiny_pipe, rec, cond, [1, 2, 3], [5.0] * 3, **P)
    assert rec.steps() == [0, 1]
    # 3 prompts x tokens per image, conditional pass only
    tokens = rec.rows[(points[0][0], 0)] // 3
    assert rec.rows[(points[0][0], 0)] == 3 * tokens and rec.rows[(points[0][0], 1)] == 3 * tokens
    assert rec._handles == []   # hooks removed on exit
    table = neuron_table(points, {"concept": rec.mean_abs()})
    assert len(table) == sum(m.in_features for _, _, m in points)
    assert list(table.columns) == ["layer", "site", "neuron", "concept"]


def test_summary_on_a_hand_made_table():
    rho = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0, -2.0, -3.0, -4.0])
    delta = rho.copy()
    delta[1] = -1.0   # one of the top two does not re-activate
    t = pd.DataFrame({"site": "ffn", "rho": rho, "delta": delta})
    s = summarise(t, top_k=0.2)["sites"]["ffn"]
    assert s["top_k"] == 2 and s["top_k_reactivated_share"] == 0.5
    assert s["all_reactivated_share"] == pytest.approx(0.4)
    assert s["top_k_recovered_fraction"] == pytest.approx(4 / 9)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_erased_variant_analysis_writes_table_figure_and_summary(tiny_pipe_dir, tmp_path):
    """rho and delta from base, erased and adversarial passes; the attack's rows and conditioning are used."""
    import json

    from eraselab.adversarial import AdversarialSet, save_adversarial
    from eraselab.attacks.common import prompt_ids
    from eraselab.cli import main
    from eraselab.delta import save_delta
    from eraselab.models import load_pipeline
    pipe = load_pipeline(tiny_pipe_dir)
    ff = next(n for n, _ in pipe.unet.named_modules() if n.endswith("ff.net.2"))
    w = dict(pipe.unet.named_parameters())[f"{ff}.weight"]
    save_delta(tmp_path / "delta.safetensors", {f"unet.{ff}.weight": w.detach() * 0.5}, {})
    rows = pd.DataFrame({"case_number": [0, 1], "prompt": ["a cat", "a red cat"],
                         "evaluation_seed": [1, 2], "evaluation_guidance": [5.0, 5.0]})
    adv_prompts = ["x y a cat", "x y a red cat"]
    adv = AdversarialSet(prompt_ids(pipe.tokenizer, adv_prompts), adv_prompts)
    save_adversarial(tmp_path / "adv.safetensors", adv, rows, {})
    spec = {"attribution": {"sites": ["ffn"], "steps": 4, "record_steps": 2, "max_prompts": None, "batch_size": 2,
                            "top_k": 0.1}, "seed": 0, "variant": "cat/seed0/none/esd-x", "attack_name": "ud"}
    out = tmp_path / "neurons.parquet"
    assert main(["attribute", "--base", str(tiny_pipe_dir), "--delta", str(tmp_path / "delta.safetensors"),
                 "--adversarial", str(tmp_path / "adv.safetensors"), "--spec", json.dumps(spec),
                 "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    assert np.allclose(table["rho"], table["base_concept"] - table["erased_concept"])
    assert np.allclose(table["delta"], table["erased_adversarial"] - table["erased_concept"])
    assert (table["rho"].abs() > 0).any() and (table["delta"].abs() > 0).any()
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["prompts"] == 2 and set(summary["sites"]) == {"ffn"}
    assert out.with_suffix(".png").stat().st_size > 1000


def test_summary_of_an_unchanged_model_has_no_correlation(tmp_path):
    from eraselab.attribute.stage import plot
    t = pd.DataFrame({"site": "ffn", "rho": np.zeros(10), "delta": np.linspace(-1, 1, 10)})
    s = summarise(t, top_k=0.2)
    assert s["sites"]["ffn"]["spearman_rho_delta"] is None
    plot(t.assign(layer="l", neuron=range(10)), s, tmp_path / "f.png", "unchanged")
    assert (tmp_path / "f.png").is_file()
