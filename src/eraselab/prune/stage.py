"""The prune stage: base model (+ attribution table) -> mask.safetensors + mask.json."""
from __future__ import annotations

from pathlib import Path


def run(base, out, spec: dict, pairs=None, attribution=None) -> None:
    """spec: {"pruning": {algorithm, ...}, "pruning_name", "concept": {"name"}, "seed", "guidance"}."""
    from ..models import load_pipeline
    from ..runtime import stage
    from .masks import save_mask
    p = spec["pruning"]
    with stage("prune", spec, spec["seed"]) as run_info:
        pipe = load_pipeline(base)
        if p["algorithm"] == "wanda":
            mask, record = _wanda(pipe, pairs, spec)
        elif p["algorithm"] == "attribution":
            mask, record = _guided(pipe, attribution, p)
        elif p["algorithm"] == "learned":
            mask, record = _learned(pipe, spec)
        else:
            raise ValueError(f"unknown pruning algorithm {p['algorithm']!r}")
        save_mask(out, mask, {**run_info.record(), **record, **mask.summary(pipe.unet), "base": str(base)})


def _wanda(pipe, pairs, spec: dict):
    from ..attribution import concept_pairs, encode_prompts
    from .wanda import wanda_mask
    p = spec["pruning"]
    frame = concept_pairs(pairs, p["max_prompts"])
    seeds = [spec["seed"] * 100_003 + i for i in range(len(frame))]
    guid = [spec["guidance"]] * len(frame)
    mask, record = wanda_mask(pipe, encode_prompts(pipe, frame["prompt"].tolist()),
                              encode_prompts(pipe, frame["prompt_without"].tolist()), seeds, guid, p)
    return mask, {**record, "pairs": str(pairs), "prompts": len(frame)}


def _guided(pipe, attribution, p: dict):
    import pandas as pd

    from .guided import neuron_mask, top_neurons
    neurons = top_neurons(pd.read_parquet(attribution), p["sites"], p["ratio"], p["score"])
    return neuron_mask(pipe.unet, neurons), {
        "attribution": str(attribution), "neurons": {s: int(n) for s, n in neurons["site"].value_counts().items()}}


def _learned(pipe, spec: dict):
    from ..erase.common import Concept
    from ..runtime import progress
    from .learned import learned_mask
    p = spec["pruning"]
    concept = Concept.from_config(spec["concept"]["name"], spec["concept"])
    bar = progress(p["objective"]["iterations"], f"learn a mask for {concept.name} ({spec['pruning_name']})")
    mask, record = learned_mask(pipe, concept, p, spec["seed"], progress=bar)
    bar.close()
    return mask, record
