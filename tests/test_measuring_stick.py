"""The measuring stick must fail garbage: real digits pass, and pure noise, blank images, one digit
repeated n times and a one-class collapse each fail fidelity or coverage by a wide, measured margin.
Also: intervals, the real-data floor, and no float64 tensor off the CPU.

Everything at n = 500 with fixed seeds; the thresholds come from measured values, quoted beside
each assert: `python benchmarks/garbage_check.py --n 500` evaluates the same sets with the same
seeds and wrote benchmarks/results/2026-12-01_cpu_garbage_check_n500.json."""

from __future__ import annotations

import pytest
import torch

from notebook_support import evaluation as ev
from notebook_support import metrics
from notebook_support.data import mnist_tensor
from notebook_support.environment import DATA_DIR

N = 500


@pytest.fixture(scope="module")
def classifier():
    return ev.load_classifier()


@pytest.fixture(scope="module")
def train_split():
    return mnist_tensor(DATA_DIR, train=True)


@pytest.fixture(scope="module")
def floor(classifier):
    return ev.real_data_floor(N, classifier, seed=0)  # 5 draws of 500 random training digits


@pytest.fixture(scope="module")
def reports(classifier):
    """Real digits and the four kinds of garbage, n = 500 each, seeded."""
    return {name: ev.evaluate_samples(x, classifier, seed=0) for name, x in ev.garbage_sets(N, seed=1).items()}


def test_real_digits_score_like_the_floor(reports, floor):
    """Another draw of real digits ties with the floor on every measure: their intervals overlap
    (the series' rule: a difference inside the intervals is a tie)."""
    real = reports["real digits"]
    # measured (n = 500, benchmarks/results/..._garbage_check_n500.json): real digits FID 22.7 [8.4, 37.0],
    # KID x1e3 8.5 [-17.3, 34.4], precision 0.868 [0.840, 0.896], realism 0.468 [0.420, 0.516], recall
    # 0.922 [0.899, 0.945], density 0.968, coverage 0.878; floor (5 draws) FID 18.0 [14.5, 21.4], KID x1e3
    # -1.4 [-8.6, 5.7], precision 0.881 [0.842, 0.919], realism 0.479 [0.441, 0.517], recall 0.903
    # [0.874, 0.932], density 0.992, coverage 0.862
    for name in metrics.MEASURES:
        assert real[name]["low"] <= floor[name]["high"] and floor[name]["low"] <= real[name]["high"], \
            (name, real[name], floor[name])
    assert abs(real["precision"]["value"] - floor["precision"]["value"]) < 0.05, (real["precision"], floor["precision"])
    assert abs(real["recall"]["value"] - floor["recall"]["value"]) < 0.05, (real["recall"], floor["recall"])
    assert real["classes_with_5pct"] == 10 and real["class_tv"] < 0.1  # measured: 10, 0.06


@pytest.mark.parametrize("name, fails", [
    # (set, {measure: (direction, threshold)}); a garbage set must fail every listed measure.
    # measured (n = 500, same result file as above):
    ("pure noise", {"precision": ("<", 0.05), "realism": ("<", 0.05), "recall": ("<", 0.05)}),  # 0, 0, 0
    ("blank", {"precision": ("<", 0.05), "realism": ("<", 0.05), "recall": ("<", 0.05)}),       # 0, 0, 0
    ("one digit repeated", {"recall": ("<", 0.05), "coverage": ("<", 0.05)}),  # 0.000, 0.006 (precision 1.0)
    ("one-class collapse", {"recall": ("<", 0.3), "coverage": ("<", 0.3)}),    # 0.092, 0.108 (precision 0.87)
])
def test_each_garbage_set_fails(reports, floor, name, fails):
    report = reports[name]
    for measure, (direction, threshold) in fails.items():
        value = report[measure]["value"]
        assert value < threshold if direction == "<" else value > threshold, (name, measure, value)
        # and far below the floor's interval (floor lows: precision 0.842, realism 0.441, recall 0.874,
        # coverage 0.825)
        margin = 0.3 if measure == "realism" else 0.5
        assert report[measure]["high"] < floor[measure]["low"] - margin, (name, measure, report[measure],
                                                                          floor[measure])
    # FID sees every one of them, at least 50x the floor (measured lows: noise 20072, blank 1834,
    # repeated 2138, one class 1721, against the floor's high of 21.4)
    assert report["fid"]["low"] > 50 * floor["fid"]["high"], (name, report["fid"], floor["fid"])


