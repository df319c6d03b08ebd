"""Pruning masks: sparse storage, apply/remove bit for bit, top-k selection, and erasure on a mask."""
import pandas as pd
import pytest
import torch

from eraselab.artifacts import ArtifactError
from eraselab.prune.guided import neuron_mask, top_neurons
from eraselab.prune.masks import Mask, apply_mask, load_mask, remove_mask, save_mask
from eraselab.prune.wanda import skilled, top_k_per_row, wanda_mask


def _state(pipe):
    return {k: v.clone() for k, v in pipe.unet.state_dict().items()}


def _random_mask(pipe, fraction=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    names = [n for n, _ in pipe.unet.named_parameters() if n.endswith("ff.net.2.weight") or "attn2.to_k" in n]
    named = dict(pipe.unet.named_parameters())
    return Mask.from_bool({n: torch.rand(named[n].shape, generator=g) < fraction for n in names})


def test_zero_mask_changes_nothing(tiny_pipe, tmp_path):
    before = _state(tiny_pipe)
    empty = Mask.from_bool({n: torch.zeros_like(p, dtype=torch.bool) for n, p in tiny_pipe.unet.named_parameters()})
    assert empty.count() == 0 and empty.indices == {}
    save_mask(tmp_path / "m.safetensors", empty, {})
    mask, _ = load_mask(tmp_path / "m.safetensors")
    apply_mask(tiny_pipe, mask)
    after = tiny_pipe.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_apply_then_remove_restores_bit_for_bit(tiny_pipe, tmp_path):
    before = _state(tiny_pipe)
    mask = _random_mask(tiny_pipe)
    save_mask(tmp_path / "m.safetensors", mask, {"note": "test"})
    mask, meta = load_mask(tmp_path / "m.safetensors")
    saved = apply_mask(tiny_pipe, mask)
    named = dict(tiny_pipe.unet.named_parameters())
    for n, idx in mask.indices.items():
        assert (named[n].detach().view(-1)[idx] == 0).all()
    changed = [k for k in before if not torch.equal(before[k], named[k] if k in named else before[k])]
    assert sorted(changed) == sorted(mask.indices)
    remove_mask(tiny_pipe, mask, saved)
    after = tiny_pipe.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert meta["shapes"] and (tmp_path / "m.safetensors").stat().st_size < 8 * mask.count() + 4096


def test_corrupted_mask_is_refused(tiny_pipe, tmp_path):
    path = tmp_path / "m.safetensors"
    save_mask(path, _random_mask(tiny_pipe), {})
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(ArtifactError, match="checksum"):
        load_mask(path)


def test_top_k_per_row_and_skilled_on_a_hand_made_example():
    scores = torch.tensor([[1.0, 5.0, 3.0, 2.0],
                           [9.0, 0.0, 8.0, 7.0]])
    assert top_k_per_row(scores, 2).tolist() == [[False, True, True, False], [True, False, True, False]]
    w = torch.tensor([[1.0, -5.0, 3.0, 2.0],
                      [9.0, 0.0, -8.0, 7.0]])
    concept = torch.tensor([1.0, 1.0, 1.0, 1.0])
    neutral = torch.tensor([2.0, 0.5, 1.0, 0.5])   # column 2 scores the same on both: not skilled
    # ratio 0.5 of 4 inputs: k = 2 per row; then concept score must beat neutral score
    assert skilled(w, concept, neutral, 0.5).tolist() == [[False, True, False, False], [False, False, False, False]]


def _official_conceptprune(pipe, concept, neutral, seeds, guidance, steps, timesteps, ratio):
    """ConceptPrune's official computation, transcribed: one prompt at a time, the hook on every ff.net.2
    input sees the whole guidance batch [unconditional, conditional]; rows L2-normalised, column norms
    grown as sqrt(old^2 + new^2) per (step, layer); per row the top int(ratio * in) columns by the target's
    score (a descending sort) that also beat the base's score; OR over the first ``timesteps`` steps."""
    from diffusers import DDIMScheduler
    from eraselab.models import encode_prompts
    layers = [(n, m) for n, m in pipe.unet.named_modules() if n.endswith("ff.net.2")]
    empty = encode_prompts(pipe, [""])

    def norms(prompts):
        out, state = {}, {"t": None}

        def hook(name):
            def fn(module, args):
                rows = torch.nn.functional.normalize(args[0].reshape(-1, args[0].shape[-1]).float(), p=2, dim=1)
                key = (state["t"], name)
                new = torch.norm(rows, dim=0)
                out[key] = torch.sqrt(out[key] ** 2 + new ** 2) if key in out else new
            return fn
        handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers]
        for prompt, seed in zip(prompts, seeds):
            sched = DDIMScheduler.from_config(pipe.scheduler.config)
            sched.set_timesteps(steps)
            cfg = pipe.unet.config
            x = torch.randn((1, cfg.in_channels, cfg.sample_size, cfg.sample_size),
                            generator=torch.Generator().manual_seed(seed)) * sched.init_noise_sigma
            for t_index, t in enumerate(sched.timesteps[:timesteps]):
                state["t"] = t_index
                with torch.no_grad():
                    eps = pipe.unet(torch.cat([x, x]), t, torch.cat([empty, encode_prompts(pipe, [prompt])])).sample
                e_u, e_c = eps.chunk(2)
                x = sched.step(e_u + guidance * (e_c - e_u), t, x).prev_sample
        for h in handles:
            h.remove()
        return out

    target, base = norms(concept), norms(neutral)
    union = {}
    for t in range(timesteps):
        for name, m in layers:
            w = m.weight.detach().abs()
            s_base, s_target = w * base[(t, name)], w * target[(t, name)]
            k = int(ratio * s_target.shape[1])
            top = torch.zeros_like(w)
            top.scatter_(1, torch.sort(s_target, dim=1, descending=True)[1][:, :k], 1)
            skilled_t = (s_target > s_base) & top.bool()
            union[name] = union.get(name, torch.zeros_like(skilled_t)) | skilled_t
    return union, target


