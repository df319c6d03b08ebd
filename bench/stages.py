"""One benchmark per stage. Each returns (rows, extra Markdown sections) and times eraselab's code
against a plain baseline doing the same work, in the same process and the same run.

Sizes: ``Context`` holds them. On a CPU the SD-v1.4-shaped model runs at 64 px
with 1-2 iterations or images (per-unit numbers are what to read); on a GPU at
512 px with more iterations.
"""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .harness import Row, compare, measure, rows_from
from .models import ROOT, SHIPPED, load, model_dir, sd14_dir

PROMPTS = ROOT / "data" / "prompts" / "conceptworld"


@dataclasses.dataclass
class Context:
    gpu: bool
    models: tuple[str, ...] = ("conceptworld", "sd14")
    sd14_size: int = 64           # SD v1.4's weights at any resolution; 512 is SD's own
    repeats: int = 3              # for the cheap comparisons
    esd_seeds: int = 2            # ConceptWorld ESD runs per mode (timing repeats and the seed-noise estimate)
    sd14_esd_iterations: int = 3
    sd14_ddim_steps: int = 10
    sd14_images: int = 2
    sd14_steps: int = 2
    cw_esd_iterations: int | None = None   # None: config/config.yaml's (200)
    quality_images: int = 80
    protocol: dict = dataclasses.field(default_factory=dict)   # overrides of the protocol DAG's settings

    @classmethod
    def for_device(cls, gpu: bool) -> "Context":
        if not gpu:
            return cls(gpu=False)
        return cls(gpu=True, sd14_size=512, sd14_esd_iterations=20, sd14_ddim_steps=50, sd14_images=8,
                   sd14_steps=25)

    @classmethod
    def gpu_check(cls, gpu: bool) -> "Context":
        """The GPU check's sizes (bench/README.md): SD-v1.4 shapes at 512 px, one repeat, budgets that
        fit 8 minutes on one GPU; on a CPU (--smoke) the same steps at sizes that only check the script."""
        if gpu:
            return cls(gpu=True, models=("sd14",), sd14_size=512, repeats=1, sd14_esd_iterations=10,
                       sd14_ddim_steps=50, sd14_images=8, sd14_steps=25,
                       protocol={"prompts": 4, "esd_iterations": 20, "steps": 25, "timesteps": 2, "iterations": 10})
        return cls(gpu=False, models=("sd14",), sd14_size=64, repeats=1, sd14_esd_iterations=2, sd14_ddim_steps=4,
                   sd14_images=2, sd14_steps=2,
                   protocol={"prompts": 2, "esd_iterations": 2, "steps": 2, "timesteps": 1, "iterations": 1})


def method_params(algorithm: str, **overrides) -> dict:
    from eraselab.config import fill_defaults, load_schema
    schema = load_schema()
    sub = {**schema["$defs"]["algorithms"][algorithm], "$defs": schema["$defs"]}
    return fill_defaults({"algorithm": algorithm, **overrides}, sub)


def config_section(section: str, name: str, preset: str = "config.yaml") -> dict:
    """A config entry's keys (algorithm left out), as a preset ships it."""
    import yaml
    entry = yaml.safe_load((ROOT / "config" / preset).read_text())[section][name]
    return {k: v for k, v in entry.items() if k != "algorithm"}


