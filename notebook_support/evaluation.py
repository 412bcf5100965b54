"""Sample quality: an MNIST classifier's features, and measures of generated digits in its feature
space that garbage fails, each with its n and a 95 % interval, beside the real-data floor.

FID proper uses Inception-v3 features of ImageNet photos. Those weights cannot be downloaded
here, and they describe 28x28 grey digits poorly; we use the penultimate layer (128 features)
of a small CNN trained on MNIST instead. The numbers therefore compare only with other numbers
from this classifier, and only at equal sample size n (FID is biased upwards at small n, and the
k-NN measures depend on n), which is why every figure is reported with its n and next to the
real-data floor: the same evaluation of n random training digits (`real_data_floor`). The series
quotes its headline figures, and "x floor", at HEADLINE_N = 2000 only.

    fid, kid_x1e3      distance of the whole distribution from the 10,000 test digits
    realism, precision fidelity: do the samples look like real digits? (noise and blanks get 0
                       realism; precision, and density, can let blanks in at some n)
    recall, coverage   variety: are all kinds of real digits drawn? (one repeated digit gets ~0)
    class_histogram    which digit the classifier sees; classes_with_5pct and class_tv summarise it

The classifier's confidence is not a quality measure: pure noise is classified with p > 0.9.
The measures themselves are in `notebook_support.metrics`; `format_quality` prints one line;
`compare_at_equal_n` evaluates several sets at one n with their floor, `compare_fid` says which FID
is lower.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import diffusion_utils as du

from .checkpoints import load_checkpoint
from .checks import MIN_INTERVAL_N  # noqa: F401 (re-exported: benchmarks import it from here)
from .environment import CHECKPOINT_DIR, DATA_DIR
from .files import CorruptFileError, atomic_torch_save, load_torch_file
from .metrics import Reference, check_scoring, paired_fid_difference, prepare_reference, score_draws, score_features
from .metrics import feature_statistics, frechet_distance, kernel_inception_distance  # noqa: F401 (public names)

CLASSIFIER_PATH = CHECKPOINT_DIR / "mnist_classifier.pt"
CLASSIFIER_CONFIG = {"model": "mnist_classifier", "channels": [32, 64], "features": 128, "dropout": 0.25}
MIN_COMPARABLE_N = 256  # below this FID is far from its large-n value (and rank-deficient below 129)
HEADLINE_N = 2000  # the series' one n for headline figures; "x floor" is quoted at this n only


class MNISTClassifier(nn.Module):
    """Small CNN: two conv blocks (28 -> 14 -> 7), a 128-d feature layer, 10 logits."""

    def __init__(self, channels: tuple[int, int] = (32, 64), features: int = 128, dropout: float = 0.25):
        super().__init__()
        c1, c2 = channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(),
            nn.Conv2d(c1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(),
            nn.Conv2d(c2, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(c2 * 7 * 7, features), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, 10))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 128-d penultimate activations used for FID and KID: (B, 1, 28, 28) -> (B, 128)."""
        return self.body(x)  # (B, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # (B, 10)


def _new_classifier() -> MNISTClassifier:
    return MNISTClassifier(CLASSIFIER_CONFIG["channels"], CLASSIFIER_CONFIG["features"], CLASSIFIER_CONFIG["dropout"])


def train_classifier(images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 6,
                     batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                     progress: bool = True) -> MNISTClassifier:
    """Train MNISTClassifier with Adam, a one-cycle lr schedule and +-2 pixel random shifts."""

    torch.manual_seed(seed)
    device = images.device
    model = _new_classifier().to(device)
    steps_per_epoch = images.shape[0] // batch_size
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in du.progress_bar(range(epochs), desc="classifier epochs", disable=not progress):
        order = torch.randperm(images.shape[0], generator=generator).to(device)
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            dx, dy = torch.randint(-2, 3, (2,), generator=generator).tolist()
            x = torch.roll(images[idx], shifts=(dy, dx), dims=(2, 3))  # (B, 1, 28, 28)
            loss = F.cross_entropy(model(x), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


def load_classifier(path: str | Path = CLASSIFIER_PATH, device: torch.device | str = "cpu") -> MNISTClassifier:
    """The shipped MNIST classifier (eval mode) used for FID/KID features and class histograms."""
    model = _new_classifier()
    load_checkpoint(path, model, CLASSIFIER_CONFIG)
    return model.to(device).eval()


def _check_images(images, name: str = "images") -> None:
    du.check_image_range(images, name)
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"{name} must have shape (N, 1, 28, 28), got {tuple(images.shape)}")
    if images.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 images for statistics, got {images.shape[0]}")


