"""Image sets: one tar archive of PNGs per (model variant, prompt set), with a preview beside it.

Thousands of loose image files make DVC and shared filesystems slow, so a set
is one archive: ``index.csv`` (a row per image: file, prompt row, seed,
guidance and any label columns of the prompt set) and ``NNNNN.png`` files.
``set.json`` beside it records provenance and the archive's checksum; a small
``preview.png`` grid beside it can be looked at without unpacking anything.
"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .artifacts import ArtifactError, atomic_paths, read_json, sha256, sidecar, write_json


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0  # fixed mtime: same images, same archive bytes
    tar.addfile(info, io.BytesIO(data))


def save_image_set(path: str | Path, images: np.ndarray, index: pd.DataFrame, meta: dict,
                   preview: int = 16) -> None:
    """Write the archive, its preview grid and its metadata atomically together (metadata renamed last)."""
    if len(images) != len(index):
        raise ValueError(f"{len(images)} images but {len(index)} index rows")
    index = index.reset_index(drop=True).copy()
    index.insert(0, "file", [f"{i:05d}.png" for i in range(len(index))])
    files = [path, *([sidecar(path, ".preview.png")] if preview else []), sidecar(path, ".json")]
    with atomic_paths(*files) as tmps:
        with tarfile.open(tmps[0], "w") as tar:
            _add(tar, "index.csv", index.to_csv(index=False).encode())
            for name, image in zip(index["file"], images):
                _add(tar, name, _png_bytes(image))
        if preview:
            Image.fromarray(grid(images[:preview])).save(tmps[1], format="PNG")
        write_json(tmps[-1], {**meta, "n_images": len(images), "sha256": sha256(tmps[0]),
                              "shape": list(images.shape[1:])})


def _checked_meta(path: Path, verify: bool) -> dict:
    """The archive's metadata, after checking the archive against its checksum."""
    meta = read_json(sidecar(path, ".json"))
    if verify and sha256(path) != meta.get("sha256"):
        raise ArtifactError(f"{path}: checksum mismatch: the image archive is truncated or corrupted; "
                            f"rerun its generate job")
    return meta


def _decode(tar: tarfile.TarFile, files) -> np.ndarray:
    return np.stack([np.asarray(Image.open(io.BytesIO(tar.extractfile(f).read())).convert("RGB")) for f in files])


def load_image_set(path: str | Path, verify: bool = True) -> tuple[np.ndarray, pd.DataFrame, dict]:
    """uint8 N x H x W x 3 images, the index, and the metadata; raise ArtifactError on damage."""
    path = Path(path)
    meta = _checked_meta(path, verify)
    (images, index), = iter_image_batches(path, batch_size=None, verify=False)
    return images, index, meta


def iter_image_batches(path: str | Path, batch_size: int | None, verify: bool = True):
    """(uint8 images, index rows) in batches (None: one batch), without holding the whole set in
    memory (10k images at 512 px are 8 GB); the checksum is verified first, like load_image_set."""
    path = Path(path)
    if verify:   # load_image_set has checked already and passes verify=False
        _checked_meta(path, verify)
    try:
        with tarfile.open(path) as tar:
            index = pd.read_csv(tar.extractfile("index.csv"), keep_default_na=False)
            step = batch_size or max(1, len(index))
            for start in range(0, len(index), step):
                rows = index.iloc[start:start + step]
                yield _decode(tar, rows["file"]), rows
    except (tarfile.TarError, KeyError, OSError) as e:
        raise ArtifactError(f"{path}: unreadable image archive ({e}); rerun its generate job") from None


def grid(images: np.ndarray, cols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile images into one uint8 image (white padding), for previews and report grids."""
    n, h, w, _ = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = image
    return out
