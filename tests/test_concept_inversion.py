"""Concept inversion: templates place the new token, only its vector is learned, and the result conditions a model."""
import numpy as np
import pandas as pd
import pytest
import torch

from eraselab.adversarial import conditioning
from eraselab.attacks.common import AttackInputs, token_ids
from eraselab.attacks.concept_inversion import concept_inversion, template_ids

ROWS = pd.DataFrame({"case_number": [0, 1], "prompt": ["a red triangle", "a blue triangle on sand"],
                     "evaluation_seed": [1, 2], "evaluation_guidance": [5.0, 5.0]})
FAST = dict(algorithm="concept_inversion", steps=6, lr=0.05, batch_size=2, initializer="art",
            token_name="<tri>", templates=["{token} {prompt}", "a drawing of {token}"],
            attack_template="{prompt} by {token}", checkpoint_every=3)


def test_templates_place_the_new_token(tiny_pipe):
    tok, new = tiny_pipe.tokenizer, len(tiny_pipe.tokenizer)
    ids = template_ids(tok, "{token} {prompt}", "a red triangle", new)
    assert ids[1] == new and ids[2:5] == token_ids(tok, "a red triangle") and ids[5] == tok.eos_token_id
    ids = template_ids(tok, "a drawing of {token}", "ignored", new)
    assert ids[1:5] == [*token_ids(tok, "a drawing of"), new] and len(ids) == 77


def test_only_the_new_vector_is_learned(tiny_pipe):
    before = {n: p.clone() for n, p in [*tiny_pipe.unet.named_parameters(), *tiny_pipe.text_encoder.named_parameters()]}
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    adv, record = concept_inversion(tiny_pipe, AttackInputs(prompts=ROWS, reference=images), FAST, seed=0)
    after = dict([*tiny_pipe.unet.named_parameters(), *tiny_pipe.text_encoder.named_parameters()])
    assert all(torch.equal(before[n], after[n]) for n in before)             # the model is untouched
    assert len(record["losses"]) == 6 and np.isfinite(record["losses"]).all()
    art = tiny_pipe.text_encoder.get_input_embeddings().weight[token_ids(tiny_pipe.tokenizer, "art")[0]]
    assert adv.new_tokens.shape == (1, art.shape[0]) and not torch.allclose(adv.new_tokens[0], art)
    assert record["moved_from_initializer"] > 0
    assert adv.prompts == ["a red triangle by <tri>", "a blue triangle on sand by <tri>"]
    assert (adv.input_ids == len(tiny_pipe.tokenizer)).sum(1).tolist() == [1, 1]
    embeds = conditioning(tiny_pipe, adv)
    assert embeds.shape == (2, 77, tiny_pipe.text_encoder.config.hidden_size) and torch.isfinite(embeds).all()


def test_initializer_must_be_one_token(tiny_pipe):
    images = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="single token"):
        concept_inversion(tiny_pipe, AttackInputs(prompts=ROWS, reference=images),
                          {**FAST, "initializer": "a starry night"}, seed=0)
