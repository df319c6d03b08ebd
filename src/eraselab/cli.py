"""``eraselab <stage>``: one subcommand per Snakemake rule, each a thin call into its module.

Rules pass the slice of the config the stage depends on as ``--spec`` (JSON),
so Snakemake's params trigger reruns exactly the jobs whose slice changed, and
a stage can be run by hand with the same arguments a rule uses.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path


def _pairs(items: list[str]) -> dict[str, str]:
    """NAME=PATH arguments -> {NAME: PATH}."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"expected NAME=PATH, got {item!r}")
        out[name] = path
    return out


def base_model(a) -> None:
    from .models import assemble_conceptworld, build_random, download
    spec = a.spec
    if spec["source"] == "hub":
        download(spec["repo_id"], spec["revision"], a.out)
    elif spec["source"] == "conceptworld":
        assemble_conceptworld(a.weights, a.out)
    elif spec["source"] == "random":
        build_random(spec["architecture"], a.out, spec["seed"], spec.get("image_size"))
    else:
        raise SystemExit(f"base_model: source {spec['source']!r} needs no preparation")


def train_conceptworld(a) -> None:
    from .conceptworld.stage import run
    run(a.out, a.spec)


def erase(a) -> None:
    from .erase.stage import run
    run(a.base, a.out, a.spec, mask=a.mask)


def attribute(a) -> None:
    from .attribution import run_base, run_erased
    if a.delta:
        run_erased(a.base, a.delta, a.adversarial, a.out, a.spec)
    else:
        run_base(a.base, a.pairs, a.out, a.spec)


def prune(a) -> None:
    from .prune.stage import run
    run(a.base, a.out, a.spec, pairs=a.pairs, attribution=a.attribution)


def prune_report(a) -> None:
    from .prune.report import run
    run(a.spec, a.out)


def generate(a) -> None:
    from .generate import run
    run(a.base, a.delta, _pairs(a.prompts), _pairs(a.images), a.spec)


def score(a) -> None:
    from .score import run
    run(a.base, _pairs(a.images), a.spec["concepts"], a.scores, a.rates, a.spec)


def quality(a) -> None:
    from .score.quality import run
    run(a.base, a.images, a.reference, a.out, a.spec)


def report(a) -> None:
    from .report import run
    run(a.spec["entries"], a.out, a.spec)


def attack(a) -> None:
    from .attacks.stage import run_attack
    run_attack(a.base, a.delta, a.reference, a.pairs, a.out, a.spec)


def attack_generate(a) -> None:
    from .attacks.stage import run_generate
    run_generate(a.base, a.delta, a.adversarial, a.out, a.spec, shared=a.spec.get("shared", False))


