"""From the validated config to jobs: each rule's inputs and the config slice it depends on.

The Snakemake rules call these functions with their wildcards. A job's spec
holds exactly the values its output depends on, so Snakemake's params trigger
reruns a job when, and only when, one of them changes.
"""
from __future__ import annotations

import hashlib
import json

from . import assets, layout
from .artifacts import MANIFEST
from .attacks import ATTACKS, LEVEL, NEEDS
from .cli import stage_module
from .erase import METHODS
from .fingerprint import code_fingerprint, digest
from .models import SOURCES
from .prune import KINDS
from .registry import module_of
from .score import DETECTORS, FEATURES
from .score.quality import METRICS


def model_dir(cfg: dict, model: str) -> str:
    """The diffusers directory of a base model (local models are used in place)."""
    m = cfg["models"][model]
    return m["path"] if m["source"] == "local" else layout.RESOURCES.format(model=model)


def conceptworld_weights(cfg: dict, model: str) -> list[str]:
    """The weights a ConceptWorld base model is assembled from: shipped, or retrained."""
    m = cfg["models"][model]
    if m["source"] != "conceptworld":
        return []
    return [layout.CONCEPTWORLD_TRAINED.format(model=model) if m["retrain"] else m["path"]]


# Files of a ConceptWorld weights directory that describe the weights rather than make them:
# rewriting them (a new quality measurement, a new manifest) must not rerun every stage.
WEIGHTS_RECORDS = ("quality.json", "examples.png", MANIFEST)


def base_model_spec(cfg: dict, model: str) -> dict:
    m = cfg["models"][model]
    spec = {k: m[k] for k in ("source", "repo_id", "revision", "architecture", "image_size") if k in m}
    if m["source"] == "conceptworld" and not m["retrain"]:
        spec["weights_sha256"] = digest(m["path"], ignore=WEIGHTS_RECORDS)  # content, not file times
    if m["source"] == "random":  # random weights depend on the seed
        spec["seed"] = cfg["seed"]
    return spec


def train_spec(cfg: dict) -> dict:
    return {"seed": cfg["seed"], **cfg["conceptworld"]}


def concept_spec(cfg: dict, name: str) -> dict:
    return {"name": name, **cfg["concepts"][name]}


# Erasers that generate a validation prompt set and run the concept's detector while erasing
# (RECE keeps its best epoch); only their jobs depend on the detector and generation settings.
VALIDATED_ALGORITHMS = {"rece"}
VALIDATION_GENERATION = ("steps", "scheduler", "batch_size", "guidance")


def validation_spec(cfg: dict, target: str, method: str) -> dict | None:
    """What a validating eraser needs: the target's validation prompts, detector, generation settings."""
    concept = cfg["concepts"][target]
    if cfg["methods"][method]["algorithm"] not in VALIDATED_ALGORITHMS or "validation" not in concept:
        return None
    return {"prompts": concept["validation"], "detector": concept["detector"],
            "generation": {k: cfg["generation"][k] for k in VALIDATION_GENERATION}}


def erase_inputs(cfg: dict, model: str, target: str, seed: str, prune: str, method: str) -> dict:
    inputs = {"base": model_dir(cfg, model)}
    if prune != layout.NONE:
        inputs["mask"] = layout.MASK.format(model=model, target=target, seed=seed, prune=prune)
    if (v := validation_spec(cfg, target, method)) is not None:
        inputs["validation"] = v["prompts"]
        inputs["detectors"] = detector_files(cfg, [target])
    if retain := retain_file(method_params(cfg, model, target, method)):
        inputs["retain"] = retain
    return inputs


def detector_files(cfg: dict, concepts: list[str]) -> list[str]:
    """The model files the concepts' detectors read, where the config names one (a fetched NudeNet model)."""
    return list(dict.fromkeys(p for c in concepts if (p := cfg["concepts"][c]["detector"].get("model_path"))))


def source_digest(cfg: dict, path: str) -> str:
    """A source file's content identity: a fetched or split asset's pinned one (known before the file
    exists, so planning and rerunning agree), else the digest of the file's bytes."""
    return assets.digest_of(cfg["assets"], path) or digest(path)


# Erasers that read a concept's preserve prompts; the others' jobs must not rerun when those change.
PRESERVING_ALGORITHMS = {"uce", "rece"}


def reads_preserve(m: dict) -> bool:
    """Does this method read its concept's preserve prompts? UCE and RECE keep them; AdvUnlearn retains
    them unless given a retain file; SalUn relabels with them unless given a relabel list."""
    return (m["algorithm"] in PRESERVING_ALGORITHMS or (m["algorithm"] == "advunlearn" and m["retain"] == "preserve")
            or (m["algorithm"] == "salun" and not m.get("relabel")))


def retain_file(m: dict) -> str | None:
    """The retain prompt set an AdvUnlearn method reads (a file: an input of its erase jobs)."""
    return m["retain"] if m["algorithm"] == "advunlearn" and m["retain"] != "preserve" else None


