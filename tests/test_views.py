"""The team's everyday views of a run: `dvc metrics show` / `dvc exp show` (numbers only, a row per
erased model per metric family), `dvc plots diff` (two revisions side by side), readable figures with
one colour per method, and Snakemake's HTML report with its tables, rendered in a real browser.

The slow tests start from `shared_origin` (conftest.py): a project copy that ran the small DAG with
two erasures and committed its artifacts with DVC.
"""
import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eraselab import config, report
from eraselab.artifacts import write_json
from eraselab.imagesets import save_image_set

REPORT = config.fill_defaults({}, config.load_schema())["report"]   # the report settings a run gets by default

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = ["unlearndiff", "ringabell", "ringabell-embed", "cce"]


def leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, (*path, k))
    else:
        yield path, obj


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def summary_frame(n_methods=2, targets=("triangle", "Brellin", "night")) -> pd.DataFrame:
    rows = []
    for i, target in enumerate(targets):
        for j, method in enumerate(["esd-x", "esd-u", "uce", "rece"][:n_methods]):
            rows.append(dict(model="cw", target=target, target_type="object", prune="none", method=method,
                             base_rate=1.0, erased_rate=0.1 * (i + j), reduction=1 - 0.1 * (i + j),
                             others_mean_rate=0.8, others_base_mean_rate=0.9, others_max_drop_points=12.5,
                             others_pixel_distance=np.nan if j else 0.0812345, erased=True, preserved=False))
    return pd.DataFrame(rows)


def attacks_frame(summary: pd.DataFrame, attacks=ATTACKS) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [dict(model=r.model, target=r.target, target_type=r.target_type, prune=r.prune, method=r.method,
                 attack=a, algorithm=a, shared=a.startswith("ringabell"), base_rate=r.base_rate, pre_rate=r.erased_rate,
                 attack_rate=0.5, asr=min(1.0, r.erased_rate + rng.uniform(0, 0.5)), n=20, seconds_per_prompt=2.5,
                 detector="conceptworld", detector_rule="shape == triangle")
            for r in summary.itertuples() for a in attacks]
    return pd.DataFrame(rows)


# --- metrics: numbers only, a file per family and erased model -------------------------------------

def test_metric_families_hold_numbers_only_a_file_per_family_and_erased_model():
    summary = summary_frame().assign(clip_score=[30.1, np.nan, 29.0, 28.0, 27.0, 26.0], base_clip_score=31.0,
                                     fid_vs_base=4.25, fid_vs_real=np.nan)
    summary["erased_rate_low"], summary["erased_rate_high"] = summary.erased_rate - 0.05, summary.erased_rate + 0.05
    attacks = attacks_frame(summary.iloc[:2], ATTACKS[:2])
    families = report.metric_families(summary, attacks)
    assert set(families) == {"erasure", "preservation", "attacks"}
    assert set(families["erasure"]) == {f"cw/{t}/none/{m}" for t in ("triangle", "Brellin", "night")
                                        for m in ("esd-x", "esd-u")}
    assert set(families["attacks"]) == {"cw/triangle/none/esd-x", "cw/triangle/none/esd-u"}
    assert families["erasure"]["cw/Brellin/none/esd-u"] == {"base_rate": 1.0, "erased_rate": 0.2, "reduction": 0.8,
                                                            "erased_rate_low": 0.15, "erased_rate_high": 0.25}
    # no two families share a key (dvc exp show names a column by its key alone when it is unique);
    # a NaN is left out, never written
    assert families["preservation"]["cw/triangle/none/esd-x"] == {
        "others_base_rate": 0.9, "others_rate": 0.8, "worst_drop_pt": 12.5, "pixel_distance": 0.0812,
        "clip_score": 30.1, "base_clip_score": 31.0, "fid_vs_base": 4.25}
    assert "clip_score" not in families["preservation"]["cw/triangle/none/esd-u"]
    no_drop = report.metric_families(summary.assign(others_max_drop_points=-0.0001))["preservation"]
    assert str(no_drop["cw/triangle/none/esd-x"]["worst_drop_pt"]) == "0.0"          # not -0.0
    assert set(families["attacks"]["cw/triangle/none/esd-u"]) == {"asr_unlearndiff", "asr_ringabell"}
    for path, value in leaves(families):
        assert is_number(value), (path, value)
    keys = {f: {k for v in models.values() for k in v} for f, models in families.items()}
    assert not (keys["erasure"] & keys["preservation"] or keys["erasure"] & keys["attacks"]
                or keys["preservation"] & keys["attacks"])
    # metrics.json: the same numbers, erased model -> family -> metric
    one_file = report.metrics(summary, attacks)
    assert one_file["cw/triangle/none/esd-x"]["attacks"] == families["attacks"]["cw/triangle/none/esd-x"]
    assert sorted(v for _, v in leaves(one_file)) == sorted(v for _, v in leaves(families))


