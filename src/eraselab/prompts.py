"""Prompt sets in the I2P CSV schema, as the erasure papers use them.

Columns read (others are kept and passed through to outputs):
- ``prompt`` (required)
- ``evaluation_seed``, or ``sd_seed`` as in the Hugging Face copy of I2P
  (required: per-row seeds are what make generations comparable across models)
- ``evaluation_guidance``, or ``sd_guidance_scale`` (optional; default from config)
- ``sd_image_width`` / ``sd_image_height`` (optional; default: the model's size)
- ``case_number`` (optional row id; default: the row index)

The papers' other prompt CSVs are the same schema with label columns:
ESD's artist prompts (``big_artist_prompts.csv``: ``case_number, prompt,
evaluation_seed, artist``), its object prompts (``imagenet_prompts.csv``:
``case_number, evaluation_seed, prompt, label_idx, label_str``) and COCO
captions (``coco_30k.csv``: ``image_id, source, prompt, evaluation_seed``).
Those files start with pandas' unnamed index column, which is dropped.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

ALIASES = {"evaluation_seed": ("sd_seed",), "evaluation_guidance": ("sd_guidance_scale",)}
MAX_SEED = 2**63 - 1


class PromptSetError(ValueError):
    """A prompt CSV is missing columns or has bad values; the message names the file, row and value."""


@dataclasses.dataclass(frozen=True)
class PromptSet:
    path: str
    frame: pd.DataFrame  # canonical columns: case_number, prompt, evaluation_seed, evaluation_guidance, ...

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def prompts(self) -> list[str]:
        return self.frame["prompt"].tolist()

    @property
    def seeds(self) -> list[int]:
        return [int(s) for s in self.frame["evaluation_seed"]]

    @property
    def guidances(self) -> list[float]:
        return [float(g) for g in self.frame["evaluation_guidance"]]


def _canonical_columns(df: pd.DataFrame, path: str) -> pd.DataFrame:
    for name, aliases in ALIASES.items():
        if name not in df.columns:
            for alias in aliases:
                if alias in df.columns:
                    df = df.rename(columns={alias: name})
                    break
    missing = [c for c in ("prompt", "evaluation_seed") if c not in df.columns]
    if missing:
        want = {c: " or ".join((c, *ALIASES.get(c, ()))) for c in missing}
        raise PromptSetError(f"{path}: missing column(s) {', '.join(want.values())}; "
                             f"found columns: {', '.join(map(str, df.columns))}")
    return df


def _bad_rows(values: pd.Series, ok) -> list[tuple[int, object]]:
    return [(i, v) for i, v in values.items() if not ok(v)]


def _is_seed(v) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return f == f and f == int(f) and 0 <= f <= MAX_SEED


def _is_number(v, minimum=0.0) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return f == f and f >= minimum


def load_prompts(path: str | Path, default_guidance: float = 7.5, limit: int | None = None) -> PromptSet:
    """Read and check a prompt CSV; raise PromptSetError naming the file, row and value on bad input."""
    path = str(path)
    if not Path(path).is_file():
        raise PromptSetError(f"{path}: prompt file not found")
    try:
        df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise PromptSetError(f"{path}: not a readable CSV: {e}") from None
    df = df.loc[:, [not str(c).startswith("Unnamed: ") for c in df.columns]]  # a saved pandas index
    df = _canonical_columns(df, path)
    if len(df) == 0:
        raise PromptSetError(f"{path}: no prompt rows")
    checks = [("prompt", lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string"),
              ("evaluation_seed", _is_seed, f"an integer from 0 to {MAX_SEED}")]
    if "evaluation_guidance" in df.columns:
        checks.append(("evaluation_guidance", _is_number, "a number >= 0"))
    for col in ("sd_image_width", "sd_image_height"):
        if col in df.columns:
            checks.append((col, lambda v: _is_number(v, 8) and float(v) % 8 == 0, "a multiple of 8"))
    for col, ok, allowed in checks:
        bad = _bad_rows(df[col], ok)
        if bad:
            row, value = bad[0]
            more = f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else ""
            # +2: the header is line 1 and rows count from 0
            raise PromptSetError(f"{path}: line {row + 2}, column {col}: {value!r} is not {allowed}{more}")
    if "evaluation_guidance" not in df.columns:
        df["evaluation_guidance"] = float(default_guidance)
    if "case_number" not in df.columns:
        df.insert(0, "case_number", range(len(df)))
    df["evaluation_seed"] = df["evaluation_seed"].astype("int64")
    if limit is not None:
        df = df.head(limit)
    return PromptSet(path, df.reset_index(drop=True))


def concept_pairs(pairs_csv: str | Path, max_prompts: int | None) -> pd.DataFrame:
    """Concept prompts and their matched neutral prompts (columns prompt, prompt_without)."""
    frame = pd.read_csv(pairs_csv, keep_default_na=False)
    missing = {"prompt", "prompt_without"} - set(frame.columns)
    if missing:
        raise ValueError(f"{pairs_csv}: needs columns prompt, prompt_without (missing {sorted(missing)})")
    return frame.head(max_prompts) if max_prompts else frame