def test_wanda_mask_matches_the_official_computation(tiny_pipe):
    """Both guidance halves recorded and k truncated: 0.09 x 64 columns is k = 5 (rounding would give 6)."""
    from eraselab.models import encode_prompts
    from eraselab.prune.wanda import column_norms
    from eraselab.prune.masks import linear_layers
    concept, neutral = ["a red cat", "a red dog", "red"], ["a cat", "a dog", "a"]
    seeds, guidance = [3, 4, 5], 5.0
    p = {"parameters": "ffn", "ratio": 0.09, "steps": 6, "timesteps": 3, "batch_size": 2}
    official, official_norms = _official_conceptprune(tiny_pipe, concept, neutral, seeds, guidance,
                                                      p["steps"], p["timesteps"], p["ratio"])
    layers = linear_layers(tiny_pipe.unet, "ffn")
    assert {m.in_features for _, m in layers} == {64}
    ours = column_norms(tiny_pipe, layers, encode_prompts(tiny_pipe, concept), seeds, [guidance] * 3, p)
    for (t, name), norm in official_norms.items():
        torch.testing.assert_close(ours[t][name], norm, rtol=1e-4, atol=1e-5)
    mask, record = wanda_mask(tiny_pipe, encode_prompts(tiny_pipe, concept), encode_prompts(tiny_pipe, neutral),
                              seeds, [guidance] * 3, p)
    dense = {n: torch.zeros(s, dtype=torch.bool).view(-1) for n, s in mask.shapes.items()}
    for n, i in mask.indices.items():
        dense[n][i] = True
    assert sorted(mask.indices) == sorted(f"{n}.weight" for n, w in official.items() if w.any())
    for name, want in official.items():
        assert torch.equal(dense[f"{name}.weight"].view(want.shape), want), name