def rates_entry(d: Path, model: str, variant: str, rates: dict) -> dict:
    """A variant's rates.json, scores.csv (two prompts per concept) and one image set per concept
    (every image black: pixel distance 0)."""
    images = []
    detected = {1.0: [True, True], 0.5: [True, False], 0.0: [False, False]}
    d.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{"prompt_set": c, "case_number": i, "image": 0, "detected": v}
                  for c, r in rates.items() for i, v in enumerate(detected[r])]).to_csv(d / "scores.csv", index=False)
    for concept in rates:
        images.append(str(d / "images" / f"{concept}.tar"))
        save_image_set(images[-1], np.zeros((2, 8, 8, 3), np.uint8),
                       pd.DataFrame({"case_number": [0, 1], "prompt": ["a", "b"], "evaluation_seed": [1, 2]}), {},
                       preview=0)
    write_json(d / "rates.json", {"rates": {c: {"type": "object", "rate": r, "n": 2,
                                                "detector": {"kind": "conceptworld", "description": "a CNN head"}}
                                            for c, r in rates.items()}})
    return {"model": model, "variant": variant, "rates": str(d / "rates.json"), "scores": str(d / "scores.csv"),
            "images": images, "quality": None}


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    """The report stage run on two erased models, one of them attacked twice."""
    tmp = tmp_path_factory.mktemp("report")
    entries = [rates_entry(tmp / "base", "cw", "base", {"triangle": 1.0, "circle": 1.0, "square": 0.5}),
               rates_entry(tmp / "esd-x", "cw", "triangle/seed0/none/esd-x", {"triangle": 0.0, "circle": 1.0, "square": 0.5}),
               rates_entry(tmp / "esd-u", "cw", "triangle/seed0/none/esd-u", {"triangle": 0.5, "circle": 0.5, "square": 0.0})]
    attacks = []
    for attack, detected in (("unlearndiff", [True, True, True, False]), ("ringabell", [True, False, False, False])):
        d = tmp / "attacks" / attack   # two images per prompt: ASR 75% and 25%
        d.mkdir(parents=True)
        pd.DataFrame({"case_number": [0, 0, 1, 1], "image": [0, 1, 0, 1], "pre_detected": False,
                      "attack_detected": detected}).to_csv(d / "scores.csv", index=False)
        path, asr = d / "rates.json", float(np.mean(detected))
        write_json(path, {"type": "object", "pre_rate": 0.0, "attack_rate": asr, "asr": asr, "n": 4,
                          "attack": {"seconds_per_prompt": 1.5}, "detector": {"kind": "conceptworld", "rule": "r"}})
        attacks.append({"model": "cw", "variant": "triangle/seed0/none/esd-x", "attack": attack, "algorithm": attack,
                        "shared": attack == "ringabell", "rates": str(path),
                        "scores": str(d / "scores.csv")})
    report.run(tmp / "out", {**REPORT, "entries": entries, "grid_images": 2, "seed": 3, "attacks": attacks})
    return tmp / "out"


