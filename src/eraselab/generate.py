"""Generation: images for a prompt set, each with its own seed and guidance scale; plainly and under attack.

Images are produced by diffusers' own ``StableDiffusionPipeline.__call__``, in
batches of rows that share a guidance scale. Each row's initial noise comes
from a generator seeded with the row's seed, so which image a row gets does not
depend on the batch it happened to be in (its pixels may still differ in the
last bit: floating point differs with batch size and thread count).

``run`` (rules generate, generate_neutral) generates a variant's prompt sets;
``run_attacked`` (rule attack_generate) the target's prompts under an attack's
adversarial set.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
import torch

from .artifacts import ArtifactError
from .adversarial import conditioning, load_adversarial
from .delta import load_delta
from .imagesets import save_image_set
from .models import load_variant
from .prompts import load_prompts
from .runtime import progress, stage


def generate_images(pipe, prompts: Sequence[str], seeds: Sequence[int], guidances: Sequence[float],
                    steps: int, batch_size: int, height: int | None = None, width: int | None = None,
                    prompt_embeds: torch.Tensor | None = None, progress=None) -> np.ndarray:
    """uint8 N x H x W x 3 images, row i from (prompts[i] or prompt_embeds[i], seeds[i], guidances[i])."""
    n = len(seeds)
    by_guidance: dict[float, list[int]] = defaultdict(list)
    for i, g in enumerate(guidances):
        by_guidance[float(g)].append(i)
    out: list[np.ndarray | None] = [None] * n
    for guidance, rows in by_guidance.items():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            text = dict(prompt_embeds=prompt_embeds[chunk]) if prompt_embeds is not None \
                else dict(prompt=[prompts[i] for i in chunk])
            gens = [torch.Generator(device=pipe.device).manual_seed(int(seeds[i])) for i in chunk]
            images = pipe(**text, generator=gens, num_inference_steps=steps, guidance_scale=guidance,
                          height=height, width=width, output_type="np").images
            for i, img in zip(chunk, images):
                out[i] = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
            if progress is not None:
                progress.update(len(chunk))
    return np.stack(out)


def expand_rows(frame, images_per_prompt: int):
    """Each prompt row repeated k times; image j of a row uses the row's seed + j."""
    import pandas as pd
    if images_per_prompt == 1:
        return frame.assign(image=0)
    rows = [frame.assign(image=j, evaluation_seed=frame["evaluation_seed"] + j) for j in range(images_per_prompt)]
    return pd.concat(rows).sort_values(["case_number", "image"], kind="stable").reset_index(drop=True)


def set_scheduler(pipe, name: str) -> None:
    """Swap the sampler (same noise schedule, from the model's own scheduler config)."""
    from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, LMSDiscreteScheduler,
                           PNDMScheduler)
    cls = {"ddim": DDIMScheduler, "pndm": PNDMScheduler, "lms": LMSDiscreteScheduler,
           "dpm": DPMSolverMultistepScheduler}[name]
    pipe.scheduler = cls.from_config(pipe.scheduler.config)


def run(base, prompts: dict, images: dict, spec: dict, delta=None) -> None:
    """The generate stage: every prompt set of one model variant; spec holds the generation config."""
    prompt_sets, outputs, gen = dict(prompts), dict(images), spec["generation"]
    with stage("generate", spec) as run_info:
        pipe = load_variant(base, delta, dtype=spec.get("dtype", "float32"))
        set_scheduler(pipe, gen["scheduler"])
        sets = {name: expand_rows(load_prompts(csv, gen["guidance"], gen["max_prompts"]).frame,
                                  gen["images_per_prompt"])
                for name, csv in prompt_sets.items()}
        bar = progress(sum(map(len, sets.values())), f"generate {spec['variant']}", unit="img")
        for name, frame in sets.items():
            images = generate_images(pipe, frame["prompt"].tolist(), frame["evaluation_seed"].tolist(),
                                     frame["evaluation_guidance"].tolist(), gen["steps"], gen["batch_size"],
                                     height=gen.get("height"), width=gen.get("width"), progress=bar)
            save_image_set(outputs[name], images, frame,
                           {**run_info.record(), "prompt_set": name, "prompts": str(prompt_sets[name]),
                            "delta": str(delta) if delta else None},
                           preview=gen["preview"])
        bar.close()


def check_shared(delta, adversarial) -> None:
    """A text-encoder attack computed on the base model is valid only for variants with its text encoder."""
    if not delta:
        return
    tensors, _ = load_delta(delta)
    changed = sorted(k for k in tensors if k.startswith("text_encoder."))
    if changed:
        raise ArtifactError(f"{adversarial} was computed on the base model's text encoder, but {delta} changes it "
                            f"({changed[0]}, ...); the attack must run on this variant (see attacks.LEVEL and "
                            f"plan.UNET_ONLY_METHODS)")


def run_attacked(base, adversarial, out, spec: dict, delta=None) -> None:
    """The attack_generate stage: the target's images under attack, each row with its own seed and guidance,
    conditioned on the adversarial set through the attacked model's own text encoder."""
    gen, shared = spec["generation"], spec.get("shared", False)
    with stage("attack_generate", spec) as run_info:
        if shared:
            check_shared(delta, adversarial)
        pipe = load_variant(base, delta, dtype=spec.get("dtype", "float32"))
        set_scheduler(pipe, gen["scheduler"])
        adv, table, meta = load_adversarial(adversarial)
        frame = expand_rows(table.assign(row=range(len(table))), gen["images_per_prompt"])
        cond = conditioning(pipe, adv)[torch.as_tensor(frame["row"].to_numpy())]
        bar = progress(len(frame), f"generate {spec['variant']} under {spec['attack_name']}", unit="img")
        images = generate_images(pipe, None, frame["evaluation_seed"].tolist(), frame["evaluation_guidance"].tolist(),
                                 gen["steps"], gen["batch_size"], prompt_embeds=cond, progress=bar)
        bar.close()
        attack_info = {"name": spec["attack_name"], "algorithm": meta["params"]["attack"]["algorithm"],
                       "adversarial": str(adversarial), "shared": shared,
                       "wall_time_s": meta["wall_time_s"], "seconds_per_prompt": meta.get("seconds_per_prompt")}
        save_image_set(out, images, frame.drop(columns="row"),
                       {**run_info.record(), "delta": delta and str(delta), "attack": attack_info},
                       preview=gen["preview"])
