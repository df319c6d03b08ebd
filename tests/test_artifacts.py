"""Atomic writes, checksums and deltas: nothing half-written ever looks complete."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from eraselab.artifacts import ArtifactError, atomic_path, read_json, verify_checksums, write_json
from eraselab.delta import load_delta, save_delta
from eraselab.imagesets import load_image_set, save_image_set


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "trunc')
            raise RuntimeError("disk full")
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]      # no temporary left behind


def test_atomic_directory_replaces_whole(tmp_path):
    d = tmp_path / "model"
    with atomic_path(d, directory=True) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(ValueError):
        with atomic_path(d, directory=True) as tmp:
            (tmp / "b.txt").write_text("2")
            raise ValueError
    assert sorted(p.name for p in d.iterdir()) == ["a.txt"]


def test_stale_temporaries_from_a_killed_run_are_cleared(tmp_path):
    stale = tmp_path / ".out.json.abc.tmp"
    stale.mkdir()
    (stale / "out.json").write_text("partial")
    write_json(tmp_path / "out.json", {"ok": True})
    assert not stale.exists()


def test_truncated_json_is_reported_with_its_path(tmp_path):
    p = tmp_path / "meta.json"
    p.write_text('{"a": 1')
    with pytest.raises(ArtifactError, match="meta.json: not valid JSON"):
        read_json(p)


def test_checksums_detect_corruption(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"abc")
    from eraselab.artifacts import checksums
    sums = checksums([tmp_path / "w.bin"], tmp_path)
    verify_checksums(tmp_path, sums)
    (tmp_path / "w.bin").write_bytes(b"abd")
    with pytest.raises(ArtifactError, match="w.bin: checksum mismatch"):
        verify_checksums(tmp_path, sums)


def test_delta_roundtrip_and_corruption(tmp_path):
    tensors = {"unet.a.weight": torch.randn(3, 4), "text_encoder.b": torch.arange(5.0)}
    path = tmp_path / "delta.safetensors"
    save_delta(path, tensors, {"method": "test"})
    loaded, meta = load_delta(path)
    assert meta["n_parameters"] == 17 and meta["method"] == "test"
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    data = path.read_bytes()
    path.write_bytes(data[:-10])                          # truncated
    with pytest.raises(ArtifactError, match="delta.safetensors: checksum mismatch"):
        load_delta(path)
    with pytest.raises(ValueError, match="must start with"):
        save_delta(path, {"vae.x": torch.zeros(1)}, {})


def test_image_set_roundtrip(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (5, 8, 8, 3), dtype=np.uint8)
    index = pd.DataFrame({"prompt": list("abcde"), "evaluation_seed": range(5)})
    path = tmp_path / "set.tar"
    save_image_set(path, images, index, {"model": "m"}, preview=4)
    back, idx, meta = load_image_set(path)
    assert np.array_equal(back, images) and idx.prompt.tolist() == list("abcde")
    assert meta["n_images"] == 5 and (tmp_path / "set.preview.png").is_file()
    first = path.read_bytes()
    save_image_set(path, images, index, {"model": "m"})
    assert path.read_bytes() == first                       # same images, same bytes (DVC-friendly)
    path.write_bytes(first[: len(first) // 2])
    with pytest.raises(ArtifactError, match="set.tar: checksum mismatch"):
        load_image_set(path)