def test_report_writes_numbers_for_dvc_and_descriptions_to_report_json(report_dir):
    metrics = json.loads((report_dir / "metrics.json").read_text())
    for path, value in leaves(metrics):
        assert is_number(value), (path, value)
    # two prompts: unlearndiff found the concept in 2 of 2 and 1 of 2 images, so resampled 50%, 75% or 100%
    assert metrics["cw/triangle/none/esd-x"]["attacks"] == {
        "asr_unlearndiff": 0.75, "asr_unlearndiff_low": 0.5, "asr_unlearndiff_high": 1.0,
        "asr_ringabell": 0.25, "asr_ringabell_low": 0.0, "asr_ringabell_high": 0.5}
    assert metrics["cw/triangle/none/esd-u"]["erasure"] == {
        "base_rate": 1.0, "base_rate_low": 1.0, "base_rate_high": 1.0, "erased_rate": 0.5, "erased_rate_low": 0.0,
        "erased_rate_high": 1.0, "reduction": 0.5, "reduction_low": 0.0, "reduction_high": 1.0}
    files = sorted(p.relative_to(report_dir / "dvc/metrics").as_posix()
                   for p in (report_dir / "dvc/metrics").rglob("*.json"))
    assert files == ["attacks/cw/triangle/none/esd-x.json", "erasure/cw/triangle/none/esd-u.json",
                     "erasure/cw/triangle/none/esd-x.json", "preservation/cw/triangle/none/esd-u.json",
                     "preservation/cw/triangle/none/esd-x.json"]
    preservation = json.loads((report_dir / "dvc/metrics/preservation/cw/triangle/none/esd-u.json").read_text())
    assert {k: v for k, v in preservation.items() if not k.endswith(("_low", "_high"))} == {
        "others_base_rate": 0.75, "others_rate": 0.25, "worst_drop_pt": 50.0, "pixel_distance": 0.0}
    assert all(preservation[k + "_low"] <= preservation[k] <= preservation[k + "_high"]
               for k in ("others_rate", "worst_drop_pt", "pixel_distance"))
    # the words moved to report.json: detectors, provenance, the summary's flags
    record = json.loads((report_dir / "report.json").read_text())
    assert record["detectors"]["cw"]["triangle"]["description"] == "a CNN head"
    assert record["provenance"]["seed"] == 3 and "host" in record["provenance"]
    assert {r["method"]: r["erased"] for r in record["summary"]} == {"esd-x": "yes", "esd-u": "unclear"}
    assert record["intervals"]["seeds"] == [0] and record["intervals"]["replicates"] == 2000


def test_report_writes_plot_data_a_chart_per_variant(report_dir):
    plots = report_dir / "dvc/plots"
    tradeoff = pd.read_csv(plots / "tradeoff.csv")
    assert tradeoff.label.tolist() == ["triangle/esd-x", "triangle/esd-u"]
    assert tradeoff.set_index("method").target_rate.to_dict() == {"esd-x": 0.0, "esd-u": 50.0}
    assert tradeoff.set_index("method").others_rate.to_dict() == {"esd-x": 75.0, "esd-u": 25.0}
    attacked = pd.read_csv(plots / "detected/cw/triangle/none/esd-x.csv").set_index("images").detected.to_dict()
    assert attacked == {"circle": 100.0, "square": 50.0, "triangle (target)": 0.0,
                        "triangle under unlearndiff (ASR)": 75.0, "triangle under ringabell (ASR)": 25.0}
    assert pd.read_csv(plots / "detected/cw/base.csv").detected.tolist() == [100.0, 50.0, 100.0]


# --- figures: no overprinted labels, one colour per method -------------------------------------------

def overlaps(boxes) -> list:
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]


def test_attack_figure_labels_never_overprint(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)   # keep the figure to measure it
    summary = summary_frame(n_methods=4)
    report.attacks_figure(attacks_frame(summary), tmp_path / "attacks.png")
    fig = figures[0]
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        labels = [t for t in ax.get_xticklabels() if t.get_text()]
        assert [t.get_text() for t in labels] == ATTACKS       # a group of bars per attack
        assert not overlaps([t.get_window_extent(renderer) for t in labels])
        assert not overlaps([t.get_window_extent(renderer) for t in (*labels, ax.title)])
    assert "Attack success rate" in fig._suptitle.get_text()
    assert (tmp_path / "attacks.png").stat().st_size > 10_000


def legend_colours(fig) -> dict:
    import matplotlib.colors as mc
    out = {}
    from matplotlib.patches import Patch
    for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]:
        for handle, text in zip(legend.legend_handles, legend.get_texts()):
            colour = handle.get_facecolor() if isinstance(handle, Patch) else handle.get_color()
            out[text.get_text()] = mc.to_hex(colour, keep_alpha=False)
    return out


