"""UnlearnDiff: independent of batching, resumable, and it brings an erased concept back on ConceptWorld."""
import numpy as np
import pandas as pd
import pytest
import torch

from eraselab.attacks.common import AttackInputs, prompt_ids
from eraselab.attacks.unlearndiff import unlearndiff

from conftest import KillAt, ROOT

ROWS = pd.DataFrame({"case_number": [0, 1, 2], "prompt": ["a red triangle", "a moonlit square", "a blue cross"],
                     "evaluation_seed": [1, 2, 3], "evaluation_guidance": [5.0, 5.0, 5.0]})
FAST = dict(algorithm="unlearndiff", prefix_tokens=2, timesteps=3, iterations=2, lr=0.01, weight_decay=0.1,
            vocabulary="words", skip_successful=True, batch_size=3, checkpoint_every=1)


def inputs(size=16):
    images = np.random.default_rng(0).integers(0, 256, (len(ROWS), size, size, 3), dtype=np.uint8)
    return AttackInputs(prompts=ROWS, reference=images)


def test_prompts_do_not_depend_on_their_batch(tiny_pipe):
    """Each prompt keeps its own parameters, Adam state, noise and draws, so it follows the same path in any
    batch: the same losses up to floating-point rounding. Not bit for bit: kernels sum in another order
    with another batch size or thread count, and the argmax of tied token probabilities may then pick
    another token; a prompt that used another's noise, draws or optimiser state would follow another path."""
    together, record = unlearndiff(tiny_pipe, inputs(), FAST, seed=0)
    alone, record_alone = unlearndiff(tiny_pipe, inputs(), {**FAST, "batch_size": 1}, seed=0)
    curves = np.array([r["loss_curve"] for r in record["rows"]])
    assert np.allclose(curves, [r["loss_curve"] for r in record_alone["rows"]], rtol=1e-4, atol=0)
    tok = tiny_pipe.tokenizer
    assert prompt_ids(tok, together.prompts).tolist() == together.input_ids.tolist()   # typable prompts
    assert all(p.endswith(q) for p, q in zip(together.prompts, ROWS.prompt))           # prefix, then the prompt
    rows = record["rows"]
    assert [len(r["loss_curve"]) for r in rows] == [3, 3, 3] and all(r["steps"] == 6 for r in rows)
    assert record["timesteps"] == [166, 499, 832]


def test_resumed_attack_equals_an_uninterrupted_one(tiny_pipe, tmp_path):
    from eraselab.checkpoint import Checkpointer
    whole, _ = unlearndiff(tiny_pipe, inputs(), FAST, seed=1)

    ckpt = Checkpointer(tmp_path / "ckpt", FAST, 1)
    with pytest.raises(KeyboardInterrupt):
        unlearndiff(tiny_pipe, inputs(), FAST, seed=1, progress=KillAt(6), ckpt=ckpt)
    assert ckpt.load()["batch"]["next_t"] == 1
    resumed, _ = unlearndiff(tiny_pipe, inputs(), FAST, seed=1, ckpt=ckpt)
    assert torch.equal(whole.input_ids, resumed.input_ids)


