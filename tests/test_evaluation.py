"""Sample-quality evaluator: shipped classifier, Frechet distance, evaluate_samples."""

from __future__ import annotations

import pytest
import torch

from notebook_support import evaluation as ev
from notebook_support.data import mnist_tensor
from notebook_support.environment import DATA_DIR


@pytest.fixture(scope="module")
def classifier():
    return ev.load_classifier()


@pytest.fixture(scope="module")
def test_split():
    return mnist_tensor(DATA_DIR, train=False)


def test_shipped_classifier_accuracy(classifier, test_split):
    images, labels = test_split
    assert ev.classifier_accuracy(classifier, images, labels) >= 0.990


def test_checkpoint_is_small():
    assert ev.CLASSIFIER_PATH.stat().st_size < 2 * 2**20


def test_frechet_distance_closed_form():
    # 1-D Gaussians: (m1 - m2)^2 + (s1 - s2)^2
    d = ev.frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([3.0]), torch.tensor([[9.0]]))
    assert d == pytest.approx(4.0 + 1.0, rel=1e-9)
    # diagonal covariances: sum over dimensions
    s1, s2 = torch.diag(torch.tensor([1.0, 4.0])), torch.diag(torch.tensor([9.0, 1.0]))
    d = ev.frechet_distance(torch.zeros(2), s1, torch.ones(2), s2)
    assert d == pytest.approx(2.0 + (1 - 3) ** 2 + (2 - 1) ** 2, rel=1e-9)
    # a full covariance against itself is 0 (up to float64 round-off)
    a = torch.randn(50, 8, generator=torch.Generator().manual_seed(0)).double()
    sigma = a.T @ a / 50
    assert ev.frechet_distance(torch.zeros(8), sigma, torch.zeros(8), sigma) < 1e-8
    with pytest.raises(ValueError, match="covariances"):
        ev.frechet_distance(torch.zeros(2), s1, torch.zeros(3), s2)


def test_fid_of_a_set_against_itself_is_zero(classifier, test_split):
    feats, _ = ev.classifier_outputs(classifier, test_split[0][:1000])
    mu, sigma = ev.feature_statistics(feats)
    assert ev.frechet_distance(mu, sigma, mu, sigma) < 1e-6


def test_fid_grows_as_noise_is_added(classifier):
    train, _ = mnist_tensor(DATA_DIR, train=True)
    real = train[:1000]
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(real.shape, generator=g)
    fids = [ev.evaluate_samples((real + level * noise).clamp(-1, 1), classifier)["fid"]
            for level in (0.0, 0.1, 0.3, 0.6, 1.0)]
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    pure_noise = ev.evaluate_samples(noise.clamp(-1, 1), classifier)["fid"]
    assert pure_noise > 100 * fids[0]


def test_evaluate_samples_report(classifier, test_split):
    report = ev.evaluate_samples(test_split[0][:500], classifier)
    assert report["n"] == 500
    assert sum(report["class_histogram"]) == pytest.approx(1.0)
    assert all(0.05 < share < 0.15 for share in report["class_histogram"])
    assert report["confident_share"] > 0.95


@pytest.mark.parametrize("images, error, match", [
    (torch.zeros(4, 28, 28), ValueError, "shape"),
    (torch.zeros(4, 3, 28, 28), ValueError, "shape"),
    (torch.zeros(4, 1, 28, 28) + 2.0, ValueError, r"\[-1, 1\]"),
    (torch.full((4, 1, 28, 28), float("nan")), ValueError, "NaN"),
    (torch.zeros(1, 1, 28, 28), ValueError, "at least 2"),
    (torch.zeros(4, 1, 28, 28, dtype=torch.uint8), TypeError, "floating"),
])
def test_evaluate_samples_rejects_bad_input(classifier, images, error, match):
    with pytest.raises(error, match=match):
        ev.evaluate_samples(images, classifier)