def test_every_figure_gives_a_method_the_same_colour(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    summary = summary_frame(n_methods=4)
    attacks = attacks_frame(summary[summary.method.isin(["uce", "rece"])])   # only some methods attacked
    colours = report.method_colours([*summary.method, *attacks.method])
    assert colours == report.method_colours(reversed([*summary.method]))      # by name, not by order met
    assert len({tuple(c) for c in colours.values()}) == 4
    assert report.method_colours(["uce"])["uce"] == colours["uce"]              # nor by the other methods
    presets = ["esd-x", "esd-u", "esd-x-strict", "all-but-one", "uce", "uce-last-subject", "rece"]
    assert len({tuple(c) for c in report.method_colours(presets).values()}) == len(presets)
    tradeoff = legend_colours(report.tradeoff_figure(summary, colours))
    report.attacks_figure(attacks, tmp_path / "attacks.png", colours)
    attacked = legend_colours(figures[-1])
    for method in ("uce", "rece"):
        assert tradeoff[method] == attacked[method], method
    assert tradeoff["uce"] != tradeoff["rece"]


# --- HTML tables and the report's first page --------------------------------------------------------

class Tables(HTMLParser):
    """The cells of every <table> in a page, as rendered (script and style text is not parsed)."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th") and self.tables:
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def tables_of(html: str) -> list[list[list[str]]]:
    parser = Tables()
    parser.feed(html)
    return parser.tables


def test_html_tables_hold_every_erased_model(report_dir):
    overview = tables_of((report_dir / "overview.html").read_text())
    assert overview[0][0] == ["erased model", "target: base → erased [95%]", "reduction [95%]",
                              "others: base → erased", "worst drop [95%]", "erased ≥50%", "others ≤10 pt"]
    assert [row[0] for row in overview[0][1:]] == ["triangle/esd-x", "triangle/esd-u"]
    assert overview[0][1][1:3] == ["100% → 0% [0, 0]", "100% [100, 100]"]
    # esd-x: nothing left, nothing else moved; esd-u: 1 of 2 prompts left, circle and square each lost one of
    # two, a worst drop of 50 points, but 0 when both resamples draw the unchanged prompt (1 in 16)
    assert overview[0][1][-2:] == ["yes", "yes"] and overview[0][2][-2:] == ["unclear", "unclear"]
    assert overview[1][0] == ["erased model", "unlearndiff", "ringabell"] and overview[1][1] == [
        "triangle/esd-x", "75% [50, 100]", "25% [0, 50]"]
    summary = tables_of((report_dir / "summary.html").read_text())[0]
    assert len(summary) == 3 and "others: worst drop" in summary[0]
    attacks = tables_of((report_dir / "attacks.html").read_text())[0]
    assert [row[summary[0].index("method")] for row in attacks[1:]] == ["esd-x", "esd-x"] and "ASR" in attacks[0]


def render_landing_page(files, config) -> str:
    """workflow/report/workflow.rst as Snakemake renders the report's first page (Jinja, then docutils)."""
    from docutils.core import publish_parts
    from jinja2 import Environment

    class Snakemake:
        pass
    Snakemake.config = config
    text = Environment(trim_blocks=True, lstrip_blocks=True).from_string(
        (ROOT / "workflow/report/workflow.rst").read_text()).render(snakemake=Snakemake, files=files, categories={})
    return publish_parts(text, writer_name="html")["html_body"]


def test_report_first_page_shows_the_overview_and_the_pruning_table(report_dir, tmp_path):
    from types import SimpleNamespace
    shutil.copy(report_dir / "overview.html", tmp_path / "overview.html")
    pd.DataFrame({"target": ["triangle"], "prune": ["wanda"], "method": ["esd-x"], "erased_rate": [0.05]}).to_csv(
        tmp_path / "pruning.csv", index=False)
    files = [SimpleNamespace(name="overview.html", path=tmp_path / "overview.html")]
    page = render_landing_page(files, {"run": {"prunings": ["none", "wanda"]}})
    tables = tables_of(page)
    assert tables[0][1][0] == "triangle/esd-x" and tables[2][0][:2] == ["target", "prune"]
    assert tables[2][1] == ["triangle", "wanda", "esd-x", "0.05"]
    # without pruning there is no pruning table; before a run (no overview yet) no table at all
    assert len(tables_of(render_landing_page(files, {"run": {"prunings": ["none"]}}))) == 2
    assert tables_of(render_landing_page([], {"run": {"prunings": ["none"]}})) == []


# --- a real run: DVC's views and the HTML report in a browser ----------------------------------------

def metrics_rows(text: str) -> list[str]:
    return [line for line in text.splitlines()[1:] if line.strip()]


@pytest.mark.slow
def test_dvc_metrics_show_numbers_only_a_row_per_erased_model_per_family(shared_origin):
    from hpc import dvc
    shown = json.loads(dvc(shared_origin.origin, "metrics", "show", "--json").stdout)
    files = shown[""]["data"]
    assert sorted(files) == sorted(f"results/report/dvc/metrics/{family}/conceptworld/triangle/none/{m}.json"
                                   for family in ("erasure", "preservation") for m in ("esd-x", "esd-x-short"))
    for path, value in leaves({f: d["data"] for f, d in files.items()}):
        assert is_number(value), (path, value)
    table = dvc(shared_origin.origin, "metrics", "show").stdout
    assert len(metrics_rows(table)) == 2 * 2          # 2 erased models x 2 families, no provenance, no text
    metrics = ["base_rate", "erased_rate", "others_base_rate", "others_rate", "pixel_distance", "reduction",
               "worst_drop_pt"]   # each with its 95% interval beside it
    assert table.splitlines()[0].split()[1:] == [m + s for m in metrics for s in ("", "_high", "_low")]


@pytest.fixture(scope="module")
def two_revisions(shared_origin, tmp_path_factory):
    """A clone of the origin that reran esd-x-short with more iterations and committed it: HEAD~1 and HEAD."""
    from hpc import TWO_METHODS, clone, dvc, git, snakemake
    project = clone(shared_origin.origin, tmp_path_factory.mktemp("views") / "clone", shared_origin.remote)
    (project / "more.yaml").write_text("methods: {esd-x-short: {iterations: 20}}\n")
    snakemake(project, "--cores", "2", *TWO_METHODS, "more.yaml")
    dvc(project, "commit", "-f", "-q", "pipeline")
    git(project, "add", "dvc.lock", "more.yaml")
    git(project, "commit", "-qm", "esd-x-short: 20 iterations")
    return project


@pytest.mark.slow
def test_dvc_plots_diff_sets_two_revisions_side_by_side(two_revisions, tmp_path):
    from hpc import dvc
    out = tmp_path / "plots"
    dvc(two_revisions, "plots", "diff", "HEAD~1", "HEAD", "-o", str(out))
    page = (out / "index.html").read_text()
    specs = {m.group(1): json.loads(m.group(2)) for m in re.finditer(
        r'<div id = "([\w-]+)">\s*<script type = "text/javascript">\s*var spec = (\{.*?\});\n', page, re.S)}
    tradeoff = specs["results_report_dvc_plots_tradeoff_csv"]   # .dvc/plots/tradeoff.json: labelled points
    assert [layer["mark"]["type"] for layer in tradeoff["layer"]] == ["point", "text"]
    assert "Erasure vs preservation" in tradeoff["title"]["text"] and tradeoff["encoding"]["color"]["field"] == "rev"
    assert {p["label"] for p in tradeoff["data"]["values"]} == {"triangle/esd-x", "triangle/esd-x-short"}
    points = {(p["rev"], p["erased_model"]): float(p["target_rate"]) for p in tradeoff["data"]["values"]}
    short = "conceptworld/triangle/none/esd-x-short"
    assert {m for _, m in points} == {"conceptworld/triangle/none/esd-x", short}
    assert {rev for rev, _ in points} == {"HEAD~1", "HEAD"}
    assert points["HEAD~1", "conceptworld/triangle/none/esd-x"] == points["HEAD", "conceptworld/triangle/none/esd-x"]
    # a chart per variant, each with both revisions' bars
    bars = specs["results_report_dvc_plots_detected_conceptworld_triangle_none_esd-x-short_csv"]
    assert bars["mark"]["type"] == "bar" and {p["rev"] for p in bars["data"]["values"]} == {"HEAD~1", "HEAD"}
    assert {p["images"] for p in bars["data"]["values"]} == {"triangle (target)", "circle"}
    # and the numbers: only what the rerun erasure touched changed
    diff = json.loads(dvc(two_revisions, "metrics", "diff", "HEAD~1", "--json").stdout)
    assert diff and all(path.endswith(f"{short}.json") for path in diff)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="needs headless Chromium to render the HTML report: "
                    "apt-get install chromium (docs/views.md)")
def test_html_report_shows_the_tables_in_a_browser(shared_origin, tmp_path):
    from hpc import snakemake
    page = tmp_path / "report.html"
    snakemake(shared_origin.origin, "--report", str(page), "--configfile", "tests/configs/small.yaml",
              "tests/configs/two-methods.yaml")
    browser = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--virtual-time-budget=10000", "--window-size=1400,900"]
    dom = subprocess.run([*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    assert 'id="app"' in dom and not tables_of(page.read_text())   # the tables exist only once the page's JS ran
    tables = tables_of(dom)
    overview = next(t for t in tables if t and t[0][0] == "erased model")
    assert [row[0] for row in overview[1:]] == ["triangle/esd-x", "triangle/esd-x-short"]
    assert all(re.fullmatch(r"\d+% → \d+% \[\d+, \d+\]", row[1]) for row in overview[1:]), overview
    # the Tables category holds the full summary, with its caption saying how to read it
    source = page.read_text()
    assert "summary.html" in source and "The summary, one row per erased model" in source
    shot = tmp_path / "report.png"
    subprocess.run([*browser, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    from PIL import Image
    assert Image.open(shot).size == (1400, 900)
