"""CLIP through open_clip, on a tiny model built from a config with random weights (no download).

The code under test is the one that runs ViT-L/14 with OpenAI's weights; only
the architecture name (here a config JSON) and the weights differ.
"""
import json

import numpy as np
import pytest
import torch

from eraselab.score.clip import ClipDetector, ClipWeightsError, clip_scores, load_clip

TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
CANDIDATES = ["art by Van Gogh", "art by Pablo Picasso", "art by Rembrandt", "art"]


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "tiny-clip-test.json"
    path.write_text(json.dumps(TINY))
    return str(path)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (6, 48, 40, 3), dtype=np.uint8)   # not square, not CLIP's size


def reference_features(clip, images, texts):
    """Image and text features through open_clip's own forward pass (its preprocessing, its tokenizer)."""
    from PIL import Image
    x = torch.stack([clip.preprocess(Image.fromarray(im)) for im in images])
    with torch.no_grad():
        out = clip.model(x, clip.tokenizer(texts))
    img, txt = (out["image_features"], out["text_features"]) if isinstance(out, dict) else out[:2]
    return img, txt   # open_clip normalises both


def test_clip_score_is_100_times_clipped_cosine(tiny_config, images):
    clip = load_clip(tiny_config, None)
    prompts = ["a red bicycle", "two dogs", "a bowl of oranges", "a bus", "a kite", "an office"]
    scores = clip_scores(clip, images, prompts, batch_size=4)
    img, txt = reference_features(clip, images, prompts)
    cos = (img * txt).sum(-1).numpy()
    assert np.allclose(scores, 100 * np.maximum(cos, 0), atol=1e-4)
    assert (scores >= 0).all() and scores.shape == (6,)


@pytest.mark.parametrize("top_k", [1, 2, len(CANDIDATES)])
def test_zero_shot_detection_is_target_in_top_k(tiny_config, images, top_k):
    cfg = {"kind": "clip", "candidates": CANDIDATES, "target": "art by Van Gogh", "top_k": top_k,
           "model": tiny_config, "pretrained": None, "batch_size": 4}
    out = ClipDetector(cfg)(images)
    img, txt = reference_features(load_clip(tiny_config, None), images, CANDIDATES)
    sims = (img @ txt.T).numpy()
    order = np.argsort(-sims, axis=1)
    for i, row in enumerate(out.itertuples()):
        assert row.detected == (0 in order[i, :top_k])
        assert row.prediction == CANDIDATES[order[i, 0]]
        assert row.target_rank == list(order[i]).index(0) + 1
    prob = torch.softmax(torch.from_numpy(100 * sims), -1)[:, 0].numpy()
    assert np.allclose(out.score, prob, atol=1e-5)
    if top_k == len(CANDIDATES):
        assert out.detected.all()


def test_local_checkpoint_gives_the_same_model(tiny_config, images, tmp_path):
    import open_clip
    a = load_clip(tiny_config, None)
    ckpt = tmp_path / "tiny.pt"
    torch.save(a.model.state_dict(), ckpt)
    b = load_clip(tiny_config, str(ckpt))
    assert torch.allclose(a.encode_images(images), b.encode_images(images))
    assert b.info["pretrained"] == str(ckpt) and b.info["open_clip"] == open_clip.__version__


def test_describe_names_model_weights_and_rule(tiny_config):
    d = ClipDetector({"candidates": CANDIDATES, "target": "art", "model": tiny_config, "pretrained": None}).describe()
    assert d["kind"] == "clip" and d["architecture"] == tiny_config and d["pretrained"] is None
    assert d["candidates"] == CANDIDATES and d["target"] == "art" and "top 1" in d["rule"]


def test_target_must_be_a_candidate(tiny_config):
    with pytest.raises(ValueError, match="not one of the candidates"):
        ClipDetector({"candidates": CANDIDATES, "target": "art by Monet", "model": tiny_config, "pretrained": None})


def test_missing_weights_say_how_to_provide_them(tmp_path, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ClipWeightsError) as e:
        load_clip("ViT-B-32", "openai", str(tmp_path / "empty-cache"))
    msg = str(e.value)
    for fragment in ("'ViT-B-32' / 'openai'", "cache_dir: CLIP_CACHE", "pretrained: /path/to/that/file",
                     "open_clip.create_model('ViT-B-32', pretrained='openai'", "timm/vit_base_patch32_clip_224.openai"):
        assert fragment in msg, f"{fragment!r} not in {msg}"


def test_unknown_tag_or_file(tmp_path):
    with pytest.raises(ClipWeightsError, match="neither an open_clip tag"):
        load_clip("ViT-B-32", str(tmp_path / "nothing.pt"))
