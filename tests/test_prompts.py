"""Prompt CSVs in the I2P schema: aliases accepted, bad rows named precisely, shipped sets reproducible."""
from pathlib import Path

import pandas as pd
import pytest

from eraselab.conceptworld.prompts import prompt_set, write_prompt_sets
from eraselab.conceptworld.world import World
from eraselab.prompts import PromptSetError, load_prompts

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="p.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_i2p_columns_and_aliases(tmp_path):
    ps = load_prompts(write(tmp_path, "prompt,evaluation_seed,evaluation_guidance\na cat,3,7\na dog,4,7.5\n"))
    assert ps.prompts == ["a cat", "a dog"] and ps.seeds == [3, 4] and ps.guidances == [7.0, 7.5]
    hf = load_prompts(write(tmp_path, "prompt,sd_seed,sd_guidance_scale,case_number\nx,11,6,100\n"), 7.5)
    assert hf.seeds == [11] and hf.guidances == [6.0] and hf.frame.case_number.tolist() == [100]
    default = load_prompts(write(tmp_path, "prompt,evaluation_seed,artist\ny,5,Monet\n"), default_guidance=4.0)
    assert default.guidances == [4.0] and default.frame.artist.tolist() == ["Monet"]   # label columns kept


@pytest.mark.parametrize("text,fragments", [
    ("prompt,seed\na,1\n", ["missing column", "evaluation_seed or sd_seed", "found columns: prompt, seed"]),
    ("text,evaluation_seed\na,1\n", ["missing column", "prompt"]),
    ("prompt,evaluation_seed\na,-3\n", ["line 2", "evaluation_seed", "-3", "integer from 0"]),
    ("prompt,evaluation_seed\na,1.5\n", ["line 2", "1.5"]),
    ("prompt,evaluation_seed\na,1\nb,seven\n", ["line 3", "'seven'"]),
    ("prompt,evaluation_seed\n,1\n", ["line 2", "prompt", "non-empty"]),
    ("prompt,evaluation_seed,evaluation_guidance\na,1,-2\n", ["evaluation_guidance", "-2", ">= 0"]),
    ("prompt,evaluation_seed,sd_image_width\na,1,500\n", ["sd_image_width", "500", "multiple of 8"]),
    ("prompt,evaluation_seed\n", ["no prompt rows"]),
    ("prompt,evaluation_seed\na,1\nb,x\nc,y\n", ["line 3", "and 1 more rows"]),
])
def test_bad_prompt_files_are_named_precisely(tmp_path, text, fragments):
    with pytest.raises(PromptSetError) as e:
        load_prompts(write(tmp_path, text))
    assert str(tmp_path / "p.csv") in str(e.value)
    for f in fragments:
        assert f in str(e.value), f"{f!r} not in {e.value}"


def test_missing_file(tmp_path):
    with pytest.raises(PromptSetError, match="prompt file not found"):
        load_prompts(tmp_path / "absent.csv")


def test_shipped_conceptworld_prompt_sets_are_reproducible(tmp_path):
    written = write_prompt_sets(tmp_path)
    assert len(written) == len(World().concepts())
    for path in written:
        shipped = ROOT / "data" / "prompts" / "conceptworld" / path.name
        assert shipped.read_text() == path.read_text(), f"{shipped} differs from write_prompt_sets()"


def test_conceptworld_prompts_ask_for_their_concept():
    w = World()
    for concept, (attribute, value) in w.concepts().items():
        df = prompt_set(w, concept, 30, seed=0)
        assert (df[attribute] == value).all(), concept
        assert df.evaluation_seed.nunique() == 30
    night = prompt_set(w, "night", 40, seed=0)
    assert night.prompt.str.contains("night").mean() < 0.5   # mostly reached without the word
