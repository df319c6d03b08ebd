"""Where every artifact lives: one place for the path patterns rules and code share.

A *variant* is a model the pipeline evaluates: the base model (``base``) or
an erased one, ``{target}/seed{seed}/{prune}/{method}``: the erasure seed (config
``run.seeds``; pruning and attacks use it too), then the pruning (``none`` when the
erasure ran on the unpruned model) and the method. Everything a variant produces
sits under ``results/{model}/{variant}/``, and everything one seed produced for a
target under ``results/{model}/{target}/seed{seed}/``:

    results/conceptworld/base/images/circle.tar
    results/conceptworld/triangle/seed0/none/esd-x/delta.safetensors
    results/conceptworld/triangle/seed0/none/esd-x/images/triangle.tar
    results/conceptworld/triangle/seed0/none/esd-x/scores.csv
"""
from __future__ import annotations

import itertools
import re

BASE = "base"
RESOURCES = "resources/models/{model}"
CONCEPTWORLD_TRAINED = "results/{model}/conceptworld"
VARIANT = "results/{model}/{variant}"
DELTA = "results/{model}/{target}/seed{seed}/{prune}/{method}/delta.safetensors"
IMAGES = VARIANT + "/images/{promptset}.tar"
SCORES = VARIANT + "/scores.csv"
RATES = VARIANT + "/rates.json"
NEUTRAL_IMAGES = VARIANT + "/quality/neutral.tar"   # the neutral prompt set, for preservation metrics
QUALITY = VARIANT + "/quality.json"
REPORT = "results/report"
# External assets (config/assets.yaml, eraselab.assets): a fetched file, and the prompt set of one
# value of a CSV asset's split column (its slug: "Van Gogh" -> van_gogh).
ASSET = "resources/assets/{asset}/{file}"
ASSET_SOURCE = "resources/assets/{asset}/{file}-source.json"   # where it came from (not {file}.json: see atomic_path)
SPLIT = "resources/prompts/{asset}/{value}.csv"

# Wildcard constraints: names are single path components; a variant is base or
# target/seedN/prune/method.
NAME = r"[A-Za-z0-9][A-Za-z0-9_.+-]*"
SEED = r"[0-9]+"
VARIANT_RE = rf"{BASE}|{NAME}/seed{SEED}/{NAME}/{NAME}"


def slug(value) -> str:
    """A value as a file name: lower case, each run of other characters one underscore."""
    return re.sub(r"[^a-z0-9]+", "_", str(value).lower()).strip("_")


def variant(target: str, seed: int | str, prune: str, method: str) -> str:
    return f"{target}/seed{seed}/{prune}/{method}"


def parse_variant(v: str) -> dict[str, str | None]:
    """``base`` or ``target/seedN/prune/method`` -> its parts, as the rules' wildcards (strings;
    None for the base model)."""
    if v == BASE:
        return {"target": None, "seed": None, "prune": None, "method": None}
    target, seed, prune, method = v.split("/")
    return {"target": target, "seed": seed.removeprefix("seed"), "prune": prune, "method": method}


def grid(run: dict) -> list[tuple[str, str]]:
    """Every (model, variant) the run evaluates, base models first; an erased model's seeds side by side."""
    out = [(m, BASE) for m in run["models"]]
    out += [(m, variant(t, s, p, e)) for m, t, p, e, s in itertools.product(
        run["models"], run["targets"], run["prunings"], run["methods"], run["seeds"]) if erased_on(run, p, e)]
    return out


def erased_on(run: dict, prune: str, method: str) -> bool:
    """Does the grid erase with ``method`` on pruning ``prune``? Every method on the unpruned model; on a
    pruned one, the methods of run.pruned_methods (all when it is null)."""
    chosen = run.get("pruned_methods")
    return prune == NONE or chosen is None or method in chosen


def prompt_sets(run: dict) -> list[str]:
    """The prompt sets every variant generates: the targets', then the preserved concepts'."""
    return list(dict.fromkeys([*run["targets"], *run["preserve"]]))


# Attacks. A variant's attack results live under its directory; attacks that read only the text
# encoder (Ring-A-Bell) are computed once per base model, target and seed, under results/{model}/attacks/.
# Tuning (plan.candidates): each candidate setting of a method is erased as the method `{method}.tune{i}`
# and scored on the validation prompt sets, as is the base model; rule select keeps one per (model,
# target, method) in selection.json, with every candidate's numbers in candidates.csv.
VALIDATION_SCORES = VARIANT + "/validation/scores.csv"
VALIDATION_RATES = VARIANT + "/validation/rates.json"
SELECTION = "results/{model}/tuning/{target}/{method}/selection.json"
CANDIDATES = "results/{model}/tuning/{target}/{method}/candidates.csv"


def candidate(method: str, i: int) -> str:
    """The name a method's i-th tuning candidate is erased under (i from 1)."""
    return f"{method}.tune{i}"


ATTACK = VARIANT + "/attacks/{attack}"
ADVERSARIAL = ATTACK + "/adversarial.safetensors"
SHARED_ADVERSARIAL = "results/{model}/attacks/{attack}/{target}/seed{seed}/adversarial.safetensors"
ATTACK_IMAGES = ATTACK + "/images.tar"
ATTACK_SCORES = ATTACK + "/scores.csv"
ATTACK_RATES = ATTACK + "/rates.json"


def adversarial_files(path: str) -> list[str]:
    """An adversarial set's files: tensors, per-prompt table, metadata."""
    stem = path.removesuffix(".safetensors")
    return [path, stem + ".csv", stem + ".json"]


def attack_grid(run: dict) -> list[tuple[str, str, str]]:
    """Every (model, erased variant, attack) the run evaluates; the base model is not attacked."""
    attacks = [a for a in run.get("attacks", []) if a != "none"]
    return [(m, v, a) for m, v in grid(run) if v != BASE for a in attacks]


# Pruning and attribution. A mask is made per model, target, seed and pruning, and sits in the
# pruning's directory, beside the variants erased on it: results/conceptworld/triangle/seed0/wanda/mask.safetensors.
NONE = "none"
MASK = "results/{model}/{target}/seed{seed}/{prune}/mask.safetensors"
# The base model's per-neuron activations on a target's prompts and their matched neutral prompts.
ATTRIBUTION_BASE = "results/{model}/base/attribution/{target}/concept-vs-neutral.parquet"
# rho and delta of every neuron of an erased variant under one attack (+ .png figure, .json summary).
ATTRIBUTION = VARIANT + "/attribution/{attack}/neurons.parquet"


def with_suffixes(path: str, *suffixes: str) -> list[str]:
    """A table and its sidecars: neurons.parquet -> [neurons.parquet, neurons.json, ...]."""
    stem = path.rsplit(".", 1)[0]
    return [path, *(stem + s for s in suffixes)]


def attribution_grid(run: dict) -> list[tuple[str, str, str]]:
    """Every (model, erased variant, attack) analysed: the attack grid."""
    return attack_grid(run)