def attack_score(a) -> None:
    from .attacks.stage import run_score
    run_score(a.base, a.images, a.plain_scores, a.scores, a.rates, a.spec)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eraselab", description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    sub = p.add_subparsers(dest="stage", required=True)

    def stage(name, fn, help):
        s = sub.add_parser(name, help=help)
        s.add_argument("--spec", type=json.loads, required=True, help="the config slice, as JSON")
        s.set_defaults(func=fn)
        return s

    s = stage("base_model", base_model, "download / assemble a base model directory")
    s.add_argument("--weights", help="conceptworld: the weights directory")
    s.add_argument("--out", required=True)
    s = stage("train_conceptworld", train_conceptworld, "train ConceptWorld's model and classifier")
    s.add_argument("--out", required=True)
    s = stage("erase", erase, "erase a concept; writes a delta")
    s.add_argument("--base", required=True)
    s.add_argument("--mask", help="a pruning mask (mask.safetensors) applied before erasing")
    s.add_argument("--out", required=True)
    s = stage("attribute", attribute, "per-neuron activations: base (concept vs neutral), or rho/delta of an "
              "erased model under an attack")
    s.add_argument("--base", required=True)
    s.add_argument("--pairs", help="base model: concept prompts and matched neutral prompts (CSV)")
    s.add_argument("--delta", help="erased model: its delta")
    s.add_argument("--adversarial", help="erased model: the attack's adversarial set")
    s.add_argument("--out", required=True, metavar="TABLE.parquet")
    s = stage("prune", prune, "a pruning mask for one concept (stored apart from the weights)")
    s.add_argument("--base", required=True)
    s.add_argument("--pairs", help="wanda: concept prompts and matched neutral prompts (CSV)")
    s.add_argument("--attribution", help="attribution: the base model's attribution table")
    s.add_argument("--out", required=True, metavar="MASK.safetensors")
    s = stage("generate", generate, "generate image sets for one model variant")
    s.add_argument("--base", required=True)
    s.add_argument("--delta")
    s.add_argument("--prompts", nargs="+", required=True, metavar="NAME=CSV")
    s.add_argument("--images", nargs="+", required=True, metavar="NAME=TAR")
    s = stage("score", score, "detect concepts in image sets")
    s.add_argument("--base", required=True)
    s.add_argument("--images", nargs="+", required=True, metavar="NAME=TAR")
    s.add_argument("--scores", required=True)
    s.add_argument("--rates", required=True)
    s = stage("quality", quality, "preservation metrics (CLIP score, FID vs base) on the neutral prompt set")
    s.add_argument("--base", required=True)
    s.add_argument("--images", required=True, metavar="TAR")
    s.add_argument("--reference", required=True, metavar="TAR", help="the base model's neutral images")
    s.add_argument("--out", required=True)

    s = stage("attack", attack, "attack a model: adversarial prompts or embeddings for its target's prompts")
    s.add_argument("--base", required=True)
    s.add_argument("--delta")
    s.add_argument("--reference", help="the base model's image set of the target's prompts")
    s.add_argument("--pairs", help="paired prompts with and without the concept (Ring-A-Bell)")
    s.add_argument("--out", required=True, metavar="ADVERSARIAL.safetensors")
    s = stage("attack_generate", attack_generate, "generate a target's image set under attack")
    s.add_argument("--base", required=True)
    s.add_argument("--delta")
    s.add_argument("--adversarial", required=True)
    s.add_argument("--out", required=True, metavar="TAR")
    s = stage("attack_score", attack_score, "pre- and post-attack success rates")
    s.add_argument("--base", required=True)
    s.add_argument("--images", required=True)
    s.add_argument("--plain-scores", required=True, help="the variant's scores.csv (plain prompts)")
    s.add_argument("--scores", required=True)
    s.add_argument("--rates", required=True)
    s = stage("prune_report", prune_report, "the pruning table: pruned fraction, rates, ASR, attribution")
    s.add_argument("--out", required=True)
    s = stage("report", report, "tables, figures and grids")
    s.add_argument("--out", required=True)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (kill, scancel, a SLURM time limit, Snakemake stopping its jobs)."""


def _on_sigterm(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    # Python dies on SIGTERM without unwinding; unwind like Ctrl-C instead, so atomic writes in
    # progress remove their temporaries and the last complete checkpoint stays for the rerun.
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        args.func(args)
    except KeyboardInterrupt as e:
        print(f"eraselab {args.stage}: {'terminated' if isinstance(e, Terminated) else 'interrupted'}; "
              f"no output was written; rerun to resume from the last checkpoint", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except Exception as e:
        if not isinstance(e, _explained()):
            raise
        print(f"eraselab {args.stage}: {type(e).__name__}: {e}", file=sys.stderr)  # the message says what to do
        return 1
    return 0


def _explained() -> tuple[type, ...]:
    """Failures whose message names the file or value and the fix: shown without a traceback."""
    from .artifacts import ArtifactError
    from .prompts import PromptSetError
    from .runtime import DivergenceError
    return ArtifactError, DivergenceError, PromptSetError


if __name__ == "__main__":
    sys.exit(main())