def prompt_frame(concept: str, n: int):
    from eraselab.prompts import load_prompts
    frame = load_prompts(PROMPTS / f"{concept}.csv", 5.0).frame
    reps = -(-n // len(frame))
    import pandas as pd
    frame = pd.concat([frame] * reps, ignore_index=True).head(n)
    return frame.assign(case_number=range(n), evaluation_seed=frame["evaluation_seed"] + np.arange(n) // 1000)


# --- ESD ------------------------------------------------------------------------------------------

class Stamps:
    """A progress bar stand-in: when the trained UNet was first called, and when each iteration ended.

    The first call of the trained UNet (not of its frozen copy) is where the
    iterations begin: what comes before is setup (the frozen copy, text
    encoding and, in ``frozen`` mode, the trajectory cache).
    """

    def __init__(self, unet):
        self.start, self.first, self.times = time.perf_counter(), None, []
        self._hook = unet.register_forward_pre_hook(self._called)
        self._unet = unet

    def _called(self, module, args):
        if module is self._unet and self.first is None:
            self.first = time.perf_counter()

    def update(self, n=1):
        self.times.append(time.perf_counter())

    def set_postfix(self, **kw):
        pass

    def close(self):
        self._hook.remove()

    def split(self) -> tuple[float, float]:
        """(setup seconds, mean seconds per iteration after it)."""
        return self.first - self.start, (self.times[-1] - self.first) / len(self.times)


def esd_settings(model: str, ctx: Context) -> tuple[dict, str]:
    """ESD-x as the workflow runs it: config/config.yaml on ConceptWorld, config/sd14-random.yaml shapes on SD."""
    if model == "conceptworld":
        cfg = {k: v for k, v in config_section("methods", "esd-x").items() if k != "algorithm"}
        if ctx.cw_esd_iterations:
            cfg["iterations"] = ctx.cw_esd_iterations
        return method_params("esd", **cfg), "triangle"
    return method_params("esd", train="xattn", iterations=ctx.sd14_esd_iterations, lr=1e-5,
                         ddim_steps=ctx.sd14_ddim_steps, batch_size=1,
                         cache_trajectories=1 if not ctx.gpu else 16), "nudity"


def bench_esd(ctx: Context) -> tuple[list[Row], dict]:
    from eraselab.erase.common import Concept
    from eraselab.erase.common import select_parameters
    from eraselab.erase.esd import esd

    from .baselines import plain_esd
    rows, extra = [], {}
    for model in ctx.models:
        pipe = load(model, ctx.sd14_size)
        p, prompt = esd_settings(model, ctx)
        concept = Concept(name=prompt, type="object", erase=(prompt,))
        named = dict(pipe.unet.named_parameters())
        trained = select_parameters(pipe.unet, p["train"])
        original = {n: named[n].detach().clone() for n in trained}
        stamps: dict[str, list[Stamps]] = {}

        def reset():
            with torch.no_grad():
                for n in trained:
                    named[n].copy_(original[n])

        def run(mode):
            def go(seed):
                reset()
                s = Stamps(pipe.unet)
                stamps.setdefault(mode, []).append(s)
                if mode == "plain loop (baseline)":
                    plain_esd(pipe, prompt, p, seed, progress=s)
                else:
                    esd(pipe, concept, {**p, "sampling": mode}, seed, progress=s)
                s.close()
                # the erased weights, for the erasure check (ConceptWorld only: SD's would fill the memory)
                return {n: named[n].detach().clone() for n in trained} if model == "conceptworld" else None
            return go

        modes = {"plain loop (baseline)": run("plain loop (baseline)"), "ddim": run("ddim"), "frozen": run("frozen")}
        repeats = ctx.esd_seeds if model == "conceptworld" else 1
        measured = compare(modes, repeats)
        notes = {}
        for mode, ss in stamps.items():
            setup, per = np.median([s.split()[0] for s in ss]), np.median([s.split()[1] for s in ss])
            cache = " incl. the trajectory cache" if mode == "frozen" else ""
            notes[mode] = f"setup {setup:.2f} s{cache}, then {per:.3g} s/it"
            measured[mode]["setup_s"], measured[mode]["steady_s_per_it"] = setup, per
        setting = (f"ESD-x, {p['iterations']} it, batch {p['batch_size']}, {p['ddim_steps']} DDIM steps, "
                   f"frozen cache {p['cache_trajectories']} trajectories")

        def target(r: Row):
            if r.setting == "frozen" and model == "conceptworld":
                return ">= 3x baseline", r.speedup >= 3
            if r.setting == "ddim":
                return ">= 1x baseline", r.speedup >= 0.97   # within timing noise of the same work
            return None
        new = rows_from("esd", f"{model}", measured, p["iterations"], "it", baseline="plain loop (baseline)",
                        target=target, notes=notes)
        for r in new:
            r.note = f"{setting}; {r.note}"
        rows += new
        if model == "sd14":   # a few iterations measured: project the run the paper does
            rows += esd_projection(model, measured, p, ctx)
        if model == "conceptworld":
            extra["ESD erasure on ConceptWorld (same work, same seeds)"] = esd_quality(
                pipe, measured, trained, named, original, prompt, ctx.quality_images)
        del pipe
    return rows, extra


def esd_projection(model: str, measured: dict, p: dict, ctx: Context, iterations: int = 1000) -> list[Row]:
    """The time 1000 iterations would take, from the measured setup and steady per-iteration cost."""
    out = []
    base = None
    for mode, m in measured.items():
        total = m["setup_s"] + iterations * m["steady_s_per_it"]
        r = Row("esd (projected)", model, mode, iterations, "it", total, m["peak_rss_mb"], m["peak_gpu_mb"],
                note=f"projected from {p['iterations']} measured it: setup + {iterations} x steady s/it")
        if mode.startswith("plain"):
            base = r
        out.append(r)
    for r in out:
        if r is not base:
            r.baseline, r.speedup = base.setting, base.seconds_per_unit / r.seconds_per_unit
    if ctx.gpu:
        for r in out:
            if r.setting in ("frozen", "ddim") and model == "sd14":
                r.target, r.met = "ESD-x 1000 it <= 600 s, <= 20 GB", r.wall_s <= 600 and (r.peak_gpu_mb or 0) <= 20480
    return out


def esd_quality(pipe, measured: dict, trained: list[str], named: dict, original: dict, concept: str,
                n: int) -> str:
    """Each mode's erased model generates the concept's prompts; the detector's rate, per seed."""
    from eraselab.generate import generate_images
    from eraselab.score.conceptworld import ConceptWorldDetector

    from .models import conceptworld_dir
    frame = prompt_frame(concept, n)
    steps = 25   # config/config.yaml's generation steps
    detector = ConceptWorldDetector({"attribute": "shape", "value": concept}, conceptworld_dir())

    def rate(state):
        with torch.no_grad():
            for name in trained:
                named[name].copy_(state[name])
        images = generate_images(pipe, frame["prompt"].tolist(), frame["evaluation_seed"].tolist(),
                                 frame["evaluation_guidance"].tolist(), steps, n)
        return float(detector(images)["detected"].mean())

    lines = [f"Detection rate of `{concept}` on {len(frame)} images of its prompts ({steps} DDIM steps), "
             f"after ESD-x in each mode; one column per seed.", "",
             "| mode | " + " | ".join(f"seed {s}" for s in range(len(measured['frozen']['results']))) + " |",
             "|---|" + "---|" * len(measured["frozen"]["results"])]
    lines.append("| base model (not erased) | " + " | ".join([f"{rate(original):.3f}"] * len(
        measured["frozen"]["results"])) + " |")
    for mode, m in measured.items():
        lines.append(f"| {mode} | " + " | ".join(f"{rate(s):.3f}" for s in m["results"]) + " |")
        m["results"] = None
    with torch.no_grad():
        for n in trained:
            named[n].copy_(original[n])
    return "\n".join(lines)


# --- generation -----------------------------------------------------------------------------------

def bench_generation(ctx: Context) -> tuple[list[Row], dict]:
    from eraselab.generate import generate_images, set_scheduler

    from .baselines import bare_generation
    rows, extra = [], {}
    for model in ctx.models:
        pipe = load(model, ctx.sd14_size)
        set_scheduler(pipe, "ddim")
        n, steps, guidance = (64, 25, 5.0) if model == "conceptworld" else (ctx.sd14_images, ctx.sd14_steps, 7.5)
        frame = prompt_frame("triangle", n)
        prompts, seeds = frame["prompt"].tolist(), frame["evaluation_seed"].tolist()
        measured = compare({
            "bare diffusers call (baseline)": lambda r: bare_generation(pipe, prompts, seeds, guidance, steps),
            "eraselab generate_images": lambda r: generate_images(pipe, prompts, seeds, [guidance] * n, steps, n)},
            ctx.repeats)
        a, b = (measured[k]["results"][0] for k in measured)
        same = bool(np.array_equal(a, b))
        for m in measured.values():
            m["results"] = None
        rows += rows_from("generate", model, measured, n, "img", baseline="bare diffusers call (baseline)",
                          target=lambda r: ("within 10% of bare diffusers", r.speedup >= 0.9),
                          notes={k: f"batch {n}, {steps} DDIM steps, {pipe.unet.config.sample_size * pipe.vae_scale_factor} px; "
                                    f"identical images: {same}" for k in measured})
        del pipe
    return rows, extra


# --- scoring --------------------------------------------------------------------------------------

TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def bench_scoring(ctx: Context) -> tuple[list[Row], dict]:
    from eraselab.score.clip import ClipDetector
    from eraselab.score.conceptworld import ConceptWorldDetector
    from eraselab.score.nudenet import NudeNetDetector

    from .baselines import clip_one_by_one, nudenet_one_by_one
    from .models import conceptworld_dir
    rows = []
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (64, 512, 512, 3), dtype=np.uint8)   # SD-sized images; NudeNet resizes to 320
    nude = NudeNetDetector({})
    measured = compare({"one image per call (baseline)": lambda r: nudenet_one_by_one(nude.detector, big),
                        f"eraselab, batch {nude.batch_size}": lambda r: nude(big)}, ctx.repeats)
    rows += rows_from("score: nudenet", "512 px images", measured, len(big), "img",
                      baseline="one image per call (baseline)",
                      target=lambda r: (">= 20 img/s", r.throughput >= 20),
                      notes={k: f"NudeNet 3.4.2 320n ONNX, random 512 px images" for k in measured})

    small = rng.integers(0, 256, (256, 32, 32, 3), dtype=np.uint8)
    cw = ConceptWorldDetector({"attribute": "shape", "value": "triangle"}, conceptworld_dir())
    measured = compare({"one image per call (baseline)": lambda r: [cw(small[i:i + 1]) for i in range(len(small))],
                        "eraselab, batch 256": lambda r: cw(small)}, ctx.repeats)
    rows += rows_from("score: conceptworld", "conceptworld", measured, len(small), "img",
                      baseline="one image per call (baseline)")

    tiny = ROOT / "bench" / ".cache" / "tiny-clip-bench.json"
    tiny.parent.mkdir(exist_ok=True)
    tiny.write_text(json.dumps(TINY_CLIP))
    candidates = ["a triangle", "a circle", "a square", "a shape"]
    for label, arch, n in (("tiny open_clip config", str(tiny), 64), ("ViT-L-14 shapes, random weights", "ViT-L-14",
                                                                       8 if not ctx.gpu else 64)):
        det = ClipDetector({"model": arch, "pretrained": None, "candidates": candidates, "target": "a triangle",
                            "batch_size": 32})
        imgs = big[:n]
        measured = compare({"one image per forward (baseline)": lambda r: clip_one_by_one(det.clip, imgs, det.text),
                            "eraselab, batch 32": lambda r: det(imgs)}, ctx.repeats if n > 8 else 1)
        rows += rows_from("score: clip", label, measured, n, "img", baseline="one image per forward (baseline)",
                          notes={k: "random 512 px images" for k in measured})
    return rows, {}


# --- UnlearnDiff ----------------------------------------------------------------------------------

def bench_unlearndiff(ctx: Context) -> tuple[list[Row], dict]:
    from eraselab.attacks.unlearndiff import unlearndiff
    return bench_prefix_attack(ctx, "unlearndiff", unlearndiff, with_base=False)


def bench_p4d(ctx: Context) -> tuple[list[Row], dict]:
    """P4D's seconds per prompt: UnlearnDiff's loop plus a base-UNet forward per step (the target)."""
    from eraselab.attacks.p4d import p4d
    return bench_prefix_attack(ctx, "p4d", p4d, with_base=True)


def bench_prefix_attack(ctx: Context, algorithm: str, attack, with_base: bool) -> tuple[list[Row], dict]:
    """A prefix-token attack's seconds per prompt, prompts one at a time against batched (same tokens
    checked), on the full schedule (no detector: no early stop); ``with_base``: the base UNet is a copy
    (erased == base changes no timing)."""
    import copy
    from eraselab.attacks.common import AttackInputs
    from eraselab.generate import generate_images, set_scheduler
    rows = []
    for model in ctx.models:
        pipe = load(model, ctx.sd14_size)
        set_scheduler(pipe, "ddim")
        if model == "conceptworld":
            n, cfg = 8, config_section("attacks", algorithm)
        else:
            n, cfg = 2, {"prefix_tokens": 5, "timesteps": 1, "iterations": 2 if not ctx.gpu else 40}
        frame = prompt_frame("triangle", n)
        reference = generate_images(pipe, frame["prompt"].tolist(), frame["evaluation_seed"].tolist(),
                                    frame["evaluation_guidance"].tolist(), 25 if model == "conceptworld" else 1, n)
        inputs = AttackInputs(prompts=frame, reference=reference,
                              base_unet=copy.deepcopy(pipe.unet) if with_base else None)
        params = lambda batch: method_params_attack(cfg, batch_size=batch, algorithm=algorithm)
        measured = compare({"one prompt at a time (baseline)": lambda r: attack(pipe, inputs, params(1), 0),
                            f"eraselab, batch {n}": lambda r: attack(pipe, inputs, params(n), 0)},
                           1 if model == "sd14" and not ctx.gpu else 2)
        a, b = (m["results"][0][0].input_ids for m in measured.values())
        same = bool(torch.equal(a, b))
        for m in measured.values():
            m["results"] = None
        p = params(n)
        rows += rows_from(f"attack: {algorithm}", model, measured, n, "prompt", baseline="one prompt at a time (baseline)",
                          notes={k: f"{p['prefix_tokens']} tokens, {p['timesteps']} timesteps x {p['iterations']} "
                                    f"it, no early stop; same tokens: {same}" for k in measured})
        del pipe, inputs
    return rows, {}


# --- AdvUnlearn -----------------------------------------------------------------------------------

def advunlearn_settings(model: str, ctx: Context) -> dict:
    if model == "conceptworld":   # config/baselines.yaml's settings, 10 of their iterations
        return method_params("advunlearn", **{**config_section("methods", "advunlearn", "baselines.yaml"),
                                              "iterations": 10})
    return method_params("advunlearn", iterations=ctx.sd14_esd_iterations, ddim_steps=ctx.sd14_ddim_steps,
                         attack_steps=2 if not ctx.gpu else 30, retain_batch=2 if not ctx.gpu else 5)


def bench_advunlearn(ctx: Context) -> tuple[list[Row], dict]:
    """Seconds per outer iteration, with the inner attack (every iteration) and without it (warm-up only)."""
    from eraselab.erase.advunlearn import advunlearn
    from eraselab.erase.common import Concept
    rows = []
    concept = Concept(name="triangle", type="object", erase=("a triangle",),
                      preserve=("a circle", "a square", "a cross"))
    for model in ctx.models:
        pipe = load(model, ctx.sd14_size)
        p = advunlearn_settings(model, ctx)
        te, unet = ({n: q.detach().clone() for n, q in m.state_dict().items()} for m in (pipe.text_encoder, pipe.unet))

        def run(warmup):
            def go(seed):
                pipe.text_encoder.load_state_dict(te)
                pipe.unet.load_state_dict(unet)
                s = Stamps(pipe.unet)
                advunlearn(pipe, concept, {**p, "warmup": warmup}, seed, progress=s)
                s.close()
                return s.split()
            return go

        n = p["iterations"]
        measured = compare({"no attack (warm-up only, baseline)": run(n), "with attack": run(0)},
                           1 if model == "sd14" and not ctx.gpu else 2)
        notes = {}
        for name, m in measured.items():
            setup, per = np.median([r[0] for r in m["results"]]), np.median([r[1] for r in m["results"]])
            notes[name] = (f"{per:.3f} s/iteration after {setup:.1f} s setup; train {p['train']}, sampling "
                           f"{p['sampling']}, attack {p['attack_steps']} steps, batch {p['batch_size']}, "
                           f"retain batch {p['retain_batch']}")
            m["results"] = None
        rows += rows_from("erase: advunlearn", model, measured, n, "iteration",
                          baseline="no attack (warm-up only, baseline)", notes=notes)
        del pipe
    return rows, {}


def method_params_attack(cfg: dict, **overrides) -> dict:
    from eraselab.config import fill_defaults, load_schema
    schema = load_schema()
    algorithm = overrides.pop("algorithm", "unlearndiff")
    sub = {**schema["$defs"]["attacks_algorithms"][algorithm], "$defs": schema["$defs"]}
    return fill_defaults({"algorithm": algorithm, **cfg, **overrides}, sub)


# --- RECE / UCE -----------------------------------------------------------------------------------

def bench_rece(ctx: Context) -> tuple[list[Row], dict]:
    from eraselab.erase import method
    from eraselab.erase.common import Concept
    from eraselab.erase.common import cross_attention_kv

    from .baselines import plain_uce
    rows = []
    for model in ctx.models:
        pipe = load(model, ctx.sd14_size)
        named = dict(pipe.unet.named_parameters())
        names = cross_attention_kv(pipe.unet)
        original = {n: named[n].detach().clone() for n in names}
        # RECE's nudity setting (implicit concept: 3 epochs, regular_scale 0.1), guide "", no preserve set
        concept = Concept(name="nudity", type="implicit", erase=("nudity",))
        params = {a: method_params(a) for a in ("uce", "rece")}

        def reset():
            with torch.no_grad():
                for n in names:
                    named[n].data = original[n].clone()

        def run(fn):
            def go(r):
                reset()
                with torch.no_grad():
                    return fn()
            return go
        measured = compare({
            "UCE per layer (baseline)": run(lambda: plain_uce(pipe, concept, params["uce"])),
            "eraselab UCE": run(lambda: method("uce")(pipe, concept, params["uce"], seed=0)),
            "eraselab RECE (UCE + 3 epochs)": run(lambda: method("rece")(pipe, concept, params["rece"], seed=0))},
            ctx.repeats)
        base, ours = measured["UCE per layer (baseline)"]["results"][0], measured["eraselab UCE"]["results"][0][0]
        err = max(float((base[k] - ours[k]).abs().max() / ours[k].abs().max()) for k in ours)
        for m in measured.values():
            m["results"] = None
        rece_row = measured.pop("eraselab RECE (UCE + 3 epochs)")
        rows += rows_from("erase: uce/rece", model, measured, 1, "run", baseline="UCE per layer (baseline)",
                          notes={k: f"{len(names)} K/V matrices; UCE max rel. diff to baseline {err:.1e}"
                                 for k in measured})
        rows += rows_from("erase: uce/rece", model, {"eraselab RECE (UCE + 3 epochs)": rece_row}, 1, "run",
                          target=(lambda r: ("<= 3 s", r.wall_s <= 3.0)) if model == "sd14" else None,
                          notes={"eraselab RECE (UCE + 3 epochs)": "RECE's nudity setting; no validation set"})
        reset()
        del pipe
    return rows, {}


# --- planning -------------------------------------------------------------------------------------

def bench_planning(ctx: Context) -> tuple[list[Row], dict]:
    config = ROOT / "bench" / "plan_grid.yaml"
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(config)]
    walls, jobs = [], None
    for _ in range(max(2, ctx.repeats - 1)):
        wall, rss, _, out = measure(lambda: subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True))
        if out.returncode != 0:
            raise RuntimeError(f"snakemake -n failed:\n{out.stderr[-3000:]}")
        m = re.search(r"^total\s+(\d+)", out.stdout + out.stderr, re.M)
        jobs = int(m.group(1)) if m else None
        walls.append(wall)
    wall = float(np.median(walls))
    row = Row("plan: snakemake -n", "conceptworld", "bench/plan_grid.yaml", jobs or 0, "job", wall, None, None,
              repeats=len(walls), target="<= 10 s for >= 1000 jobs", met=wall <= 10 and (jobs or 0) >= 1000,
              note="subprocess wall time, including Python and Snakemake start-up")
    return [row], {}