def erase_spec(cfg: dict, model: str, target: str, seed: str, prune: str, method: str) -> dict:
    concept = {k: v for k, v in concept_spec(cfg, target).items() if k not in ("detector", "validation")}
    params = method_params(cfg, model, target, method)
    if not reads_preserve(params):
        concept["preserve"] = []
    spec = {"method_name": method, "method": params, "prune": prune,
            "concept": concept, "seed": int(seed), "model": model}
    if (v := validation_spec(cfg, target, method)) is not None:
        spec["validation"] = v
    if prune != layout.NONE:
        spec["pruning"] = cfg["prunings"][prune]
    return spec


def delta_path(model: str, variant: str) -> str | None:
    parts = layout.parse_variant(variant)
    return None if parts["method"] is None else layout.DELTA.format(model=model, **parts)


def image_paths(cfg: dict, model: str, variant: str) -> dict[str, str]:
    return {ps: layout.IMAGES.format(model=model, variant=variant, promptset=ps)
            for ps in layout.prompt_sets(cfg["run"])}


def generate_inputs(cfg: dict, model: str, variant: str) -> dict:
    inputs = {"base": model_dir(cfg, model),
              "prompts": [cfg["concepts"][ps]["prompts"] for ps in layout.prompt_sets(cfg["run"])]}
    if (delta := delta_path(model, variant)) is not None:
        inputs["delta"] = delta
    return inputs


def generate_spec(cfg: dict, model: str, variant: str) -> dict:
    return {"generation": cfg["generation"], "dtype": cfg["models"][model]["dtype"],
            "variant": variant, "model": model,
            "prompts_sha256": {ps: source_digest(cfg, cfg["concepts"][ps]["prompts"]) for ps in layout.prompt_sets(cfg["run"])}}


def score_inputs(cfg: dict, model: str, variant: str) -> dict:
    return {"base": model_dir(cfg, model), "images": list(image_paths(cfg, model, variant).values()),
            "detectors": detector_files(cfg, layout.prompt_sets(cfg["run"]))}


def score_spec(cfg: dict, model: str, variant: str) -> dict:
    sets = layout.prompt_sets(cfg["run"])
    return {"concepts": {c: {"detector": cfg["concepts"][c]["detector"], "type": cfg["concepts"][c]["type"]}
                         for c in sets}, "variant": variant, "model": model}


def quality_enabled(cfg: dict) -> bool:
    """Preservation metrics run when a neutral prompt set and at least one metric are configured."""
    q = cfg["quality"]
    return bool(q["prompts"]) and (q["clip_score"]["enabled"] or q["fid"]["features"] != "none")


def neutral_inputs(cfg: dict, model: str, variant: str) -> dict:
    inputs = {"base": model_dir(cfg, model), "prompts": cfg["quality"]["prompts"]}
    if (delta := delta_path(model, variant)) is not None:
        inputs["delta"] = delta
    return inputs


def quality_inputs(cfg: dict, model: str, variant: str) -> dict:
    """A variant's neutral images, and the base model's as FID's reference."""
    inputs = {"base": model_dir(cfg, model), "images": layout.NEUTRAL_IMAGES.format(model=model, variant=variant),
              "reference": layout.NEUTRAL_IMAGES.format(model=model, variant=layout.BASE)}
    if cfg["quality"]["fid"]["features"] != "none" and cfg["quality"]["fid"]["real_images"]:
        inputs["real"] = cfg["quality"]["fid"]["real_images"]
    return inputs


def quality_spec(cfg: dict, model: str, variant: str) -> dict:
    q = cfg["quality"]
    return {"clip_score": q["clip_score"], "fid": q["fid"], "variant": variant, "model": model}


def report_entries(cfg: dict) -> list[dict]:
    quality = quality_enabled(cfg)
    return [{"model": m, "variant": v, "rates": layout.RATES.format(model=m, variant=v),
             "scores": layout.SCORES.format(model=m, variant=v), "images": list(image_paths(cfg, m, v).values()),
             "quality": layout.QUALITY.format(model=m, variant=v) if quality else None}
            for m, v in layout.grid(cfg["run"])]


def report_spec(cfg: dict) -> dict:
    spec = {"entries": report_entries(cfg), **cfg["report"], "seed": cfg["seed"], "comparisons": comparisons(cfg),
            "expected": cfg["expected"]}
    if selections := tuning_outputs(cfg):
        spec["tuning"] = selections
    if attacks := attack_entries(cfg):
        spec["attacks"] = attacks
    return spec


# Erasers built to withstand attacks (adversarial training, saliency-masked relabelling): the run tests
# them against ESD, and the pruned erasers against them.
ROBUST_METHODS = {"advunlearn", "salun"}


