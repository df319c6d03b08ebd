"""The tokenizer built offline must tokenize exactly like OpenAI CLIP (open_clip's reference)."""
import open_clip
import pytest

from eraselab.tokenizer import build_clip_tokenizer

PROMPTS = [
    "a moonlit red triangle in the style of Brellin",
    "a photo of a naked man", "Starry Night by Vincent van Gogh, oil on canvas, trending on artstation",
    "Hello, World! it's 42 cats; naïve café", "  Multiple   spaces\tand CAPS ", "emoji 🎨 and «quotes»",
    "an image of parachute", "ajin : demi - human, highly detailed 8k",
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return build_clip_tokenizer(tmp_path_factory.mktemp("tok"))


def test_matches_open_clip_token_ids(tok):
    reference = open_clip.get_tokenizer("ViT-L-14")
    for prompt in PROMPTS:
        ours = tok(prompt, padding="max_length", max_length=77, truncation=True).input_ids
        theirs = reference([prompt])[0].tolist()
        end = theirs.index(49407) + 1
        assert ours[:end] == theirs[:end], prompt


def test_is_sd_v1_shaped(tok):
    assert len(tok) == 49408 and tok.model_max_length == 77
    assert tok.bos_token_id == 49406 and tok.eos_token_id == 49407
    assert tok.pad_token_id == 49407          # SD v1 pads with end-of-text
    ids = tok("a cat", padding="max_length", max_length=77).input_ids
    assert ids[:4] == [49406, 320, 2368, 49407] and set(ids[4:]) == {49407}


def test_reloads_from_disk(tok, tmp_path):
    from transformers import CLIPTokenizer
    tok.save_pretrained(tmp_path)
    again = CLIPTokenizer.from_pretrained(tmp_path)
    assert again("a blue cross at midnight").input_ids == tok("a blue cross at midnight").input_ids
