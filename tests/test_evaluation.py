"""Sample-quality evaluator: shipped classifier, the measures against hand computations,
evaluate_samples, format_quality, bad input, float64 kept off the device, a read-only data folder, several
sets compared at one n (compare_at_equal_n, compare_fid)."""

from __future__ import annotations

import errno
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from notebook_support import evaluation as ev
from notebook_support import data as nd
from notebook_support import metrics
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
    pick = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))[:2000]
    assert ev.classifier_accuracy(classifier, images[pick], labels[pick]) >= 0.990  # 99.63 % on all 10,000


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


def test_fid_grows_and_precision_falls_as_noise_is_added(classifier):
    train, _ = mnist_tensor(DATA_DIR, train=True)
    g = torch.Generator().manual_seed(0)
    real = train[torch.randperm(train.shape[0], generator=g)[:500]]  # (500, 1, 28, 28)
    noise = torch.randn(real.shape, generator=g)
    reference = ev.prepared_reference(classifier, DATA_DIR)
    scores = []
    for level in (0.0, 0.1, 0.3, 0.6, 1.0):
        features, _ = ev.classifier_outputs(classifier, (real + level * noise).clamp(-1, 1))
        scores.append(metrics.score_features(features, reference, num_resamples=2))
    fids = [s["fid"]["value"] for s in scores]
    precisions = [s["precision"]["value"] for s in scores]
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    assert all(a >= b for a, b in zip(precisions, precisions[1:])), precisions
    # measured: FID 19.3, 115.0, 2049.7, 5181.9, 6910.4; precision 0.886, 0.714, 0.080, 0.000, 0.000
    assert precisions[-1] < 0.1 < 0.8 < precisions[0], precisions


def test_evaluate_samples_report(classifier, test_split):
    images = test_split[0][torch.randperm(10000, generator=torch.Generator().manual_seed(1))[:500]]
    report = ev.evaluate_samples(images, classifier)
    assert report["n"] == 500 and report["seed"] == 0 and report["k"] == 3 and report["reference_n"] == 500
    for name in metrics.MEASURES:
        assert set(report[name]) == {"value", "low", "high"}, name
        assert report[name]["low"] <= report[name]["value"] <= report[name]["high"], name
    assert "bootstrap" in report["interval"] and report["seconds"] > 0
    assert sum(report["class_histogram"]) == pytest.approx(1.0)
    assert all(0.05 < share < 0.15 for share in report["class_histogram"])
    assert report["classes_with_5pct"] == 10 and report["class_tv"] < 0.1
    assert "confident_share" not in report


def test_format_quality():
    def measure(value, low, high):
        return {"value": value, "low": low, "high": high}

    report = {"n": ev.HEADLINE_N, "fid": measure(66.94, 63.1, 70.2), "kid_x1e3": measure(31.24, 28.0, 34.5),
              "precision": measure(0.7123, 0.7, 0.72), "realism": measure(0.3, 0.28, 0.32),
              "recall": measure(0.5, 0.48, 0.52)}
    floor = {"n": ev.HEADLINE_N, "fid": measure(6.0, 5.6, 6.4), "kid_x1e3": measure(-0.5, -2.24, 1.26),
             "precision": measure(0.88, 0.87, 0.89), "realism": measure(0.46, 0.44, 0.48),
             "recall": measure(0.9, 0.89, 0.91)}
    assert ev.format_quality(report, floor) == (
        "n = 2000 | FID 66.9 [63.1, 70.2] (floor 6.0 [5.6, 6.4], 11.2x) | KID x1e3 31.2 [28.0, 34.5] "
        "(floor -0.5 [-2.2, 1.3]) | precision 0.712 [0.700, 0.720] (floor 0.880 [0.870, 0.890]) | "
        "realism 0.300 [0.280, 0.320] (floor 0.460 [0.440, 0.480]) | "
        "recall 0.500 [0.480, 0.520] (floor 0.900 [0.890, 0.910])")
    assert ev.format_quality(report).startswith("n = 2000 | FID 66.9 [63.1, 70.2] | KID")
    # "x floor" is quoted at HEADLINE_N only
    small = {**report, "n": 500}
    assert "x)" not in ev.format_quality(small, {**floor, "n": 500})
    with pytest.raises(ValueError, match="same n"):
        ev.format_quality(small, floor)


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