def comparisons(cfg: dict) -> list[dict]:
    """The orderings this run's methods can test, as pairs of methods (the report's claims):
    RECE against the UCE it starts from (when the run holds that UCE), All-but-One against ESD
    trained on the same parameters, each robust baseline (AdvUnlearn, SalUn) against each ESD, and
    each pruned erasure against each robust baseline (``a_prune``/``b_prune``: the pair's prunings;
    absent, both sides share one). Attack-vs-pre-attack and pruned-vs-unpruned claims need no config:
    the report finds them in its tables."""
    run = cfg["run"]
    methods = {m: cfg["methods"][m] for m in run["methods"]}
    robust = [m for m, c in methods.items() if c["algorithm"] in ROBUST_METHODS]
    out = [{"claim": "robust-vs-esd", "a": r, "b": e} for r in robust
           for e, ec in methods.items() if ec["algorithm"] == "esd"]
    out += [{"claim": "pruned-vs-robust", "a": m, "a_prune": p, "b": r, "b_prune": layout.NONE}
            for p in run.get("prunings", []) if p != layout.NONE for m in methods
            if layout.erased_on(run, p, m) and methods[m]["algorithm"] not in ("identity", *ROBUST_METHODS)
            for r in robust]
    for r, rc in methods.items():
        if rc["algorithm"] == "rece":
            out += [{"claim": "rece-vs-uce", "a": r, "b": u} for u, uc in methods.items()
                    if uc["algorithm"] == "uce" and {k: v for k, v in uc.items() if k != "algorithm"}
                    == {k: v for k, v in rc["uce"].items() if k != "algorithm"}]
        if rc["algorithm"] == "all-but-one":
            out += [{"claim": "all-but-one-vs-esd", "a": r, "b": e} for e, ec in methods.items()
                    if ec["algorithm"] == "esd" and ec.get("train") == rc.get("train")]
    return out


def resources(cfg: dict, rule: str, attempt: int = 1) -> dict:
    """What a rule's jobs ask for (config `resources:`), as Snakemake resources plus threads.

    A retried job asks for ``attempt`` times the configured runtime and memory: on a cluster,
    time and memory limits are what kill jobs (profiles/slurm sets the retries).
    """
    r = {**cfg["resources"]["default"], **cfg["resources"].get(rule, {})}
    out = {k: r[k] * (attempt if k in ("mem_mb", "runtime") else 1) for k in ("threads", "mem_mb", "runtime") if k in r}
    if r.get("gpu"):  # a CPU job names no GPU: the SLURM plugin would turn a model into --gpus=MODEL:0
        out["gpu"] = r["gpu"]
        if r.get("gpu_model"):
            out["gpu_model"] = r["gpu_model"]
    return out


def final_outputs(cfg: dict) -> list[str]:
    return [f"{layout.REPORT}/{name}" for name in ("summary.csv", "summary.md", "rates.csv", "metrics.json",
                                                   "tradeoff.png", "overview.html", "summary.html", "claims.csv",
                                                   "claims.html", "dvc")] \
        + [f"{layout.REPORT}/grid_{m}.png" for m in cfg["run"]["models"]] + attack_report_outputs(cfg) \
        + expected_outputs(cfg) + tuning_report_outputs(cfg) \
        + attribution_outputs(cfg) + prune_report_outputs(cfg)


def expected_outputs(cfg: dict) -> list[str]:
    """The report's table of published numbers, when the config names any (expected:)."""
    return [f"{layout.REPORT}/expected.{ext}" for ext in ("csv", "html")] if cfg["expected"] else []


# --- Lineage: what a job depends on upstream -------------------------------------------
# Timestamps are not a rerun trigger in this workflow (profiles/default: DVC and git reset
# them). A job's spec holds its own settings; its lineage digests the specs and code of every
# job upstream of it, so a job also reruns when something upstream changed in an earlier,
# separate invocation (an interrupted run, or `snakemake <one delta>`). A new rule adds its
# spec to SPECS and the producers of its inputs to `upstream`.

def local_model_spec(cfg: dict, model: str) -> dict:
    """A local model is used in place, so its identity is its content."""
    path = cfg["models"][model]["path"]
    return {"path": path, "sha256": digest(path)}


SPECS = {
    "local_model": local_model_spec,
    "train_conceptworld": lambda cfg, model: train_spec(cfg),
    "base_model": base_model_spec,
    "erase": erase_spec,
    "generate": generate_spec,
    "score": score_spec,
    "report": lambda cfg: report_spec(cfg),
    "prune": lambda cfg, **w: prune_spec(cfg, **w),
    "attribute_base": lambda cfg, **w: attribute_base_spec(cfg, **w),
    "attribute": lambda cfg, **w: attribute_spec(cfg, **w),
    "attack": lambda cfg, **w: attack_spec(cfg, **w),
    "attack_shared": lambda cfg, **w: shared_attack_spec(cfg, **w),
    "attack_generate": lambda cfg, **w: attack_generate_spec(cfg, **w),
    "attack_score": lambda cfg, **w: attack_score_spec(cfg, **w),
    "generate_neutral": lambda cfg, **w: generate_spec(cfg, **w),
    "quality": lambda cfg, **w: quality_spec(cfg, **w),
    "fetch": lambda cfg, **w: fetch_spec(cfg, **w),
    "split": lambda cfg, **w: split_spec(cfg, **w),
    "validate": lambda cfg, **w: validate_spec(cfg, **w),
    "select": lambda cfg, **w: select_spec(cfg, **w),
}


def _reference(cfg: dict, w: dict) -> list[tuple[str, dict]]:
    """An attack that reads the base model's images of the target's prompts depends on their generation."""
    needs = NEEDS[attack_algorithm(cfg, w["attack"])]
    return [("generate", {"model": w["model"], "variant": layout.BASE})] if "reference" in needs else []


def _adversarial_source(cfg: dict, w: dict) -> tuple[str, dict]:
    """The job that made the adversarial set a variant is attacked with (plan.adversarial_path)."""
    if shares_attack(cfg, w["variant"], w["attack"]):
        parts = layout.parse_variant(w["variant"])
        return "attack_shared", {"model": w["model"], "target": parts["target"], "seed": parts["seed"],
                                 "attack": w["attack"]}
    return "attack", {k: w[k] for k in ("model", "variant", "attack")}