def test_blank_images_pass_precision_at_the_headline_n_but_fail_realism(classifier):
    """At n = 2000 the blank image's features lie inside the large balls of three faint test digits
    at the rim of the real manifold: k-NN precision (and density) call all blanks real. Realism,
    which keeps only the half of the balls with the smaller radii, does not; recall and coverage
    fail them too."""
    features, _ = ev.classifier_outputs(classifier, torch.full((2, 1, 28, 28), -1.0))
    blank = features[:1].expand(ev.HEADLINE_N, -1)  # (2000, 128): n identical blanks
    report = metrics.score_features(blank, ev.prepared_reference(classifier, DATA_DIR), seed=0, num_resamples=2)
    # measured: precision 1.000, density 1.000, realism 0.000, recall 0.000, coverage 0.0015
    assert report["precision"]["value"] > 0.9 and report["density"]["value"] > 0.9, report
    assert report["realism"]["value"] < 0.05 and report["recall"]["value"] < 0.05, report
    assert report["coverage"]["value"] < 0.01, report


def test_confidence_is_no_longer_reported(reports):
    """Pure noise is classified with p > 0.9: confidence is not a quality measure."""
    assert all("confident_share" not in report for report in reports.values())
    assert reports["one-class collapse"]["classes_with_5pct"] == 1  # measured: 1 (class_tv 0.90)
    assert reports["pure noise"]["classes_with_5pct"] == 1  # measured: 1, all noise is one class


def test_interval_contains_the_value_and_shrinks_with_n(classifier, train_split):
    images, _ = train_split
    pick = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(2))[:N]
    features, _ = ev.classifier_outputs(classifier, images[pick])
    reference = ev.prepared_reference(classifier, DATA_DIR)
    small = metrics.score_features(features[:125], reference, seed=0)
    large = metrics.score_features(features, reference, seed=0)
    for name in metrics.MEASURES:
        for report in (small, large):
            assert report[name]["low"] <= report[name]["value"] <= report[name]["high"], (name, report[name])
        width = {n: r[name]["high"] - r[name]["low"] for n, r in ((125, small), (N, large))}
        # 4x the samples: at least ~1/sqrt(4) = 0.5 of the width (FID and KID shrink faster)
        assert 0 < width[N] < 0.75 * width[125], (name, width)


def test_bootstrap_spread_matches_repeated_draws(classifier, train_split):
    """The bootstrap interval of one set of n real digits against the spread between 12 independent
    sets (n = 250): close for precision, density and coverage; wider, i.e. conservative, for FID and
    KID, whose bootstrap overstates the spread at the floor. benchmarks/interval_check.py measures
    the same with 32 draws of 500 (result file interval_check_n500: FID 1.72x, KID 1.98x, precision
    1.12x, realism 1.39x, recall 1.19x, density 1.15x, coverage 0.93x)."""
    images, _ = train_split
    pick = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(8))[:12 * 250]
    draws = list(ev.classifier_outputs(classifier, images[pick])[0].split(250))
    reference = ev.prepared_reference(classifier, DATA_DIR)
    between = metrics.score_draws(draws, reference, seed=0)
    boot = [metrics.score_features(d, reference, seed=0) for d in draws[:4]]
    ratio = {name: sum(b[name]["high"] - b[name]["low"] for b in boot) / len(boot)
             / (between[name]["high"] - between[name]["low"]) for name in metrics.MEASURES}
    # measured: precision 0.79, realism 0.78, recall 0.79, density 0.89, coverage 0.92; FID 1.86, KID 1.61
    for name in ("precision", "realism", "density", "coverage", "recall"):
        assert 0.5 < ratio[name] < 1.8, ratio
    for name in ("fid", "kid_x1e3"):
        assert 1.2 < ratio[name] < 3.5, ratio


