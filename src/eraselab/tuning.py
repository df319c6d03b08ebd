"""Tuning's search: the candidate settings of a method, drawn the same way on every machine.

A method's search space (config ``tuning.methods.<method>``) maps each searched parameter to a
list of values or a range ``{low, high, log, integer}``. ``candidates`` turns it into exactly
``budget`` settings (the same budget for every method, so no row of a comparison was tuned harder
than another): ``grid`` takes every point of the lists' product, or ``budget`` of them drawn
without replacement when there are more; ``random`` draws ``budget`` points. Draws come from a
generator seeded by the tuning seed and the method's name, so planning is reproducible and adding
a method does not change another's candidates. No torch here: the planner imports it.
"""
from __future__ import annotations

import itertools
import math
import random


class SearchError(ValueError):
    """A search space that cannot give ``budget`` candidates; the message names the method and why."""


def candidates(space: dict, budget: int, search: str, seed: int, method: str) -> list[dict]:
    """``budget`` dicts of parameter overrides for ``method`` (in a fixed order)."""
    rng = random.Random(f"{seed}/{method}")
    keys = sorted(space)
    if search == "grid":
        ranges = [k for k in keys if not isinstance(space[k], list)]
        if ranges:
            raise SearchError(f"tuning.methods.{method}: {', '.join(ranges)} is a range; grid search takes lists "
                              f"of values (or set tuning.search: random)")
        points = list(itertools.product(*(space[k] for k in keys)))
        if len(points) < budget:
            raise SearchError(f"tuning.methods.{method}: its grid has {len(points)} points, fewer than the budget "
                              f"of {budget}; every method gets the same number of candidates: add values, or "
                              f"lower tuning.budget")
        chosen = sorted(rng.sample(range(len(points)), budget)) if len(points) > budget else range(budget)
        return [dict(zip(keys, points[i])) for i in chosen]
    for k in keys:
        if isinstance(space[k], dict) and not space[k]["low"] <= space[k]["high"]:
            raise SearchError(f"tuning.methods.{method}.{k}: low {space[k]['low']} is above high {space[k]['high']}")
        if isinstance(space[k], dict) and space[k].get("log") and space[k]["low"] <= 0:
            raise SearchError(f"tuning.methods.{method}.{k}: a log range needs low > 0, got {space[k]['low']}")
    return [{k: _draw(space[k], rng) for k in keys} for _ in range(budget)]


def _draw(values, rng: random.Random):
    if isinstance(values, list):
        return values[rng.randrange(len(values))]
    low, high = values["low"], values["high"]
    x = math.exp(rng.uniform(math.log(low), math.log(high))) if values.get("log") else rng.uniform(low, high)
    return int(round(x)) if values.get("integer") else float(f"{x:.4g}")   # 4 digits: readable in tables


def describe(overrides: dict) -> str:
    """``lr=0.001, negative_guidance=1.0``: a candidate's setting, as tables print it."""
    return ", ".join(f"{k}={v}" for k, v in sorted(overrides.items()))
