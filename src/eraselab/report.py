"""The report stage: one tidy table of rates, a summary per erased model, Markdown, image grids.

Rates are "the fraction of a concept's evaluation images in which its detector
finds it". For an erased model, the target's rate should fall (erasure) and the
other concepts' rates should stay where the base model had them (preservation).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .artifacts import atomic_path, read_json, write_json, write_text
from .layout import BASE, parse_variant


def tidy_rates(entries: list[dict]) -> pd.DataFrame:
    """One row per (model, variant, evaluated concept), with the base model's rate beside it."""
    rows = []
    for e in entries:
        parts = parse_variant(e["variant"])
        for concept, r in read_json(e["rates"])["rates"].items():
            rows.append({"model": e["model"], "target": parts["target"] or "none",
                         "prune": parts["prune"] or "none", "method": parts["method"] or BASE,
                         "concept": concept, "concept_type": r["type"], "rate": r["rate"], "n": r["n"],
                         "detector": r["detector"]["kind"]})
    df = pd.DataFrame(rows)
    base = df[df.method == BASE].set_index(["model", "concept"])["rate"].rename("base_rate")
    df = df.join(base, on=["model", "concept"])
    df["role"] = np.where(df.method == BASE, "base", np.where(df.concept == df.target, "target", "other"))
    df["change_points"] = 100 * (df.rate - df.base_rate)
    return df


def summarise(df: pd.DataFrame, min_reduction: float = 0.5, max_drop_points: float = 10.0) -> pd.DataFrame:
    """One row per erased model: the target's rate against the base's, and the worst drop elsewhere."""
    rows = []
    for (model, target, prune, method), g in df[df.role != "base"].groupby(
            ["model", "target", "prune", "method"], sort=False):
        t, others = g[g.role == "target"].iloc[0], g[g.role == "other"]
        drop = float((-others.change_points).max()) if len(others) else 0.0
        reduction = 1 - t.rate / t.base_rate if t.base_rate > 0 else float("nan")
        rows.append({"model": model, "target": target, "target_type": t.concept_type, "prune": prune,
                     "method": method, "base_rate": t.base_rate, "erased_rate": t.rate,
                     "reduction": reduction, "others_mean_rate": float(others.rate.mean()),
                     "others_base_mean_rate": float(others.base_rate.mean()),
                     "others_max_drop_points": drop,
                     "erased": bool(reduction >= min_reduction),
                     "preserved": bool(drop <= max_drop_points)})
    return pd.DataFrame(rows)


def metrics(summary: pd.DataFrame) -> dict:
    """The summary's numbers keyed by erased model, flat enough for `dvc metrics show` / `dvc exp show`."""
    keys = ["model", "target", "prune", "method"]
    return {"/".join(str(row[k]) for k in keys): {k: v for k, v in row.items() if k not in keys and k != "target_type"}
            for row in summary.to_dict(orient="records")}


def markdown(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table, rates in percent."""
    head = ("| model | target (type) | pruning | method | base rate | erased rate | reduction | "
            "others: mean rate (base) | others: max drop | erased ≥50% | others ≤10 pt |\n"
            "|---|---|---|---|---:|---:|---:|---:|---:|:-:|:-:|\n")
    lines = [f"| {r.model} | {r.target} ({r.target_type}) | {r.prune} | {r.method} | {100 * r.base_rate:.1f}% | "
             f"{100 * r.erased_rate:.1f}% | {100 * r.reduction:.0f}% | {100 * r.others_mean_rate:.1f}% "
             f"({100 * r.others_base_mean_rate:.1f}%) | {r.others_max_drop_points:.1f} pt | "
             f"{'yes' if r.erased else 'no'} | {'yes' if r.preserved else 'no'} |"
             for r in summary.itertuples()]
    return head + "\n".join(lines) + "\n"


def image_grid(entries: list[dict], per_cell: int, scale: int = 2) -> "Image.Image":
    """Rows: prompt sets; columns: the variants of one model; each cell the first images, labelled."""
    from PIL import Image, ImageDraw

    from .imagesets import grid, load_image_set
    cols = int(np.ceil(np.sqrt(per_cell)))
    cells = [[grid(load_image_set(p, verify=False)[0][:per_cell], cols=cols) for p in e["images"]]
             for e in entries]
    ch, cw = cells[0][0].shape[:2]
    ch, cw = ch * scale, cw * scale
    names = [Path(p).stem for p in entries[0]["images"]]
    left, top = 8 + 7 * max(map(len, names)), 24
    sheet = Image.new("RGB", (left + cw * len(entries), top + ch * len(names)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, e in enumerate(entries):
        draw.text((left + j * cw + 4, 6), e["variant"].replace("/none/", "/"), fill="black")
        for i, cell in enumerate(cells[j]):
            tile = Image.fromarray(cell).resize((cw, ch), Image.NEAREST)
            sheet.paste(tile, (left + j * cw, top + i * ch))
    for i, name in enumerate(names):
        draw.text((4, top + i * ch + ch // 2 - 5), name, fill="black")
    return sheet


def run(entries: list[dict], out_dir: str | Path, spec: dict) -> None:
    """entries: [{model, variant, rates, images: [tar, ...]}]; writes the report files into out_dir."""
    from .runtime import stage
    out_dir = Path(out_dir)
    with stage("report", spec) as run_info:
        df = tidy_rates(entries)
        summary = summarise(df)
        for name, frame in (("rates.csv", df), ("summary.csv", summary)):
            with atomic_path(out_dir / name) as tmp:
                frame.to_csv(tmp, index=False, float_format="%.4f")
        write_text(out_dir / "summary.md", markdown(summary))
        for model in dict.fromkeys(e["model"] for e in entries):
            with atomic_path(out_dir / f"grid_{model}.png") as tmp:
                image_grid([e for e in entries if e["model"] == model], spec["grid_images"]).save(tmp, format="PNG")
        write_json(out_dir / "metrics.json", metrics(summary))
        write_json(out_dir / "report.json", run_info.record())
