"""``eraselab <stage>``: one subcommand per stage of the workflow, each a call into its module.

Rules pass the slice of the config the stage depends on as ``--spec`` (JSON),
so Snakemake's params trigger reruns exactly the jobs whose slice changed, and
a stage can be run by hand with the same arguments a rule uses.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from .runtime import CODE_ENV   # how the job's code fingerprint reaches the stage's provenance


def _pair(item: str) -> tuple[str, str]:
    """A NAME=PATH argument."""
    name, sep, path = item.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {item!r}")
    return name, path


# Every stage: the function ``eraselab <stage>`` calls (module:function), what it does, and its options:
# "--x" required, "--x?" optional, "--x=" a list of NAME=PATH. Each option --x reaches the function
# as the keyword argument x (--spec, always required, as parsed JSON), so
# `eraselab erase --base B --spec S --out O` calls `eraselab.erase.stage.run(base=B, spec=S, out=O)`.
# A stage's module is imported only when it runs (eraselab.registry).
STAGES = {
    "fetch": ("eraselab.fetch:run", "download a pinned external asset (config/assets.yaml), sha256-checked",
              "--local? --out"),
    "split": ("eraselab.split:run", "one value of a CSV asset's split column, as a prompt set", "--source --out"),
    "base_model": ("eraselab.models:prepare", "download / assemble a base model directory", "--weights? --out"),
    "train_conceptworld": ("eraselab.conceptworld.train:run", "train ConceptWorld's model and classifier", "--out"),
    "prune": ("eraselab.prune.stage:run", "a pruning mask for one concept (stored apart from the weights)",
              "--base --pairs? --attribution? --out"),
    "attribute": ("eraselab.attribute.stage:run", "per-neuron activations: base (concept vs neutral), or "
                  "rho/delta of an erased model under an attack", "--base --pairs? --delta? --adversarial? --out"),
    "erase": ("eraselab.erase.stage:run", "erase a concept; writes a delta", "--base --mask? --out"),
    "generate": ("eraselab.generate:run", "generate image sets for one model variant",
                 "--base --delta? --prompts= --images="),
    "attack": ("eraselab.attacks.stage:run", "attack a model: adversarial prompts or embeddings for its target",
               "--base --delta? --reference? --pairs? --out"),
    "attack_generate": ("eraselab.generate:run_attacked", "generate a target's image set under attack",
                        "--base --delta? --adversarial --out"),
    "score": ("eraselab.score.stage:run", "detect concepts in image sets", "--base --images= --scores --rates"),
    "attack_score": ("eraselab.score.stage:run_attacked", "pre- and post-attack success rates",
                     "--base --images --plain-scores --scores --rates"),
    "quality": ("eraselab.score.quality:run", "preservation metrics (CLIP score, FID vs base) on the neutral set",
                "--base --images --reference --out"),
    "validate": ("eraselab.validate:run", "generate and score a variant's validation prompt sets (tuning)",
                 "--base --delta? --scores --rates"),
    "select": ("eraselab.select:run", "choose a tuned method's setting from its candidates' validation scores",
               "--rates= --scores= --out --table"),
    "prune_report": ("eraselab.prune.report:run", "the pruning table: pruned fraction, rates, ASR, attribution",
                     "--out"),
    "report": ("eraselab.report:run", "tables, figures and grids", "--out"),
}
OPTION_HELP = {
    "--local": "a local copy of the asset, used instead of its URL when its sha256 matches",
    "--source": "the fetched CSV",
    "--weights": "conceptworld: the weights directory", "--delta": "the variant's erasure delta",
    "--mask": "a pruning mask (mask.safetensors) applied before erasing",
    "--pairs": "prompts with and without the concept (CSV)", "--attribution": "the base model's attribution table",
    "--adversarial": "an attack's adversarial set", "--reference": "the base model's images of the same prompts",
    "--plain-scores": "the variant's scores.csv (plain prompts)"}


def stage_module(stage: str) -> str:
    """The module that holds a stage's code."""
    return STAGES[stage][0].partition(":")[0]


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eraselab", description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    p.add_argument("--code", help="the fingerprint of the code the job runs (set by the workflow; recorded "
                                  "in the outputs' provenance)")
    sub = p.add_subparsers(dest="stage", required=True)
    for name, (target, help, options) in STAGES.items():
        s = sub.add_parser(name, help=help)
        s.add_argument("--spec", type=json.loads, required=True, help="the config slice, as JSON")
        for option in options.split():
            flag = option.rstrip("?=")
            listed = option.endswith("=")
            s.add_argument(flag, required=not option.endswith("?"), help=OPTION_HELP.get(flag),
                           nargs="+" if listed else None, type=_pair if listed else str,
                           metavar="NAME=PATH" if listed else "PATH")
        s.set_defaults(target=target)
    return p


def run_stage(args: argparse.Namespace) -> None:
    """Call the stage's function with its options as keyword arguments (unset optional ones left out)."""
    from .registry import load
    module, _, function = args.target.partition(":")
    options = {k: dict(v) if isinstance(v, list) else v for k, v in vars(args).items()
               if k not in ("stage", "threads", "code", "target") and v is not None}
    load({args.stage: args.target}, args.stage, "stage")(**options)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (kill, scancel, a SLURM time limit, Snakemake stopping its jobs)."""


def _on_sigterm(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if args.code:
        os.environ[CODE_ENV] = args.code
    # Python dies on SIGTERM without unwinding; unwind like Ctrl-C instead, so atomic writes in
    # progress remove their temporaries and the last complete checkpoint stays for the rerun.
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        run_stage(args)
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
    from .fetch import FetchError
    from .prompts import PromptSetError
    from .runtime import DivergenceError
    return ArtifactError, DivergenceError, FetchError, PromptSetError


if __name__ == "__main__":
    sys.exit(main())
