"""ESD: the right parameters train, the loss falls, the concept goes, and a delta reproduces the model."""
import numpy as np
import pytest
import torch

from eraselab.delta import apply_delta, save_delta
from eraselab.erase.common import Concept, select_parameters
from eraselab.runtime import DivergenceError
from eraselab.erase.esd import esd

from conftest import KillAt, ROOT

CONCEPT = Concept(name="triangle", type="object", erase=("triangle",))
FAST = dict(algorithm="esd", train="xattn", iterations=6, lr=1e-3, negative_guidance=1.0, sampling="frozen",
            ddim_steps=4, start_guidance=3.0, batch_size=2, cache_trajectories=2)


def test_parameter_sets(tiny_pipe):
    unet = tiny_pipe.unet
    x, u, s = (select_parameters(unet, m) for m in ("xattn", "noxattn", "xattn-strict"))
    assert x and all("attn2." in n for n in x)
    assert set(s) < set(x) and all(".to_k." in n or ".to_v." in n for n in s)
    assert not any("attn2." in n or n.startswith(("time_embedding.", "conv_out.", "conv_norm_out.")) for n in u)
    assert set(x) | set(u) | {n for n, _ in unet.named_parameters() if n.startswith(("time_emb", "conv_out", "conv_norm_out"))} \
        == {n for n, _ in unet.named_parameters()}
    with pytest.raises(ValueError, match="allowed: xattn"):
        select_parameters(unet, "attn7")


@pytest.mark.parametrize("sampling", ["frozen", "ddim"])
def test_only_selected_parameters_change(tiny_pipe, sampling):
    before = {n: p.clone() for n, p in tiny_pipe.unet.named_parameters()}
    tensors, record = esd(tiny_pipe, CONCEPT, {**FAST, "sampling": sampling}, seed=0)
    names = {k.removeprefix("unet.") for k in tensors}
    assert names == set(select_parameters(tiny_pipe.unet, "xattn")) and len(record["losses"]) == 6
    for n, p in tiny_pipe.unet.named_parameters():
        assert torch.equal(p, before[n]) != (n in names), n


