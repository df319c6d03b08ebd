"""NudeNet 3.4.2's shipped detector, offline, on images this test draws.

Skin-toned shaded ellipses on a dark background are enough for the detector to
report boxes (it calls some of them BUTTOCKS_EXPOSED at scores between its own
0.25 floor and ~0.7). The assertions never hard-code what the detector says:
they take its raw output and check that our decisions follow from it for any
label set and threshold.
"""
import numpy as np
import pytest

from eraselab.score.nudenet import EXPOSED, NudeNetDetector, shipped_model


def blobs(seed: int, size: int = 320) -> np.ndarray:
    """Four shaded skin-coloured ellipses on a dark background (RGB uint8)."""
    rng = np.random.default_rng(seed)
    im = np.empty((size, size, 3), np.uint8)
    im[:] = (40, 60, 90)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(4):
        cx, cy = rng.integers(size // 8, size - size // 8, 2)
        ax, ay = rng.integers(size // 16, size // 3.5, 2)
        r = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2
        inside = r < 1
        im[inside] = (np.array([224, 172, 140]) * (1 - 0.5 * r[inside])[:, None]).astype(np.uint8)
    return im


@pytest.fixture(scope="module")
def images():
    return np.stack([np.zeros((320, 320, 3), np.uint8), np.full((320, 320, 3), 255, np.uint8)]
                    + [blobs(s) for s in range(10)])


@pytest.fixture(scope="module")
def raw(images):
    return NudeNetDetector({"labels": list(EXPOSED)}).raw(images)


def decide(found, labels, threshold):
    return sorted({d["class"] for d in found if d["class"] in labels and d["score"] > threshold})


def test_the_detector_runs_offline_and_reports_boxes(raw):
    scores = [d["score"] for found in raw[2:] for d in found]
    assert len(scores) >= 2, "the drawn images should give the detector something to report"
    assert all(0.2 <= s <= 1 for s in scores)                       # NudeNet's own floor, probabilities
    assert raw[0] == [] and raw[1] == []                             # blank images: nothing


@pytest.mark.parametrize("threshold", ["between", 0.45, 0.6])
def test_decisions_follow_from_the_raw_output(images, raw, threshold):
    scores = sorted({d["score"] for found in raw for d in found})
    if threshold == "between":   # a threshold that splits the observed scores, so both outcomes occur
        threshold = (scores[0] + scores[-1]) / 2
    det = NudeNetDetector({"labels": list(EXPOSED), "threshold": threshold})
    out = det(images)
    for found, row in zip(raw, out.itertuples()):
        expected = decide(found, EXPOSED, threshold)
        assert row.labels == ";".join(expected)
        assert row.detected == bool(expected)
        best = max([d["score"] for d in found if d["class"] in EXPOSED], default=0.0)
        assert row.score == pytest.approx(best)
    if threshold == (scores[0] + scores[-1]) / 2:
        assert out.detected.any() and not out.detected.all()
    summary = det.summarise(out)
    assert summary["nude_rate"] == pytest.approx(out.detected.mean())
    for label, count in summary["class_counts"].items():
        assert count == sum(label in decide(found, EXPOSED, threshold) for found in raw)


def test_label_set_is_configurable(images, raw):
    seen = {d["class"] for found in raw for d in found}
    label = sorted(seen)[0]
    others = [lab for lab in EXPOSED if lab != label] or ["FACE_MALE"]
    without = NudeNetDetector({"labels": others, "threshold": 0.0})(images)
    only = NudeNetDetector({"labels": [label], "threshold": 0.0})(images)
    for found, w, o in zip(raw, without.itertuples(), only.itertuples()):
        assert w.detected == any(d["class"] in others for d in found)
        assert o.detected == any(d["class"] == label for d in found)
    assert only.detected.any()


def assert_same_detections(a: list[list[dict]], b: list[list[dict]]) -> None:
    """The same boxes of the same classes, scores equal up to floating-point rounding (ONNX Runtime sums
    in another order with another batch size or thread count) and boxes within a pixel."""
    assert [[d["class"] for d in found] for found in a] == [[d["class"] for d in found] for found in b]
    for x, y in zip(sum(a, []), sum(b, [])):
        assert x["score"] == pytest.approx(y["score"], abs=1e-4)
        assert np.abs(np.subtract(x["box"], y["box"])).max() <= 1, (x, y)


def test_batching_and_channel_order(images):
    """Batched detection equals one image at a time, and RGB arrays are read as NudeNet reads files."""
    import cv2
    det = NudeNetDetector({"batch_size": 5})
    one = [det.detector.detect(np.ascontiguousarray(im[..., ::-1])) for im in images[2:6]]
    assert_same_detections(det.raw(images[2:6]), one)            # another batch size: up to rounding
    from tempfile import NamedTemporaryFile
    with NamedTemporaryFile(suffix=".png") as f:
        cv2.imwrite(f.name, cv2.cvtColor(images[2], cv2.COLOR_RGB2BGR))
        assert det.detector.detect(f.name) == one[0]


def test_describe_records_version_model_and_threshold():
    from importlib import metadata
    d = NudeNetDetector({"threshold": 0.45}).describe()
    assert d["nudenet"] == metadata.version("nudenet") == "3.4.2"
    assert d["threshold"] == 0.45 and d["labels"] == list(EXPOSED) and len(d["labels"]) == 9
    assert d["model"] == str(shipped_model()) and len(d["model_sha256"]) == 64


def test_missing_model_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_path"):
        NudeNetDetector({"model_path": str(tmp_path / "absent.onnx")})


def test_vectorised_box_decoding_equals_nudenets_own(images):
    """decode_boxes against NudeNet's per-anchor loop, on outputs with many boxes above its floor."""
    import nudenet.nudenet as nn

    from eraselab.score.nudenet import decode_boxes
    rng = np.random.default_rng(0)
    for trial in range(5):
        pred = np.empty((22, 2100), np.float32)
        pred[:2] = rng.uniform(-20, 340, (2, 2100))            # centres, some outside the image
        pred[2:4] = rng.uniform(1, 200, (2, 2100))             # widths and heights
        pred[4:] = rng.uniform(0, 0.3 + 0.1 * trial, (18, 2100))  # scores, many above the 0.2 floor
        meta = (int(rng.integers(0, 60)), int(rng.integers(0, 60)), 300 + trial, 260 + 10 * trial)
        theirs = nn._postprocess([pred[None]], meta[0], meta[1], 1.0, 1.0, meta[2], meta[3], 320, 320)
        assert len(theirs) > 3
        assert decode_boxes(pred, *meta, 320) == theirs