def test_attribution_guided_mask_prunes_columns_and_rows(tiny_pipe):
    unet = tiny_pipe.unet
    ff = next(n for n, _ in unet.named_modules() if n.endswith("ff.net.2"))
    k = ff.replace("ff.net.2", "attn2.to_k")
    table = pd.DataFrame({"layer": [ff, ff, ff, k, k], "site": ["ffn"] * 3 + ["to_k"] * 2,
                          "neuron": [0, 1, 2, 0, 1], "concept": [1.0, 9.0, 2.0, 5.0, 1.0],
                          "neutral": [1.0, 1.0, 1.0, 1.0, 1.0]})
    top = top_neurons(table, ["ffn", "to_k"], ratio=0.34, score="difference")
    assert sorted(zip(top["site"], top["neuron"])) == [("ffn", 1), ("to_k", 0)]
    mask = neuron_mask(unet, top)
    keep = mask.keep()
    assert (keep[f"{ff}.weight"][:, 1] == 0).all() and keep[f"{ff}.weight"].sum() == keep[f"{ff}.weight"].numel() - keep[f"{ff}.weight"].shape[0]
    assert (keep[f"{k}.weight"][0] == 0).all() and (keep[f"{k}.weight"][1:] == 1).all()


def test_erase_on_a_mask_keeps_pruned_weights_zero(tiny_pipe_dir, tmp_path):
    """ESD on a mask: the delta holds the pruned tensors, zero where masked, and base + delta is that model."""
    from eraselab.delta import load_delta
    from eraselab.erase.stage import run
    from eraselab.models import load_pipeline, load_variant
    pipe = load_pipeline(tiny_pipe_dir)
    mask = _random_mask(pipe, 0.1)
    save_mask(tmp_path / "mask.safetensors", mask, {})
    spec = {"method_name": "esd-x", "seed": 0, "concept": {"name": "cat", "type": "object"},
            "method": {"algorithm": "esd", "train": "full", "iterations": 2, "lr": 1e-3, "negative_guidance": 1.0,
                       "sampling": "frozen", "ddim_steps": 3, "start_guidance": 3.0, "batch_size": 1,
                       "cache_trajectories": 1, "checkpoint_every": 100}}
    run(tiny_pipe_dir, tmp_path / "delta.safetensors", spec, mask=tmp_path / "mask.safetensors")
    tensors, meta = load_delta(tmp_path / "delta.safetensors")
    assert meta["mask"]["pruned"] == mask.count()
    erased = dict(load_variant(tiny_pipe_dir, tmp_path / "delta.safetensors").unet.named_parameters())
    for n, idx in mask.indices.items():
        assert (tensors["unet." + n].view(-1)[idx] == 0).all()
        assert (erased[n].detach().view(-1)[idx] == 0).all()
    # trained, not only pruned: some unmasked weight moved
    base = dict(pipe.unet.named_parameters())
    assert any(not torch.equal(base[n], erased[n]) for n in base if n not in mask.indices)


def test_prune_only_delta_is_the_mask(tiny_pipe_dir, tmp_path):
    from eraselab.delta import load_delta
    from eraselab.erase.stage import run
    from eraselab.models import load_pipeline
    mask = _random_mask(load_pipeline(tiny_pipe_dir), 0.1)
    save_mask(tmp_path / "mask.safetensors", mask, {})
    spec = {"method_name": "prune-only", "seed": 0, "concept": {"name": "cat", "type": "object"},
            "method": {"algorithm": "identity"}}
    run(tiny_pipe_dir, tmp_path / "delta.safetensors", spec, mask=tmp_path / "mask.safetensors")
    tensors, _ = load_delta(tmp_path / "delta.safetensors")
    assert sorted(tensors) == sorted("unet." + n for n in mask.indices)
    base = dict(load_pipeline(tiny_pipe_dir).unet.named_parameters())
    for n, idx in mask.indices.items():
        expected = base[n].detach().clone().view(-1)
        expected[idx] = 0
        assert torch.equal(tensors["unet." + n].view(-1), expected)