def test_same_seed_same_result_and_delta_reproduces_model(tiny_pipe_dir, tmp_path):
    from eraselab.models import load_pipeline
    a, _ = esd(load_pipeline(tiny_pipe_dir), CONCEPT, FAST, seed=1)
    pipe = load_pipeline(tiny_pipe_dir)
    b, _ = esd(pipe, CONCEPT, FAST, seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    save_delta(tmp_path / "d.safetensors", b, {})
    rebuilt = load_pipeline(tiny_pipe_dir)
    apply_delta(rebuilt, tmp_path / "d.safetensors")
    for (n, p), (_, q) in zip(pipe.unet.named_parameters(), rebuilt.unet.named_parameters()):
        assert torch.equal(p, q), n


def test_resume_after_interruption_gives_the_same_result(tiny_pipe_dir, tmp_path):
    from eraselab.checkpoint import Checkpointer
    from eraselab.models import load_pipeline
    params = {**FAST, "iterations": 8}
    whole, _ = esd(load_pipeline(tiny_pipe_dir), CONCEPT, params, seed=2)

    ckpt = Checkpointer(tmp_path / "ckpt", params, every=3)
    with pytest.raises(KeyboardInterrupt):
        esd(load_pipeline(tiny_pipe_dir), CONCEPT, params, seed=2, progress=KillAt(5), ckpt=ckpt)
    assert ckpt.load()["step"] == 3
    resumed, record = esd(load_pipeline(tiny_pipe_dir), CONCEPT, params, seed=2, ckpt=ckpt)
    assert len(record["losses"]) == 8
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_divergence_stops_with_a_clear_error(tiny_pipe):
    with pytest.raises(DivergenceError, match="ESD diverged at step 0: loss is nan"):
        esd(tiny_pipe, CONCEPT, {**FAST, "negative_guidance": float("nan")}, seed=0)


@pytest.mark.slow
def test_esd_erases_a_concept_on_conceptworld(conceptworld_pipe, conceptworld_dir):
    """On the real ConceptWorld model: the loss falls and the triangle rate at least halves."""
    from eraselab.generate import generate_images
    from eraselab.prompts import load_prompts
    from eraselab.score import make_detector
    ps = load_prompts(ROOT / "data" / "prompts" / "conceptworld" / "triangle.csv")
    detector = make_detector({"kind": "conceptworld", "attribute": "shape", "value": "triangle"}, conceptworld_dir)

    def rate():
        images = generate_images(conceptworld_pipe, ps.prompts, ps.seeds, ps.guidances, steps=20, batch_size=64)
        return detector(images)["detected"].mean()

    before = rate()
    # config/config.yaml's ESD-x settings for ConceptWorld
    params = {**FAST, "iterations": 600, "lr": 1e-3, "negative_guidance": 3.0, "ddim_steps": 25, "batch_size": 4,
              "cache_trajectories": 16}
    concept = Concept(name="triangle", type="object", erase=("a triangle",))
    _, record = esd(conceptworld_pipe, concept, params, seed=0)
    after = rate()
    losses = np.array(record["losses"])
    assert losses[-30:].mean() < losses[:30].mean()
    assert before >= 0.7 and after <= before / 2, (before, after)


def test_several_erase_prompts_are_all_trained(tiny_pipe):
    """concept.erase with several prompts: one is drawn per iteration, and each one moves toward its target."""
    from eraselab.models import encode_prompts
    from eraselab.erase.finetune import frozen_copy, predict
    two = Concept(name="shapes", type="object", erase=("triangle", "a red circle"))
    frozen = frozen_copy(tiny_pipe.unet)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(8, 4, 8, 8, generator=g), torch.linspace(50, 950, 8).long()
    conds, uncond = encode_prompts(tiny_pipe, list(two.erase)).split(1), encode_prompts(tiny_pipe, [""])

    @torch.no_grad()
    def distance_to_targets(unet):
        out = []
        for c in conds:
            e_0, e_c = predict(frozen, x, t, [uncond, c])
            out.append(torch.nn.functional.mse_loss(predict(unet, x, t, [c])[0], e_0 - 2.0 * (e_c - e_0)).item())
        return out

    before = distance_to_targets(tiny_pipe.unet)
    _, record = esd(tiny_pipe, two, {**FAST, "iterations": 16, "lr": 1e-4, "negative_guidance": 2.0}, seed=0)
    after = distance_to_targets(tiny_pipe.unet)
    assert sum(record["prompt_iterations"]) == 16 and min(record["prompt_iterations"]) >= 3
    assert after[0] < before[0] and after[1] < before[1], (before, after)


def test_erase_from_trains_the_source_prompt_toward_its_guided_target(tiny_pipe_dir):
    """Erase-from: target eps*(c_from) - eta (eps*(c) - eps*("")): with eta 0 the untrained model already hits it."""
    from eraselab.models import load_pipeline
    params = {**FAST, "iterations": 1, "negative_guidance": 0.0}
    _, plain = esd(load_pipeline(tiny_pipe_dir), CONCEPT, params, seed=0)
    _, source = esd(load_pipeline(tiny_pipe_dir), CONCEPT, {**params, "erase_from": "a circle"}, seed=0)
    assert plain["losses"][0] > 1e-6 and source["losses"][0] < 1e-10
    _, guided = esd(load_pipeline(tiny_pipe_dir), CONCEPT, {**params, "erase_from": "a circle",
                                                           "negative_guidance": 1.0}, seed=0)
    assert guided["losses"][0] > 1e-6


@pytest.mark.parametrize("sampling", ["ddim", "frozen"])
def test_erase_from_draws_x_t_along_the_source_prompt(tiny_pipe_dir, sampling):
    """The official diffusers esd_sd.py with --erase_from: x_t is generated from c_from, and the loss is
    MSE(eps(x_t, c_from), eps*(x_t, c_from) - eta (eps*(x_t, c) - eps*(x_t, ""))). One iteration, recomputed:
    the first state drawn with our generator, denoised along c_from, the loss taken from the official formula."""
    from eraselab.erase.finetune import ddim_scheduler, denoise, latent_shape
    from eraselab.models import encode_prompts, load_pipeline
    params = {**FAST, "iterations": 1, "negative_guidance": 1.5, "sampling": sampling, "batch_size": 1,
              "cache_trajectories": 1, "erase_from": "a circle"}
    _, record = esd(load_pipeline(tiny_pipe_dir), CONCEPT, params, seed=3)
    pipe = load_pipeline(tiny_pipe_dir)
    c, c_from, empty = (encode_prompts(pipe, [s]) for s in ("triangle", "a circle", ""))
    sched, n = ddim_scheduler(pipe, params["ddim_steps"]), params["ddim_steps"]
    g = torch.Generator().manual_seed(3 * 1_000_003)
    torch.randint(1, (1,), generator=g)                      # which erase prompt (there is one)
    if sampling == "ddim":
        t_enc = int(torch.randint(n, (1,), generator=g))
        x = torch.randn(latent_shape(pipe, 1), generator=g) * sched.init_noise_sigma
        x_t = denoise(pipe.unet, sched, x, c_from, empty, params["start_guidance"], min(n, n + 1 - t_enc))
        t_max = pipe.scheduler.config.num_train_timesteps
        t = torch.randint(round(t_enc / n * t_max), round((t_enc + 1) / n * t_max), (1,), generator=g)
    else:
        x = torch.randn(latent_shape(pipe, 1), generator=torch.Generator().manual_seed(3)) * sched.init_noise_sigma
        traj, k = int(torch.randint(1, (1,), generator=g)), int(torch.randint(n, (1,), generator=g))
        x_t, t = denoise(pipe.unet, sched, x, c_from, empty, params["start_guidance"], k), sched.timesteps[k:k + 1]
    with torch.no_grad():
        e = {name: pipe.unet(x_t, t, cond).sample for name, cond in (("c", c), ("from", c_from), ("0", empty))}
    official = torch.nn.functional.mse_loss(e["from"], e["from"] - 1.5 * (e["c"] - e["0"])).item()
    assert record["losses"][0] == pytest.approx(official, rel=1e-4)