@torch.no_grad()
def classifier_outputs(classifier: MNISTClassifier, images: torch.Tensor,
                       batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, 128) in float64 and softmax probabilities (N, 10) in float32, both on the CPU,
    for images in [-1, 1]. The classifier runs on its own device in float32."""
    _check_images(images)
    device = next(classifier.parameters()).device
    feats, probs = [], []
    for chunk in images.split(batch_size):
        f = classifier.features(chunk.to(device).float())  # (b, 128) float32 on the classifier's device
        probs.append(classifier.head(f).softmax(-1).to("cpu", torch.float32))  # (b, 10)
        feats.append(f.to("cpu", torch.float32))  # (b, 128); float64 only on the CPU: MPS has none
    return torch.cat(feats).double(), torch.cat(probs)


def classifier_accuracy(classifier: MNISTClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of images whose arg-max class equals the label."""
    _, probs = classifier_outputs(classifier, images)
    return (probs.argmax(-1) == labels.cpu()).double().mean().item()


_TEST_FEATURES: dict = {}   # weights key -> test-split features
_REFERENCES: dict = {}      # weights key -> (those features, their prepared Reference)
_FLOORS: dict = {}          # (weights key, root, n, seed, k, num_draws) -> real_data_floor's report
_UNWRITABLE_WARNED: set = set()  # cache files already warned about


def _weights_key(classifier: MNISTClassifier) -> str:
    weights = b"".join(v.cpu().numpy().tobytes() for v in classifier.state_dict().values())
    return hashlib.sha256(weights).hexdigest()[:12]


def reference_features(classifier: MNISTClassifier, root: str | Path = DATA_DIR, cache: bool = True) -> torch.Tensor:
    """Classifier features (10000, 128) of the MNIST test images, cached in memory and on disk by
    weights; a corrupt cache file is rebuilt. When the cache cannot be written (a read-only data
    folder) the features are used anyway, with one warning per file."""
    from .data import mnist_tensor

    key = _weights_key(classifier)
    if key in _TEST_FEATURES:
        return _TEST_FEATURES[key]
    cache_file = Path(root) / f"test_features_{key}.pt"
    features = None
    if cache and cache_file.is_file():
        try:
            features = load_torch_file(cache_file, what="cached test-split features")["features"]
        except (CorruptFileError, KeyError, TypeError) as exc:
            print(f"{exc}; rebuilding it")
    if features is None:
        images, _ = mnist_tensor(root, train=False)
        features, _ = classifier_outputs(classifier, images)
        if cache:
            try:
                atomic_torch_save({"features": features}, cache_file)
            except OSError as exc:  # read-only folder, disk full: the features are still right
                if cache_file not in _UNWRITABLE_WARNED:
                    _UNWRITABLE_WARNED.add(cache_file)
                    warnings.warn(f"cannot write the test-split feature cache {cache_file} ({exc.strerror or exc}); "
                                  "evaluating anyway, the features are recomputed in each new session",
                                  stacklevel=3)
    _TEST_FEATURES[key] = features
    return features


def prepared_reference(classifier: MNISTClassifier, root: str | Path = DATA_DIR) -> Reference:
    """The test split's features with their FID and KID statistics (metrics.Reference), prepared
    once per classifier: what evaluate_samples scores against."""
    features = reference_features(classifier, root)
    key = _weights_key(classifier)
    cached = _REFERENCES.get(key)
    if cached is None or cached[0] is not features:
        cached = _REFERENCES[key] = (features, prepare_reference(features))
    return cached[1]


def class_coverage(probs: torch.Tensor) -> dict:
    """Class histogram of the arg-max classes of probs (N, 10): {"class_histogram" (10 shares
    summing to 1), "classes_with_5pct" (classes holding at least 5 % of the samples; 10 for real
    digits), "class_tv" (total variation distance from uniform: 0 = even, 0.9 = one class)}."""
    histogram = torch.bincount(probs.argmax(-1).cpu(), minlength=10).double() / probs.shape[0]  # (10,)
    return {"class_histogram": histogram.tolist(),
            "classes_with_5pct": int((histogram >= 0.05).sum().item()),
            "class_tv": 0.5 * (histogram - 0.1).abs().sum().item()}