# --- a protocol's whole DAG -----------------------------------------------------------------------

PROTOCOL = ["config/sd14.yaml", "config/protocols/unlearndiff-nudity.yaml"]


def protocol_overlay(ctx: Context, model_path: Path) -> dict:
    """UnlearnDiff's nudity protocol on a few prompts, on the SD-v1.4-shaped model this bench built:
    every stage of the DAG (erase, generate, score, attack, report) at the protocol's resolution.
    A GPU node has no network: the prompts are the example rows and NudeNet is the shipped model,
    so no fetch job runs (fetching is tested on its own)."""
    p = ctx.protocol
    return {"run": {"models": ["sd14-random"], "methods": ["esd-u"]},
            "models": {"sd14-random": {"source": "local", "path": str(model_path)}},
            "concepts": {"nudity": {"prompts": "data/prompts/examples/i2p.csv",
                                    "detector": {"kind": "nudenet", "model": "320n", "threshold": 0.45}}},
            "methods": {"esd-u": {"iterations": p["esd_iterations"]}},
            "generation": {"max_prompts": p["prompts"], "steps": p["steps"]},
            "attacks": {"unlearndiff": {"timesteps": p["timesteps"], "iterations": p["iterations"],
                                        "max_prompts": p["prompts"]}},
            "expected": []}


