"""From the validated config to jobs: each rule's inputs and the config slice it depends on.

The Snakemake rules call these functions with their wildcards. A job's spec
holds exactly the values its output depends on, so Snakemake's params trigger
reruns a job when, and only when, one of them changes.
"""
from __future__ import annotations

import hashlib
import json

from . import layout
from .fingerprint import digest


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


def base_model_spec(cfg: dict, model: str) -> dict:
    m = cfg["models"][model]
    spec = {k: m[k] for k in ("source", "repo_id", "revision", "architecture", "image_size") if k in m}
    if m["source"] == "conceptworld" and not m["retrain"]:
        spec["weights_sha256"] = digest(m["path"])  # the shipped weights' content, not their file times
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


def erase_inputs(cfg: dict, model: str, target: str, method: str) -> dict:
    inputs = {"base": model_dir(cfg, model)}
    if (v := validation_spec(cfg, target, method)) is not None:
        inputs["validation"] = v["prompts"]
    return inputs


def erase_spec(cfg: dict, model: str, target: str, prune: str, method: str) -> dict:
    spec = {"method_name": method, "method": cfg["methods"][method], "prune": prune,
            "concept": {k: v for k, v in concept_spec(cfg, target).items() if k not in ("detector", "validation")},
            "seed": cfg["seed"], "model": model}
    if (v := validation_spec(cfg, target, method)) is not None:
        spec["validation"] = v
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
            "prompts_sha256": {ps: digest(cfg["concepts"][ps]["prompts"]) for ps in layout.prompt_sets(cfg["run"])}}


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
             "images": list(image_paths(cfg, m, v).values()),
             "quality": layout.QUALITY.format(model=m, variant=v) if quality else None}
            for m, v in layout.grid(cfg["run"])]


def report_spec(cfg: dict) -> dict:
    spec = {"entries": report_entries(cfg), **cfg["report"], "seed": cfg["seed"]}
    if attacks := attack_entries(cfg):
        spec["attacks"] = attacks
    return spec


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
                                                   "tradeoff.png")] \
        + [f"{layout.REPORT}/grid_{m}.png" for m in cfg["run"]["models"]] + attack_report_outputs(cfg)




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
}


def upstream(cfg: dict, rule: str, **w) -> list[tuple[str, dict]]:
    """The jobs whose outputs a job reads, as (rule, wildcards)."""
    if rule == "report":
        return [(r, {"model": m, "variant": v}) for m, v in layout.grid(cfg["run"]) for r in ("generate", "score")]
    if rule in ("local_model", "train_conceptworld"):
        return []
    m = cfg["models"][w["model"]]
    if rule == "base_model":
        return [("train_conceptworld", {"model": w["model"]})] if m["source"] == "conceptworld" and m["retrain"] else []
    model = [("local_model" if m["source"] == "local" else "base_model", {"model": w["model"]})]
    if rule == "erase":
        return model
    parts = layout.parse_variant(w["variant"])
    if rule == "generate":
        return model + ([("erase", {"model": w["model"], **parts})] if parts["method"] else [])
    if rule == "score":
        return model + [("generate", {"model": w["model"], "variant": w["variant"]})]
    raise KeyError(f"plan.upstream: no lineage for rule {rule!r}; add it")


def _identity(cfg: dict, rule: str, w: dict, code: dict[str, str], memo: dict | None) -> str:
    """A job's spec, its code and its upstream jobs' identities, hashed."""
    key = (rule, tuple(sorted(w.items())))
    if memo is not None and key in memo:
        return memo[key]
    job = [rule, SPECS[rule](cfg, **w), code.get(rule), _parents(cfg, rule, w, code, memo)]
    out = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()
    if memo is not None:
        memo[key] = out
    return out


def _parents(cfg: dict, rule: str, w: dict, code: dict[str, str], memo: dict | None = None) -> list[str]:
    return [_identity(cfg, r, pw, code, memo) for r, pw in upstream(cfg, rule, **w)]


def lineage(cfg: dict, rule: str, code: dict[str, str] | None = None, memo: dict | None = None, **w) -> str:
    """The digest of everything upstream of a job (code: rule -> fingerprint of the code it runs).

    ``memo`` (a dict kept by the caller) holds each upstream job's identity once computed: valid
    while ``cfg``, ``code`` and the files they name do not change, as within one Snakemake run,
    where it saves hashing the base model's weights once per job of a large grid.
    """
    return hashlib.sha256(json.dumps(_parents(cfg, rule, w, code or {}, memo)).encode()).hexdigest()[:16]


