"""Ring-A-Bell: the concept vector, the genetic search's objective, the embedding variant, resuming."""
import numpy as np
import pandas as pd
import pytest
import torch

from eraselab.attacks.common import AttackInputs, decode, prompt_ids
from eraselab.attacks.ringabell import concept_vector, encode_texts, ringabell
from conftest import KillAt

PAIRS = pd.DataFrame({"prompt": ["a moonlit red circle", "a blue square at night", "a cross under the stars"],
                      "prompt_without": ["a red circle", "a blue square", "a cross"]})
ROWS = pd.DataFrame({"case_number": [3, 8], "prompt": ["a green triangle after dusk", "a starlit diamond"],
                     "evaluation_seed": [1, 2], "evaluation_guidance": [5.0, 5.0]})
GA = dict(algorithm="ringabell", mode="prompt", eta=3.0, length=6, population=16, generations=12, crossover=0.5,
          mutation=0.25, vocabulary="words", batch_size=64, checkpoint_every=5)


def test_concept_vector_is_the_mean_difference(tiny_pipe):
    te, tok = tiny_pipe.text_encoder, tiny_pipe.tokenizer
    v = concept_vector(te, tok, PAIRS)
    diff = encode_texts(te, tok, PAIRS.prompt.tolist()) - encode_texts(te, tok, PAIRS.prompt_without.tolist())
    assert v.shape == diff.shape[1:] and torch.allclose(v, diff.mean(0))
    same = PAIRS.assign(prompt_without=PAIRS.prompt)
    assert concept_vector(te, tok, same).abs().max() == 0
    with pytest.raises(ValueError, match="prompt_without"):
        concept_vector(te, tok, PAIRS.rename(columns={"prompt_without": "clean"}))


def test_genetic_search_lowers_its_objective(tiny_pipe):
    adv, record = ringabell(tiny_pipe, AttackInputs(prompts=ROWS, pairs=PAIRS), GA, seed=0)
    for row in record["rows"]:
        curve = np.array(row["objective_curve"])
        assert len(curve) == GA["generations"]
        assert (np.diff(curve) <= 0).all()                  # the best is kept: never worse
        assert curve[-1] < 0.9 * curve[0], curve            # and the search improves on the random start
    # the result is K tokens between BOS and EOS, a prompt that reads back as the same ids
    ids = adv.input_ids
    assert ids.shape == (2, 77) and (ids[:, 0] == 49406).all() and (ids[:, GA["length"] + 1:] == 49407).all()
    assert prompt_ids(tiny_pipe.tokenizer, adv.prompts).tolist() == ids.tolist()
    assert adv.prompts == [decode(tiny_pipe.tokenizer, r) for r in ids]
    # the objective recorded is the real distance of the returned prompt to its target
    te, tok = tiny_pipe.text_encoder, tiny_pipe.tokenizer
    target = encode_texts(te, tok, ROWS.prompt.tolist()) + GA["eta"] * concept_vector(te, tok, PAIRS)
    with torch.no_grad():
        got = ((te(ids)[0] - target) ** 2).sum(dim=(1, 2))
    assert np.allclose(got.numpy(), [r["objective"] for r in record["rows"]], rtol=1e-4)


def test_the_attack_is_the_decoded_text_as_in_the_notebook(tiny_pipe):
    """With every token allowed, the best tokens need not survive a round trip through text. The notebook
    saves tokenizer.decode(best tokens) and generation reads that text: the set holds the text and its own
    ids, and conditions the model exactly as the pipeline conditions it on the text."""
    from eraselab.adversarial import conditioning
    from eraselab.attacks.common import layout_ids
    from eraselab.models import encode_prompts
    tok = tiny_pipe.tokenizer
    adv, record = ringabell(tiny_pipe, AttackInputs(prompts=ROWS, pairs=PAIRS), {**GA, "vocabulary": "all"}, seed=0)
    found = [r["search_ids"] for r in record["rows"]]
    assert adv.prompts == [tok.decode(f).strip() for f in found]
    assert torch.equal(adv.input_ids, prompt_ids(tok, adv.prompts))
    assert any(adv.input_ids[i].tolist() != layout_ids(tok, f) for i, f in enumerate(found))   # not a round trip
    torch.testing.assert_close(conditioning(tiny_pipe, adv), encode_prompts(tiny_pipe, adv.prompts))


def test_embedding_mode_feeds_the_target_itself(tiny_pipe):
    params = {**GA, "mode": "embedding", "eta": 0.9}
    adv, _ = ringabell(tiny_pipe, AttackInputs(prompts=ROWS, pairs=PAIRS), params, seed=0)
    te, tok = tiny_pipe.text_encoder, tiny_pipe.tokenizer
    want = encode_texts(te, tok, ROWS.prompt.tolist()) + 0.9 * concept_vector(te, tok, PAIRS)
    assert torch.allclose(adv.prompt_embeds, want) and adv.prompts[0] == "a green triangle after dusk [+0.9 v]"


def test_resumed_search_equals_an_uninterrupted_one(tiny_pipe, tmp_path):
    from eraselab.checkpoint import Checkpointer
    whole, _ = ringabell(tiny_pipe, AttackInputs(prompts=ROWS, pairs=PAIRS), GA, seed=4)

    ckpt = Checkpointer(tmp_path / "ckpt", GA, GA["checkpoint_every"])
    with pytest.raises(KeyboardInterrupt):
        ringabell(tiny_pipe, AttackInputs(prompts=ROWS, pairs=PAIRS), GA, seed=4, progress=KillAt(7), ckpt=ckpt)
    assert ckpt.load()["step"] == 5
    resumed, _ = ringabell(tiny_pipe, AttackInputs(prompts=ROWS, pairs=PAIRS), GA, seed=4, ckpt=ckpt)
    assert torch.equal(whole.input_ids, resumed.input_ids)