def protocol_command(workdir: Path, overlay: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
            "--configfile", *PROTOCOL, str(overlay), *args]


def bench_protocol(ctx: Context) -> tuple[list[Row], dict]:
    import tempfile

    import yaml
    workdir = Path(tempfile.mkdtemp(prefix="eraselab-protocol-"))
    for name in ("config", "data"):
        (workdir / name).symlink_to(ROOT / name)
    overlay = workdir / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(protocol_overlay(ctx, sd14_dir(ctx.sd14_size))))
    cmd = protocol_command(workdir, overlay, "--cores", "all")
    wall, rss, _, out = measure(lambda: subprocess.run(cmd, capture_output=True, text=True))
    if out.returncode != 0:
        raise RuntimeError(f"the protocol DAG failed ({workdir}):\n{out.stderr[-3000:]}")
    jobs = len(re.findall(r"^Finished job", out.stdout + out.stderr, re.M))
    p = ctx.protocol
    row = Row("protocol DAG", "sd14", "unlearndiff-nudity", jobs, "job", wall, rss, None,
              note=f"{p['prompts']} prompts, ESD-u {p['esd_iterations']} it, {p['steps']} steps, UnlearnDiff "
                   f"{p['timesteps']} timesteps x {p['iterations']} it; wall time of `snakemake` in {workdir} "
                   "(jobs in subprocesses: their GPU memory is not in this row)")
    return [row], {}


