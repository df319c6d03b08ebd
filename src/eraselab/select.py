"""The select stage (tuning): one setting per (model, target, method), from its candidates' validation scores.

Every candidate and the base model were scored on the validation prompt sets (the validate stage).
The numbers are the report's (its per-prompt tables, bootstrap and summary): each candidate's target
rate and reduction, and the worst drop of the other concepts, with 95% intervals over prompts. The
rule (config ``tuning.rule``), in ``choose``:

1. candidates that erase at least ``min_reduction`` of the target's base rate qualify (if none does,
   the one that erases most is taken, and the selection says so);
2. among them, the smallest worst drop of the other concepts wins;
3. ties go to the stronger erasure (lower target rate), then to the earlier candidate. With
   ``intervals``, a candidate whose worst-drop interval reaches the best worst drop counts as tied:
   on 20 validation prompts a few points of preservation are noise, and erasure decides.
"""
from __future__ import annotations

import json

import pandas as pd

from .artifacts import atomic_path, write_json
from .report import Evidence, per_prompt, summarise
from .runtime import stage
from .tuning import describe

COLUMNS = ["candidate", "setting", "erased_rate", "erased_rate_low", "erased_rate_high", "reduction",
           "reduction_low", "reduction_high", "others_max_drop_points", "others_max_drop_points_low",
           "others_max_drop_points_high", "others_mean_rate"]


def choose(table: pd.DataFrame, min_reduction: float, intervals: bool) -> tuple[str, str]:
    """The chosen candidate's name, and why (rows in candidate order; columns as ``COLUMNS``)."""
    eps = 1e-9
    qualified = table[table.reduction >= min_reduction - eps]
    if qualified.empty:
        best = table.sort_values(["reduction", "others_max_drop_points"], ascending=[False, True], kind="stable")
        return best.candidate.iloc[0], f"no candidate erased {min_reduction:.0%}: the one that erased most"
    best_drop = qualified.others_max_drop_points.min()
    reach = qualified.others_max_drop_points_low if intervals else qualified.others_max_drop_points
    tied = qualified[reach <= best_drop + eps]
    pick = tied.sort_values(["erased_rate", "others_max_drop_points"], kind="stable").candidate.iloc[0]
    why = (f"{len(qualified)} of {len(table)} erased at least {min_reduction:.0%}; smallest worst drop "
           f"{best_drop:.1f} pt" + (f"; {len(tied)} tied with it" + (" (intervals)" if intervals else "")
                                   + ", the lowest target rate taken" if len(tied) > 1 else ""))
    return pick, why


def run(rates: dict, scores: dict, out: str, table: str, spec: dict) -> None:
    """spec: model, target, method, candidates {name: overrides}, variants (base first), rule, budget, ..."""
    with stage("select", spec, spec["seed"]) as run_info:
        entries = [{"model": spec["model"], "variant": v, "rates": rates[v], "scores": scores[v], "images": []}
                   for v in spec["variants"]]
        detections = per_prompt(entries)
        summary, _ = summarise(detections, Evidence(detections, spec["bootstrap"], spec["seed"]),
                               spec["rule"]["min_reduction"], spec["max_drop_points"])
        frame = summary.set_index("method").loc[list(spec["candidates"])].reset_index(names="candidate")
        frame["setting"] = [describe(spec["candidates"][c]) for c in frame.candidate]
        frame = frame[COLUMNS]
        chosen, why = choose(frame, spec["rule"]["min_reduction"], spec["rule"]["intervals"])
        frame["chosen"] = frame.candidate == chosen
        with atomic_path(table) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.4f")
        write_json(out, {"model": spec["model"], "target": spec["target"], "method": spec["method"],
                         "chosen": chosen, "overrides": spec["candidates"][chosen],
                         "setting": describe(spec["candidates"][chosen]), "why": why,
                         "rule": spec["rule"], "budget": spec["budget"], "search": spec["search"],
                         "space": spec["space"], "candidates": json.loads(frame.to_json(orient="records")),
                         "provenance": run_info.record()})