def upstream(cfg: dict, rule: str, **w) -> list[tuple[str, dict]]:
    """The jobs whose outputs a job reads, as (rule, wildcards)."""
    if rule == "report":
        after = ("generate", "score") + (("quality",) if quality_enabled(cfg) else ())
        return [(r, {"model": m, "variant": v}) for m, v in layout.grid(cfg["run"]) for r in after] \
            + [("attack_score", {"model": m, "variant": v, "attack": a}) for m, v, a in layout.attack_grid(cfg["run"])] \
            + [("select", s) for s in selections(cfg, "report")]
    if rule in ("local_model", "train_conceptworld", "fetch"):
        return []
    if rule == "split":
        return [("fetch", _fetch_job(cfg, w["asset"]))]
    return _upstream_jobs(cfg, rule, w) + _asset_jobs(cfg, rule, w)


def _upstream_jobs(cfg: dict, rule: str, w: dict) -> list[tuple[str, dict]]:
    """The jobs of the pipeline's own stages whose outputs a job reads."""
    m = cfg["models"][w["model"]]
    if rule == "base_model":
        return [("train_conceptworld", {"model": w["model"]})] if m["source"] == "conceptworld" and m["retrain"] else []
    model = [("local_model" if m["source"] == "local" else "base_model", {"model": w["model"]})]
    if rule == "erase":
        return model + ([("prune", {k: w[k] for k in ("model", "target", "seed", "prune")})]
                        if w["prune"] != layout.NONE else [])
    if rule == "prune":
        guided = cfg["prunings"][w["prune"]]["algorithm"] == "attribution"
        return model + ([("attribute_base", {"model": w["model"], "target": w["target"]})] if guided else [])
    if rule == "attribute_base":
        return model
    if rule == "attack_shared":
        return model + _reference(cfg, w)
    if rule == "select":
        return [("validate", {"model": w["model"], "variant": v}) for v in validation_variants(cfg, **w)]
    parts = layout.parse_variant(w["variant"])
    if rule == "generate":
        return model + ([("erase", {"model": w["model"], **parts})] if parts["method"] else [])
    if rule == "score":
        return model + [("generate", {"model": w["model"], "variant": w["variant"]})]
    erased = [("erase", {"model": w["model"], **parts})] if parts["method"] else []
    if rule == "attribute":
        return model + erased + [_adversarial_source(cfg, w)]
    if rule == "generate_neutral":
        return model + erased
    if rule == "quality":
        return model + [("generate_neutral", {"model": w["model"], "variant": v})
                        for v in dict.fromkeys((w["variant"], layout.BASE))]
    if rule == "attack":
        return model + erased + _reference(cfg, w)
    if rule == "attack_generate":
        return model + erased + [_adversarial_source(cfg, w)]
    if rule == "attack_score":
        return model + [("attack_generate", dict(w)), ("score", {"model": w["model"], "variant": w["variant"]})]
    if rule == "validate":
        return model + erased
    raise KeyError(f"plan.upstream: no lineage for rule {rule!r}; add it")


def _fetch_job(cfg: dict, asset: str) -> dict:
    return {"asset": asset, "file": assets.file_name(cfg["assets"][asset])}


# Each rule's inputs, from its wildcards: the files a fetch or split job makes are found among them.
INPUTS = {
    "generate": lambda cfg, model, variant: generate_inputs(cfg, model, variant),
    "generate_neutral": lambda cfg, model, variant: neutral_inputs(cfg, model, variant),
    "erase": lambda cfg, **w: erase_inputs(cfg, **w),
    "score": lambda cfg, model, variant: score_inputs(cfg, model, variant),
    "attack": lambda cfg, model, variant, attack: attack_inputs(cfg, model, variant, attack),
    "attack_shared": lambda cfg, model, target, attack, seed: shared_attack_inputs(cfg, model, target, attack),
    "attack_score": lambda cfg, model, variant, attack: attack_score_inputs(cfg, model, variant, attack),
    "prune": lambda cfg, model, target, prune, seed: prune_inputs(cfg, model, target, prune),
    "attribute_base": lambda cfg, model, target: attribute_base_inputs(cfg, model, target),
    "validate": lambda cfg, model, variant: validate_inputs(cfg, model, variant),
}


def _asset_jobs(cfg: dict, rule: str, w: dict) -> list[tuple[str, dict]]:
    """The fetch and split jobs that make files a job reads (prompt sets, detector models)."""
    if rule not in INPUTS:
        return []
    paths = [p for v in INPUTS[rule](cfg, **w).values() for p in (v if isinstance(v, list) else [v])]
    jobs = (assets.producer(cfg["assets"], p) for p in dict.fromkeys(paths))
    return list({(r, tuple(sorted(jw.items()))): (r, jw) for r, jw in filter(None, jobs)}.values())


def _identity(cfg: dict, rule: str, w: dict, memo: dict | None) -> str:
    """A job's spec, its code and its upstream jobs' identities, hashed."""
    key = (rule, tuple(sorted(w.items())))
    if memo is not None and key in memo:
        return memo[key]
    code = None if rule == "local_model" else job_code(cfg, rule, **w)   # a local model is no job
    job = [rule, SPECS[rule](cfg, **w), code, _parents(cfg, rule, w, memo)]
    out = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()
    if memo is not None:
        memo[key] = out
    return out


