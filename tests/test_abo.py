"""All-but-One (reconstructed): the concept's guidance term moves toward its anchor's, the
unconditional prediction stays where the frozen model had it, and only the chosen parameters train."""
import torch

from eraselab.erase.common import Concept, select_parameters
from eraselab.erase.abo import all_but_one
from eraselab.models import encode_prompts
from eraselab.erase.finetune import frozen_copy, predict

PARAMS = dict(algorithm="all-but-one", train="xattn", drift_weight=1.0, iterations=24, lr=1e-3,
              sampling="frozen", ddim_steps=4, start_guidance=3.0, batch_size=2, cache_trajectories=2)


def probe(pipe, frozen, concept):
    """Distances at fixed states: guidance term to the anchor's, and unconditional drift."""
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(8, 4, 8, 8, generator=g), torch.linspace(50, 950, 8).long()
    c, alt = encode_prompts(pipe, list(concept.erase)), encode_prompts(pipe, concept.guides())
    u = encode_prompts(pipe, [""])

    @torch.no_grad()
    def measure(unet):
        e_c, e_u = predict(unet, x, t, [c, u])
        f_alt, f_u = predict(frozen, x, t, [alt, u])
        return (torch.nn.functional.mse_loss(e_c - e_u, f_alt - f_u).item(),
                torch.nn.functional.mse_loss(e_u, f_u).item())
    return measure


def test_guidance_term_moves_to_the_anchor_and_only_xattn_trains(tiny_pipe):
    concept = Concept(name="triangle", type="object", erase=("triangle",), anchor="circle")
    frozen = frozen_copy(tiny_pipe.unet)
    measure = probe(tiny_pipe, frozen, concept)
    before = measure(tiny_pipe.unet)
    tensors, record = all_but_one(tiny_pipe, concept, PARAMS, seed=0)
    after = measure(tiny_pipe.unet)
    assert {k.removeprefix("unet.") for k in tensors} == set(select_parameters(tiny_pipe.unet, "xattn"))
    assert len(record["losses"]) == PARAMS["iterations"]
    assert after[0] < 0.7 * before[0], (before, after)      # the guidance term approached the anchor's
    assert before[1] == 0.0 and after[1] < 0.1 * before[0]  # the unconditional prediction barely drifted


def test_drift_weight_holds_the_unconditional_prediction(tiny_pipe_dir):
    from eraselab.models import load_pipeline
    concept = Concept(name="triangle", type="object", erase=("triangle",))
    drifts = []
    for weight in (0.0, 10.0):
        pipe = load_pipeline(tiny_pipe_dir)
        frozen = frozen_copy(pipe.unet)
        all_but_one(pipe, concept, {**PARAMS, "drift_weight": weight}, seed=0)
        drifts.append(probe(pipe, frozen, concept)(pipe.unet)[1])
    assert drifts[1] < drifts[0], drifts
