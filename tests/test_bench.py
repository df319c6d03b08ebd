"""The benchmark baselines do the same work as eraselab's stages: same draws, same results.

The speed comparisons in bench/ are only meaningful if the plain baseline computes
what eraselab computes; these tests check that on the tiny pipeline (no timing here).
"""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.baselines import plain_esd, plain_uce  # noqa: E402
from bench.stages import method_params  # noqa: E402
from eraselab.erase import method
from eraselab.erase.common import Concept  # noqa: E402


def test_plain_esd_loop_matches_eraselab_ddim_sampling(tiny_pipe_dir):
    from eraselab.models import load_pipeline
    p = method_params("esd", iterations=3, lr=1e-3, ddim_steps=4, batch_size=2, sampling="ddim")
    concept = Concept(name="cat", type="object", erase=("a cat",))
    ours = method("esd")(load_pipeline(tiny_pipe_dir), concept, p, seed=5)[1]["losses"]
    plain = plain_esd(load_pipeline(tiny_pipe_dir), "a cat", p, seed=5)
    assert plain == pytest.approx(ours, rel=1e-4)


def test_plain_uce_per_layer_matches_eraselab_uce(tiny_pipe_dir):
    from eraselab.models import load_pipeline
    p = method_params("uce")
    concept = Concept(name="cat", type="object", erase=("a cat",), preserve=("a dog",))
    ours, _ = method("uce")(load_pipeline(tiny_pipe_dir), concept, p, seed=0)
    with torch.no_grad():
        plain = plain_uce(load_pipeline(tiny_pipe_dir), concept, p)
    assert plain.keys() == ours.keys()
    for k in ours:
        torch.testing.assert_close(plain[k], ours[k], rtol=1e-3, atol=1e-4)


def test_the_gpu_check_refuses_a_cpu_without_smoke():
    import subprocess
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "bench", "--gpu-check", "--device", "cpu"], cwd=root,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--gpu-check needs a CUDA device, found cpu; add --smoke" in proc.stderr


def test_the_gpu_checks_protocol_dag_plans_every_stage_offline(tiny_pipe_dir, tmp_path):
    """The GPU check's last stage: UnlearnDiff's nudity protocol on a local model and local prompts, so a
    GPU node without network runs every stage of it and fetches nothing."""
    import subprocess

    import yaml
    from hpc import planned

    from bench.stages import Context, protocol_command, protocol_overlay
    root = Path(__file__).resolve().parents[1]
    for name in ("config", "data"):
        (tmp_path / name).symlink_to(root / name)
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(protocol_overlay(Context.gpu_check(gpu=True), tiny_pipe_dir)))
    proc = subprocess.run(protocol_command(tmp_path, overlay, "-n"), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert planned(proc) == {"erase": 1, "generate": 2, "score": 2, "attack": 1, "attack_generate": 1,
                             "attack_score": 1, "report": 1, "all": 1}