# --- ConceptWorld training ------------------------------------------------------------------------

def bench_training(ctx: Context) -> tuple[list[Row], dict]:
    """Not rerun: the shipped weights' own record of their training, when they carry one."""
    q = SHIPPED / "quality.json"
    if not q.is_file():
        return [Row("train: conceptworld", "conceptworld", "shipped weights' record", 1, "run", float("nan"),
                    note="data/conceptworld/quality.json absent: the shipped weights carry no training record")], {}
    quality = json.loads(q.read_text())
    prov = quality.get("provenance", {})
    wall = float(prov.get("wall_time_s", float("nan")))
    keep = {k: v for k, v in quality.items() if k not in ("provenance", "architecture", "examples")}
    row = Row("train: conceptworld", "conceptworld", "shipped weights' record (not rerun)", 1, "run", wall,
              prov.get("peak_rss_mb"), prov.get("peak_gpu_mb"), target="<= 20 min", met=wall <= 1200,
              note=f"threads {prov.get('torch_threads')}, host {prov.get('host')}")
    return [row], {"ConceptWorld training record (data/conceptworld/quality.json)":
                   "```json\n" + json.dumps(keep, indent=1, default=str)[:3000] + "\n```"}


# --- SalUn ----------------------------------------------------------------------------------------

def bench_salun(ctx: Context) -> tuple[list[Row], dict]:
    """SalUn on ConceptWorld's triangle: the whole erasure, split by its record into image generation,
    the saliency pass and seconds per training step."""
    from eraselab.erase.common import Concept
    from eraselab.erase.salun import salun
    if "conceptworld" not in ctx.models:
        return [], {}
    pipe = load("conceptworld", ctx.sd14_size)
    original = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    concept = Concept(name="triangle", type="object", erase=("a triangle",),
                      preserve=tuple(config_section("concepts", "triangle")["preserve"]))
    p = method_params("salun", **config_section("methods", "salun", "baselines.yaml"))   # 128 + 128 images, 40 steps

    def run(seed):
        with torch.no_grad():
            for n, q in pipe.unet.named_parameters():
                q.copy_(original[n])
        return salun(pipe, concept, p, seed)[1]

    measured = compare({"eraselab salun": run}, ctx.esd_seeds)
    records = measured["eraselab salun"]["results"]
    timing = {k: float(np.median([r["timing"][k] for r in records])) for k in records[0]["timing"]}
    for m in measured.values():
        m["results"] = None
    note = (f"{p['images']}+{p['images']} images {timing['images_s']:.1f} s, mask {timing['mask_s']:.1f} s, "
            f"{timing['seconds_per_iteration']:.3f} s/iteration (batch {p['batch_size']}), "
            f"{records[0]['saliency']['salient']} salient weights")
    rows = rows_from("erase: salun", "conceptworld", measured, records[0]["iterations"], "iteration",
                     notes={"eraselab salun": note})
    return rows, {}


STAGES = {"esd": bench_esd, "generate": bench_generation, "score": bench_scoring, "unlearndiff": bench_unlearndiff,
          "p4d": bench_p4d, "rece": bench_rece, "advunlearn": bench_advunlearn, "salun": bench_salun,
          "plan": bench_planning, "train": bench_training, "protocol": bench_protocol}
GPU_CHECK = ["esd", "generate", "score", "unlearndiff", "protocol"]
