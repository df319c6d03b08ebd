"""The fetch stage: one external asset (config/assets.yaml) from its pinned URL, checked by sha256.

URLs are http(s):// or file:// (tests fetch from file:// fixtures they write). An asset can be
a file inside the downloaded zip or wheel (``member``), with its own hash. A ``local`` copy
(offline nodes) is used instead of the URL when its hash is the download's or the member's.
Everything is written under temporary names and renamed into place only once every hash
matched, so a failed or interrupted fetch leaves nothing that looks fetched.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from .artifacts import atomic_paths, sha256
from .runtime import CODE_ENV


class FetchError(RuntimeError):
    """An asset could not be fetched, or its bytes are not the pinned ones; nothing was written."""


def run(spec: dict, out: str, local: str | None = None) -> None:
    name, url, member = spec["name"], spec["url"], spec.get("member")
    if not spec.get("sha256"):
        raise FetchError(f"asset {name}: no sha256 pinned for {url}; an unpinned file is never fetched: pin its "
                         f"sha256 in config/assets.yaml or in the config's assets.{name}.sha256")
    meta = Path(f"{out}-source.json")   # layout.ASSET_SOURCE
    with atomic_paths(out, meta) as (tmp, tmp_meta), tempfile.TemporaryDirectory(dir=Path(out).parent) as scratch:
        got = Path(scratch) / "download"
        origin, found = _from_local(spec, local, got) if local else _download(spec, got)
        if member and found != spec["member_sha256"]:   # got the archive: take the member out of it
            _extract(spec, got, tmp)
        else:
            shutil.move(got, tmp)
        tmp_meta.write_text(json.dumps({
            "asset": name, "url": url, "sha256": spec["sha256"], "member": member,
            "member_sha256": spec.get("member_sha256"), "from": origin, "bytes": tmp.stat().st_size,
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "code": os.environ.get(CODE_ENV)},
            indent=2, sort_keys=True) + "\n")


def _download(spec: dict, dest: Path) -> tuple[str, str]:
    """The URL's bytes into dest, hashed as they arrive; returns (where from, sha256)."""
    name, url = spec["name"], spec["url"]
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as f:
            while block := response.read(1 << 20):
                h.update(block)
                f.write(block)
    except (urllib.error.URLError, OSError) as e:
        raise FetchError(f"asset {name}: could not download {url}: {getattr(e, 'reason', e)}. Without network, "
                         f"download it elsewhere and set assets.{name}.local to that file (used when its sha256 "
                         f"matches)") from None
    if h.hexdigest() != spec["sha256"]:
        raise FetchError(f"asset {name}: {url} does not have the pinned content: expected sha256 {spec['sha256']}, "
                         f"found {h.hexdigest()}; nothing was written")
    return url, h.hexdigest()


def _from_local(spec: dict, local: str, dest: Path) -> tuple[str, str]:
    """A local copy of the download (or, for an archive's member, of the member itself); returns
    (where from, sha256)."""
    name = spec["name"]
    if not Path(local).is_file():
        raise FetchError(f"asset {name}: local copy {local} not found (assets.{name}.local)")
    found = sha256(local)
    allowed = [h for h in (spec["sha256"], spec.get("member_sha256") if spec.get("member") else None) if h]
    if found not in allowed:
        raise FetchError(f"asset {name}: local copy {local} is not the pinned file ({spec['url']}): expected sha256 "
                         f"{' or '.join(allowed)}, found {found}")
    shutil.copyfile(local, dest)
    return local, found


def _extract(spec: dict, archive: Path, dest: Path) -> None:
    name, member = spec["name"], spec["member"]
    try:
        with zipfile.ZipFile(archive) as z, z.open(member) as src, open(dest, "wb") as f:
            shutil.copyfileobj(src, f, 1 << 20)
    except KeyError:
        raise FetchError(f"asset {name}: {spec['url']} has no member {member!r}") from None
    except zipfile.BadZipFile:
        raise FetchError(f"asset {name}: {spec['url']} is not a zip archive, so it has no member {member!r}") from None
    if (found := sha256(dest)) != spec["member_sha256"]:
        raise FetchError(f"asset {name}: member {member} of {spec['url']}: expected sha256 {spec['member_sha256']}, "
                         f"found {found}")