def evaluate_samples(images: torch.Tensor, classifier: MNISTClassifier | None = None,
                     root: str | Path = DATA_DIR, *, seed: int = 0, k: int = 3, num_resamples: int = 100) -> dict:
    """Quality of generated digits (N, 1, 28, 28) in [-1, 1], N >= 2, in the classifier's features.

    Returns a dict:
      "n", "seed", "k", "reference_n" (how many random test digits the k-NN measures compare with: n);
      "fid", "kid_x1e3", "precision", "realism", "recall", "density", "coverage": each {"value", "low",
        "high"},
        a 95 % interval over the draw of the n samples (bootstrap; "interval" says how it was made);
      "class_histogram", "classes_with_5pct", "class_tv" (see class_coverage); "seconds".

    FID and KID compare with all 10,000 test digits. KID's kernel (x.y / 128 + 1)^3 sees the
    features divided by their root-mean-square value on the test split (raw, the kernel's values run
    into the hundreds and KID into the millions); it is reported x 10^3 and is unbiased: its
    average over many draws is the true squared distance, which is 0 for real digits, so a single
    estimate for samples as good as real data lands below 0 about half the time; read a negative
    KID as "no difference found at this n". Where samples are as good as real digits, the bootstrap
    overstates the spread of FID and KID (1.7x and 2.0x at n = 500, benchmarks/interval_check.py),
    so near the floor their intervals are conservative. Precision and recall (Kynkaanniemi et al. 2019) use
    k-NN manifolds (k = 3) against n random test digits (drawn with `seed`, so a model and its
    floor at the same n and seed meet the same digits); realism counts only the half of the real
    balls with the smaller radii (see notebook_support.metrics), and density and coverage (Naeem et
    al. 2020) use the same balls (for real data their expected values are 1 and 1 - 2^-k = 0.875).
    Compare any of them only at equal n, next to real_data_floor(n). Costs about 6 s at n = 2000
    on a 2-core CPU (once per session ~3 s more to prepare the test split's statistics, and ~15 s
    for its features when data/ holds no cached copy). Warns when n is below MIN_COMPARABLE_N.
    """
    start = time.perf_counter()
    _check_images(images)
    n = int(images.shape[0])
    check_scoring(n, k, seed, num_resamples)
    check_evaluation_n(n, num_resamples)
    if n < MIN_COMPARABLE_N:
        warnings.warn(f"FID from n = {n} samples is biased upwards (and below 129 samples the 128-d "
                      "covariance is singular): compare it only with FIDs at the same n, or use KID",
                      stacklevel=2)
    classifier = classifier if classifier is not None else load_classifier()
    feats, probs = classifier_outputs(classifier, images)  # (n, 128) float64, (n, 10), both on the CPU
    report = {"n": n, "seed": seed,
              **score_features(feats, prepared_reference(classifier, root), seed=seed, k=k,
                               num_resamples=num_resamples),
              **class_coverage(probs)}
    for name, measure in report.items():   # an interval a degenerate resample left undefined: None, with why
        if isinstance(measure, dict) and "low" in measure and not all(
                math.isfinite(measure[f]) for f in ("value", "low", "high")):
            report[name] = {**{f: measure[f] if math.isfinite(measure[f]) else None for f in ("value", "low", "high")},
                            "reason": f"a bootstrap resample drew one digit all {n} times, for which {name} is "
                                      "undefined; draw more digits"}
    report["seconds"] = time.perf_counter() - start
    return report


