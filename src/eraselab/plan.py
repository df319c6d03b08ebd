"""From the validated config to jobs: each rule's inputs and the config slice it depends on.

The Snakemake rules call these functions with their wildcards. A job's spec
holds exactly the values its output depends on, so Snakemake's params trigger
reruns a job when, and only when, one of them changes.
"""
from __future__ import annotations

from . import layout


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
    return {k: m[k] for k in ("source", "repo_id", "revision") if k in m}


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
            "variant": variant, "model": model}


def score_spec(cfg: dict, model: str, variant: str) -> dict:
    sets = layout.prompt_sets(cfg["run"])
    return {"concepts": {c: {"detector": cfg["concepts"][c]["detector"], "type": cfg["concepts"][c]["type"]}
                         for c in sets}, "variant": variant, "model": model}


def report_entries(cfg: dict) -> list[dict]:
    return [{"model": m, "variant": v, "rates": layout.RATES.format(model=m, variant=v),
             "images": list(image_paths(cfg, m, v).values())} for m, v in layout.grid(cfg["run"])]


def report_spec(cfg: dict) -> dict:
    return {"entries": report_entries(cfg), **cfg["report"]}


def final_outputs(cfg: dict) -> list[str]:
    return [f"{layout.REPORT}/{name}" for name in ("summary.csv", "summary.md", "rates.csv", "metrics.json")] \
        + [f"{layout.REPORT}/grid_{m}.png" for m in cfg["run"]["models"]]


