"""FID: the Fréchet distance against closed forms, and each feature extractor on real networks."""
import numpy as np
import pytest
import torch

from eraselab.score.conceptworld import ConceptWorldFeatures
from eraselab.score.fid import (FeatureWeightsError, InceptionFeatures, fid,
                                fid_from_features, frechet_distance, gaussian)


def random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_one_dimensional_gaussians():
    # N(m1, s1^2) vs N(m2, s2^2): (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(9 + 1)


def test_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    expected = ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert frechet_distance(mu1, np.diag(s1 ** 2), mu2, np.diag(s2 ** 2)) == pytest.approx(expected)


def test_general_covariances_match_the_eigenvalues_of_the_product():
    """Tr((S1 S2)^1/2) is the sum of the square roots of S1 S2's (real, positive) eigenvalues."""
    rng = np.random.default_rng(1)
    s1, s2 = random_spd(rng, 6), random_spd(rng, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    tr_covmean = np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-9)


def test_singular_covariances_stay_finite():
    """Fewer images than feature dimensions (a quick run) gives rank-deficient covariances."""
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 32)), rng.normal(size=(5, 32)) + 1
    value = fid_from_features(a, b)
    assert np.isfinite(value) and value > 0
    assert fid_from_features(a, a) == pytest.approx(0, abs=1e-8)


def test_samples_converge_to_the_closed_form():
    rng = np.random.default_rng(3)
    s1, s2 = random_spd(rng, 3), random_spd(rng, 3)
    mu1, mu2 = np.zeros(3), np.ones(3)
    x = rng.multivariate_normal(mu1, s1, 40_000)
    y = rng.multivariate_normal(mu2, s2, 40_000)
    assert fid_from_features(x, y) == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=0.03)
    m, s = gaussian(x)
    assert np.allclose(m, mu1, atol=0.05) and s.shape == (3, 3)


def test_conceptworld_features(conceptworld_pipe, conceptworld_dir):
    from eraselab.generate import generate_images
    feats = ConceptWorldFeatures({"features": "conceptworld"}, conceptworld_dir)
    prompts = ["a red circle", "a blue square", "a green triangle at night", "a yellow cross on sand"] * 3
    a = generate_images(conceptworld_pipe, prompts, list(range(12)), [5.0] * 12, steps=8, batch_size=12)
    b = generate_images(conceptworld_pipe, prompts, list(range(100, 112)), [5.0] * 12, steps=8, batch_size=12)
    night = generate_images(conceptworld_pipe, ["a shape under the stars at night"] * 12, list(range(12)),
                            [5.0] * 12, steps=8, batch_size=12)
    f = feats(a)
    assert f.shape == (12, feats.describe()["dims"]) and f.dtype == np.float64
    assert fid(a, a, feats) == pytest.approx(0, abs=1e-6)
    # the same prompts with other seeds are closer than a different scene
    assert 0 < fid(a, b, feats) < fid(a, night, feats)


@pytest.fixture
def empty_hub(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(old)


@pytest.mark.parametrize("weights,name", [("pytorch-fid", "pt_inception-2015-12-05-6726825d.pth"),
                                          ("torchvision", "inception_v3_google-0cc3c7bd.pth")])
def test_missing_inception_weights_say_how_to_provide_them(empty_hub, weights, name):
    with pytest.raises(FeatureWeightsError) as e:
        InceptionFeatures({"inception_weights": weights, "checkpoint": None})
    msg = str(e.value)
    assert name in msg and str(empty_hub / "checkpoints" / name) in msg and "quality.fid.checkpoint" in msg


def test_torchvision_inception_from_a_local_checkpoint(tmp_path):
    """The loading and feature code of the torchvision extractor, on random weights saved as a checkpoint."""
    from torchvision.models import Inception3
    torch.manual_seed(0)
    ckpt = tmp_path / "inception.pth"
    torch.save(Inception3(aux_logits=True, init_weights=False).state_dict(), ckpt)
    feats = InceptionFeatures({"inception_weights": "torchvision", "checkpoint": str(ckpt), "batch_size": 3})
    images = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    f = feats(images)
    assert f.shape == (4, 2048) and np.isfinite(f).all() and (f >= 0).all()   # pool of ReLU outputs
    assert np.allclose(feats(images[:2]), f[:2], atol=1e-5)                    # batch-independent
    d = feats.describe()
    assert d["weights"] == "torchvision" and d["file"] == str(ckpt) and len(d["file_sha256"]) == 64


def test_wrong_checkpoint_is_named(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(FeatureWeightsError, match="not torchvision Inception-v3 weights"):
        InceptionFeatures({"inception_weights": "torchvision", "checkpoint": str(bad)})


def test_pytorch_fid_inception_from_a_local_checkpoint(tmp_path):
    """pytorch-fid's network, loaded from a local file through a temporary torch hub directory."""
    try:
        import pytorch_fid  # noqa: F401
    except ImportError:
        with pytest.raises(FeatureWeightsError, match="pip install pytorch-fid"):
            ckpt = tmp_path / "pt_inception.pth"
            torch.save({}, ckpt)
            InceptionFeatures({"inception_weights": "pytorch-fid", "checkpoint": str(ckpt)})
        pytest.skip("pytorch-fid is not installed here (pyproject lists it); its error message is checked")
    from torchvision.models import Inception3
    ckpt = tmp_path / "my_fid_weights.pth"   # any file name: it is offered under the expected one
    torch.save(Inception3(num_classes=1008, aux_logits=False, init_weights=False).state_dict(), ckpt)
    hub = torch.hub.get_dir()
    feats = InceptionFeatures({"inception_weights": "pytorch-fid", "checkpoint": str(ckpt)})
    assert torch.hub.get_dir() == hub
    f = feats(np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8))
    assert f.shape == (3, 2048) and np.isfinite(f).all()


def test_frechet_distance_equals_pytorch_fids():
    """The papers' FID numbers come from pytorch-fid's formula (scipy's sqrtm); ours agrees with it."""
    from pytorch_fid.fid_score import calculate_frechet_distance
    rng = np.random.default_rng(3)
    for dims in (2, 16, 64):
        a, b = rng.normal(size=(200, dims)), rng.normal(0.3, 1.5, size=(300, dims)) @ rng.normal(size=(dims, dims))
        (mu1, s1), (mu2, s2) = gaussian(a), gaussian(b)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(calculate_frechet_distance(mu1, s1, mu2, s2),
                                                                    rel=1e-6)