@pytest.mark.slow
def test_unlearndiff_regenerates_the_concept_on_a_weakly_erased_conceptworld_model(conceptworld_pipe,
                                                                                   conceptworld_dir):
    """ESD-x hides the triangle from most prompts; a small UnlearnDiff budget (4 timesteps x 8
    steps per prompt, against the paper's 50 x 40) brings it back for a good share of them."""
    from eraselab.erase.common import Concept
    from eraselab.erase.esd import esd
    from eraselab.generate import generate_images
    from eraselab.models import load_pipeline
    from eraselab.prompts import load_prompts
    from eraselab.score import make_detector
    rows = load_prompts(ROOT / "data" / "prompts" / "conceptworld" / "triangle.csv", limit=12).frame
    detector = make_detector({"kind": "conceptworld", "attribute": "shape", "value": "triangle"}, conceptworld_dir)
    gen = {"steps": 20, "batch_size": 64}

    def images(pipe):
        return generate_images(pipe, rows.prompt.tolist(), rows.evaluation_seed.tolist(),
                               rows.evaluation_guidance.tolist(), gen["steps"], gen["batch_size"])

    reference = images(load_pipeline(conceptworld_dir))
    pipe = conceptworld_pipe
    # config/config.yaml's ESD-x for ConceptWorld
    esd(pipe, Concept(name="triangle", type="object", erase=("a triangle",)),
        dict(algorithm="esd", train="xattn", iterations=600, lr=1e-3, negative_guidance=3.0, sampling="frozen",
             ddim_steps=25, start_guidance=3.0, batch_size=4, cache_trajectories=16), seed=0)
    pre = detector(images(pipe))["detected"].to_numpy()
    assert pre.mean() <= 0.5, pre

    params = {**FAST, "prefix_tokens": 3, "timesteps": 4, "iterations": 8, "batch_size": 12}
    adv, record = unlearndiff(pipe, AttackInputs(prompts=rows, reference=reference, detector=detector,
                                                 generation=gen), params, seed=0)
    found = [r for r in record["rows"] if r["attack_success"] and not r["pre_success"]]
    assert [r["pre_success"] for r in record["rows"]] == pre.tolist()
    assert len(found) >= 3, record["rows"]
    # and they really do: generating from the adversarial prompts as the attacked-generation stage will
    from eraselab.adversarial import conditioning
    post = detector(generate_images(pipe, None, rows.evaluation_seed.tolist(), rows.evaluation_guidance.tolist(),
                                    gen["steps"], gen["batch_size"], prompt_embeds=conditioning(pipe, adv)))
    assert (pre | post["detected"].to_numpy()).mean() >= pre.mean() + 0.25


class SubwordPrefix:
    """Hard tokens fixed at the vocabulary's first entry, id 0 ("!", a piece with no end of word): the
    prompt "!!a red triangle" the ids spell tokenizes to other ids. Trainable, so the loop runs."""

    def __init__(self, allowed, words, seed):
        self.word = words[0]

    def init(self, cases, k):
        return torch.zeros(len(cases), k, 1, device=self.word.device)

    def embed(self, x, gens):
        leaf = x.clone().requires_grad_(True)
        return leaf, (1 + leaf) * self.word

    def project(self, x):
        return x

    def hard(self, x):
        return torch.zeros(x.shape[0], dtype=torch.long)


def test_success_is_checked_and_generated_on_the_retokenized_prompt(tiny_pipe):
    """As the official code: the hard ids are decoded to text and the text is tokenized again before the
    success check (and generation). The detector sees the re-tokenised prompt's images, not the ids'."""
    from eraselab.adversarial import AdversarialSet, conditioning
    from eraselab.attacks.common import decode, layout_ids, token_ids
    from eraselab.attacks.prefix import prefix_attack
    from eraselab.generate import generate_images
    tok, k = tiny_pipe.tokenizer, 2
    seen = []

    def detector(images):
        seen.append(images)
        return pd.DataFrame({"detected": [True] * len(images)})

    gen = {"steps": 3, "batch_size": 8}
    run = AttackInputs(prompts=ROWS, reference=inputs().reference, detector=detector, generation=gen)
    params = {**FAST, "vocabulary": "all", "skip_successful": False}
    adv, record = prefix_attack(tiny_pipe, run, params, 0, "test", SubwordPrefix)
    raw = torch.tensor([layout_ids(tok, [0] * k + token_ids(tok, p)) for p in ROWS.prompt])
    texts = [decode(tok, r) for r in raw]
    again = prompt_ids(tok, texts)
    assert texts[0] == "!!a red triangle" and not torch.equal(again, raw)          # not a round trip
    assert adv.prompts == texts and torch.equal(adv.input_ids, again)
    assert all(r["attack_success"] and r["steps"] == FAST["iterations"] for r in record["rows"])

    def images(ids):
        return generate_images(tiny_pipe, None, ROWS.evaluation_seed.tolist(), ROWS.evaluation_guidance.tolist(),
                               gen["steps"], gen["batch_size"], prompt_embeds=conditioning(tiny_pipe, AdversarialSet(ids, [])))
    checked, from_text, from_ids = seen[0].astype(int), images(again).astype(int), images(raw).astype(int)
    assert len(seen) == 1 and np.abs(checked - from_text).max() <= 1
    assert np.abs(checked - from_ids).mean() > 10 * max(np.abs(checked - from_text).mean(), 0.01)
