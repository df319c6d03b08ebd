"""Shared fixtures: a tiny random-weight SD-architecture pipeline, and the shipped ConceptWorld model."""
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "data" / "conceptworld"


@pytest.fixture(scope="session")
def tiny_pipe_dir(tmp_path_factory):
    """A randomly initialised pipeline with SD's classes and tiny shapes, saved as a diffusers directory."""
    from eraselab.conceptworld.architecture import (ArchConfig, build_scheduler, build_text_encoder,
                                                    build_unet, build_vae)
    from eraselab.conceptworld.architecture import assemble_pipeline
    from eraselab.tokenizer import build_clip_tokenizer
    torch.manual_seed(0)
    a = ArchConfig(image_size=16, vae_channels=(8, 8), unet_channels=(16, 16), norm_groups=4, text_width=16,
                   text_layers=1, text_heads=2)
    out = tmp_path_factory.mktemp("tiny") / "pipe"
    tok = build_clip_tokenizer(out.parent / "tok")
    assemble_pipeline(build_vae(a), build_text_encoder(a), tok, build_unet(a), build_scheduler()).save_pretrained(out)
    return out


@pytest.fixture
def tiny_pipe(tiny_pipe_dir):
    from eraselab.models import load_pipeline
    return load_pipeline(tiny_pipe_dir)


@pytest.fixture(scope="session")
def conceptworld_dir(tmp_path_factory):
    """The shipped ConceptWorld model, assembled as the base_model stage does (tokenizer built offline)."""
    from eraselab.conceptworld.assemble import assemble_conceptworld
    out = tmp_path_factory.mktemp("cw") / "conceptworld"
    assemble_conceptworld(SHIPPED, out)
    return out


@pytest.fixture
def conceptworld_pipe(conceptworld_dir):
    from eraselab.models import load_pipeline
    return load_pipeline(conceptworld_dir)


@pytest.fixture(scope="session")
def shared_origin(tmp_path_factory):
    """A copy of the project that ran the small DAG with two erasures, committed its artifacts with
    DVC and pushed them to a directory remote: where the HPC and sharing tests start."""
    from types import SimpleNamespace

    from hpc import TWO_METHODS, dvc, git, project_copy, run, snakemake
    base = tmp_path_factory.mktemp("sharing")
    origin = project_copy(base / "origin")
    snakemake(origin, "--cores", "2", *TWO_METHODS)
    dvc(origin, "commit", "-f", "-q", "pipeline")
    git(origin, "add", "dvc.lock")
    git(origin, "commit", "-qm", "results")
    run(origin, "scripts/share.sh", str(base / "remote"))
    dvc(origin, "push", "-q")
    return SimpleNamespace(base=base, origin=origin, remote=base / "remote")


class KillAt:
    """A progress bar that interrupts its run, as a kill would, once ``n`` steps have been reported
    (the resume tests: a run killed mid-way, then resumed from its last checkpoint)."""
    total = 0

    def __init__(self, n: int):
        self.n, self.seen = n, 0

    def reset(self, total=None):
        pass

    def update(self, k: int):
        self.seen += k
        if self.seen >= self.n:
            raise KeyboardInterrupt

    def set_postfix(self, **kw):
        pass
