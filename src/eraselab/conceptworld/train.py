"""Train ConceptWorld's base model and its attribute classifier, on the CPU.

Three phases, each checkpointed so a killed run resumes where it stopped:
1. the attribute classifier, on fresh renders;
2. the VAE, on the training renders;
3. the UNet and the CLIP text encoder together, on VAE latents of the renders
   with template captions (10% dropped, for classifier-free guidance).
Then the quality bars are measured: classifier accuracy on held-out renders,
and how often images generated for held-out prompts show every attribute the
prompt asked for.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..artifacts import atomic_path, write_json, write_manifest
from ..checkpoint import Checkpointer, checkpoint_dir_for
from ..generate import generate_images
from ..runtime import check_finite, progress, stage
from .architecture import ArchConfig, assemble_pipeline, build_scheduler, build_text_encoder, build_unet, build_vae
from .captions import caption, prompt_for
from .classifier import accuracy, predict, train_classifier
from .world import ATTRIBUTES, World, render_batch, world_to_dict


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    n_images: int = 20000
    captions_per_image: int = 4
    holdout_fraction: float = 0.1
    classifier_steps: int = 400
    classifier_batch: int = 128
    vae_steps: int = 1000
    vae_batch: int = 32
    vae_lr: float = 2e-3
    unet_steps: int = 2000
    unet_batch: int = 64
    unet_lr: float = 1e-3
    min_snr_gamma: float = 5.0
    warmup_steps: int = 100
    cond_dropout: float = 0.1
    ema_decay: float = 0.999
    eval_prompts: int = 200
    eval_classifier_images: int = 2000
    eval_steps: int = 50
    eval_guidance: float = 3.0
    checkpoint_every: int = 200
    seed: int = 0


def split_combos(world: World, holdout_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """All attribute combinations, split into those captions train on and held-out ones."""
    combos = [dict(zip(ATTRIBUTES, c)) for c in itertools.product(
        world.shapes, world.colours, world.styles, world.backgrounds)]
    order = np.random.default_rng(seed).permutation(len(combos))
    n_held = int(round(holdout_fraction * len(combos)))
    return [combos[i] for i in order[n_held:]], [combos[i] for i in order[:n_held]]


def make_dataset(world: World, s: TrainSettings, tokenizer):
    """Renders of training combinations, with several tokenized captions each."""
    train_combos, _ = split_combos(world, s.holdout_fraction, s.seed)
    rng = np.random.default_rng([s.seed, 1])
    labels = [train_combos[i] for i in rng.integers(len(train_combos), size=s.n_images)]
    images = render_batch(world, labels, seed=s.seed + 1)
    texts = [caption(world, lab, rng)[0] for lab in labels for _ in range(s.captions_per_image)]
    ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    return images, ids.view(s.n_images, s.captions_per_image, -1)


def heldout_prompts(world: World, s: TrainSettings) -> list[tuple[str, dict]]:
    """Prompts for combinations no training caption described."""
    _, held = split_combos(world, s.holdout_fraction, s.seed)
    rng = np.random.default_rng([s.seed, 2])
    return [prompt_for(world, held[i % len(held)], rng) for i in range(s.eval_prompts)]


def _lr(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def to_pixels(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def train_vae(vae, images: np.ndarray, s: TrainSettings, ckpt: Checkpointer) -> None:
    """Train the VAE as a deterministic autoencoder on the posterior mean, then pin its variance.

    KL-regularised sampling noise is what SD's VAE trains with, but it needs far
    more steps than a 2-core CPU can afford; decoding the posterior mean with an
    L1 + L2 loss learns sharp reconstructions in minutes. The log-variance head
    is then fixed at AutoencoderKL's floor, so ``latent_dist.sample()`` equals
    the mean and every stage can use the VAE exactly as it would SD's.
    """
    opt = torch.optim.AdamW(vae.parameters(), lr=s.vae_lr, weight_decay=0.0)
    start = 0
    if (state := ckpt.load()) is not None:
        vae.load_state_dict(state["vae"]), opt.load_state_dict(state["opt"])
        start = state["step"]
    bar = progress(s.vae_steps, "train VAE", initial=start)
    for step in range(start, s.vae_steps):
        g = torch.Generator().manual_seed(s.seed * 7919 + step)
        x = to_pixels(images[torch.randint(len(images), (s.vae_batch,), generator=g).numpy()])
        error = vae.decode(vae.encode(x).latent_dist.mean).sample - x
        loss = error.abs().mean() + error.pow(2).mean()
        check_finite(loss, "ConceptWorld VAE training", step, diverged("vae_lr"))
        for group in opt.param_groups:
            group["lr"] = _lr(step, s.vae_steps, s.vae_lr, warmup=40)
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if ckpt.due(step + 1):
            ckpt.save(step + 1, {"vae": vae.state_dict(), "opt": opt.state_dict()})
    bar.close()
    pin_variance(vae)


@torch.no_grad()
def pin_variance(vae, logvar: float = -30.0) -> None:
    """Make the posterior's log-variance a constant at AutoencoderKL's clamp floor."""
    conv = vae.quant_conv
    c = conv.out_channels // 2
    conv.weight[c:] = 0
    conv.bias[c:] = logvar


@torch.no_grad()
def encode_all(vae, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    return torch.cat([vae.encode(to_pixels(images[i:i + batch])).latent_dist.mean
                      for i in range(0, len(images), batch)])


def min_snr_weights(scheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights for epsilon prediction (Hang et al., 2023): min(SNR, gamma) / SNR.

    Down-weights the many easy low-noise timesteps, which speeds convergence
    several-fold; gamma <= 0 gives plain MSE.
    """
    if gamma <= 0:
        return torch.ones_like(t, dtype=torch.float32)
    alpha_bar = scheduler.alphas_cumprod[t]
    snr = alpha_bar / (1 - alpha_bar)
    return snr.clamp(max=gamma) / snr


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1 - decay)


