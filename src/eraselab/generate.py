"""Generation: images for a prompt set, each with its own seed and guidance scale.

Images are produced by diffusers' own ``StableDiffusionPipeline.__call__``, in
batches of rows that share a guidance scale. Each row's initial noise comes
from a generator seeded with the row's seed, so an image does not depend on
the batch it happened to be in.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
import torch


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


def run(base, delta, prompt_sets: dict, outputs: dict, spec: dict) -> None:
    """Generate every prompt set for one model variant; spec holds the generation config."""
    from .imagesets import save_image_set
    from .models import load_variant
    from .prompts import load_prompts
    from .runtime import progress, stage
    gen = spec["generation"]
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
