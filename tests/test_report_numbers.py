"""The report's numbers on a hand-made table: reductions, worst drops, the two bars at their boundaries, ASR.

Rates are hand-written rates.json files (as the score stage writes them) for a base model and four
erased variants, so every number the summary prints can be worked out by hand. Rates are
multiples of 1/20 (the default run's 20 prompts), whose float differences are not exact: square's
drop from 80% to 70%, "exactly 10 points", is 10.000000000000009, and the bar must still pass it.
"""
import numpy as np
import pytest

from eraselab.artifacts import write_json
from eraselab.report import summarise, tidy_attacks, tidy_rates
from eraselab.score.stage import attack_rates

TYPES = {"triangle": "object", "circle": "object", "square": "object", "night": "implicit"}
RATES = {   # variant -> concept -> rate (n = 20)
    "base": {"triangle": 1.0, "circle": 0.9, "square": 0.8, "night": 0.6},
    # reduction exactly 1/2, square drops exactly 10 points: both bars pass
    "triangle/none/boundary": {"triangle": 0.5, "circle": 0.85, "square": 0.7, "night": 0.6},
    # one image short on both: reduction 45%, square drops 15 points
    "triangle/none/short": {"triangle": 0.55, "circle": 0.9, "square": 0.65, "night": 0.55},
    # erased completely, every other concept rises: the worst "drop" is negative
    "triangle/none/rise": {"triangle": 0.0, "circle": 0.95, "square": 0.85, "night": 0.65},
    # a pruned variant of the implicit concept; night from 60% to 30% is exactly half
    "night/wanda/esd-x": {"triangle": 0.7, "circle": 0.9, "square": 0.8, "night": 0.3},
}


@pytest.fixture
def table(tmp_path):
    entries = []
    for variant, rates in RATES.items():
        path = tmp_path / (variant.replace("/", "_") + ".json")
        write_json(path, {"rates": {c: {"type": TYPES[c], "rate": r, "n": 20, "detector": {"kind": "conceptworld"}}
                                    for c, r in rates.items()}})
        entries.append({"model": "conceptworld", "variant": variant, "rates": str(path), "images": []})
    return entries


def test_tidy_rates_against_the_base_model(table):
    df = tidy_rates(table)
    assert len(df) == 4 * len(RATES)
    row = df[(df.method == "short") & (df.concept == "square")].iloc[0]
    assert (row.role, row.base_rate, row.rate) == ("other", 0.8, 0.65) and row.change_points == pytest.approx(-15)
    assert set(df[df.method == "base"].role) == {"base"} and (df[df.method == "base"].change_points == 0).all()
    assert df[(df.target == "night") & (df.concept == "night")].role.item() == "target"
    assert df[(df.target == "night") & (df.concept == "night")].prune.item() == "wanda"


def test_summary_reductions_worst_drops_and_bars(table):
    s = summarise(tidy_rates(table)).set_index("method")
    assert list(s.index) == ["boundary", "short", "rise", "esd-x"]

    b = s.loc["boundary"]
    assert (b.base_rate, b.erased_rate, b.reduction) == (1.0, 0.5, 0.5)
    assert 100 * (0.8 - 0.7) > 10                                         # float: 10.000000000000009
    assert b.others_max_drop_points == pytest.approx(10.0, abs=1e-9)      # square 80% -> 70%
    assert b.others_mean_rate == pytest.approx((0.85 + 0.7 + 0.6) / 3)
    assert b.others_base_mean_rate == pytest.approx((0.9 + 0.8 + 0.6) / 3)
    assert b.erased and b.preserved                                       # both bars pass at the boundary

    sh = s.loc["short"]
    assert sh.reduction == pytest.approx(0.45) and sh.others_max_drop_points == pytest.approx(15.0)
    assert not sh.erased and not sh.preserved

    r = s.loc["rise"]
    assert r.reduction == 1.0 and r.others_max_drop_points == pytest.approx(-5.0) and r.erased and r.preserved

    n = s.loc["esd-x"]
    assert (n.target, n.target_type, n.prune) == ("night", "implicit", "wanda")
    assert n.reduction == pytest.approx(0.5) and n.erased
    assert n.others_max_drop_points == pytest.approx(30.0) and not n.preserved   # triangle 100% -> 70%


def test_bars_follow_their_thresholds(table):
    """The bars are the arguments: a stricter bar fails the boundary row, a looser one passes the short row."""
    df = tidy_rates(table)
    strict = summarise(df, min_reduction=0.55, max_drop_points=5.0).set_index("method")
    assert not strict.loc["boundary"].erased and not strict.loc["boundary"].preserved
    loose = summarise(df, min_reduction=0.45, max_drop_points=15.0).set_index("method")
    assert loose.loc["short"].erased and loose.loc["short"].preserved


def test_attack_success_rate_counts_an_image_once():
    """ASR = (pre-attack successes + attack-only successes) / N: detected with the plain prompt or
    under attack, never counted twice."""
    pre = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], bool)       # 30% before the attack
    attacked = np.array([1, 0, 0, 1, 1, 0, 0, 0, 0, 0], bool)  # the attack finds 2 new ones, loses 2 old
    assert attack_rates(pre, attacked) == {"n": 10, "pre_rate": 0.3, "attack_rate": 0.3, "asr": 0.5,
                                           "attack_only": 2}
    assert attack_rates(pre, pre)["asr"] == 0.3 and attack_rates(pre, pre)["attack_only"] == 0   # identity attack
    assert attack_rates(pre, ~pre) == {"n": 10, "pre_rate": 0.3, "attack_rate": 0.7, "asr": 1.0, "attack_only": 7}


def test_attack_table_joins_the_base_rate(table, tmp_path):
    df = tidy_rates(table)
    path = tmp_path / "attack.json"
    write_json(path, {"type": "object", **attack_rates(np.r_[np.ones(6), np.zeros(14)].astype(bool),
                                                       np.r_[np.zeros(4), np.ones(10), np.zeros(6)].astype(bool)),
                      "attack": {"seconds_per_prompt": 2.5}, "detector": {"kind": "conceptworld", "rule": "argmax"}})
    out = tidy_attacks([{"model": "conceptworld", "variant": "triangle/none/boundary", "attack": "cce",
                         "algorithm": "concept_inversion", "shared": False, "rates": str(path)}], df)
    r = out.iloc[0]
    assert (r.base_rate, r.pre_rate, r.attack_rate, r.asr, r.n) == (1.0, 0.3, 0.5, 0.7, 20)