def _parents(cfg: dict, rule: str, w: dict, memo: dict | None = None) -> list[str]:
    return [_identity(cfg, r, pw, memo) for r, pw in upstream(cfg, rule, **w)]


def lineage(cfg: dict, rule: str, memo: dict | None = None, **w) -> str:
    """The digest of everything upstream of a job: each upstream job's spec and code (``job_code``).

    ``memo`` (a dict kept by the caller) holds each upstream job's identity once computed: valid
    while ``cfg`` and the files it names do not change, as within one Snakemake run, where it
    saves hashing the base model's weights once per job of a large grid.
    """
    return hashlib.sha256(json.dumps(_parents(cfg, rule, w, memo)).encode()).hexdigest()[:16]


# --- code: what each job runs ---------------------------------------------------------------------
# A job reruns for a code change exactly when the change is in code it executes: its stage's module
# and the algorithms it selects by name (method, attack, detectors, model source, pruning kind, metrics),
# each with everything it imports (eraselab.fingerprint). Registries name algorithms as strings, so
# a stage's module does not import every algorithm.

# The eraselab command each rule runs, where it differs from the rule's name.
STAGE_OF_RULE = {"attack_shared": "attack", "generate_neutral": "generate", "attribute_base": "attribute"}


def command(rule: str) -> str:
    """The ``eraselab`` subcommand a rule runs."""
    return STAGE_OF_RULE.get(rule, rule)


def job_modules(cfg: dict, rule: str, **w) -> list[str]:
    """The modules a job runs: its stage's, then those of the algorithms its config selects."""
    return [stage_module(command(rule)), *selected_modules(cfg, rule, **w)]


def selected_modules(cfg: dict, rule: str, **w) -> list[str]:
    """The modules of the algorithms a job selects from registries (what its stage's imports do not hold)."""
    def detector(concept: str) -> str:
        return module_of(DETECTORS, cfg["concepts"][concept]["detector"]["kind"], "detector kind")

    target = w.get("target") or (layout.parse_variant(w["variant"])["target"] if "variant" in w else None)
    if rule == "base_model":
        return [module_of(SOURCES, cfg["models"][w["model"]]["source"], "model source")]
    if rule == "erase":   # a tuned method's candidates share its algorithm: the selection cannot change it
        method = module_of(METHODS, cfg["methods"][w["method"]]["algorithm"], "erasure algorithm")
        validates = validation_spec(cfg, w["target"], w["method"]) is not None
        return [method, *([detector(w["target"])] if validates else [])]
    if rule == "prune":
        return [module_of(KINDS, cfg["prunings"][w["prune"]]["algorithm"], "pruning algorithm")]
    if rule in ("attack", "attack_shared"):
        algorithm = attack_algorithm(cfg, w["attack"])
        return [module_of(ATTACKS, algorithm, "attack"), *([detector(target)] if "detector" in NEEDS[algorithm] else [])]
    if rule in ("score", "validate"):
        return sorted({detector(c) for c in layout.prompt_sets(cfg["run"])})
    if rule == "attack_score":
        return [detector(target)]
    if rule == "quality":
        q = cfg["quality"]
        fid = [METRICS["fid"], module_of(FEATURES, q["fid"]["features"], "FID features")] \
            if q["fid"]["features"] != "none" else []
        return [*([METRICS["clip_score"]] if q["clip_score"]["enabled"] else []), *fid]
    return []


def job_code(cfg: dict, rule: str, **w) -> str:
    """The fingerprint of the code a job runs: a param of every eraselab rule, and part of its lineage."""
    return code_fingerprint(tuple(job_modules(cfg, rule, **w)))


# --- attacks ------------------------------------------------------------------------------------

# Erasure algorithms whose deltas change only the UNet: their variants keep the base model's text
# encoder, so attacks that read only the text encoder (Ring-A-Bell) are computed once on the base
# model and shared. An algorithm not listed is assumed to change the text encoder: its variants get
# their own run (never wrong, only slower). The attack_generate stage checks the delta to be sure.
UNET_ONLY_METHODS = {"esd", "all-but-one", "uce", "rece", "salun", "identity"}  # a pruning mask changes only the UNet too


def keeps_text_encoder(cfg: dict, variant: str) -> bool:
    method = layout.parse_variant(variant)["method"]
    if method is None:
        return True
    m = cfg["methods"][method]
    return m["algorithm"] in UNET_ONLY_METHODS or (m["algorithm"] == "advunlearn"   # its default trains the text encoder
                                                   and not m.get("train", "text_encoder").startswith("text"))


def attack_algorithm(cfg: dict, attack: str) -> str:
    return cfg["attacks"][attack]["algorithm"]


def shares_attack(cfg: dict, variant: str, attack: str) -> bool:
    """Does this variant reuse the base model's result of this attack (a text-encoder attack)?"""
    return LEVEL[attack_algorithm(cfg, attack)] == "text_encoder" and keeps_text_encoder(cfg, variant)


