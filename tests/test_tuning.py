"""Tuning in the DAG: the search (candidates), the selection rule, and the config's checks.

The rule is tested on hand-made tables whose choice can be worked out by hand; the DAG (what a run
plans, what a change reruns) in tests/test_workflow.py's tuning test.
"""
import copy

import pandas as pd
import pytest

from eraselab.config import ConfigError, load_config, validate
from eraselab.select import COLUMNS, choose
from eraselab.tuning import SearchError, candidates

from conftest import ROOT


def table(rows: list[tuple]) -> pd.DataFrame:
    """(candidate, erased rate, reduction, worst drop, worst drop low) rows; the other columns filled."""
    frame = pd.DataFrame(rows, columns=["candidate", "erased_rate", "reduction", "others_max_drop_points",
                                        "others_max_drop_points_low"])
    for c in COLUMNS:
        if c not in frame:
            frame[c] = 0.0
    return frame


def test_the_rule_takes_the_smallest_worst_drop_among_those_that_erase_half():
    """c1 does not erase half; c2 and c3 do, c3 with the smaller worst drop: c3."""
    t = table([("c1", 0.6, 0.4, 0.0, 0.0), ("c2", 0.1, 0.9, 20.0, 10.0), ("c3", 0.3, 0.7, 5.0, 0.0)])
    assert choose(t, 0.5, intervals=False)[0] == "c3"


def test_ties_go_to_the_stronger_erasure_and_intervals_widen_the_tie():
    """c2's worst drop (8 pt) is above c3's (5 pt), but its interval reaches down to 2 pt: with
    intervals they are tied and c2, which erases more, wins; without, c3 wins."""
    t = table([("c2", 0.1, 0.9, 8.0, 2.0), ("c3", 0.3, 0.7, 5.0, 0.0)])
    assert choose(t, 0.5, intervals=True)[0] == "c2"
    pick, why = choose(t, 0.5, intervals=False)
    assert pick == "c3" and "smallest worst drop 5.0 pt" in why
    # equal estimates tie without intervals too; then the lower target rate
    assert choose(table([("a", 0.3, 0.7, 5.0, 5.0), ("b", 0.2, 0.8, 5.0, 5.0)]), 0.5, False)[0] == "b"


def test_when_nothing_erases_half_the_strongest_eraser_is_taken_and_said_so():
    t = table([("c1", 0.8, 0.2, 0.0, 0.0), ("c2", 0.6, 0.4, 30.0, 20.0)])
    pick, why = choose(t, 0.5, intervals=True)
    assert pick == "c2" and "no candidate erased 50%" in why


def test_grid_and_random_search_give_the_budget_reproducibly():
    space = {"lr": [1e-4, 1e-3], "negative_guidance": [1.0, 2.0, 3.0]}
    grid = candidates(space, 6, "grid", 0, "esd-u")
    assert len(grid) == 6 and {(c["lr"], c["negative_guidance"]) for c in grid} == {
        (lr, eta) for lr in space["lr"] for eta in space["negative_guidance"]}
    sub = candidates(space, 4, "grid", 0, "esd-u")
    assert len(sub) == 4 and len({tuple(c.items()) for c in sub}) == 4 and sub == candidates(space, 4, "grid", 0, "esd-u")
    assert sub != candidates(space, 4, "grid", 1, "esd-u")   # another seed, another subset (of 15)
    rand = candidates({"lr": {"low": 1e-5, "high": 1e-3, "log": True}, "iterations": {"low": 100, "high": 600,
                                                                                     "integer": True}},
                      5, "random", 0, "esd-x")
    assert len(rand) == 5 and all(1e-5 <= c["lr"] <= 1e-3 and isinstance(c["iterations"], int) for c in rand)
    assert rand == candidates({"lr": {"low": 1e-5, "high": 1e-3, "log": True},
                               "iterations": {"low": 100, "high": 600, "integer": True}}, 5, "random", 0, "esd-x")


def test_a_grid_smaller_than_the_budget_is_refused():
    with pytest.raises(SearchError, match=r"tuning.methods.uce: its grid has 2 points, fewer than the budget of 4"):
        candidates({"lamb": [0.1, 0.5]}, 4, "grid", 0, "uce")
    with pytest.raises(SearchError, match="is a range; grid search takes lists"):
        candidates({"lr": {"low": 0.1, "high": 1.0}}, 2, "grid", 0, "esd-x")


