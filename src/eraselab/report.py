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


def pixel_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per image: mean absolute difference of two uint8 image batches, on a 0-1 scale."""
    return np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(axis=(1, 2, 3)) / 255


def set_distance(base_tar: str, erased_tar: str) -> float:
    """Mean pixel distance between a prompt set's images on the base and on an erased model.

    Rows are matched by (case_number, image) and must share their seed, so each
    pair is the same prompt and initial noise: the distance measures how much the
    erasure moved the image (its layout, colours, shapes), not sampling noise.
    """
    from .imagesets import load_image_set
    (a, ia, _), (b, ib, _) = load_image_set(base_tar, verify=False), load_image_set(erased_tar, verify=False)
    keys = ["case_number", "image"] if "image" in ia.columns and "image" in ib.columns else ["case_number"]
    pairs = ia.reset_index().merge(ib.reset_index(), on=keys, suffixes=("_a", "_b"))
    pairs = pairs[pairs.evaluation_seed_a == pairs.evaluation_seed_b]
    if pairs.empty:
        return float("nan")
    return float(pixel_distance(a[pairs.index_a.to_numpy()], b[pairs.index_b.to_numpy()]).mean())


def add_pixel_distances(df: pd.DataFrame, entries: list[dict]) -> pd.DataFrame:
    """Column ``pixel_distance``: each erased variant's images against the base model's (NaN for base)."""
    base = {e["model"]: {Path(p).stem: p for p in e["images"]} for e in entries if e["variant"] == BASE}
    dist = {}
    for e in entries:
        if e["variant"] == BASE or e["model"] not in base:
            continue
        for path in e["images"]:
            concept = Path(path).stem
            if concept in base[e["model"]]:
                dist[(e["model"], e["variant"], concept)] = set_distance(base[e["model"]][concept], path)
    variants = df.apply(lambda r: BASE if r.method == BASE else f"{r.target}/{r.prune}/{r.method}", axis=1)
    return df.assign(pixel_distance=[dist.get((m, v, c), float("nan"))
                                     for m, v, c in zip(df.model, variants, df.concept)])


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
                     **({"others_pixel_distance": float(others.pixel_distance.mean())}
                        if "pixel_distance" in others else {}),
                     "erased": bool(reduction >= min_reduction),
                     "preserved": bool(drop <= max_drop_points)})
    return pd.DataFrame(rows)


def markdown(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table, rates in percent."""
    layout = "others_pixel_distance" in summary   # how far unrelated images moved (layout preservation)
    head = ("| model | target (type) | pruning | method | base rate | erased rate | reduction | "
            "others: mean rate (base) | others: max drop | erased ≥50% | others ≤10 pt |"
            + (" others: pixel distance to base |" if layout else "") + "\n"
            "|---|---|---|---|---:|---:|---:|---:|---:|:-:|:-:|" + ("---:|" if layout else "") + "\n")
    lines = [f"| {r.model} | {r.target} ({r.target_type}) | {r.prune} | {r.method} | {100 * r.base_rate:.1f}% | "
             f"{100 * r.erased_rate:.1f}% | {100 * r.reduction:.0f}% | {100 * r.others_mean_rate:.1f}% "
             f"({100 * r.others_base_mean_rate:.1f}%) | {r.others_max_drop_points:.1f} pt | "
             f"{'yes' if r.erased else 'no'} | {'yes' if r.preserved else 'no'} |"
             + (f" {r.others_pixel_distance:.3f} |" if layout else "")
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
        df = add_pixel_distances(tidy_rates(entries), entries)
        summary = summarise(df)
        for name, frame in (("rates.csv", df), ("summary.csv", summary)):
            with atomic_path(out_dir / name) as tmp:
                frame.to_csv(tmp, index=False, float_format="%.4f")
        write_text(out_dir / "summary.md", markdown(summary))
        for model in dict.fromkeys(e["model"] for e in entries):
            with atomic_path(out_dir / f"grid_{model}.png") as tmp:
                image_grid([e for e in entries if e["model"] == model], spec["grid_images"]).save(tmp, format="PNG")
        write_json(out_dir / "metrics.json", {
            "provenance": run_info.record(),
            "summary": summary.to_dict(orient="records")})
