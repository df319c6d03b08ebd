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


def report_entries(cfg: dict) -> list[dict]:
    return [{"model": m, "variant": v, "rates": layout.RATES.format(model=m, variant=v),
             "images": list(image_paths(cfg, m, v).values())} for m, v in layout.grid(cfg["run"])]


def report_spec(cfg: dict) -> dict:
    spec = {"entries": report_entries(cfg), **cfg["report"]}
    if attacks := attack_entries(cfg):
        spec["attacks"] = attacks
    return spec


def final_outputs(cfg: dict) -> list[str]:
    return [f"{layout.REPORT}/{name}" for name in ("summary.csv", "summary.md", "rates.csv", "metrics.json")] \
        + [f"{layout.REPORT}/grid_{m}.png" for m in cfg["run"]["models"]] + attack_report_outputs(cfg)




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