def adversarial_path(cfg: dict, model: str, variant: str, attack: str) -> str:
    """The adversarial set a variant is attacked with: its own, or the shared one of its base model."""
    if shares_attack(cfg, variant, attack):
        parts = layout.parse_variant(variant)
        return layout.SHARED_ADVERSARIAL.format(model=model, attack=attack, target=parts["target"], seed=parts["seed"])
    return layout.ADVERSARIAL.format(model=model, variant=variant, attack=attack)


def _attack_inputs(cfg: dict, model: str, target: str, attack: str, delta: str | None) -> dict:
    needs = NEEDS[attack_algorithm(cfg, attack)]
    inputs = {"base": model_dir(cfg, model), "prompts": cfg["concepts"][target]["prompts"]}
    if "detector" in needs:
        inputs["detectors"] = detector_files(cfg, [target])
    if delta:
        inputs["delta"] = delta
    if "reference" in needs:  # the base model's images of the target's prompts
        inputs["reference"] = layout.IMAGES.format(model=model, variant=layout.BASE, promptset=target)
    if "pairs" in needs:
        inputs["pairs"] = pairs_path(cfg, attack, target)
    return inputs


def pairs_path(cfg: dict, attack: str, target: str) -> str:
    return cfg["attacks"][attack]["pairs"].format(concept=target)


def attack_inputs(cfg: dict, model: str, variant: str, attack: str) -> dict:
    target = layout.parse_variant(variant)["target"]
    return _attack_inputs(cfg, model, target, attack, delta_path(model, variant))


def shared_attack_inputs(cfg: dict, model: str, target: str, attack: str) -> dict:
    return _attack_inputs(cfg, model, target, attack, None)


def attack_detector(cfg: dict, attack: str, target: str) -> dict:
    """The detector an attack checks its successes with: the target's, with the attack's keys for its kind."""
    detector = cfg["concepts"][target]["detector"]
    return {**detector, **cfg["attacks"][attack].get("detector", {}).get(detector["kind"], {})}


def _attack_spec(cfg: dict, model: str, target: str, seed: str, attack: str, variant: str) -> dict:
    params = cfg["attacks"][attack]
    gen = cfg["generation"]
    # rows come from the generation settings; the rest of them matter only to attacks that generate
    generation = gen if "detector" in NEEDS[params["algorithm"]] else \
        {k: gen[k] for k in ("max_prompts", "guidance", "scheduler")}
    concept = {**concept_spec(cfg, target), "detector": attack_detector(cfg, attack, target)}
    return {"attack_name": attack, "attack": params, "concept": concept,
            "prompts": cfg["concepts"][target]["prompts"], "generation": generation, "seed": int(seed),
            "dtype": cfg["models"][model]["dtype"], "model": model, "variant": variant}


def attack_spec(cfg: dict, model: str, variant: str, attack: str) -> dict:
    parts = layout.parse_variant(variant)
    return _attack_spec(cfg, model, parts["target"], parts["seed"], attack, variant)


def shared_attack_spec(cfg: dict, model: str, target: str, seed: str, attack: str) -> dict:
    return _attack_spec(cfg, model, target, seed, attack, f"{layout.BASE} text encoder, {target}, seed {seed}")


def attack_generate_inputs(cfg: dict, model: str, variant: str, attack: str) -> dict:
    inputs = {"base": model_dir(cfg, model), "adversarial": adversarial_path(cfg, model, variant, attack)}
    if (delta := delta_path(model, variant)) is not None:
        inputs["delta"] = delta
    return inputs


def attack_generate_spec(cfg: dict, model: str, variant: str, attack: str) -> dict:
    return {"generation": cfg["generation"], "dtype": cfg["models"][model]["dtype"], "model": model,
            "variant": variant, "attack_name": attack, "shared": shares_attack(cfg, variant, attack)}


def attack_score_inputs(cfg: dict, model: str, variant: str, attack: str) -> dict:
    w = {"model": model, "variant": variant, "attack": attack}
    return {"base": model_dir(cfg, model), "images": layout.ATTACK_IMAGES.format(**w),
            "plain": layout.SCORES.format(**w), "detectors": detector_files(cfg, [layout.parse_variant(variant)["target"]])}


def attack_score_spec(cfg: dict, model: str, variant: str, attack: str) -> dict:
    target = layout.parse_variant(variant)["target"]
    concept = cfg["concepts"][target]
    return {"concept": {"name": target, "type": concept["type"], "detector": concept["detector"]},
            "model": model, "variant": variant, "attack_name": attack}


def attack_entries(cfg: dict) -> list[dict]:
    return [{"model": m, "variant": v, "attack": a, "algorithm": attack_algorithm(cfg, a),
             "shared": shares_attack(cfg, v, a),
             "rates": layout.ATTACK_RATES.format(model=m, variant=v, attack=a),
             "scores": layout.ATTACK_SCORES.format(model=m, variant=v, attack=a)}
            for m, v, a in layout.attack_grid(cfg["run"])]


def attack_report_outputs(cfg: dict) -> list[str]:
    """The report's attack table and figure, when the run attacks anything."""
    if not layout.attack_grid(cfg["run"]):
        return []
    return [f"{layout.REPORT}/{name}" for name in ("attacks.csv", "attacks_by_seed.csv", "attacks.md", "attacks.png")]


