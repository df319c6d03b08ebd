"""NudeNet's best.onnx (detector model: best), fetched for real from the package index by the fetch stage.

The one test module that downloads (pytest -m network selects it): the nudenet 3.0.8 wheel, once per
session, checked against config/assets.yaml's hashes. Our preprocessing and decoding are checked two
ways: against boxes this file computes from the model's raw output with a plain loop over anchors,
written here from nudenet 3.0.x's formula, and against nudenet 3.0.8's own code from the same wheel.
"""
import importlib.util
import math
import zipfile

import cv2
import numpy as np
import pytest

from eraselab import assets, fetch, plan
from eraselab.artifacts import sha256
from eraselab.score.nudenet import EXPOSED, LABELS, NudeNetDetector, decode_best, preprocess_best

from test_nudenet import blobs

pytestmark = pytest.mark.network
ENTRY = assets.registry()["nudenet-best"]


@pytest.fixture(scope="session")
def best(tmp_path_factory):
    """best.onnx fetched as the workflow fetches it; the wheel beside it, for nudenet 3.0.8's own code."""
    out = tmp_path_factory.mktemp("nudenet-best") / "best.onnx"
    fetch.run({"name": "nudenet-best", **{k: ENTRY.get(k) for k in plan.FETCH_KEYS}}, str(out))
    return out


@pytest.fixture(scope="session")
def reference(best, tmp_path_factory):
    """nudenet 3.0.8's own module, from the same wheel (downloaded once more, by URL and sha256)."""
    wheel = tmp_path_factory.mktemp("wheel") / "nudenet-3.0.8-py3-none-any.whl"
    fetch.run({"name": "nudenet-wheel", "url": ENTRY["url"], "sha256": ENTRY["sha256"]}, str(wheel))
    root = wheel.parent / "unpacked"
    zipfile.ZipFile(wheel).extractall(root)
    spec = importlib.util.spec_from_file_location("nudenet_308", root / "nudenet" / "nudenet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def images():
    """Skin-toned blobs, square as SD's 512 px images and also wide and tall (the padding paths)."""
    wide = np.concatenate([blobs(1), blobs(2)], axis=1)[:, :600]
    return [blobs(s, 512) for s in range(8)] + [wide, np.ascontiguousarray(wide.transpose(1, 0, 2))]


def test_the_fetched_model_is_the_pinned_one(best):
    assert sha256(best) == ENTRY["member_sha256"] == "9832f15515bdb06bcb5a77beb60bc8ea54439bd7ecbaac46dac3b760b3dd13cc"
    d = NudeNetDetector({"model": "best", "model_path": str(best), "threshold": 0.45}).describe()
    assert (d["model_name"], d["model_sha256"], d["resolution"], d["threshold"]) == ("best", ENTRY["member_sha256"], 320, 0.45)
    assert d["nudenet"].startswith("3.0")


def loop_decode(pred, factor, left, top, floor):
    """nudenet 3.0.x's decoding, anchor by anchor as its _postprocess does it (written from the formula)."""
    boxes, scores, classes = [], [], []
    for anchor in pred.T:
        score = anchor[4:].max()
        if score >= floor:
            x, y, w, h = anchor[:4]
            boxes.append([int(round((x - w * 0.5 - left) * factor)), int(round((y - h * 0.5 - top) * factor)),
                          int(round(w * factor)), int(round(h * factor))])
            scores.append(score)
            classes.append(int(anchor[4:].argmax()))
    keep = cv2.dnn.NMSBoxes(boxes, scores, 0.25, 0.45)
    return [{"class": LABELS[classes[i]], "score": float(scores[i]), "box": boxes[i]} for i in keep]


def letterbox(image, size):
    """nudenet 3.0.x's image preparation, written out: scale the longer side to size, pad the shorter
    one symmetrically (int(pad / 2) a side), resize to size x size, to [0, 1], NCHW."""
    h, w = image.shape[:2]
    nw, nh = (int(round(size * (w / h))), size) if h > w else (size, int(round(size / (w / h))))
    pad_x, pad_y = int((size - nw) / 2), int((size - nh) / 2)
    out = cv2.copyMakeBorder(cv2.resize(image, (nw, nh)), pad_y, pad_y, pad_x, pad_x, cv2.BORDER_CONSTANT, value=0)
    out = cv2.resize(out, (size, size)).astype("float32") / 255.0
    return out.transpose(2, 0, 1)[None], math.sqrt((w * w + h * h) / (nw * nw + nh * nh)), pad_x, pad_y


def random_outputs(rng, trials=4):
    """Raw outputs with many anchors above the floor, boxes partly outside the image: (pred, factor, left, top)."""
    for trial in range(trials):
        pred = np.empty((22, 2100), np.float32)
        pred[:2] = rng.uniform(-20, 340, (2, 2100))
        pred[2:4] = rng.uniform(1, 200, (2, 2100))
        pred[4:] = rng.uniform(0, 0.3 + 0.1 * trial, (18, 2100))
        yield pred, 1.6 + 0.1 * trial, int(rng.integers(0, 60)), int(rng.integers(0, 60))


def test_decoding_equals_boxes_computed_from_the_raw_output(best, images):
    """The model's raw output on each image, decoded anchor by anchor by the loop above, equals what the
    detector reports; the preparation of the image too. Then outputs with hundreds of candidate boxes
    (the images give a few each: NMS drops everything under 0.25)."""
    det = NudeNetDetector({"model": "best", "model_path": str(best)})
    name = det.session.get_inputs()[0].name
    total = 0
    for im in images:
        blob, factor, left, top = letterbox(im, 320)
        ours_blob, *ours_meta = preprocess_best(im, 320)
        assert np.array_equal(ours_blob, blob) and ours_meta == [factor, left, top]
        expected = loop_decode(det.session.run(None, {name: blob})[0][0], factor, left, top, 0.2)
        assert det.raw(im[None]) == [expected]
        total += len(expected)
    assert total >= 8, "the images should give the decoder boxes to compare"
    for pred, factor, left, top in random_outputs(np.random.default_rng(1)):
        expected = loop_decode(pred, factor, left, top, 0.2)
        assert len(expected) > 3 and decode_best(pred, factor, left, top) == expected


def test_detections_equal_nudenet_308s_own(best, reference, images, tmp_path):
    """End to end against nudenet 3.0.8's NudeDetector on the same images saved as files; its labels
    are ours. And our vectorised decoding against its _postprocess on outputs with many boxes."""
    assert list(getattr(reference, "__labels")) == list(LABELS)
    theirs = reference.NudeDetector(providers=["CPUExecutionProvider"])
    ours = NudeNetDetector({"model": "best", "model_path": str(best)})
    for i, im in enumerate(images):
        path = str(tmp_path / f"{i}.png")
        cv2.imwrite(path, cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
        assert ours.raw(im[None]) == [theirs.detect(path)]
    for pred, factor, left, top in random_outputs(np.random.default_rng(0)):
        expected = reference._postprocess([pred[None]], factor, left, top)
        assert len(expected) > 3 and decode_best(pred, factor, left, top) == expected


def test_decisions_use_the_configured_labels_and_threshold(best, images):
    det = NudeNetDetector({"model": "best", "model_path": str(best), "labels": list(EXPOSED), "threshold": 0.0})
    raw = det.raw(np.stack(images[:4]))
    table = det(np.stack(images[:4]))
    for found, row in zip(raw, table.itertuples()):
        assert row.detected == any(d["class"] in EXPOSED for d in found)
