"""The split stage: the rows of one value of a CSV asset's column, as a prompt set.

ESD's artist and object files hold every concept in one CSV (columns ``artist``, ``class``,
``label_str``); one concept is one prompt set here, so the ``split`` rule writes
``resources/prompts/{asset}/{value}.csv`` with the rows whose value's slug is ``{value}``
(config/assets.yaml, key ``split``). Cells are copied as text, unchanged; pandas' saved
index column is dropped. The result must load as a prompt set.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from .artifacts import atomic_paths, sha256
from .layout import slug
from .prompts import PromptSetError, load_prompts
from .runtime import CODE_ENV


def run(source: str, spec: dict, out: str) -> None:
    if (found := sha256(source)) != spec["sha256"]:
        raise PromptSetError(f"{source}: not the fetched asset {spec['asset']!r} (expected sha256 {spec['sha256']}, "
                             f"found {found}); rerun its fetch job")
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    frame = frame.loc[:, [not c.startswith("Unnamed: ") for c in frame.columns]]
    column, value = spec["column"], spec["value"]
    if column not in frame.columns:
        raise PromptSetError(f"{source}: no column {column!r} to split by; columns: {', '.join(frame.columns)}")
    slugs = frame[column].map(slug)
    rows = frame[slugs == value]
    if rows.empty:
        values = sorted(set(slugs))
        shown = ", ".join(values[:30]) + (f", ... ({len(values)} in all)" if len(values) > 30 else "")
        raise PromptSetError(f"{source}: no row has {column} {value!r} (values as file names: {shown})")
    with atomic_paths(out, f"{out.removesuffix('.csv')}.json") as (tmp, meta):
        rows.to_csv(tmp, index=False)
        load_prompts(tmp)   # a split that is no prompt set fails here, not in the jobs that read it
        meta.write_text(json.dumps({"asset": spec["asset"], "source": source, "source_sha256": found, "column": column,
                                    "value": value, "values": sorted(set(rows[column])), "rows": len(rows),
                                    "code": os.environ.get(CODE_ENV)}, indent=2, sort_keys=True) + "\n")