@pytest.mark.parametrize("call, error, match", [
    (lambda c: ev.evaluate_samples(torch.zeros(4, 1, 28, 28), c, seed=1.5), TypeError, "seed must be an int"),
    (lambda c: ev.evaluate_samples(torch.zeros(4, 1, 28, 28), c, k=0), ValueError, "k must be a positive int"),
    (lambda c: ev.evaluate_samples(torch.zeros(4, 1, 28, 28), c, num_resamples=1), ValueError, "num_resamples"),
    (lambda c: ev.real_data_floor(1, c), ValueError, r"n must be an int in \[2, 12000\]"),
    (lambda c: ev.real_data_floor(500.0, c), ValueError, "n must be an int"),
    (lambda c: ev.real_data_floor(20000, c), ValueError, "5 draws of n"),
    (lambda c: ev.real_data_floor(500, c, num_draws=1), ValueError, "num_draws must be an int >= 2"),
    (lambda c: ev.garbage_sets(1), ValueError, r"n must be in \[2, 6742\]"),
])
def test_bad_arguments_are_named(classifier, call, error, match):
    with pytest.raises(error, match=match):
        call(classifier)


# ---------------------------------------------------------------------------------------------
# The measures against hand computations (small random sets, float64)
# ---------------------------------------------------------------------------------------------