def _pairs(tmp_path):
    path = tmp_path / "pairs.csv"
    pd.DataFrame({"prompt": ["a red cat", "a blue cat", "a cat at night"],
                  "prompt_without": ["a red dog", "a blue dog", "a dog at night"]}).to_csv(path, index=False)
    return path


def test_wanda_and_attribution_guided_prune_stages(tiny_pipe_dir, tmp_path):
    """The CLI stages: a ConceptPrune mask on ff.net.2, and a mask from the base model's attribution table."""
    import json

    from eraselab.cli import main
    from eraselab.models import load_pipeline
    pairs = _pairs(tmp_path)
    wanda = {"algorithm": "wanda", "parameters": "ffn", "ratio": 0.1, "steps": 4, "timesteps": 2,
             "max_prompts": None, "batch_size": 3}
    spec = {"pruning_name": "w", "pruning": wanda, "concept": {"name": "cat"}, "seed": 0, "guidance": 5.0}
    assert main(["prune", "--base", str(tiny_pipe_dir), "--pairs", str(pairs), "--spec", json.dumps(spec),
                 "--out", str(tmp_path / "w.safetensors")]) == 0
    mask, meta = load_mask(tmp_path / "w.safetensors")
    unet = load_pipeline(tiny_pipe_dir).unet
    layers = [n for n, _ in unet.named_modules() if n.endswith("ff.net.2")]
    assert set(mask.indices) <= {f"{n}.weight" for n in layers} and mask.count() > 0
    # at most k = round(0.1 x in) weights per row and step, over 2 steps
    for n, idx in mask.indices.items():
        rows, cols = mask.shapes[n]
        per_row = torch.bincount(idx // cols, minlength=rows)
        assert per_row.max() <= 2 * max(1, round(0.1 * cols))
    assert len(meta["new_weights_per_step"]) == 2 and sum(meta["new_weights_per_step"]) == mask.count()
    assert meta["pruned_fraction_of_unet"] == pytest.approx(mask.count() / sum(p.numel() for p in unet.parameters()))

    attribution = {"sites": ["ffn", "to_k"], "steps": 4, "record_steps": 2, "max_prompts": None, "batch_size": 3}
    spec = {"attribution": attribution, "seed": 0, "guidance": 5.0}
    table_path = tmp_path / "base.parquet"
    assert main(["attribute", "--base", str(tiny_pipe_dir), "--pairs", str(pairs), "--spec", json.dumps(spec),
                 "--out", str(table_path)]) == 0
    table = pd.read_parquet(table_path)
    assert set(table["site"]) == {"ffn", "to_k"}
    assert (table["difference"] == table["concept"] - table["neutral"]).all()
    spec = {"pruning_name": "a", "pruning": {"algorithm": "attribution", "sites": ["ffn"], "ratio": 0.05,
                                            "score": "difference"}, "concept": {"name": "cat"}, "seed": 0,
            "guidance": 5.0}
    assert main(["prune", "--base", str(tiny_pipe_dir), "--attribution", str(table_path), "--spec",
                 json.dumps(spec), "--out", str(tmp_path / "a.safetensors")]) == 0
    mask, meta = load_mask(tmp_path / "a.safetensors")
    ffn = table[table["site"] == "ffn"]
    assert meta["neurons"] == {"ffn": max(1, round(0.05 * len(ffn)))}
    best = ffn.nlargest(1, "difference").iloc[0]
    keep = mask.keep()[f"{best['layer']}.weight"]
    assert (keep[:, int(best["neuron"])] == 0).all()


def test_learned_mask_starts_unpruned_and_prunes_at_most_the_ratio(tiny_pipe):
    """P-ESD's scored mask: no pruning at step 0, a hard top-ratio mask after training, weights untouched."""
    from eraselab.erase.common import Concept
    from eraselab.prune.learned import ScoredMask, learned_mask
    m = ScoredMask(torch.Size([4, 5]), 0.1)
    w = torch.randn(4, 5)
    assert torch.equal(m(w), w)
    m.scores.data[1, 2], m.scores.data[0, 0] = 3.0, 2.0   # top 2 of 20 (ratio 0.1)
    assert m(w)[1, 2] == 0 and m(w)[0, 0] == 0 and (m(w) != 0).sum() == (w != 0).sum() - 2
    m(w).sum().backward()
    assert torch.allclose(m.scores.grad, -w)                # straight through: d(W(1-h))/ds = -W

    before = _state(tiny_pipe)
    p = {"parameters": "ffn", "ratio": 0.05,
         "objective": {"iterations": 3, "lr": 0.01, "negative_guidance": 1.0, "sampling": "frozen", "ddim_steps": 3,
                       "start_guidance": 3.0, "batch_size": 1, "cache_trajectories": 1, "checkpoint_every": 100}}
    mask, record = learned_mask(tiny_pipe, Concept.from_config("cat", {"type": "object"}), p, seed=0)
    assert len(record["losses"]) == 3 and mask.count() > 0
    for n, idx in mask.indices.items():
        assert n.endswith("ff.net.2.weight") and idx.numel() <= max(1, round(0.05 * torch.Size(mask.shapes[n]).numel()))
    after = tiny_pipe.unet.state_dict()
    assert sorted(after) == sorted(before) and all(torch.equal(before[k], after[k]) for k in before)


def test_pruning_table_joins_masks_attacks_and_attribution(tmp_path):
    import json

    from eraselab.prune.report import markdown, pruning_table
    summary = pd.DataFrame({"model": "cw", "target": "tri", "prune": ["none", "w"], "method": "esd-x",
                            "base_rate": 1.0, "erased_rate": [0.5, 0.1], "others_max_drop_points": [2.0, 8.0],
                            "erased": ["yes", "yes"], "preserved": ["yes", "yes"]})
    attacks = pd.DataFrame({"model": "cw", "target": "tri", "prune": ["none", "w"], "method": "esd-x",
                            "attack": "ud", "pre_rate": [0.5, 0.1], "asr": [0.9, 0.3]})
    masks, attributions = [], []
    for seed, (pruned, share) in enumerate(((11, 1.0), (13, 0.5))):   # two seeds: the table shows their means
        (tmp_path / f"mask{seed}.json").write_text(json.dumps({"pruned": pruned, "pruned_fraction_of_unet": 0.001}))
        (tmp_path / f"a{seed}.json").write_text(json.dumps({"all": {"spearman_rho_delta": 0.4,
                                                                    "top_k_reactivated_share": share}}))
        masks.append({"model": "cw", "target": "tri", "seed": seed, "prune": "w", "path": tmp_path / f"mask{seed}.json"})
        attributions.append({"model": "cw", "variant": f"tri/seed{seed}/none/esd-x", "attack": "ud",
                             "path": tmp_path / f"a{seed}.json"})
    df = pruning_table(summary, attacks, masks, attributions)
    assert df["pruned_weights"].tolist() == [0, 12] and df["asr_ud"].tolist() == [0.9, 0.3]
    assert df["top_k_reactivated_ud"].iloc[0] == 0.75 and pd.isna(df["top_k_reactivated_ud"].iloc[1])
    md = markdown(df)
    assert "| tri | w | esd-x | 12 (0.10%) | 100.0% | 10.0% | 8.0 pt | 10.0% | 30.0% |  |  |" in md
    from eraselab.prune.report import html
    page = html(df)
    assert page.count("<tr") == 3 and "12 (0.10%)" in page and "30.0%" in page   # header + two variants
