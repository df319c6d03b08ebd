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
    spec = {k: m[k] for k in ("source", "repo_id", "revision", "architecture", "image_size") if k in m}
    if m["source"] == "random":  # random weights depend on the seed
        spec["seed"] = cfg["seed"]
    return spec


def train_spec(cfg: dict) -> dict:
    return {"seed": cfg["seed"], **cfg["conceptworld"]}


def concept_spec(cfg: dict, name: str) -> dict:
    return {"name": name, **cfg["concepts"][name]}


def erase_spec(cfg: dict, model: str, target: str, prune: str, method: str) -> dict:
    return {"method_name": method, "method": cfg["methods"][method], "prune": prune,
            "concept": {k: v for k, v in concept_spec(cfg, target).items() if k != "detector"},
            "seed": cfg["seed"], "model": model}


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
    return {"entries": report_entries(cfg), **cfg["report"], "seed": cfg["seed"]}


def final_outputs(cfg: dict) -> list[str]:
    return [f"{layout.REPORT}/{name}" for name in ("summary.csv", "summary.md", "rates.csv", "metrics.json",
                                                   "tradeoff.png")] \
        + [f"{layout.REPORT}/grid_{m}.png" for m in cfg["run"]["models"]]


