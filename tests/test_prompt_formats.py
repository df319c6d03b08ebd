"""The papers' prompt CSV layouts load into one schema; the shipped examples are in those layouts."""
from pathlib import Path

import pandas as pd
import pytest

from eraselab.prompts import load_prompts

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "prompts" / "examples"

# The header line of each layout, as the papers' repositories ship them (ESD's data/ folder, HF I2P).
HEADERS = {
    "i2p.csv": ",prompt,categories,hard,inappropriate_percentage,nudity_percentage,q16_percentage,"
               "sd_safety_percentage,prompt_toxicity,lexica_url,evaluation_seed,evaluation_guidance,"
               "sd_image_width,sd_image_height,sd_model,case_number",
    "i2p_hf.csv": "prompt,categories,hard,inappropriate_percentage,nudity_percentage,q16_percentage,"
                  "sd_safety_percentage,prompt_toxicity,lexica_url,sd_seed,sd_guidance_scale,sd_image_width,"
                  "sd_image_height,sd_model",
    "artist_vangogh.csv": ",case_number,prompt,evaluation_seed,artist",
    "artist_picasso.csv": ",case_number,prompt,evaluation_seed,artist",
    "object_church.csv": ",case_number,evaluation_seed,prompt,label_idx,label_str",
    "object_parachute.csv": ",case_number,evaluation_seed,prompt,label_idx,label_str",
    "coco.csv": "image_id,source,prompt,evaluation_seed",
}


@pytest.mark.parametrize("name", sorted(HEADERS))
def test_examples_use_the_papers_layouts(name):
    assert (EXAMPLES / name).read_text().splitlines()[0] == HEADERS[name]
    ps = load_prompts(EXAMPLES / name, default_guidance=7.5)
    assert len(ps) >= 3 and all(p.strip() for p in ps.prompts)
    assert not any(str(c).startswith("Unnamed") for c in ps.frame.columns)   # pandas' saved index dropped
    assert list(ps.frame.case_number) == sorted(set(ps.frame.case_number))


def test_i2p_both_namings_give_the_same_rows():
    esd, hf = load_prompts(EXAMPLES / "i2p.csv"), load_prompts(EXAMPLES / "i2p_hf.csv")
    merged = hf.frame.merge(esd.frame, on="prompt", suffixes=("_hf", "_esd"))
    assert len(merged) == len(hf)
    for col in ("evaluation_seed", "evaluation_guidance", "sd_image_width", "nudity_percentage", "categories"):
        assert (merged[f"{col}_hf"] == merged[f"{col}_esd"]).all(), col
    # I2P's seeds exceed 2^31 and its guidance varies per row: both are kept as given
    assert max(esd.seeds) > 2**31 and len(set(esd.guidances)) > 1


def test_label_columns_pass_through(tmp_path):
    art = load_prompts(EXAMPLES / "artist_vangogh.csv", default_guidance=7.5)
    assert set(art.frame.artist) == {"Van Gogh"} and art.guidances == [7.5] * len(art)
    obj = load_prompts(EXAMPLES / "object_church.csv")
    assert set(obj.frame.label_idx) == {497} and obj.frame.label_str.str.strip().str.contains("church").all()
    coco = load_prompts(EXAMPLES / "coco.csv")
    assert coco.frame.case_number.tolist() == list(range(len(coco)))   # no case_number column: row index


def test_limit_and_a_real_sized_seed(tmp_path):
    p = tmp_path / "x.csv"
    pd.DataFrame({"prompt": ["a", "b", "c"], "sd_seed": [4261553411, 1, 2]}).to_csv(p)   # with pandas' index
    ps = load_prompts(p, limit=2)
    assert ps.seeds == [4261553411, 1] and list(ps.frame.columns[:2]) == ["case_number", "prompt"]


def test_a_saved_index_column_named_unnamed(tmp_path):
    """UnlearnDiff's prompt files carry pandas' index under the literal header 'Unnamed: 0'."""
    p = tmp_path / "vangogh.csv"
    p.write_text("Unnamed: 0,case_number,prompt,evaluation_seed,artist\n0,0,Irises by Vincent van Gogh,348,Vincent van Gogh\n")
    ps = load_prompts(p)
    assert list(ps.frame.columns) == ["case_number", "prompt", "evaluation_seed", "artist", "evaluation_guidance"]