# --- pruning and attribution --------------------------------------------------------------------

def _pairs(pattern: str, target: str) -> str:
    return pattern.format(concept=target)


def prune_inputs(cfg: dict, model: str, target: str, prune: str) -> dict:
    p = cfg["prunings"][prune]
    inputs = {"base": model_dir(cfg, model)}
    if p["algorithm"] == "wanda":
        inputs["pairs"] = _pairs(p["pairs"], target)
    if p["algorithm"] == "attribution":
        inputs["attribution"] = layout.ATTRIBUTION_BASE.format(model=model, target=target)
    return inputs


def prune_spec(cfg: dict, model: str, target: str, seed: str, prune: str) -> dict:
    p = cfg["prunings"][prune]
    spec = {"pruning_name": prune, "pruning": p, "concept": {"name": target}, "seed": int(seed),
            "guidance": cfg["generation"]["guidance"], "model": model}
    if "pairs" in p:
        spec["pairs_sha256"] = source_digest(cfg, _pairs(p["pairs"], target))
    if p["algorithm"] == "learned":   # trained with an erasure objective on the concept's erase prompts
        spec["concept"] = {k: v for k, v in concept_spec(cfg, target).items() if k not in ("detector", "validation")}
    return spec


def _attribution_settings(cfg: dict) -> dict:
    return {k: v for k, v in cfg["attribution"].items() if k not in ("enabled", "pairs")}


def attribute_base_inputs(cfg: dict, model: str, target: str) -> dict:
    return {"base": model_dir(cfg, model), "pairs": _pairs(cfg["attribution"]["pairs"], target)}


def attribute_base_spec(cfg: dict, model: str, target: str) -> dict:
    settings = {k: v for k, v in _attribution_settings(cfg).items() if k != "top_k"}
    return {"attribution": settings, "seed": cfg["seed"], "guidance": cfg["generation"]["guidance"],
            "model": model, "target": target,
            "pairs_sha256": source_digest(cfg, _pairs(cfg["attribution"]["pairs"], target))}


def attribute_inputs(cfg: dict, model: str, variant: str, attack: str) -> dict:
    return {"base": model_dir(cfg, model), "delta": delta_path(model, variant),
            "adversarial": adversarial_path(cfg, model, variant, attack)}


def attribute_spec(cfg: dict, model: str, variant: str, attack: str) -> dict:
    return {"attribution": _attribution_settings(cfg), "seed": int(layout.parse_variant(variant)["seed"]),
            "model": model, "variant": variant,
            "attack_name": attack}


def attribution_outputs(cfg: dict) -> list[str]:
    """Every erased variant's rho/delta analysis under every attack, when attribution is enabled."""
    if not cfg.get("attribution", {}).get("enabled"):
        return []
    return [layout.ATTRIBUTION.format(model=m, variant=v, attack=a) for m, v, a in layout.attribution_grid(cfg["run"])]


def prune_report_outputs(cfg: dict) -> list[str]:
    """The pruning table, when the run prunes."""
    if all(p == layout.NONE for p in cfg["run"]["prunings"]):
        return []
    return [f"{layout.REPORT}/pruning.{ext}" for ext in ("csv", "md", "html")]


def prune_report_inputs(cfg: dict) -> list[str]:
    spec = prune_report_spec(cfg)
    return [p for p in (spec["summary"], spec["attacks"]) if p] + [m["path"] for m in spec["masks"]] \
        + [a["path"] for a in spec["attributions"]]


def prune_report_spec(cfg: dict) -> dict:
    run = cfg["run"]
    attacks = attack_report_outputs(cfg)
    masks = [{"model": m, "target": t, "seed": s, "prune": p,
              "path": layout.MASK.format(model=m, target=t, seed=s, prune=p).replace(".safetensors", ".json")}
             for m in run["models"] for t in run["targets"] for p in run["prunings"] if p != layout.NONE
             for s in run["seeds"]]
    attributions = [{"model": m, "variant": v, "attack": a,
                     "path": layout.ATTRIBUTION.format(model=m, variant=v, attack=a).replace(".parquet", ".json")}
                    for m, v, a in layout.attribution_grid(run)] if cfg["attribution"]["enabled"] else []
    return {"summary": f"{layout.REPORT}/summary.csv", "attacks": attacks[0] if attacks else None,
            "masks": masks, "attributions": attributions}


# --- external assets (config/assets.yaml; eraselab.assets, eraselab.fetch, eraselab.split) -------------

FETCH_KEYS = ("url", "sha256", "member", "member_sha256")   # what the fetched bytes are; `local` is only where


def fetch_spec(cfg: dict, asset: str, file: str) -> dict:
    entry = cfg["assets"][asset]
    if file != assets.file_name(entry):
        raise ValueError(f"asset {asset} is fetched as {assets.file_name(entry)}, not {file}")
    return {"name": asset, **{k: entry.get(k) for k in FETCH_KEYS}}


def fetch_local(cfg: dict, asset: str) -> str:
    """``--local PATH`` when the config names a local copy of the asset."""
    local = cfg["assets"][asset].get("local")
    return f"--local {local}" if local else ""


def split_inputs(cfg: dict, asset: str, value: str) -> dict:
    return {"source": assets.path(cfg["assets"], asset)}


