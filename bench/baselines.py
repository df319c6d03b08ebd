"""The plain baselines: the same work as eraselab's stages, written the most straightforward way.

Each is what one would write from the paper and the diffusers documentation,
with no caching and no batching beyond what the library does by itself. The
benchmarks time eraselab against these in the same run.
"""
from __future__ import annotations

import copy

import numpy as np
import torch


def plain_esd(pipe, prompt: str, p: dict, seed: int, progress=None) -> list[float]:
    """ESD as in the paper's script: every iteration samples x_t by partial DDIM from scratch.

    Per iteration: fresh noise, DDIM with the model being trained (classifier-free
    guidance as diffusers batches it) to a random step t_enc, then the frozen
    model's e_0 and e_p in two separate calls and one Adam step on
    ||eps(x_t, c, t) - (e_0 - eta (e_p - e_0))||^2. The random draws are those of
    eraselab's ``sampling: ddim`` (same seed -> same t_enc, noise, t), so both do
    exactly the same work. Returns the loss curve.
    """
    from diffusers import DDIMScheduler

    from eraselab.erase.common import select_parameters
    from eraselab.models import encode_prompts
    unet = pipe.unet
    frozen = copy.deepcopy(unet).requires_grad_(False).eval()
    cond, uncond = encode_prompts(pipe, [prompt]), encode_prompts(pipe, [""])
    unet.requires_grad_(False)
    named = dict(unet.named_parameters())
    params = [named[n].requires_grad_(True) for n in select_parameters(unet, p["train"])]
    opt = torch.optim.Adam(params, lr=p["lr"])
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    n, b = p["ddim_steps"], p["batch_size"]
    sched.set_timesteps(n, device=pipe.device)
    t_max = pipe.scheduler.config.num_train_timesteps
    c, s = unet.config.in_channels, unet.config.sample_size
    losses = []
    for it in range(p["iterations"]):
        g = torch.Generator().manual_seed(seed * 1_000_003 + it)
        torch.randint(1, (1,), generator=g)                      # which erase prompt: there is one
        t_enc = int(torch.randint(n, (1,), generator=g))
        x = torch.randn((b, c, s, s), generator=g).to(pipe.device) * sched.init_noise_sigma
        with torch.no_grad():
            for t in sched.timesteps[:min(n, n + 1 - t_enc)]:
                e_u, e_c = unet(torch.cat([x, x]), t, torch.cat([uncond.expand(b, -1, -1),
                                                                cond.expand(b, -1, -1)])).sample.chunk(2)
                x = sched.step(e_u + p["start_guidance"] * (e_c - e_u), t, x).prev_sample
        lo, hi = round(t_enc / n * t_max), round((t_enc + 1) / n * t_max)
        t = torch.randint(lo, hi, (b,), generator=g).to(pipe.device)
        with torch.no_grad():
            e_0 = frozen(x, t, uncond.expand(b, -1, -1)).sample
            e_p = frozen(x, t, cond.expand(b, -1, -1)).sample
        pred = unet(x, t, cond.expand(b, -1, -1)).sample
        loss = torch.nn.functional.mse_loss(pred, e_0 - p["negative_guidance"] * (e_p - e_0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if progress is not None:
            progress.update(1)
    unet.eval().requires_grad_(False)
    return losses


def bare_generation(pipe, prompts: list[str], seeds: list[int], guidance: float, steps: int) -> np.ndarray:
    """One call of diffusers' StableDiffusionPipeline on the whole batch (uint8 N x H x W x 3)."""
    gens = [torch.Generator(device=pipe.device).manual_seed(int(s)) for s in seeds]
    images = pipe(prompt=list(prompts), generator=gens, num_inference_steps=steps, guidance_scale=guidance,
                  output_type="np").images
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def nudenet_one_by_one(detector, images: np.ndarray) -> list:
    """NudeNet's documented call, one image at a time."""
    return [detector.detect(np.ascontiguousarray(im[..., ::-1])) for im in images]


def clip_one_by_one(clip, images: np.ndarray, text: torch.Tensor) -> torch.Tensor:
    """CLIP zero-shot probabilities, one image per forward pass."""
    from PIL import Image
    device = next(clip.model.parameters()).device
    out = []
    with torch.no_grad():
        for im in images:
            x = clip.preprocess(Image.fromarray(im)).unsqueeze(0).to(device)
            e = torch.nn.functional.normalize(clip.model.encode_image(x).float(), dim=-1).to(text.device)
            out.append((100 * e @ text.T).softmax(-1))
    return torch.cat(out)


def plain_uce(pipe, concept, p: dict) -> dict[str, torch.Tensor]:
    """UCE's closed form (its eq. 7) solved layer by layer, as the official script does:
    W* = (lamb W + s_e V^T K + s_p W P^T P)(lamb I + s_e K^T K + s_p P^T P)^-1 for each K/V projection.
    Same tokens and scales as eraselab's ``uce`` (its Encodings pick them); the inverse in float64,
    as eraselab's solve, so that both give the same weights."""
    from eraselab.erase.common import cross_attention_kv
    from eraselab.erase.uce import Encodings, erase_tokens, preserve_prompts, preserve_tokens, uce_prompts
    enc = Encodings(pipe, uce_prompts(concept, p))
    keys, guide = erase_tokens(enc, list(concept.erase), concept.guides(), p["tokens"])
    kept = preserve_prompts(concept, p)
    pres = preserve_tokens(enc, kept, p["tokens"])
    s_p = p["preserve_scale"] if p.get("preserve_scale") is not None else max(0.1, 1 / max(1, len(kept)))
    named = dict(pipe.unet.named_parameters())
    out = {}
    for name in cross_attention_kv(pipe.unet):
        w = named[name]
        values = guide @ w.T
        mat1 = p["lamb"] * w + p["erase_scale"] * values.T @ keys
        mat2 = p["lamb"] * torch.eye(w.shape[1], device=w.device) + p["erase_scale"] * keys.T @ keys
        if pres is not None:
            mat1 = mat1 + s_p * (pres @ w.T).T @ pres
            mat2 = mat2 + s_p * pres.T @ pres
        w.data = (mat1.double() @ torch.inverse(mat2.double())).float()   # fp64 inverse: the Gram is ill-conditioned
        out[f"unet.{name}"] = w.detach().clone()
    return out
