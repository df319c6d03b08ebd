"""Layout preservation in the report: pixel distance between base and erased images of the same rows."""
import numpy as np
import pandas as pd

from eraselab.artifacts import write_json
from eraselab.imagesets import save_image_set
from eraselab.report import add_pixel_distances, markdown, per_prompt, prompt_distances, set_distance, summarise, \
    tidy_rates


def image_set(path, images, seeds):
    index = pd.DataFrame({"case_number": range(len(seeds)), "prompt": "p", "evaluation_seed": seeds,
                          "evaluation_guidance": 5.0})
    save_image_set(path, images, index, {}, preview=0)
    return str(path)


def test_set_distance_pairs_rows_by_case_and_seed(tmp_path):
    zeros = np.zeros((3, 4, 4, 3), np.uint8)
    moved = zeros.copy()
    moved[1] = 255                                   # one image of three changes completely
    a = image_set(tmp_path / "a.tar", zeros, [1, 2, 3])
    assert abs(set_distance(a, image_set(tmp_path / "b.tar", moved, [1, 2, 3])) - 1 / 3) < 1e-6
    assert set_distance(a, image_set(tmp_path / "c.tar", zeros[:2], [1, 2])) == 0.0   # fewer rows: common ones
    assert np.isnan(set_distance(a, image_set(tmp_path / "d.tar", zeros, [7, 8, 9])))  # other seeds: no pairs


def test_summary_reports_the_others_pixel_distance(tmp_path):
    rng = np.random.default_rng(0)
    base_imgs = {c: rng.integers(0, 255, (2, 4, 4, 3), dtype=np.uint8) for c in ("triangle", "circle")}
    entries = []
    for variant, shift in (("base", 0), ("triangle/seed0/none/uce", 51)):
        d = tmp_path / variant.replace("/", "_")
        imgs = {c: np.clip(x.astype(int) + shift, 0, 255).astype(np.uint8) if c == "circle" else x
                for c, x in base_imgs.items()}
        paths = [image_set(d / f"{c}.tar", imgs[c], [5, 6]) for c in imgs]
        rates = {c: {"type": "object", "rate": 1.0 if variant == "base" or c == "circle" else 0.0, "n": 2,
                     "detector": {"kind": "conceptworld"}} for c in imgs}
        write_json(d / "rates.json", {"rates": rates})
        pd.DataFrame([{"prompt_set": c, "case_number": i, "image": 0, "detected": r["rate"] == 1.0}
                      for c, r in rates.items() for i in range(2)]).to_csv(d / "scores.csv", index=False)
        entries.append({"model": "cw", "variant": variant, "rates": str(d / "rates.json"),
                        "scores": str(d / "scores.csv"), "images": paths})
    distances = prompt_distances(entries)
    df = add_pixel_distances(tidy_rates(entries), distances)
    expected = float(np.mean(np.clip(base_imgs["circle"].astype(int) + 51, 0, 255) - base_imgs["circle"]) / 255)
    circle = df[(df.method == "uce") & (df.concept == "circle")].pixel_distance.item()
    assert abs(circle - expected) < 1e-6 and df[df.method == "base"].pixel_distance.isna().all()
    summary, _ = summarise(per_prompt(entries), distances=distances)
    assert abs(summary.others_pixel_distance.item() - expected) < 1e-6
    assert summary.others_pixel_distance_low.item() <= summary.others_pixel_distance.item() \
        <= summary.others_pixel_distance_high.item()
    table = markdown(summary)
    assert "others: pixel distance to base" in table and f"{expected:.3f} [" in table
