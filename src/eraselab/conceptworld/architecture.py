"""A tiny Stable-Diffusion-architecture pipeline: same classes, smaller shapes.

The components are exactly those of SD v1 (AutoencoderKL, UNet2DConditionModel
with cross-attention transformer blocks, CLIPTextModel, CLIP BPE tokenizer,
DDIM/PNDM scheduler with SD's noise schedule), so every later stage runs the
code it would run on SD v1.4. Only widths, depths and resolution differ, and
they are configuration (``ArchConfig``), never a branch in the stage code.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class ArchConfig:
    """Shapes of an SD-v1-architecture pipeline. The defaults are ConceptWorld's."""
    image_size: int = 32
    vae_channels: tuple[int, ...] = (16, 32, 32)  # n levels -> latents at 1/2^(n-1) resolution
    vae_layers_per_block: int = 1
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (32, 64, 64)
    unet_layers_per_block: int = 1
    unet_heads: int = 8          # diffusers' SD1 `attention_head_dim`, which is the number of heads
    norm_groups: int = 8
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    max_tokens: int = 77

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae_channels) - 1)


# Stable Diffusion v1.4's shapes (CompVis/stable-diffusion-v1-4 configs): 860M-parameter UNet,
# CLIP ViT-L/14 text encoder, 8x-downsampling VAE. Used with random weights for benchmarks and tests.
SD14 = ArchConfig(image_size=512, vae_channels=(128, 256, 512, 512), vae_layers_per_block=2,
                  unet_channels=(320, 640, 1280, 1280), unet_layers_per_block=2, unet_heads=8,
                  norm_groups=32, text_width=768, text_layers=12, text_heads=12)
ARCHITECTURES = {"conceptworld": ArchConfig(), "sd14": SD14}



def sd_noise_schedule() -> dict:
    """SD v1's training noise schedule, shared by every scheduler we create."""
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                steps_offset=1)


def build_vae(a: ArchConfig):
    from diffusers import AutoencoderKL
    n = len(a.vae_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=a.latent_channels,
                         down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n,
                         block_out_channels=a.vae_channels, layers_per_block=a.vae_layers_per_block,
                         norm_num_groups=min(a.norm_groups, a.vae_channels[0]),
                         sample_size=a.image_size)


def build_unet(a: ArchConfig):
    """SD v1's block layout (cross-attention down/up blocks around a plain bottom) in miniature."""
    from diffusers import UNet2DConditionModel
    n = len(a.unet_channels)
    down = ("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1)
    return UNet2DConditionModel(sample_size=a.latent_size, in_channels=a.latent_channels,
                                out_channels=a.latent_channels, down_block_types=down,
                                up_block_types=up, block_out_channels=a.unet_channels,
                                layers_per_block=a.unet_layers_per_block,
                                cross_attention_dim=a.text_width,
                                attention_head_dim=a.unet_heads, norm_num_groups=a.norm_groups)


def build_text_encoder(a: ArchConfig):
    from transformers import CLIPTextConfig, CLIPTextModel
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=a.text_width, intermediate_size=4 * a.text_width,
                         num_hidden_layers=a.text_layers, num_attention_heads=a.text_heads,
                         max_position_embeddings=a.max_tokens, hidden_act="quick_gelu",
                         projection_dim=a.text_width, bos_token_id=49406, eos_token_id=49407,
                         pad_token_id=49407)
    return CLIPTextModel(cfg)


def build_scheduler():
    from diffusers import DDIMScheduler
    return DDIMScheduler(**sd_noise_schedule())


def assemble_pipeline(vae, text_encoder, tokenizer, unet, scheduler=None):
    """A diffusers StableDiffusionPipeline from components (no safety checker: we measure, not filter)."""
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler or build_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_random_pipeline(a: ArchConfig, out_dir, seed: int = 0) -> None:
    """A randomly initialised SD-architecture pipeline of shapes ``a``, saved as a diffusers directory.

    Shapes, not values, decide speed and memory, so SD-v1.4-shaped random weights
    stand in for SD v1.4 in benchmarks and tests, with no download.
    """
    import torch

    from ..tokenizer import build_clip_tokenizer
    torch.manual_seed(seed)
    pipe = assemble_pipeline(build_vae(a), build_text_encoder(a), build_clip_tokenizer(out_dir / "tokenizer"),
                             build_unet(a), build_scheduler())
    pipe.save_pretrained(out_dir, safe_serialization=True)


def build_random(architecture: str, out_dir: str | Path, seed: int, image_size: int | None = None) -> None:
    """Random weights with the shapes of ``architecture`` (``sd14``, ``conceptworld``), as a diffusers directory.

    ``image_size`` changes the default resolution the pipeline samples at, never a
    weight shape, so SD-v1.4-shaped weights can run at 64 px on a CPU.
    """
    from ..artifacts import atomic_path, write_json, write_manifest
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; allowed: {', '.join(ARCHITECTURES)}")
    arch = ARCHITECTURES[architecture]
    if image_size:
        arch = dataclasses.replace(arch, image_size=image_size)
    with atomic_path(out_dir, directory=True) as tmp:
        build_random_pipeline(arch, tmp, seed)
        write_json(tmp / "eraselab_source.json", {"source": "random", "architecture": architecture,
                                                  "image_size": arch.image_size, "seed": seed})
        write_manifest(tmp)


def prepare(spec: dict, out, weights=None) -> None:
    """The ``random`` model source (eraselab.models.SOURCES)."""
    build_random(spec["architecture"], out, spec["seed"], spec.get("image_size"))