def test_kid_of_two_halves_of_the_test_split_is_zero_within_its_interval(classifier):
    features = ev.reference_features(classifier, DATA_DIR)
    order = torch.randperm(features.shape[0], generator=torch.Generator().manual_seed(3))
    half_a, half_b = features[order[:5000]], features[order[5000:]]
    reference = metrics.prepare_reference(half_b)
    weights = torch.cat([torch.ones(1, 5000, dtype=torch.float64),
                         metrics.bootstrap_weights(5000, 50, torch.Generator().manual_seed(4))])
    kid = metrics.kid_resampled(half_a, reference, weights) * 1e3
    interval = metrics.normal_interval("kid_x1e3", kid[0].item(), kid[1:])
    # measured: KID x1e3 -0.33 [-2.40, 1.75]; the blank set's KID x1e3 is 1355, real digits' (n = 500) 8.5
    assert interval["low"] < 0 < interval["high"], interval
    assert interval["high"] - interval["low"] < 6, interval


def test_floor_report_has_the_same_shape_and_is_cached(classifier, floor):
    assert floor["n"] == N and floor["draws"] == 5 and floor["seed"] == 0
    assert set(floor) >= {"fid", "kid_x1e3", "precision", "recall", "class_histogram", "interval", "seconds"}
    again = ev.real_data_floor(N, classifier, seed=0)
    assert again == floor and again is not floor
    assert again["seconds"] == floor["seconds"]  # served from the cache, not measured again


# --- the paired FID difference (benchmarks/samplers.py: each sampler against DDIM-50 on the same x_T) ---------------

@pytest.fixture(scope="module")
def real_features(classifier, train_split):
    """Features of 2 x 500 disjoint random training digits: two sets of one quality, paired by index."""
    images, _ = train_split
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(5))[:2 * N]
    features, _ = ev.classifier_outputs(classifier, images[order])                      # (1000, 128)
    return features[:N], features[N:]


def test_the_paired_difference_ties_equals_and_fails_garbage(classifier, real_features):
    reference = ev.prepared_reference(classifier)
    a, b = real_features
    itself = metrics.paired_fid_difference(a, a, reference, num_resamples=200)
    assert itself["value"] == itself["low"] == itself["high"] == 0
    equal = metrics.paired_fid_difference(a, b, reference, num_resamples=200)      # same quality: a tie
    assert equal["low"] < 0 < equal["high"]
    for name, images in ev.garbage_sets(N, seed=1).items():
        if name == "real digits":
            continue
        garbage, _ = ev.classifier_outputs(classifier, images)
        worse = metrics.paired_fid_difference(garbage, a, reference, num_resamples=200)
        assert worse["low"] > 10 * equal["high"], name                                 # far from a tie


def test_pairing_is_sharper_than_two_intervals(classifier, real_features):
    """A set and a slightly perturbed copy (what two samplers from one x_T look like): the paired interval is much
    narrower than either FID's own bootstrap interval, and it still sees a real shift."""
    reference = ev.prepared_reference(classifier)
    a, _ = real_features
    shifted = a + 0.05 * a.std(dim=0) + 0.05 * a.std() * torch.randn(a.shape, generator=torch.Generator().manual_seed(1),
                                                                        dtype=a.dtype)
    paired = metrics.paired_fid_difference(shifted, a, reference, num_resamples=200)
    alone = metrics.score_features(a, reference, num_resamples=200)["fid"]
    assert paired["high"] - paired["low"] < (alone["high"] - alone["low"]) / 3
    assert paired["low"] > 0                                                           # the shift is seen


def test_the_paired_difference_refuses_unpaired_sets(classifier, real_features):
    a, b = real_features
    with pytest.raises(ValueError, match="paired sets need the same shape"):
        metrics.paired_fid_difference(a, b[:-1], ev.prepared_reference(classifier))