def gaussian(seed: int, n: int, dim: int = 6, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift  # (n, D)


def test_weighted_fid_and_kid_of_all_ones_equal_the_plain_estimates():
    # ReLU-like features, not of unit scale; equal sizes, so that KID's one subset holds both sets
    real, fake = gaussian(0, 50).abs() * 3, gaussian(1, 50, shift=0.3).abs() * 3  # (50, 6) each
    reference = metrics.prepare_reference(real, block=7)  # blocks that do not divide 50
    ones = torch.ones(1, 50, dtype=torch.float64)
    fid = metrics.fid_resampled(fake, reference, ones)
    assert fid.item() == pytest.approx(ev.frechet_distance(*ev.feature_statistics(fake), *ev.feature_statistics(real)),
                                       rel=1e-9)
    kid = metrics.kid_resampled(fake, reference, ones, block=9)
    scale = reference.kid_scale
    # one "subset" that holds every feature is the full U-statistic
    plain = ev.kernel_inception_distance(fake / scale, real / scale, subset_size=100, num_subsets=1)
    assert kid.item() == pytest.approx(plain, rel=1e-9)


def test_weighted_kid_does_not_pair_a_sample_with_its_copy():
    """A resample that draws sample 0 twice and leaves out sample 1 gives the plain KID of the
    set with sample 0 in place of sample 1, less the pairs of sample 0 with itself."""
    real, fake = gaussian(2, 30), gaussian(3, 5)
    reference = metrics.prepare_reference(real)
    weights = torch.tensor([[2.0, 0.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    g, r = fake / reference.kid_scale, real / reference.kid_scale
    rows = [0, 0, 2, 3, 4]
    k = metrics._cubic_kernel(g[rows], g[rows])
    pairs = [(a, b) for a in range(5) for b in range(5) if rows[a] != rows[b]]
    within = sum(k[a, b].item() for a, b in pairs) / len(pairs)
    across = metrics._cubic_kernel(g[rows], r).mean().item()
    expected = within + reference.kid_within - 2 * across
    assert metrics.kid_resampled(fake, reference, weights).item() == pytest.approx(expected, rel=1e-9)


def brute_force_manifold(fake: torch.Tensor, real: torch.Tensor, k: int) -> dict:
    """Kynkaanniemi et al.'s and Naeem et al.'s definitions, written as loops; "flags" says which
    samples lie inside the real manifold."""
    def radius(points, i):
        distances = sorted((points[i] - points[j]).norm().item() for j in range(len(points)) if j != i)
        return distances[k - 1]

    real_r = [radius(real, j) for j in range(len(real))]
    fake_r = [radius(fake, i) for i in range(len(fake))]
    inside = [[(fake[i] - real[j]).norm().item() <= real_r[j] for j in range(len(real))] for i in range(len(fake))]
    flags = [any(row) for row in inside]
    median = sorted(real_r)[(len(real_r) - 1) // 2]  # torch.median: the lower of the two middle values
    dense_flags = [any(row[j] for j in range(len(real)) if real_r[j] <= median) for row in inside]
    return {"precision": sum(flags) / len(fake), "flags": flags, "dense_flags": dense_flags,
            "realism": sum(dense_flags) / len(fake),
            "density": sum(sum(row) for row in inside) / (k * len(fake)),
            "coverage": sum(any(inside[i][j] for i in range(len(fake))) for j in range(len(real))) / len(real),
            "recall": sum(any((real[j] - fake[i]).norm().item() <= fake_r[i] for i in range(len(fake)))
                          for j in range(len(real))) / len(real)}


def test_manifold_measures_match_the_definitions():
    real, fake = gaussian(4, 25, dim=2), gaussian(5, 20, dim=2, shift=0.7)
    weights = torch.cat([torch.ones(1, 20, dtype=torch.float64),
                         metrics.bootstrap_weights(20, 3, torch.Generator().manual_seed(0))])
    got = metrics.manifold_measures(fake, real, weights, k=3)
    expected = brute_force_manifold(fake, real, 3)
    for name in ("precision", "realism", "recall", "density", "coverage"):
        assert got[name][0].item() == pytest.approx(expected[name], abs=1e-12), name
    assert 0 < expected["realism"] < expected["precision"] < 1 and 0 < expected["recall"] < 1  # partial overlap
    # in a resample, precision averages the samples' flags over the draws; recall and coverage use
    # the balls of the samples drawn at least once (a copy is no neighbour of its original)
    for row in range(1, 4):
        counts, drawn = weights[row], weights[row] > 0
        for name, flags in (("precision", expected["flags"]), ("realism", expected["dense_flags"])):
            assert got[name][row].item() == pytest.approx(sum(c.item() * f for c, f in zip(counts, flags)) / 20,
                                                          abs=1e-12)
        subset = brute_force_manifold(fake[drawn], real, 3)
        assert got["recall"][row].item() == pytest.approx(subset["recall"], abs=1e-12)
        assert got["coverage"][row].item() == pytest.approx(subset["coverage"], abs=1e-12)


def test_resampled_recall_beyond_the_nearest_neighbours_it_walks():
    """n = 60, k = 2: recall walks each sample's 22 nearest neighbours; a resample that draws only
    every sixth sample leaves fewer than 2 drawn among them, which is computed in full."""
    real, fake = gaussian(6, 30, dim=2), gaussian(7, 60, dim=2, shift=0.5)
    sparse = torch.zeros(1, 60, dtype=torch.float64)
    sparse[0, ::6] = 6.0  # 10 samples drawn 6 times each
    weights = torch.cat([metrics.bootstrap_weights(60, 2, torch.Generator().manual_seed(1)), sparse])
    got = metrics.manifold_measures(fake, real, weights, k=2)
    for row in range(3):
        expected = brute_force_manifold(fake[weights[row] > 0], real, 2)
        assert got["recall"][row].item() == pytest.approx(expected["recall"], abs=1e-12), row


# ---------------------------------------------------------------------------------------------
# Every device: no float64 tensor off the CPU (MPS has no float64); a read-only data folder
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """A data root whose 'MNIST' is 300 fixed random digits for both splits (fast); the in-memory
    caches start empty and are restored afterwards."""
    images = torch.rand(300, 1, 28, 28, generator=torch.Generator().manual_seed(5)) * 2 - 1  # (300, 1, 28, 28)
    monkeypatch.setattr(nd, "mnist_tensor", lambda root, train=True, device="cpu": (images.clone(),
                                                                                    torch.zeros(300, dtype=torch.long)))
    for cache in ("_TEST_FEATURES", "_REFERENCES", "_FLOORS"):
        monkeypatch.setattr(ev, cache, {})
    monkeypatch.setattr(ev, "_UNWRITABLE_WARNED", set())
    root = tmp_path / "data"
    root.mkdir()
    return root


class Float64Watch(TorchDispatchMode):
    """Records every op that makes a float64 tensor on a device other than the CPU. A copy from
    the meta device (shapes, no data) to the CPU returns seeded random values, so a classifier on
    "meta" stands in for a CUDA or MPS one and the whole evaluation runs behind it."""

    def __init__(self):
        super().__init__()
        self.off_cpu: list[str] = []
        self.generator = torch.Generator().manual_seed(0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        source = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if (func is torch.ops.aten._to_copy.default and source is not None and source.device.type == "meta"
                and torch.device(kwargs.get("device", "meta")).type == "cpu"):
            dtype = kwargs.get("dtype") or source.dtype
            out = (torch.rand(source.shape, generator=self.generator, dtype=dtype) if dtype.is_floating_point
                   else torch.zeros(source.shape, dtype=dtype))
        else:
            out = func(*args, **kwargs)
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float64 and tensor.device.type != "cpu":
                self.off_cpu.append(str(func))
        return out


def test_the_watch_catches_float64_made_on_a_device():
    with Float64Watch() as watch:
        torch.ones(3, device="meta").double().cpu()  # what classifier_outputs used to do
    assert watch.off_cpu == ["aten._to_copy.default"]


def test_no_float64_tensor_off_the_cpu_anywhere_in_the_evaluation(fake_mnist):
    on_device = ev.load_classifier(device="meta")
    images = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1  # (40, 1, 28, 28)
    with Float64Watch() as watch, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n = 40 is below MIN_COMPARABLE_N
        report = ev.evaluate_samples(images, on_device, root=fake_mnist, num_resamples=5)
        floor = ev.real_data_floor(40, on_device, root=fake_mnist)
        accuracy = ev.classifier_accuracy(on_device, images, torch.zeros(40, dtype=torch.long))
    assert watch.off_cpu == []
    assert report["n"] == floor["n"] == 40 and 0 <= accuracy <= 1
    assert report["fid"]["value"] > 0 and report["fid"]["high"] > report["fid"]["low"]  # it really ran


def test_read_only_data_folder_evaluates_and_warns_once(fake_mnist, monkeypatch):
    torch.manual_seed(0)
    tiny = ev.MNISTClassifier(channels=(4, 8), features=16, dropout=0.0).eval()

    def read_only(payload, path):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(ev, "atomic_torch_save", read_only)
    images = torch.rand(256, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1  # (256, 1, 28, 28)
    with pytest.warns(UserWarning, match="cannot write the test-split feature cache .*Read-only file system.*"
                                         "evaluating anyway") as caught:
        first = ev.evaluate_samples(images, tiny, root=fake_mnist, num_resamples=5)
    assert len([w for w in caught if "feature cache" in str(w.message)]) == 1
    monkeypatch.setattr(ev, "_TEST_FEATURES", {})  # a new notebook cell in the same session
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        second = ev.evaluate_samples(images, tiny, root=fake_mnist, num_resamples=5)
    assert not [w for w in again if "feature cache" in str(w.message)]
    assert second["fid"] == first["fid"] and list(fake_mnist.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Several sets compared at one n: compare_at_equal_n and compare_fid
# ---------------------------------------------------------------------------------------------


def test_compare_at_equal_n_scores_every_set_beside_one_floor(fake_mnist, classifier):
    noise = torch.randn(40, 1, 28, 28, generator=torch.Generator().manual_seed(2)) * 2  # (40, 1, 28, 28), beyond [-1, 1]
    blank = torch.full((40, 1, 28, 28), -1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reports, floor = ev.compare_at_equal_n({"noise": noise, "blank": blank}, classifier, fake_mnist, seed=3)
    assert not [w for w in caught if "FID from n" in str(w.message)]  # n = 40 < MIN_COMPARABLE_N: no warning per set
    assert list(reports) == ["noise", "blank"] and floor["n"] == 40 and floor["seed"] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = ev.evaluate_samples(noise.clamp(-1, 1), classifier, fake_mnist, seed=3)
    assert reports["noise"]["fid"] == alone["fid"] and reports["noise"]["n"] == 40  # clamped, then evaluate_samples
    assert floor["fid"] == ev.real_data_floor(40, classifier, fake_mnist, seed=3)["fid"]


@pytest.mark.parametrize("samples, error, match", [
    ({"a": torch.zeros(40, 1, 28, 28), "b": torch.zeros(30, 1, 28, 28)}, ValueError, r"equal n.*'a' n = 40, 'b' n = 30"),
    ({}, ValueError, "non-empty dict"),
    ([torch.zeros(40, 1, 28, 28)], ValueError, "non-empty dict"),
    ({"a": [[0.0]]}, TypeError, r"samples\['a'\] must be a torch.Tensor"),
])
def test_compare_at_equal_n_rejects_bad_input(classifier, samples, error, match):
    with pytest.raises(error, match=match):
        ev.compare_at_equal_n(samples, classifier)


def test_compare_fid_reads_the_intervals():
    def report(low, high, n=250):
        return {"n": n, "fid": {"value": (low + high) / 2, "low": low, "high": high}}

    assert ev.compare_fid(report(30, 40), report(50, 60)) == "lower than"
    assert ev.compare_fid(report(50, 60), report(30, 40)) == "higher than"
    assert ev.compare_fid(report(30, 50), report(45, 60)) == "a tie with"  # overlapping: this n cannot tell
    assert ev.compare_fid(report(30, 45), report(45, 60)) == "a tie with"  # touching counts as overlapping
    with pytest.raises(ValueError, match="equal n, got n = 250 and n = 2000"):
        ev.compare_fid(report(30, 40), report(50, 60, n=2000))


@pytest.mark.parametrize("hits, n, low, high", [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0),
                                                (1980, 2000, 0.9846, 0.9935)])
def test_wilson_interval_matches_the_formula_at_the_edges_and_inside(hits, n, low, high):
    """Wilson's score interval (values from its closed form, 4 decimals): never outside [0, 1], never empty at 0 or
    n hits, and asymmetric near the edges where value +- 1.96 sd would leave [0, 1]."""
    share = ev.wilson(hits, n)
    assert share["value"] == hits / n
    assert abs(share["low"] - low) < 1e-4 and abs(share["high"] - high) < 1e-4
    assert share["low"] <= share["value"] <= share["high"]


@pytest.mark.parametrize("hits, n", [(-1, 10), (11, 10), (0, 0), (True, 10)])
def test_wilson_refuses_impossible_counts(hits, n):
    with pytest.raises(ValueError, match="need 0 <= hits <= n"):
        ev.wilson(hits, n)
