"""The pruning table: per erased variant, its pruning (pruned fraction), rates, ASR and attribution summary.

It joins the report's ``summary.csv`` (target rate, worst drop elsewhere) and
``attacks.csv`` (pre-attack rate and ASR per attack) with each mask's
``mask.json`` and each attribution ``neurons.json``, so a pruned + erased model,
pruning alone and plain erasure sit side by side with the same seeds and budgets.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..artifacts import atomic_path, read_json, write_text
from ..layout import parse_variant
from ..report import KEYS, html_table, page


def pct(v) -> str:
    return "" if pd.isna(v) else f"{100 * v:.1f}%"


def pruning_table(summary: pd.DataFrame, attacks: pd.DataFrame | None, masks: list[dict],
                  attributions: list[dict]) -> pd.DataFrame:
    """masks: [{model, target, seed, prune, path}]; attributions: [{model, variant, attack, path}].
    A variant's pruned weights and attribution summaries are means over its seeds."""
    df = summary[KEYS + ["base_rate", "erased_rate", "others_max_drop_points", "erased", "preserved"]].copy()
    records = [(m, read_json(m["path"])) for m in masks]
    pruned = pd.DataFrame([{"model": m["model"], "target": m["target"], "prune": m["prune"],
                            "pruned_weights": r.get("pruned", 0),
                            "pruned_fraction_of_unet": r.get("pruned_fraction_of_unet", 0.0)}
                           for m, r in records], columns=["model", "target", "prune", "pruned_weights",
                                                          "pruned_fraction_of_unet"])
    pruned = pruned.groupby(["model", "target", "prune"]).mean()
    df = df.join(pruned, on=["model", "target", "prune"]).fillna({"pruned_weights": 0, "pruned_fraction_of_unet": 0.0})
    df["pruned_weights"] = df["pruned_weights"].round().astype(int)
    if attacks is not None and len(attacks):
        for attack, g in attacks.groupby("attack", sort=False):
            cols = g.set_index(KEYS)[["pre_rate", "asr"]].add_suffix(f"_{attack}")
            df = df.join(cols, on=KEYS)
    rows = []
    for a in attributions:
        v, s = parse_variant(a["variant"]), read_json(a["path"])["all"]
        rows.append({"model": a["model"], **{k: v[k] for k in ("target", "prune", "method")},
                     f"spearman_rho_delta_{a['attack']}": s["spearman_rho_delta"],
                     f"top_k_reactivated_{a['attack']}": s["top_k_reactivated_share"]})
    if rows:
        df = df.join(pd.DataFrame(rows).groupby(KEYS).mean(), on=KEYS)
    return df


def markdown(df: pd.DataFrame) -> str:
    extra = [c for c in df.columns if c.startswith(("pre_rate_", "asr_", "spearman_", "top_k_"))]
    head = ("| target | pruning | method | pruned (of UNet) | base rate | rate | others: max drop | "
            + " | ".join(extra) + " |\n|---|---|---|---:|---:|---:|---:|" + "---:|" * len(extra) + "\n")
    fmt = lambda c, v: ("" if pd.isna(v) else f"{v:.2f}") if c.startswith("spearman_") else pct(v)
    lines = [f"| {r['target']} | {r['prune']} | {r['method']} | {r['pruned_weights']} ({100 * r['pruned_fraction_of_unet']:.2f}%) | "
             f"{pct(r['base_rate'])} | {pct(r['erased_rate'])} | {r['others_max_drop_points']:.1f} pt | "
             + " | ".join(fmt(c, r[c]) for c in extra) + " |" for r in df.to_dict(orient="records")]
    return head + "\n".join(lines) + "\n"


def html(df: pd.DataFrame) -> str:
    """The pruning table as a page for Snakemake's HTML report."""
    extra = [c for c in df.columns if c.startswith(("pre_rate_", "asr_"))]
    rows = [{"target": r["target"], "pruning": r["prune"], "method": r["method"],
             "pruned (of UNet)": f"{r['pruned_weights']} ({100 * r['pruned_fraction_of_unet']:.2f}%)",
             "base rate": pct(r["base_rate"]), "rate": pct(r["erased_rate"]),
             "others: max drop": f"{r['others_max_drop_points']:.1f} pt", **{c: pct(r[c]) for c in extra}}
            for r in df.to_dict(orient="records")]
    return page("Pruning, then erasure", html_table(rows, text=("target", "pruning", "method")),
                "Per variant: the pruned weights, the target's rate and the others' worst drop; per attack the "
                "pre-attack rate and the ASR (detected with the plain prompt or under the attack).")


def run(spec: dict, out: str | Path) -> None:
    """spec: {summary, attacks (or null), masks: [...], attributions: [...]}; writes pruning.csv, .md, .html."""
    from ..runtime import stage
    out_dir = Path(out)
    with stage("prune_report", spec):
        attacks = pd.read_csv(spec["attacks"]) if spec.get("attacks") else None
        df = pruning_table(pd.read_csv(spec["summary"]), attacks, spec["masks"], spec["attributions"])
        with atomic_path(out_dir / "pruning.csv") as tmp:
            df.to_csv(tmp, index=False, float_format="%.4f")
        write_text(out_dir / "pruning.md", markdown(df))
        write_text(out_dir / "pruning.html", html(df))
