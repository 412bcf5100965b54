"""Sample quality: an MNIST classifier's features, classifier-feature FID and KID, class coverage.

FID proper uses Inception-v3 features of ImageNet photos. Those weights cannot be downloaded
here, and they describe 28x28 grey digits poorly; we use the penultimate layer (128 features)
of a small CNN trained on MNIST instead. The numbers therefore compare only with other numbers
from this classifier, and FID only at equal sample size n (it is biased upwards at small n),
which is why every figure is reported with its n and next to the real-data floor. KID (Binkowski
et al. 2018) is unbiased, so it is the figure to trust at small n.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import diffusion_utils as du

from .checkpoints import load_checkpoint
from .environment import CHECKPOINT_DIR, DATA_DIR
from .files import CorruptFileError, atomic_torch_save, load_torch_file

CLASSIFIER_PATH = CHECKPOINT_DIR / "mnist_classifier.pt"
CLASSIFIER_CONFIG = {"model": "mnist_classifier", "channels": [32, 64], "features": 128, "dropout": 0.25}
MIN_COMPARABLE_N = 256  # below this FID is far from its large-n value (and rank-deficient below 129)


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
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    device = images.device
    model = _new_classifier().to(device)
    steps_per_epoch = images.shape[0] // batch_size
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in tqdm(range(epochs), desc="classifier epochs", disable=not progress):
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
    """Features (N, 128) in float64 and softmax probabilities (N, 10) for images in [-1, 1]."""
    _check_images(images)
    device = next(classifier.parameters()).device
    feats, probs = [], []
    for chunk in images.split(batch_size):
        f = classifier.features(chunk.to(device).float())  # (b, 128)
        feats.append(f.double().cpu())
        probs.append(classifier.head(f).softmax(-1).cpu())
    return torch.cat(feats), torch.cat(probs)


def classifier_accuracy(classifier: MNISTClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of images whose arg-max class equals the label."""
    _, probs = classifier_outputs(classifier, images)
    return (probs.argmax(-1) == labels.cpu()).double().mean().item()


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and covariance (D, D), in float64, of features (N, D)."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must have shape (N >= 2, D), got {tuple(features.shape)}")
    f = features.double()
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def _sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64:

        ||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

    tr((s1 s2)^(1/2)) is the sum of square roots of the eigenvalues of the symmetric matrix
    s1^(1/2) s2 s1^(1/2), which has the same spectrum (no scipy needed).
    """
    mu1, mu2, sigma1, sigma2 = (x.double() for x in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.numel(),) * 2:
        raise ValueError("frechet_distance needs means (D,) and covariances (D, D) of equal D")
    root1 = _sqrtm_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    middle = (middle + middle.T) / 2  # symmetric up to round-off
    trace_sqrt = torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum()
    value = (mu1 - mu2).pow(2).sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return max(value.item(), 0.0)


def kernel_inception_distance(features_a: torch.Tensor, features_b: torch.Tensor, *,
                              subset_size: int = 1000, num_subsets: int = 20, seed: int = 0) -> float:
    """KID: the unbiased estimate of the squared MMD with the kernel k(x, y) = (x.y / D + 1)^3,
    averaged over `num_subsets` random subsets of min(subset_size, n) items of each set.
    Its expectation does not depend on n (0 for two samples of one distribution)."""
    a, b = features_a.double(), features_b.double()
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 features in each set, got {a.shape[0]} and {b.shape[0]}")
    dim = a.shape[1]
    generator = torch.Generator().manual_seed(seed)
    estimates = []
    for _ in range(num_subsets):
        x = a[torch.randperm(a.shape[0], generator=generator)[:m]]  # (m, D)
        y = b[torch.randperm(b.shape[0], generator=generator)[:m]]  # (m, D)
        k_xx, k_yy, k_xy = ((p @ q.T / dim + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))  # (m, m) each
        within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
        estimates.append((within - 2 * k_xy.mean()).item())
    return sum(estimates) / len(estimates)


_TEST_FEATURES: dict = {}


def reference_features(classifier: MNISTClassifier, root: str | Path = DATA_DIR, cache: bool = True) -> torch.Tensor:
    """Classifier features (10000, 128) of the MNIST test images, cached on disk by weights;
    a corrupt cache file is rebuilt."""
    from .data import mnist_tensor

    weights = b"".join(v.cpu().numpy().tobytes() for v in classifier.state_dict().values())
    key = hashlib.sha256(weights).hexdigest()[:12]
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
            atomic_torch_save({"features": features}, cache_file)
    _TEST_FEATURES[key] = features
    return features


def evaluate_samples(images: torch.Tensor, classifier: MNISTClassifier | None = None,
                     root: str | Path = DATA_DIR, confidence: float = 0.9) -> dict:
    """Quality of generated digits (N, 1, 28, 28) in [-1, 1] against the 10,000 MNIST test digits.

    Returns {"n", "fid", "kid", "class_histogram" (10 shares summing to 1), "confident_share"
    (share whose top class probability exceeds `confidence`)}. Warns when n is below
    MIN_COMPARABLE_N: the FID is then not comparable with FIDs at other n (compare KID).
    """
    _check_images(images)
    n = int(images.shape[0])
    if n < MIN_COMPARABLE_N:
        warnings.warn(f"FID from n = {n} samples is biased upwards (and below 129 samples the 128-d "
                      "covariance is singular): compare it only with FIDs at the same n, or use KID",
                      stacklevel=2)
    classifier = classifier if classifier is not None else load_classifier()
    feats, probs = classifier_outputs(classifier, images)
    test_feats = reference_features(classifier, root)
    mu, sigma = feature_statistics(feats)
    mu_test, sigma_test = feature_statistics(test_feats)
    top_prob, top_class = probs.max(-1)
    histogram = torch.bincount(top_class, minlength=10).double() / n
    return {"n": n, "fid": frechet_distance(mu, sigma, mu_test, sigma_test),
            "kid": kernel_inception_distance(feats, test_feats),
            "class_histogram": histogram.tolist(),
            "confident_share": (top_prob > confidence).double().mean().item()}
