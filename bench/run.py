"""Time every stage on ConceptWorld and SD-v1.4 shapes, each against a plain baseline, in one run.

    OMP_NUM_THREADS=2 PYTHONPATH=src python -m bench               # everything (or: make bench)
    python -m bench --stages esd generate --models conceptworld     # a part

The device is detected (CUDA when present, ERASELAB_DEVICE overrides); on a GPU
the SD-v1.4-shaped model runs at 512 px with more iterations. Writes
bench/results/bench.{csv,md} (after each stage, so a part is kept if a later one fails).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from .harness import machine, write
from .stages import GPU_CHECK, STAGES, Context


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    ap.add_argument("--models", nargs="+", choices=["conceptworld", "sd14"], default=None)
    ap.add_argument("--repeats", type=int, default=None, help="repeats of the cheap comparisons (default 3)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for baseline and eraselab alike (default: OMP_NUM_THREADS, else torch's)")
    ap.add_argument("--sd14-size", type=int, default=None, help="SD-v1.4-shaped model's resolution (CPU 64, GPU 512)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to check the harness runs (numbers mean nothing)")
    ap.add_argument("--name", default="bench", help="results file name under bench/results/")
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None,
                    help="run on this device (sets ERASELAB_DEVICE); default: CUDA when present")
    ap.add_argument("--gpu-check", action="store_true",
                    help="the GPU check: SD-v1.4 shapes at 512 px, stages " + " ".join(GPU_CHECK)
                         + ", into bench/results/gpu.md; sized for 8 minutes on one GPU (with --smoke: on a CPU, "
                           "tiny sizes, to check the script)")
    args = ap.parse_args(argv)
    if args.device:
        os.environ["ERASELAB_DEVICE"] = args.device

    import torch
    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS") or 0)
    if threads:
        torch.set_num_threads(threads)
    from eraselab.runtime import device, quiet_libraries
    quiet_libraries()
    ctx = Context.for_device(device() == "cuda")
    if args.gpu_check:
        if device() != "cuda" and not args.smoke:
            ap.error(f"--gpu-check needs a CUDA device, found {device()}; add --smoke to check the script on a CPU")
        ctx, args.stages = Context.gpu_check(device() == "cuda"), GPU_CHECK
        args.name = "gpu" if device() == "cuda" else "gpu-smoke"
    elif args.models:
        ctx.models = tuple(args.models)
    if args.repeats:
        ctx.repeats = args.repeats
    if args.smoke and not args.gpu_check:
        ctx.repeats, ctx.esd_seeds, ctx.cw_esd_iterations, ctx.quality_images = 1, 1, 3, 8
    if args.sd14_size:
        ctx.sd14_size = args.sd14_size
    info = machine()
    info["sd14_size_px"] = ctx.sd14_size
    rows, extra = [], {}
    for name in args.stages:
        start = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        new_rows, new_extra = STAGES[name](ctx)
        rows += new_rows
        extra.update(new_extra)
        print(f"[bench] {name} done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        csv_path, md_path = write(rows, info, extra, args.name)
    print(md_path.read_text())
    print(f"wrote {csv_path} and {md_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
