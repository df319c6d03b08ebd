"""Nothing that a teammate's account or a download could have written runs code when it is loaded (issue 17).

results/, resources/ and the DVC cache live on a shared, group-writable filesystem, and model
directories come from the hub or from a colleague's path. Each test plants a pickle whose loading
would create a marker file, and checks that eraselab refuses it, names the file, and that the marker
never appears. A checkpoint that is not the job's own (other params, changed bytes, no checksum
record) is ignored too: the job starts over instead of half-loading it.
"""
import json
import os
import pickle
import shlex
import shutil

import pytest
import torch

from eraselab.artifacts import ArtifactError, sha256
from eraselab.checkpoint import Checkpointer, fingerprint

KEY = {"method": "esd", "iterations": 10, "seed": 0}


class Planted:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def record_for(ckpt: Checkpointer) -> None:
    """The checksum record a writer with access to the directory can forge for any state.pt."""
    ckpt.record.write_text(json.dumps({"key": ckpt.key, "step": 3, "sha256": sha256(ckpt.file)}))


def test_checkpoint_with_pickled_code_is_refused_and_the_job_starts_over(tmp_path, capsys):
    marker = tmp_path / "ran"
    ckpt = Checkpointer(tmp_path / "ckpt", KEY, 1)
    ckpt.dir.mkdir()
    torch.save({"key": fingerprint(KEY), "step": 3, "w": torch.ones(2), "extra": Planted(marker)}, ckpt.file)
    record_for(ckpt)                      # key and checksum agree: only weights_only stands in the way
    assert ckpt.load() is None and ckpt.resumed_from is None
    assert not marker.exists()
    err = capsys.readouterr().err
    assert f"ignoring {ckpt.file}" in err and "weights_only=True" in err and "starting over" in err


def test_checkpoint_for_other_params_is_ignored(tmp_path, capsys):
    Checkpointer(tmp_path / "ckpt", KEY, 1).save(3, {"w": torch.ones(2)})
    other = Checkpointer(tmp_path / "ckpt", {**KEY, "iterations": 20}, 1)
    assert other.load() is None and other.resumed_from is None
    assert "for other params; starting over" in capsys.readouterr().err
    assert Checkpointer(tmp_path / "ckpt", KEY, 1).load()["step"] == 3      # the job's own still resumes


@pytest.mark.parametrize("damage", ["changed", "no record", "record for another file"])
def test_checkpoint_whose_checksum_does_not_match_is_ignored(tmp_path, capsys, damage):
    ckpt = Checkpointer(tmp_path / "ckpt", KEY, 1)
    ckpt.save(3, {"w": torch.ones(2)})
    if damage == "changed":            # plain tensors with the right key: only the checksum tells
        torch.save({"key": ckpt.key, "step": 9, "w": torch.zeros(2)}, ckpt.file)
        why = "SHA-256 does not match"
    elif damage == "no record":        # a state.pt on its own (planted, or from an older eraselab)
        ckpt.record.unlink()
        why = "no valid checksum record state.json"
    else:
        ckpt.record.write_text(json.dumps({"key": ckpt.key, "step": 3, "sha256": "0" * 64}))
        why = "SHA-256 does not match"
    assert ckpt.load() is None and ckpt.resumed_from is None
    err = capsys.readouterr().err
    assert f"ignoring {ckpt.file}" in err and why in err and "starting over" in err


def test_checkpoints_round_trip_with_their_checksum(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt", KEY, 1)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))])
    ckpt.save(4, {"w": torch.arange(3.0), "opt": opt.state_dict(), "losses": [0.5, 0.25], "rng": {"s": 2 ** 100}})
    assert json.loads(ckpt.record.read_text()) == {"key": ckpt.key, "step": 4, "sha256": sha256(ckpt.file)}
    state = Checkpointer(tmp_path / "ckpt", KEY, 1).load()
    assert state["step"] == 4 and torch.equal(state["w"], torch.arange(3.0)) and state["rng"] == {"s": 2 ** 100}


def test_model_directory_with_pickled_weights_is_refused_naming_the_file(tiny_pipe_dir, tmp_path):
    from eraselab.models import load_pipeline
    marker = tmp_path / "ran"
    model = tmp_path / "colleague-model"
    shutil.copytree(tiny_pipe_dir, model)
    (model / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    planted = model / "unet" / "diffusion_pytorch_model.bin"
    torch.save({"conv_in.weight": torch.zeros(1), "x": Planted(marker)}, planted)
    with pytest.raises(ArtifactError) as e:
        load_pipeline(model)
    msg = str(e.value)
    assert msg.startswith(f"{planted}: pickled weights can run code when loaded")
    assert "safetensors only" in msg and "safe_serialization=True" in msg and "converted directory" in msg
    assert not marker.exists()


def test_load_pipeline_asks_diffusers_for_safetensors_only(tiny_pipe_dir, monkeypatch):
    from diffusers import StableDiffusionPipeline

    from eraselab.models import load_pipeline
    asked = {}

    class Stop(Exception):
        pass

    def from_pretrained(path, **kwargs):
        asked.update(kwargs)
        raise Stop
    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", from_pretrained)
    with pytest.raises(Stop):
        load_pipeline(tiny_pipe_dir)
    assert asked["use_safetensors"] is True


@pytest.mark.parametrize("weights", ["pytorch-fid", "torchvision"])
def test_fid_weights_with_pickled_code_are_refused(tmp_path, weights):
    pytest.importorskip("pytorch_fid")
    from eraselab.score.fid import FeatureWeightsError, InceptionFeatures
    marker = tmp_path / "ran"
    planted = tmp_path / "inception.pth"
    torch.save({"fc.weight": torch.zeros(1), "x": Planted(marker)}, planted)
    with pytest.raises(FeatureWeightsError, match=str(planted)):
        InceptionFeatures({"inception_weights": weights, "checkpoint": str(planted)})
    assert not marker.exists()


def test_clip_checkpoint_with_pickled_code_is_refused(tmp_path):
    from eraselab.score.clip import load_clip
    config = tmp_path / "tiny-clip-untrusted.json"
    config.write_text(json.dumps({
        "embed_dim": 8, "vision_cfg": {"image_size": 16, "layers": 1, "width": 16, "patch_size": 8, "head_width": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 8, "heads": 1, "layers": 1}}))
    marker = tmp_path / "ran"
    planted = tmp_path / "clip.pt"
    torch.save({"logit_scale": torch.zeros(()), "x": Planted(marker)}, planted)
    with pytest.raises(pickle.UnpicklingError):
        load_clip(str(config), str(planted), device="cpu")
    assert not marker.exists()
