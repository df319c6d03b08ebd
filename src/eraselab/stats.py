"""Intervals and paired comparisons: a bootstrap over erasure seeds and prompts.

Every number of the report is a mean over a (seeds x prompts) table: per erasure seed, per prompt
row, the share of its images in which a detector finds a concept (or a pixel distance). Every seed
of an erased model is evaluated on the same prompt rows with the same noise, so seeds and prompts
are crossed, not nested. A bootstrap replicate draws the seeds with replacement and, independently,
each prompt set's rows with replacement (the two-way bootstrap of a crossed design) and recomputes
every number from the same draws. The 95% interval of a number is the 2.5th and 97.5th percentile
of its replicates.

Because every table of a concept is weighted by the same draws, two erased models evaluated on the
same seeds and prompts are compared *paired*: their difference is taken replicate by replicate,
so the variation they share (a hard prompt is hard for both) cancels.

Replicate 0 weighs every seed and prompt once: it is the point estimate, so a number and its
interval come from one computation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.95


@dataclass(frozen=True)
class Draws:
    """Bootstrap weights: row 0 uniform (the estimate), rows 1.. resampled (counts / n)."""
    seeds: np.ndarray              # (1 + replicates, n_seeds)
    prompts: dict[str, np.ndarray]  # prompt set -> (1 + replicates, n_prompts)

    def mean(self, table: np.ndarray, promptset: str) -> np.ndarray:
        """A (seeds x prompts) table's mean in every replicate; a one-row table (the base model,
        which has no erasure seed) is resampled over prompts only."""
        prompts = self.prompts[promptset]
        table = np.asarray(table, dtype=float)
        if table.shape[1] != prompts.shape[1]:
            raise ValueError(f"{promptset}: a table of {table.shape[1]} prompts against {prompts.shape[1]} "
                             "drawn; every variant must be evaluated on the same prompt rows")
        if table.shape[0] == 1:
            return table[0] @ prompts.T
        if table.shape[0] != self.seeds.shape[1]:
            raise ValueError(f"{promptset}: a table of {table.shape[0]} seeds against {self.seeds.shape[1]} "
                             "drawn; every erased model must be run on the same seeds")
        return np.einsum("bs,sp,bp->b", self.seeds, table, prompts)


def draws(n_seeds: int, prompts: dict[str, int], replicates: int = 2000, seed: int = 0) -> Draws:
    """Weights for ``replicates`` bootstrap replicates (plus the estimate) of ``n_seeds`` seeds and
    each prompt set's rows; the same arguments give the same draws."""
    rng = np.random.default_rng(seed)

    def weights(n: int) -> np.ndarray:
        counts = rng.multinomial(n, np.full(n, 1 / n), size=replicates) if n else np.zeros((replicates, 0))
        return np.vstack([np.ones((1, n)), counts]) / max(n, 1)

    return Draws(weights(n_seeds), {ps: weights(prompts[ps]) for ps in sorted(prompts)})


def estimate(reps: np.ndarray) -> float:
    return float(reps[0])


def interval(reps: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of a number's replicates (row 0, the estimate, left out)."""
    r = np.asarray(reps, dtype=float)[1:]
    r = r[np.isfinite(r)]
    if not len(r):
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(r, [tail, 100 - tail])
    return float(low), float(high)


def bar(reps: np.ndarray, line: float, at_least: bool) -> str:
    """Does a number pass a bar (at least / at most ``line``)? "yes" or "no" when its whole interval
    is on one side, "unclear" when the interval straddles the line. A point estimate exactly on the
    line passes (rates are multiples of 1/n, whose float differences are not exact)."""
    eps = 1e-9
    low, high = interval(reps)
    if not np.isfinite(low):
        value = estimate(reps)
        if not np.isfinite(value):
            return "unclear"
        low = high = value
    if at_least:
        return "yes" if low >= line - eps else "no" if high < line - eps else "unclear"
    return "yes" if high <= line + eps else "no" if low > line + eps else "unclear"


def verdict(effect_reps: np.ndarray, expected: str) -> str:
    """A published ordering against a paired effect (A - B): "reproduced" when the interval lies on
    the published side of 0, "refuted" when on the other, "inconclusive" when it holds 0."""
    if expected not in ("lower", "higher"):
        raise ValueError(f"expected: 'lower' or 'higher', got {expected!r}")
    low, high = interval(effect_reps)
    if not np.isfinite(low):
        return "inconclusive"
    below, above = high < 0, low > 0
    if expected == "lower":
        return "reproduced" if below else "refuted" if above else "inconclusive"
    return "reproduced" if above else "refuted" if below else "inconclusive"


def agreement(reps: np.ndarray, value: float, tolerance: float) -> str:
    """A measured number against a published one (``value`` ± ``tolerance``, the band a protocol calls
    a match): "reproduced" when the estimate is in the band, "not reproduced" when the whole interval
    is outside it, "inconclusive" when only the interval reaches it. A number without an interval
    (FID) is reproduced or not by its estimate alone."""
    eps = 1e-9
    lo_band, hi_band = value - tolerance - eps, value + tolerance + eps
    est = estimate(reps)
    if not np.isfinite(est):
        return "inconclusive"
    if lo_band <= est <= hi_band:
        return "reproduced"
    low, high = interval(reps)
    if not np.isfinite(low) or high < lo_band or low > hi_band:
        return "not reproduced"
    return "inconclusive"