def split_spec(cfg: dict, asset: str, value: str) -> dict:
    entry = cfg["assets"][asset]
    return {"asset": asset, "column": entry["split"], "value": value, "sha256": assets.identity(entry)}


# --- tuning (config tuning:; eraselab.tuning, eraselab.validate, eraselab.select) -----------------------
# Candidates are methods of their own (config adds them as `{method}.tune{i}`), erased by the erase rule
# with the tuning seed and scored on the validation prompt sets by rule validate, as is the base model.
# The checkpoint select keeps one per (model, target, method); the evaluation erasure of a tuned method
# reads its choice (method_params), and every job downstream of one waits for it (selections), so its
# spec, and what reruns, follow the choice's content: a new budget that picks the same setting reruns
# the tuning and nothing else.

def tuned_methods(cfg: dict) -> list[str]:
    t = cfg["tuning"]
    return [m for m in cfg["run"]["methods"] if m in t["methods"]] if t["enabled"] else []


def candidates(cfg: dict, method: str) -> dict[str, dict]:
    """A tuned method's candidates: name -> the settings it overrides (the config's validation drew them
    and added each as a method: eraselab.config, _add_tuning_candidates)."""
    t = cfg["tuning"]
    names = [layout.candidate(method, i) for i in range(1, t["budget"] + 1)]
    return {n: {k: cfg["methods"][n][k] for k in sorted(t["methods"][method])} for n in names}


def validation_variants(cfg: dict, model: str, target: str, method: str) -> list[str]:
    """What rule select compares: the base model, then each candidate erased with the tuning seed."""
    seed = cfg["tuning"]["seed"]
    return [layout.BASE] + [layout.variant(target, seed, layout.NONE, c) for c in candidates(cfg, method)]


def method_params(cfg: dict, model: str, target: str, method: str) -> dict:
    """A method's settings for one model and target: its config, with a tuned method's chosen setting
    (read from its selection: only jobs that waited for that checkpoint call this for a tuned method)."""
    params = cfg["methods"][method]
    if method not in tuned_methods(cfg):
        return params
    from .artifacts import read_json
    chosen = read_json(layout.SELECTION.format(model=model, target=target, method=method))
    return {**params, **chosen["overrides"]}


def selections(cfg: dict, rule: str, **w) -> list[dict]:
    """The selections a job waits for: those of the tuned method its variant erases with, or, for the
    jobs that gather the whole grid, every one."""
    tuned = tuned_methods(cfg)
    if not tuned:
        return []
    if rule in ("report", "prune_report", "all"):
        return [{"model": m, "target": t, "method": e} for m in cfg["run"]["models"] for t in cfg["run"]["targets"]
                for e in tuned]
    parts = layout.parse_variant(w["variant"]) if "variant" in w else w
    if rule in ("validate", "select") or parts.get("method") not in tuned:
        return []
    return [{"model": w["model"], "target": parts["target"], "method": parts["method"]}]


def tuning_outputs(cfg: dict) -> list[str]:
    return [layout.SELECTION.format(**s) for s in selections(cfg, "report")]


def tuning_report_outputs(cfg: dict) -> list[str]:
    """The report's tuning table, when the run tunes."""
    return [f"{layout.REPORT}/tuning.{ext}" for ext in ("csv", "html")] if tuned_methods(cfg) else []


def validate_inputs(cfg: dict, model: str, variant: str) -> dict:
    inputs = {"base": model_dir(cfg, model),
              "prompts": [cfg["concepts"][c]["validation"] for c in layout.prompt_sets(cfg["run"])],
              "detectors": detector_files(cfg, layout.prompt_sets(cfg["run"]))}
    if (delta := delta_path(model, variant)) is not None:
        inputs["delta"] = delta
    return inputs


def validate_spec(cfg: dict, model: str, variant: str) -> dict:
    sets = layout.prompt_sets(cfg["run"])
    # tuning's own prompt cap replaces the evaluation's: evaluating on more prompts must not rerun the tuning
    generation = {**cfg["generation"], "max_prompts": cfg["tuning"]["max_prompts"]}
    return {"generation": generation, "dtype": cfg["models"][model]["dtype"], "variant": variant,
            "model": model, "concepts": {c: {"prompts": cfg["concepts"][c]["validation"],
                                             "prompts_sha256": source_digest(cfg, cfg["concepts"][c]["validation"]),
                                             "detector": cfg["concepts"][c]["detector"],
                                             "type": cfg["concepts"][c]["type"]} for c in sets}}


def select_inputs(cfg: dict, model: str, target: str, method: str) -> dict:
    variants = validation_variants(cfg, model, target, method)
    return {"rates": [layout.VALIDATION_RATES.format(model=model, variant=v) for v in variants],
            "scores": [layout.VALIDATION_SCORES.format(model=model, variant=v) for v in variants]}


def select_spec(cfg: dict, model: str, target: str, method: str) -> dict:
    t = cfg["tuning"]
    return {"model": model, "target": target, "method": method, "candidates": candidates(cfg, method),
            "variants": validation_variants(cfg, model, target, method), "budget": t["budget"],
            "search": t["search"], "seed": t["seed"], "space": t["methods"][method], "rule": t["rule"],
            "bootstrap": cfg["report"]["bootstrap"], "max_drop_points": cfg["report"]["max_drop_points"]}