# --- attacks ------------------------------------------------------------------------------------

# Erasure algorithms whose deltas change only the UNet: their variants keep the base model's text
# encoder, so attacks that read only the text encoder (Ring-A-Bell) are computed once on the base
# model and shared. An algorithm not listed is assumed to change the text encoder: its variants get
# their own run (never wrong, only slower). The attack_generate stage checks the delta to be sure.
UNET_ONLY_METHODS = {"esd"}


def keeps_text_encoder(cfg: dict, variant: str) -> bool:
    method = layout.parse_variant(variant)["method"]
    return method is None or cfg["methods"][method]["algorithm"] in UNET_ONLY_METHODS


def attack_algorithm(cfg: dict, attack: str) -> str:
    return cfg["attacks"][attack]["algorithm"]


def shares_attack(cfg: dict, variant: str, attack: str) -> bool:
    """Does this variant reuse the base model's result of this attack (a text-encoder attack)?"""
    from .attacks import LEVEL
    return LEVEL[attack_algorithm(cfg, attack)] == "text_encoder" and keeps_text_encoder(cfg, variant)


def adversarial_path(cfg: dict, model: str, variant: str, attack: str) -> str:
    """The adversarial set a variant is attacked with: its own, or the shared one of its base model."""
    if shares_attack(cfg, variant, attack):
        target = layout.parse_variant(variant)["target"]
        return layout.SHARED_ADVERSARIAL.format(model=model, attack=attack, target=target)
    return layout.ADVERSARIAL.format(model=model, variant=variant, attack=attack)


def _attack_inputs(cfg: dict, model: str, target: str, attack: str, delta: str | None) -> dict:
    from .attacks import NEEDS
    needs = NEEDS[attack_algorithm(cfg, attack)]
    inputs = {"base": model_dir(cfg, model), "prompts": cfg["concepts"][target]["prompts"]}
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


def _attack_spec(cfg: dict, model: str, target: str, attack: str, variant: str) -> dict:
    from .attacks import NEEDS
    params = cfg["attacks"][attack]
    gen = cfg["generation"]
    # rows come from the generation settings; the rest of them matter only to attacks that generate
    generation = gen if "detector" in NEEDS[params["algorithm"]] else \
        {k: gen[k] for k in ("max_prompts", "guidance", "scheduler")}
    return {"attack_name": attack, "attack": params, "concept": concept_spec(cfg, target),
            "prompts": cfg["concepts"][target]["prompts"], "generation": generation, "seed": cfg["seed"],
            "dtype": cfg["models"][model]["dtype"], "model": model, "variant": variant}


def attack_spec(cfg: dict, model: str, variant: str, attack: str) -> dict:
    return _attack_spec(cfg, model, layout.parse_variant(variant)["target"], attack, variant)


def shared_attack_spec(cfg: dict, model: str, target: str, attack: str) -> dict:
    return _attack_spec(cfg, model, target, attack, f"{layout.BASE} text encoder, {target}")


def attack_generate_inputs(cfg: dict, model: str, variant: str, attack: str) -> dict:
    inputs = {"base": model_dir(cfg, model), "adversarial": adversarial_path(cfg, model, variant, attack)}
    if (delta := delta_path(model, variant)) is not None:
        inputs["delta"] = delta
    return inputs


def attack_generate_spec(cfg: dict, model: str, variant: str, attack: str) -> dict:
    return {"generation": cfg["generation"], "dtype": cfg["models"][model]["dtype"], "model": model,
            "variant": variant, "attack_name": attack, "shared": shares_attack(cfg, variant, attack)}


def attack_score_spec(cfg: dict, model: str, variant: str, attack: str) -> dict:
    target = layout.parse_variant(variant)["target"]
    concept = cfg["concepts"][target]
    return {"concept": {"name": target, "type": concept["type"], "detector": concept["detector"]},
            "model": model, "variant": variant, "attack_name": attack}


def attack_entries(cfg: dict) -> list[dict]:
    return [{"model": m, "variant": v, "attack": a, "algorithm": attack_algorithm(cfg, a),
             "shared": shares_attack(cfg, v, a),
             "rates": layout.ATTACK_RATES.format(model=m, variant=v, attack=a)}
            for m, v, a in layout.attack_grid(cfg["run"])]


def attack_report_outputs(cfg: dict) -> list[str]:
    """The report's attack table and figure, when the run attacks anything."""
    if not layout.attack_grid(cfg["run"]):
        return []
    return [f"{layout.REPORT}/{name}" for name in ("attacks.csv", "attacks.md", "attacks.png")]
