"""Base models: ConceptWorld loads with diffusers' own from_pretrained; hub ids fail clearly offline."""
import json

import numpy as np
import pytest

from eraselab.artifacts import ArtifactError
from eraselab.hub import download
from eraselab.models import load_pipeline

from conftest import SHIPPED


def test_conceptworld_is_a_stable_diffusion_pipeline(conceptworld_dir):
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer
    pipe = StableDiffusionPipeline.from_pretrained(conceptworld_dir)   # diffusers' own loader, nothing else
    assert isinstance(pipe.vae, AutoencoderKL) and isinstance(pipe.unet, UNet2DConditionModel)
    assert isinstance(pipe.text_encoder, CLIPTextModel) and isinstance(pipe.tokenizer, CLIPTokenizer)
    assert pipe.tokenizer.model_max_length == 77 and len(pipe.tokenizer) == 49408
    assert any("attn2" in n for n, _ in pipe.unet.named_parameters())      # cross-attention, as in SD
    assert any(n.endswith("ff.net.2.weight") for n, _ in pipe.unet.named_parameters())
    pipe.set_progress_bar_config(disable=True)
    out = pipe(["a red circle", "a blue square"], num_inference_steps=4, output_type="np",
               generator=[__import__("torch").Generator().manual_seed(s) for s in (1, 2)]).images
    assert out.shape == (2, 32, 32, 3) and np.isfinite(out).all()


def assert_equal_up_to_rounding(a: np.ndarray, b: np.ndarray) -> None:
    """uint8 images that differ at most by floating-point rounding: by 1 or 2, in a few values.

    Kernels sum in another order with another batch size, thread count or CPU, so the same image
    made in another batch may differ in the last bits before it is rounded to uint8."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.max() <= 2 and (diff > 0).mean() <= 0.01, (diff.max(), (diff > 0).mean())


def test_generation_is_deterministic_and_batch_independent(conceptworld_pipe):
    """What generation guarantees: the same call twice gives the same bytes; another batch size gives the
    same images up to rounding; each row depends only on its own prompt and seed."""
    from eraselab.generate import generate_images
    prompts, seeds = ["a red circle", "a green cross at night", "a square by Okonta"], [5, 6, 7]
    a = generate_images(conceptworld_pipe, prompts, seeds, [5.0] * 3, steps=5, batch_size=3)
    again = generate_images(conceptworld_pipe, prompts, seeds, [5.0] * 3, steps=5, batch_size=3)
    assert a.dtype == np.uint8 and np.array_equal(a, again)             # same call, same settings: bitwise
    b = generate_images(conceptworld_pipe, prompts, seeds, [5.0] * 3, steps=5, batch_size=1)
    assert_equal_up_to_rounding(a, b)                                   # another batch size: up to rounding
    c = generate_images(conceptworld_pipe, prompts, [5, 6, 8], [5.0] * 3, steps=5, batch_size=3)
    assert_equal_up_to_rounding(a[:2], c[:2])                           # other rows' seeds do not matter
    assert np.abs(a[2].astype(np.int16) - c[2]).mean() > 10             # its own seed does


def test_vae_sampling_is_deterministic(conceptworld_pipe):
    """ConceptWorld's VAE has its variance pinned: sample() is the mean."""
    import torch
    x = torch.zeros(1, 3, 32, 32)
    dist = conceptworld_pipe.vae.encode(x).latent_dist
    assert torch.allclose(dist.sample(), dist.mean, atol=1e-5)


def test_shipped_quality_record():
    quality = json.loads((SHIPPED / "quality.json").read_text())
    assert quality["classifier_accuracy"]["all"] >= 0.95
    assert quality["generation_all_attributes"] >= 0.80
    assert all(quality["bars"].values())


def test_not_a_pipeline_directory(tmp_path):
    with pytest.raises(ArtifactError, match="not a diffusers pipeline directory"):
        load_pipeline(tmp_path)


def test_hub_download_without_network_says_what_to_do(tmp_path, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")     # huggingface_hub's own offline mode: no request leaves
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="source: local, path"):
        download("CompVis/stable-diffusion-v1-4", "133a221b8aa7292a167afc5127cb63fb5005638b", tmp_path / "sd14")
    assert not (tmp_path / "sd14").exists()      # nothing half-downloaded left behind
