"""The bootstrap behind every interval: draws, percentile intervals, bars and verdicts."""
import numpy as np
import pytest

from eraselab import stats


def test_replicate_zero_is_the_estimate_and_draws_repeat():
    d = stats.draws(3, {"a": 5}, replicates=50, seed=1)
    table = np.arange(15, dtype=float).reshape(3, 5)
    reps = d.mean(table, "a")
    assert reps.shape == (51,) and reps[0] == pytest.approx(table.mean())
    assert np.allclose(d.seeds[1:].sum(axis=1), 1) and np.allclose(d.prompts["a"][1:].sum(axis=1), 1)
    assert np.array_equal(reps, stats.draws(3, {"a": 5}, replicates=50, seed=1).mean(table, "a"))
    assert not np.array_equal(reps, stats.draws(3, {"a": 5}, replicates=50, seed=2).mean(table, "a"))
    # the base model's one-row table is resampled over prompts only
    assert d.mean(table[:1], "a")[0] == pytest.approx(2.0)


def test_the_interval_of_a_proportion_matches_the_binomial():
    """40 prompts, half detected, one seed: the bootstrap's 95% interval is close to 1.96 sqrt(p(1-p)/n)."""
    d = stats.draws(1, {"a": 40}, replicates=4000, seed=0)
    low, high = stats.interval(d.mean(np.r_[np.ones(20), np.zeros(20)][None], "a"))
    half = 1.96 * np.sqrt(0.25 / 40)
    assert low == pytest.approx(0.5 - half, abs=0.03) and high == pytest.approx(0.5 + half, abs=0.03)


def test_mismatched_tables_are_errors():
    d = stats.draws(2, {"a": 4}, replicates=10)
    with pytest.raises(ValueError, match="3 prompts against 4 drawn"):
        d.mean(np.zeros((2, 3)), "a")
    with pytest.raises(ValueError, match="3 seeds against 2 drawn; every erased model must be run on the same seeds"):
        d.mean(np.zeros((3, 4)), "a")


@pytest.mark.parametrize("reps, line, at_least, expected", [
    ([0.7, 0.6, 0.8], 0.5, True, "yes"), ([0.3, 0.2, 0.4], 0.5, True, "no"), ([0.5, 0.3, 0.7], 0.5, True, "unclear"),
    ([5.0, 2.0, 8.0], 10, False, "yes"), ([15.0, 12.0, 20.0], 10, False, "no"), ([10.0, 5.0, 15.0], 10, False, "unclear"),
    ([0.5, 0.5, 0.5], 0.5, True, "yes"),   # exactly on the line, no spread: passes
])
def test_bars_read_yes_no_or_unclear(reps, line, at_least, expected):
    assert stats.bar(np.array(reps), line, at_least) == expected


@pytest.mark.parametrize("reps, expected, verdict", [
    ([-0.2, -0.3, -0.1], "lower", "reproduced"), ([0.2, 0.1, 0.3], "lower", "refuted"),
    ([0.0, -0.1, 0.1], "lower", "inconclusive"), ([0.2, 0.1, 0.3], "higher", "reproduced"),
    ([np.nan, np.nan, np.nan], "higher", "inconclusive"),
])
def test_verdicts(reps, expected, verdict):
    assert stats.verdict(np.array(reps), expected) == verdict


def test_a_verdict_needs_a_direction():
    with pytest.raises(ValueError, match="'lower' or 'higher'"):
        stats.verdict(np.zeros(3), "smaller")


@pytest.mark.parametrize("reps, value, tolerance, verdict", [
    ([0.74, 0.66, 0.82], 0.76, 0.05, "reproduced"),       # estimate in the band
    ([0.71, 0.70, 0.72], 0.76, 0.05, "reproduced"),       # on the band's edge
    ([0.60, 0.52, 0.68], 0.76, 0.05, "not reproduced"),   # the whole interval below the band
    ([0.95, 0.90, 0.99], 0.76, 0.05, "not reproduced"),   # ... above it
    ([0.68, 0.60, 0.76], 0.76, 0.05, "inconclusive"),     # estimate out, interval reaches the band
    ([17.2, np.nan, np.nan], 18.18, 2.0, "reproduced"),   # no interval (FID): the estimate decides
    ([22.0, np.nan, np.nan], 18.18, 2.0, "not reproduced"),
    ([np.nan, np.nan, np.nan], 0.5, 0.1, "inconclusive"),  # nothing measured
])
def test_a_measured_number_against_a_published_one(reps, value, tolerance, verdict):
    assert stats.agreement(np.array(reps), value, tolerance) == verdict