def train_denoiser(unet, text_encoder, latents, scale: float, ids, empty_ids, scheduler,
                   s: TrainSettings, ckpt: Checkpointer):
    """Joint UNet + text-encoder training with epsilon prediction; returns EMA copies."""
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=s.unet_lr, weight_decay=0.0)
    ema_unet, ema_text = copy.deepcopy(unet), copy.deepcopy(text_encoder)
    start = 0
    state = ckpt.load()
    if state is not None:
        unet.load_state_dict(state["unet"]), text_encoder.load_state_dict(state["text"])
        ema_unet.load_state_dict(state["ema_unet"]), ema_text.load_state_dict(state["ema_text"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
    n, k = ids.shape[:2]
    bar = progress(s.unet_steps, "train UNet+text", initial=start)
    for step in range(start, s.unet_steps):
        g = torch.Generator().manual_seed(s.seed * 104729 + step)
        idx = torch.randint(n, (s.unet_batch,), generator=g)
        tok = ids[idx, torch.randint(k, (s.unet_batch,), generator=g)]
        drop = torch.rand(s.unet_batch, generator=g) < s.cond_dropout
        tok[drop] = empty_ids
        z = latents[idx] * scale
        noise = torch.randn(z.shape, generator=g)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (s.unet_batch,), generator=g)
        pred = unet(scheduler.add_noise(z, noise, t), t, text_encoder(tok)[0]).sample
        per_sample = (pred - noise).pow(2).mean(dim=(1, 2, 3))
        loss = (per_sample * min_snr_weights(scheduler, t, s.min_snr_gamma)).mean()
        check_finite(loss, "ConceptWorld UNet+text training", step, diverged("unet_lr"))
        for group in opt.param_groups:
            group["lr"] = _lr(step, s.unet_steps, s.unet_lr, s.warmup_steps)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(s.ema_decay, (1 + step) / (10 + step))
        _ema_update(ema_unet, unet, decay), _ema_update(ema_text, text_encoder, decay)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if ckpt.due(step + 1):
            ckpt.save(step + 1, {"unet": unet.state_dict(), "text": text_encoder.state_dict(),
                                 "ema_unet": ema_unet.state_dict(), "ema_text": ema_text.state_dict(),
                                 "opt": opt.state_dict()})
    bar.close()
    return ema_unet, ema_text


def diverged(lr_key: str) -> str:
    """What to do when a training phase diverges (runtime.check_finite's advice)."""
    return f"lower conceptworld.{lr_key}; earlier phases' checkpoints are kept"


def latent_scale(latents) -> float:
    """SD's latent scaling factor: 1 / std of the latents, so the UNet sees unit variance."""
    return float(1.0 / latents.std())


def measure_quality(pipe, classifier, world: World, s: TrainSettings) -> dict:
    """The quality bars: classifier accuracy, and prompted attributes shown by generated images."""
    prompts = heldout_prompts(world, s)
    images = generate_images(pipe, [p for p, _ in prompts], seeds=list(range(len(prompts))),
                             guidances=[s.eval_guidance] * len(prompts), steps=s.eval_steps,
                             batch_size=100)
    pred = predict(classifier, world, images)
    hits = [all(p[a] == v for a, v in named.items()) for p, (_, named) in zip(pred, prompts)]
    per_attr = {a: float(np.mean([p[a] == named[a] for p, (_, named) in zip(pred, prompts) if a in named]))
                for a in ATTRIBUTES}
    return {"classifier_accuracy": accuracy(classifier, world, s.eval_classifier_images, seed=s.seed + 99),
            "generation_all_attributes": float(np.mean(hits)),
            "generation_per_attribute": per_attr, "n_heldout_prompts": len(prompts),
            "examples": images[:64]}


def train(out_dir: Path, s: TrainSettings, arch: ArchConfig, world: World, ckpt_dir: Path) -> dict:
    """Train classifier, VAE and UNet+text encoder; write everything to out_dir; return the quality bars."""
    from ..tokenizer import build_clip_tokenizer
    from .classifier import save_classifier

    # a checkpoint resumes only a run with the same settings and architecture
    key = {"settings": dataclasses.asdict(s), "architecture": dataclasses.asdict(arch)}
    torch.manual_seed(s.seed)
    tokenizer = build_clip_tokenizer(ckpt_dir / "tokenizer", arch.max_tokens)
    images, ids = make_dataset(world, s, tokenizer)

    clf_ckpt = Checkpointer(ckpt_dir / "classifier", key, 1)
    if (state := clf_ckpt.load()) is not None:
        from .classifier import AttributeClassifier
        classifier = AttributeClassifier({a: len(world.values(a)) for a in ATTRIBUTES})
        classifier.load_state_dict(state["model"])
        classifier.eval()
    else:
        bar = progress(s.classifier_steps, "train classifier")
        classifier = train_classifier(world, s.classifier_steps, s.classifier_batch, s.seed, progress=bar)
        bar.close()
        clf_ckpt.save(s.classifier_steps, {"model": classifier.state_dict()})

    torch.manual_seed(s.seed)
    vae = build_vae(arch)
    train_vae(vae, images, s, Checkpointer(ckpt_dir / "vae", key, s.checkpoint_every))
    vae.eval()
    latents = encode_all(vae, images)
    scale = latent_scale(latents)
    vae.register_to_config(scaling_factor=scale)

    torch.manual_seed(s.seed + 1)
    unet, text_encoder, scheduler = build_unet(arch), build_text_encoder(arch), build_scheduler()
    empty = tokenizer("", padding="max_length", max_length=arch.max_tokens, return_tensors="pt").input_ids[0]
    unet, text_encoder = train_denoiser(unet, text_encoder, latents, scale, ids, empty, scheduler, s,
                                        Checkpointer(ckpt_dir / "denoiser", key, s.checkpoint_every))
    unet.eval(), text_encoder.eval()
    pipe = assemble_pipeline(vae, text_encoder, tokenizer, unet, scheduler)
    quality = measure_quality(pipe, classifier, world, s)
    examples = quality.pop("examples")

    pipe.save_pretrained(out_dir / "pipeline", safe_serialization=True)
    shutil.rmtree(out_dir / "pipeline" / "tokenizer", ignore_errors=True)  # rebuilt offline on load
    save_classifier(classifier, world, out_dir / "classifier")
    write_json(out_dir / "world.json", world_to_dict(world))
    return quality, examples


# --- the train_conceptworld stage: config slice -> trained weights directory with its quality record

CLASSIFIER_BAR, GENERATION_BAR = 0.95, 0.80


def settings_from_spec(spec: dict) -> tuple[TrainSettings, ArchConfig]:
    arch = dict(spec.get("architecture", {}))
    for key in ("vae_channels", "unet_channels"):
        if key in arch:
            arch[key] = tuple(arch[key])
    names = {f.name for f in dataclasses.fields(TrainSettings)}
    s = TrainSettings(**{k: v for k, v in spec.items() if k in names})
    return s, ArchConfig(**arch)


def run(out: str | Path, spec: dict) -> dict:
    from PIL import Image

    from ..imagesets import grid
    settings, arch = settings_from_spec(spec)
    with stage("train_conceptworld", spec, settings.seed) as run_info:
        with atomic_path(out, directory=True) as tmp:
            quality, examples = train(tmp, settings, arch, World(), checkpoint_dir_for(out))
            quality["bars"] = {
                f"classifier_accuracy >= {CLASSIFIER_BAR}": quality["classifier_accuracy"]["all"] >= CLASSIFIER_BAR,
                f"generation_all_attributes >= {GENERATION_BAR}": quality["generation_all_attributes"] >= GENERATION_BAR}
            quality["provenance"] = run_info.record()
            quality["architecture"] = dataclasses.asdict(arch)
            write_json(tmp / "quality.json", quality)
            Image.fromarray(grid(examples)).save(tmp / "examples.png")
            write_manifest(tmp)
        shutil.rmtree(checkpoint_dir_for(out), ignore_errors=True)  # complete: checkpoints no longer needed
        if not all(quality["bars"].values()):
            print(f"[train_conceptworld] WARNING: quality bars missed: {quality['bars']}", file=sys.stderr)
    return quality