@pytest.fixture
def methods_cfg():
    import yaml
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    raw["run"]["methods"] = ["esd-x", "esd-u"]
    raw["tuning"] = {"enabled": True, "budget": 2,
                     "methods": {"esd-x": {"lr": [1e-4, 1e-3]}, "esd-u": {"negative_guidance": [1.0, 3.0]}}}
    return raw


def test_candidates_become_methods_with_their_settings(methods_cfg):
    cfg = validate(copy.deepcopy(methods_cfg), ROOT)
    assert [cfg["methods"][f"esd-u.tune{i}"]["negative_guidance"] for i in (1, 2)] == [1.0, 3.0]
    assert cfg["methods"]["esd-u.tune1"]["train"] == "noxattn" and cfg["methods"]["esd-u.tune1"]["iterations"] == 600
    methods_cfg["tuning"]["enabled"] = False
    assert "esd-u.tune1" not in validate(copy.deepcopy(methods_cfg), ROOT)["methods"]


@pytest.mark.parametrize("change,fragments", [
    (lambda c: c["tuning"]["methods"].update({"uce2": {"lamb": [1, 2]}}), ["tuning.methods.uce2", "not a method"]),
    (lambda c: c["tuning"]["methods"]["esd-u"].update({"negative_guidance": ["high", 3.0]}),
     ["tuning.methods.esd-u.negative_guidance", "'high'", "candidate 1"]),
    (lambda c: c["tuning"].update({"budget": 3}), ["tuning.methods.esd-x: its grid has 2 points", "budget of 3"]),
    (lambda c: c["concepts"]["circle"].pop("validation"), ["concepts.circle.validation", "required when tuning"]),
    (lambda c: c["tuning"].update({"search": "bayes"}), ["tuning.search", "'bayes'", "'grid'", "'random'"]),
])
def test_bad_tuning_config_is_rejected_with_a_precise_message(methods_cfg, change, fragments):
    change(methods_cfg)
    with pytest.raises(ConfigError) as e:
        validate(methods_cfg, ROOT)
    for f in fragments:
        assert f in str(e.value), (f, str(e.value))


def test_the_methods_preset_tunes_every_method_with_the_same_budget_and_esd_u_tries_eta_1():
    cfg = load_config(ROOT / "config" / "config.yaml", ROOT / "config" / "methods.yaml", root=ROOT)
    from eraselab import plan
    tuned = plan.tuned_methods(cfg)
    assert tuned == cfg["run"]["methods"]
    assert {len(plan.candidates(cfg, m)) for m in tuned} == {cfg["tuning"]["budget"]}
    assert 1.0 in {c["negative_guidance"] for c in plan.candidates(cfg, "esd-u").values()}


def test_evaluating_on_more_seeds_and_prompts_leaves_the_tuning_jobs_as_they_were():
    """config/replicates.yaml raises the evaluation's prompt cap and seeds; the validation jobs' specs and
    the selections' lineage must not change, or adding it would rerun the whole tuning."""
    from eraselab import plan
    presets = [ROOT / "config" / "config.yaml", ROOT / "config" / "methods.yaml"]
    one, three = (load_config(*presets, *extra, root=ROOT) for extra in ([], [ROOT / "config" / "replicates.yaml"]))
    assert one["generation"]["max_prompts"] != three["generation"]["max_prompts"]
    variant = "triangle/seed0/none/esd-u.tune1"
    assert plan.validate_spec(one, "conceptworld", variant) == plan.validate_spec(three, "conceptworld", variant)
    assert plan.validate_spec(one, "conceptworld", variant)["generation"]["max_prompts"] == 20
    w = {"model": "conceptworld", "target": "night", "method": "rece"}
    assert plan.lineage(one, "select", **w) == plan.lineage(three, "select", **w)


def test_the_robust_baselines_are_tunable_with_the_same_budget(tmp_path):
    """config/baselines.yaml declares AdvUnlearn's and SalUn's spaces beside methods.yaml's: with
    tuning turned on, every method of its grid gets 4 candidates."""
    from eraselab import plan
    (tmp_path / "on.yaml").write_text("tuning: {enabled: true}\n")
    cfg = load_config(*[ROOT / "config" / f for f in ("config.yaml", "methods.yaml", "baselines.yaml")],
                      tmp_path / "on.yaml", root=ROOT)
    assert plan.tuned_methods(cfg) == cfg["run"]["methods"] and {"advunlearn", "salun"} <= set(cfg["run"]["methods"])
    assert {len(plan.candidates(cfg, m)) for m in cfg["run"]["methods"]} == {4}
    assert {c["threshold"] for c in plan.candidates(cfg, "salun").values()} == {0.3, 0.5}