def check_evaluation_n(n: int, num_resamples: int = 100) -> None:
    """Before any work: refuse n below MIN_INTERVAL_N (ValueError), and warn where a bootstrap
    resample may still draw one digit n times (probability n^(1-n) each), leaving KID's interval
    undefined (it is then reported as None with a reason)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__} {n!r}")
    if n < MIN_INTERVAL_N:
        raise ValueError(f"n = {n} digits are too few to measure: below {MIN_INTERVAL_N} a bootstrap resample of n "
                         f"digits is likely to draw one digit n times, and KID's interval is undefined (NaN); "
                         f"draw at least {MIN_INTERVAL_N} (MIN_INTERVAL_N)")
    chance = 1 - (1 - float(n) ** (1 - n)) ** num_resamples
    if chance > 1e-3:
        warnings.warn(f"at n = {n}, one of the {num_resamples} bootstrap resamples draws a single digit {n} times "
                      f"with probability {chance:.1%}: KID's interval would then be reported as None", stacklevel=3)


def real_data_floor(n: int, classifier: MNISTClassifier | None = None, root: str | Path = DATA_DIR, *,
                    seed: int = 0, k: int = 3, num_draws: int = 5) -> dict:
    """The best a generator can score at this n: the measures of evaluate_samples for `num_draws`
    independent sets of n random MNIST training digits (drawn with `seed`; never the first n, which
    are not a random sample), in the same dict shape. Each measure's "value" is the mean over the
    sets and its interval the range in which 95 % of single sets of n real digits fall (mean +- 1.96
    sd); the class fields pool all the sets. Print it beside a model's report at the same n and
    seed (format_quality). Costs num_draws x n classifier passes (~25 s at n = 2000 on a 2-core
    CPU); cached in memory per (classifier, root, n, seed, k, num_draws)."""
    from .data import mnist_tensor

    if not isinstance(num_draws, int) or isinstance(num_draws, bool) or num_draws < 2:
        raise ValueError(f"num_draws must be an int >= 2, got {num_draws!r}")
    if not isinstance(n, int) or isinstance(n, bool) or not 2 <= n <= 60000 // num_draws:
        raise ValueError(f"n must be an int in [2, {60000 // num_draws}] ({num_draws} draws of n from the 60,000 "
                         f"training digits), got {n!r}")
    check_scoring(n, k, seed)
    classifier = classifier if classifier is not None else load_classifier()
    key = (_weights_key(classifier), str(root), n, seed, k, num_draws)
    if key not in _FLOORS:
        start = time.perf_counter()
        images, _ = mnist_tensor(root, train=True)  # (60000, 1, 28, 28)
        pick = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))[:n * num_draws]
        feats, probs = classifier_outputs(classifier, images[pick])  # (R n, 128), (R n, 10)
        _FLOORS[key] = {"n": n, "seed": seed, "draws": num_draws,
                        **score_draws(list(feats.split(n)), prepared_reference(classifier, root), seed=seed, k=k),
                        **class_coverage(probs), "seconds": time.perf_counter() - start}
    return copy.deepcopy(_FLOORS[key])


def compare_at_equal_n(samples: dict, classifier: MNISTClassifier | None = None,
                       root: str | Path = DATA_DIR, *, seed: int = 0) -> tuple[dict, dict]:
    """Evaluate several sets of samples side by side: {name: images (n, 1, 28, 28)} (a name is any
    key: a string, a guidance weight), each clamped to [-1, 1] and scored with evaluate_samples, all
    at one n (a ValueError names the sets when their n differ), plus real_data_floor(n) once.
    Returns (reports by the same names, floor).

    Because every set and the floor share one n, their FIDs compare with one another even below
    MIN_COMPARABLE_N, where evaluate_samples warns; so the small-n warning is not repeated per set
    here. Every report keeps its "n", and format_quality prints it: still compare these FIDs with
    no FID at another n."""
    if not isinstance(samples, dict) or not samples:
        raise ValueError(f"samples must be a non-empty dict {{name: images}}, got {type(samples).__name__} {samples!r:.60}")
    for name, images in samples.items():
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"samples[{name!r}] must be a torch.Tensor of images, got {type(images).__name__}")
    sizes = {name: int(images.shape[0]) for name, images in samples.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError("FIDs compare only at equal n, but the sets differ: "
                         + ", ".join(f"{name!r} n = {size}" for name, size in sizes.items()))
    classifier = classifier if classifier is not None else load_classifier()
    with warnings.catch_warnings():  # the one n below MIN_COMPARABLE_N is what every set is compared at
        warnings.filterwarnings("ignore", message="FID from n")
        reports = {name: evaluate_samples(images.clamp(-1, 1), classifier, root, seed=seed)
                   for name, images in samples.items()}
    n = next(iter(sizes.values()))
    return reports, real_data_floor(n, classifier, root, seed=seed)


def compare_paired(images_a: torch.Tensor, images_b: torch.Tensor, classifier: MNISTClassifier | None = None,
                   root: str | Path = DATA_DIR, *, seed: int = 0, num_resamples: int = 1000) -> dict:
    """FID(a) - FID(b) for two sets whose image i started from the same x_T (two samplers of one model), with
    the 95 % interval of a paired bootstrap over the indices (metrics.paired_fid_difference): sharper than
    comparing two intervals. {"value", "low", "high", "n", "interval"}; a tie is an interval that holds 0."""
    if images_a.shape != images_b.shape:
        raise ValueError(f"paired sets need the same shape, got {tuple(images_a.shape)} and {tuple(images_b.shape)}")
    classifier = classifier if classifier is not None else load_classifier()
    features = [classifier_outputs(classifier, images.clamp(-1, 1))[0] for images in (images_a, images_b)]
    return paired_fid_difference(*features, prepared_reference(classifier, root), seed=seed,
                                 num_resamples=num_resamples)


def wilson(hits: int, n: int) -> dict:
    """hits / n and its 95 % Wilson score interval (Wilson 1927) for a binomial share: unlike
    value +- 1.96 sd, it stays inside [0, 1] and is not empty at 0 or n hits."""
    if isinstance(hits, bool) or isinstance(n, bool) or not 0 <= hits <= n or n < 1:
        raise ValueError(f"need 0 <= hits <= n and n >= 1, got hits={hits!r}, n={n!r}")
    z, p = 1.959964, hits / n
    centre, half = (p + z * z / (2 * n)), z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    low, high = (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)
    return {"value": p, "low": min(p, max(0.0, low)), "high": max(p, min(1.0, high))}


def compare_fid(a: dict, b: dict) -> str:
    """a's FID against b's, two evaluate_samples reports at the same n: "lower than" or "higher
    than" when their 95 % intervals do not overlap, else "a tie with" (this n cannot tell them
    apart). Reads as a sentence: f"FID {compare_fid(a, b)} the baseline's"."""
    if a.get("n") != b.get("n"):
        raise ValueError(f"FIDs compare only at equal n, got n = {a.get('n')} and n = {b.get('n')}")
    fa, fb = a["fid"], b["fid"]
    if fa["high"] < fb["low"]:
        return "lower than"
    if fb["high"] < fa["low"]:
        return "higher than"
    return "a tie with"


def garbage_sets(n: int, root: str | Path = DATA_DIR, *, seed: int = 1) -> dict[str, torch.Tensor]:
    """n images (N, 1, 28, 28) in [-1, 1] of each set a measuring stick must tell apart:
    "real digits" (n random training digits, drawn with `seed`) and four kinds of garbage, "pure
    noise" (Gaussian, clamped), "blank" (all -1), "one digit repeated" (one real digit n times) and
    "one-class collapse" (n real 1s)."""
    from .data import mnist_tensor

    images, labels = mnist_tensor(root, train=True)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(images.shape[0], generator=generator)
    ones = order[labels[order] == 1]
    if not 2 <= n <= ones.numel():
        raise ValueError(f"n must be in [2, {ones.numel()}] (the training set's 1s), got {n!r}")
    return {"real digits": images[order[:n]],
            "pure noise": torch.randn(n, 1, 28, 28, generator=generator).clamp(-1, 1),
            "blank": torch.full((n, 1, 28, 28), -1.0),
            "one digit repeated": images[order[:1]].repeat(n, 1, 1, 1),
            "one-class collapse": images[ones[:n]]}


def _with_interval(measure: dict, digits: int) -> str:
    return f"{measure['value']:.{digits}f} [{measure['low']:.{digits}f}, {measure['high']:.{digits}f}]"


def format_quality(report: dict, floor: dict | None = None) -> str:
    """One line for a notebook: n, then FID, KID x 10^3, precision, realism and recall, each with its 95 %
    interval and, given `floor` (real_data_floor at the same n), the floor's value and interval
    beside it. The ratio to the floor's FID is shown only at n = HEADLINE_N, the one n at which the
    series quotes it (the ratio changes with n).

        n = 2000 | FID 66.9 [63.1, 70.2] (floor 6.0 [5.6, 6.4], 11.2x) | KID x1e3 ... | precision ... | ...
    """
    if floor is not None and floor.get("n") != report.get("n"):
        raise ValueError(f"the floor must be measured at the same n as the report: got n = {floor.get('n')} "
                         f"for the floor and n = {report.get('n')} for the samples")
    parts = [f"n = {report['n']}"]
    for key, label, digits in (("fid", "FID", 1), ("kid_x1e3", "KID x1e3", 1),
                               ("precision", "precision", 3), ("realism", "realism", 3), ("recall", "recall", 3)):
        text = f"{label} {_with_interval(report[key], digits)}"
        if floor is not None:
            beside = f"floor {_with_interval(floor[key], digits)}"
            if key == "fid" and report["n"] == HEADLINE_N and floor[key]["value"] > 0:
                beside += f", {report[key]['value'] / floor[key]['value']:.1f}x"
            text += f" ({beside})"
        parts.append(text)
    return " | ".join(parts)


