"""The Python API a notebook calls without Snakemake (eraselab.api): the documented example, run."""
import numpy as np

from eraselab import api

from conftest import ROOT


def test_the_documented_notebook_session(tmp_path):
    cfg = api.config(ROOT / "config" / "config.yaml", ROOT / "config" / "methods.yaml", root=ROOT)
    base = api.base_model(cfg, "conceptworld", tmp_path / "conceptworld")
    triangle = cfg["concepts"]["triangle"] | {"name": "triangle"}
    prompts = ["a red triangle on grass", "a blue triangle in the sky", "a green triangle on sand",
               "a triangle at night", "a red triangle", "a blue triangle on white"]
    seeds = list(range(len(prompts)))

    before = api.score(api.generate(api.load(base), prompts, seeds), triangle["detector"], base)["detected"].mean()
    tensors, record = api.erase(api.load(base), triangle, cfg["methods"]["uce"])
    assert tensors and all(k.startswith("unet.") and "attn2.to_" in k for k in tensors)
    api.save_delta(tmp_path / "triangle-uce.safetensors", tensors, record)
    loaded, meta = api.load_delta(tmp_path / "triangle-uce.safetensors")
    assert all(np.array_equal(loaded[k].numpy(), tensors[k].numpy()) for k in tensors) and meta["sha256"]

    images = api.generate(api.load(base, delta=tmp_path / "triangle-uce.safetensors"), prompts, seeds)
    assert images.shape == (len(prompts), 32, 32, 3) and images.dtype == np.uint8
    after = api.score(images, triangle["detector"], base)["detected"].mean()
    assert before >= 5 / 6 and after <= before - 0.5, (before, after)
