"""The token machinery attacks share: simplex projection, straight-through sampling, text round trips, encoding."""
import numpy as np
import pytest
import torch

from eraselab.adversarial import AdversarialSet, conditioning, embed_ids, encode
from eraselab.attacks.common import (decode, generator, layout_ids, project_simplex, prompt_ids, sample_one_hot, token_ids,
                                     vocabulary)
from eraselab.attacks.unlearndiff import timestep_schedule


def bisection_projection(a: torch.Tensor, xi: float = 1e-9) -> torch.Tensor:
    """The projection UnlearnDiff's code computes: clip(a - mu, 0, 1) with mu found by bisection."""
    lo, hi = float(a.min()) - 1, float(a.max())
    while hi - lo > xi:
        mu = (lo + hi) / 2
        lo, hi = (mu, hi) if (a - mu).clamp(0, 1).sum() > 1 else (lo, mu)
    return (a - (lo + hi) / 2).clamp(0, 1)


def test_projection_keeps_a_valid_distribution():
    torch.manual_seed(0)
    v = torch.cat([torch.randn(3, 4, 50) * 3, torch.full((1, 4, 50), 1 / 50)])   # last: already on the simplex
    v[0, 0, :] = -5.0                                                               # all negative
    v[0, 1, 7] = 40.0                                                               # one huge entry
    p = project_simplex(v.double())
    assert (p >= 0).all() and torch.allclose(p.sum(-1), torch.ones(4, 4, dtype=torch.double))
    assert torch.allclose(project_simplex(p), p)                                    # a projection: idempotent
    assert torch.allclose(p[3], v[3].double())                                      # the simplex is left alone
    assert p[0, 1, 7] == 1 and p[0, 1].sum() == 1
    for row in v.double().reshape(-1, 50):                                          # the same point as bisection
        assert torch.allclose(project_simplex(row), bisection_projection(row), atol=1e-6)


def test_straight_through_sampling():
    probs = project_simplex(torch.randn(2, 3, 20)).requires_grad_(True)
    one_hot = sample_one_hot(probs, [generator(0, 1), generator(0, 2)])
    assert (one_hot.sum(-1) == 1).all() and set(one_hot.unique().tolist()) == {0.0, 1.0}
    picked = one_hot.argmax(-1)
    assert (probs.detach().gather(-1, picked[..., None]) > 0).all()               # only tokens with mass
    again = sample_one_hot(probs, [generator(0, 1), generator(0, 2)])
    assert torch.equal(one_hot, again)                                              # seeded: reproducible
    grad = torch.linspace(-3, 3, 120).reshape(2, 3, 20)
    (one_hot * grad).sum().backward()
    assert torch.equal(probs.grad, grad.clamp(-1, 1))                               # hardtanh of the gradient


@pytest.fixture(scope="module")
def tokenizer(tiny_pipe_dir):
    from transformers import CLIPTokenizer
    return CLIPTokenizer.from_pretrained(tiny_pipe_dir / "tokenizer")


def test_hard_tokens_decode_to_a_prompt_the_tokenizer_round_trips(tokenizer):
    words = vocabulary(tokenizer, "words")
    assert 30000 < len(words) < len(tokenizer) and tokenizer.eos_token_id not in words.tolist()
    rng = np.random.default_rng(0)
    prompt = "a photo of a purple triangle in the style of Brellin"
    for _ in range(20):
        prefix = words[rng.integers(len(words), size=5)].tolist()
        ids = layout_ids(tokenizer, prefix + token_ids(tokenizer, prompt))
        text = decode(tokenizer, ids)
        assert text.endswith(prompt.lower())
        assert prompt_ids(tokenizer, [text])[0].tolist() == ids, text                # the same 77 ids again
    everything = vocabulary(tokenizer, "all")
    assert len(everything) == len(tokenizer) - 2


def test_timestep_schedule():
    assert timestep_schedule(50) == list(range(10, 1000, 20))
    assert timestep_schedule(10) == list(range(50, 1000, 100))


def test_encoding_token_embeddings_and_new_tokens(tiny_pipe):
    te, tok = tiny_pipe.text_encoder, tiny_pipe.tokenizer
    ids = prompt_ids(tok, ["a red triangle", "moonlit"])
    with torch.no_grad():
        plain = te(ids)[0]
        assert torch.allclose(encode(te, ids, embed_ids(te, ids)), plain, atol=1e-6)
        # a new token (id = vocabulary size) whose vector is "red"'s encodes like "red"
        red = token_ids(tok, "red")[0]
        new_ids = ids.clone()
        new_ids[0, 2] = len(tok)
        vectors = te.get_input_embeddings().weight[red][None]
        assert torch.allclose(encode(te, new_ids, embed_ids(te, new_ids, vectors)), plain, atol=1e-6)
        adv = AdversarialSet(new_ids, ["a <red*> triangle", "moonlit"], new_tokens=vectors)
        assert torch.allclose(conditioning(tiny_pipe, adv), plain, atol=1e-6)
    assert decode(tok, new_ids[0], ["<red*>"]) == "a <red*> triangle"
