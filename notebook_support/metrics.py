"""Sample-quality statistics in a feature space, each with a bootstrap interval.

Everything here takes features that are already on the CPU and computes in float64 there, so the
evaluation runs the same on CUDA, on Apple's MPS (which has no float64) and on the CPU. The
classifier that makes the features, and the data, live in `notebook_support.evaluation`.

    FID        Frechet distance of Gaussians fitted to the two sets (Heusel et al. 2017)
    KID        unbiased squared MMD with the cubic polynomial kernel (Binkowski et al. 2018)
    precision  share of generated samples inside the real manifold: fidelity
    realism    the same inside the real manifold's half of balls with the smaller radii: the share of
               samples whose realism score (Kynkaanniemi et al. 2019, section 5) is at least 1. Real
               digits at the rim of the manifold (faint ones) have large balls that can take in
               garbage: at n = 2000 blank images have precision 1.0 but realism 0
               (tests/test_measuring_stick.py)
    recall     share of real samples inside the generated manifold: coverage of the variety
               (Kynkaanniemi et al. 2019; a manifold is the union of balls around each point of a
               set, reaching to that point's k-th nearest neighbour in the same set)
    density    like precision, but counts how many real balls hold each sample (1 for real data)
    coverage   share of real balls that hold at least one sample (Naeem et al. 2020)

Intervals (95 %, value +- 1.96 standard deviations):
- generated samples: B bootstrap resamples of the n samples (n draws with replacement), the
  reference sets held fixed; the interval covers the draw of the n samples. Resampling duplicates
  samples, which shifts FID and the k-NN radii, so the interval is centred on the value itself and
  takes only the spread from the resamples. Where a generator is as good as real data, FID and KID
  are at their floor and the bootstrap overstates their spread (1.7x and 2.0x at n = 500; the
  k-NN measures 0.9x to 1.4x: benchmarks/interval_check.py, against 32 repeated draws), so there
  the intervals are conservative.
- the real-data floor: R independent draws of n real digits, whose spread is measured directly.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

Z_95 = 1.959964  # two-sided 95 % quantile of the standard normal


@contextlib.contextmanager
def single_thread():
    """Run the statistics on one CPU thread, then restore the setting. They are many small float64
    ops: a second thread gains little, and on a busy CPU each op waits for it (on a shared 2-core
    CPU the FID bootstrap of 500 blank images ran over a hundred times slower on two threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _cpu_float64(features: torch.Tensor, name: str) -> torch.Tensor:
    """(N, D) features as float64 on the CPU: moved first, converted there (MPS has no float64)."""
    if not isinstance(features, torch.Tensor) or features.ndim != 2:
        raise ValueError(f"{name} must be a tensor of shape (N, D), got {getattr(features, 'shape', type(features))}")
    return features.cpu().double()


# ---------------------------------------------------------------------------------------------
# FID and KID on two fixed sets
# ---------------------------------------------------------------------------------------------


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and covariance (D, D), in float64 on the CPU, of features (N, D)."""
    if not isinstance(features, torch.Tensor) or features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must have shape (N >= 2, D), got {tuple(getattr(features, 'shape', ()))}")
    f = _cpu_float64(features, "features")
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def _sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64 on the CPU:

        ||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

    tr((s1 s2)^(1/2)) is the sum of square roots of the eigenvalues of the symmetric matrix
    s1^(1/2) s2 s1^(1/2), which has the same spectrum (no scipy needed).
    """
    mu1, mu2, sigma1, sigma2 = (x.cpu().double() for x in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.numel(),) * 2:
        raise ValueError("frechet_distance needs means (D,) and covariances (D, D) of equal D")
    root1 = _sqrtm_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    middle = (middle + middle.T) / 2  # symmetric up to round-off
    trace_sqrt = torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum()
    value = (mu1 - mu2).pow(2).sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return max(value.item(), 0.0)


def _cubic_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """k(x, y) = (x.y / D + 1)^3 for every pair: (N, D), (M, D) -> (N, M)."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def kernel_inception_distance(features_a: torch.Tensor, features_b: torch.Tensor, *,
                              subset_size: int = 1000, num_subsets: int = 20, seed: int = 0) -> float:
    """KID of two fixed sets of features: the unbiased estimate of the squared MMD with the
    kernel k(x, y) = (x.y / D + 1)^3, averaged over `num_subsets` random subsets of
    min(subset_size, n) items of each set. Its expectation does not depend on n (0 for two samples
    of one distribution). evaluate_samples uses `score_features` instead (all pairs, normalised
    features, with an interval)."""
    a, b = _cpu_float64(features_a, "features_a"), _cpu_float64(features_b, "features_b")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 features in each set, got {a.shape[0]} and {b.shape[0]}")
    generator = torch.Generator().manual_seed(seed)
    estimates = []
    for _ in range(num_subsets):
        x = a[torch.randperm(a.shape[0], generator=generator)[:m]]  # (m, D)
        y = b[torch.randperm(b.shape[0], generator=generator)[:m]]  # (m, D)
        k_xx, k_yy, k_xy = (_cubic_kernel(p, q) for p, q in ((x, x), (y, y), (x, y)))  # (m, m) each
        within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
        estimates.append((within - 2 * k_xy.mean()).item())
    return sum(estimates) / len(estimates)


# ---------------------------------------------------------------------------------------------
# The reference set, prepared once
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """Real features and what every evaluation against them reuses (computed once per set)."""

    features: torch.Tensor     # (M, D) float64, CPU
    mu: torch.Tensor           # (D,)
    sigma: torch.Tensor        # (D, D)
    sigma_root: torch.Tensor   # (D, D), sigma^(1/2)
    kid_scale: float           # root mean square of the features: KID divides every feature by it
    kid_within: float          # mean of k(r_i, r_j) over pairs i != j of normalised features


@single_thread()
def prepare_reference(features: torch.Tensor, block: int = 2000) -> Reference:
    """Statistics of the real features (M, D) for FID and KID; the KID's within-set kernel mean
    over all M(M - 1) pairs is summed in blocks so that no (M, M) matrix is held."""
    f = _cpu_float64(features, "reference features")
    if f.shape[0] < 2:
        raise ValueError(f"the reference set needs at least 2 features, got {f.shape[0]}")
    mu, sigma = feature_statistics(f)
    scale = f.pow(2).mean().sqrt().item() or 1.0  # all-zero features: nothing to normalise
    g = f / scale
    total = sum(_cubic_kernel(a, b).sum().item() for a in g.split(block) for b in g.split(block))
    diagonal = ((g * g).sum(1) / g.shape[1] + 1).pow(3).sum().item()
    m = f.shape[0]
    return Reference(f, mu, sigma, _sqrtm_psd(sigma), scale, (total - diagonal) / (m * (m - 1)))


# ---------------------------------------------------------------------------------------------
# Each measure: its value on the generated set (all weights 1) and on B bootstrap resamples
# (weights = how often each sample was drawn, each row summing to n)
# ---------------------------------------------------------------------------------------------


def bootstrap_weights(n: int, num_resamples: int, generator: torch.Generator) -> torch.Tensor:
    """(B, n) float64 counts: row b says how often each of the n samples is in resample b."""
    picks = torch.randint(n, (num_resamples, n), generator=generator)  # (B, n) indices
    return torch.zeros(num_resamples, n, dtype=torch.float64).scatter_add_(
        1, picks, torch.ones(num_resamples, n, dtype=torch.float64))


def fid_resampled(features: torch.Tensor, reference: Reference, weights: torch.Tensor) -> torch.Tensor:
    """FID against the reference of the weighted sets: (n, D), (B, n) -> (B,).
    A row of ones gives frechet_distance of the features themselves."""
    n = features.shape[0]
    values = []
    for w in weights:  # one (D, D) covariance at a time keeps memory small
        mu = w @ features / n  # (D,)
        centred = features - mu  # (n, D)
        sigma = (centred * w[:, None]).T @ centred / (n - 1)  # (D, D)
        middle = reference.sigma_root @ sigma @ reference.sigma_root
        trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
        value = (mu - reference.mu).pow(2).sum() + sigma.trace() + reference.sigma.trace() - 2 * trace_sqrt
        values.append(value.clamp(min=0))
    return torch.stack(values)


def kid_resampled(features: torch.Tensor, reference: Reference, weights: torch.Tensor,
                  block: int = 1000) -> torch.Tensor:
    """Unbiased KID (squared MMD, cubic kernel on features / reference.kid_scale) of the weighted
    sets against all reference features: (n, D), (B, n) -> (B,).

    Within the generated set the U-statistic averages k over pairs of *different* samples; a sample
    drawn twice in a resample is not paired with its copy, so the estimate stays unbiased:
    sum_{i != j} w_i w_j k_ij / (n^2 - sum_i w_i^2)."""
    g = features / reference.kid_scale  # (n, D)
    r = reference.features / reference.kid_scale  # (M, D)
    k_gg = _cubic_kernel(g, g)  # (n, n)
    k_gr_mean = torch.cat([_cubic_kernel(chunk, r).mean(1) for chunk in g.split(block)])  # (n,)
    n = g.shape[0]
    pairs = (weights @ k_gg * weights).sum(1) - (weights.pow(2) * k_gg.diagonal()).sum(1)  # (B,)
    within = pairs / (n * n - weights.pow(2).sum(1))  # (B,)
    across = weights @ k_gr_mean / n  # (B,)
    return within + reference.kid_within - 2 * across


def knn_radii(distances: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest *other* point, from the (N, N) distances
    within one set (the diagonal is ignored): -> (N,)."""
    others = distances + torch.diag(torch.full((distances.shape[0],), float("inf"), dtype=distances.dtype))
    return others.topk(k, dim=1, largest=False).values[:, -1]  # (N,)


def _kth_smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th smallest finite value (the largest one when there are fewer than k; inf if none)."""
    finite = values[torch.isfinite(values)].sort().values
    return finite[min(k, finite.numel()) - 1] if finite.numel() else values.new_tensor(float("inf"))


def manifold_measures(features: torch.Tensor, real: torch.Tensor, weights: torch.Tensor,
                      k: int) -> dict[str, torch.Tensor]:
    """Precision, realism, recall, density and coverage of generated features (n, D) against real
    features (m, D), k-NN manifolds, for each weighted resample (B, n): {name: (B,)}.

    In a resample the generated manifold is the union of balls around the samples drawn at least
    once, each reaching to its k-th nearest *other* drawn sample (copies do not count as
    neighbours). The real manifold is fixed."""
    d_real = torch.cdist(real, real)  # (m, m)
    d_gen = torch.cdist(features, features)  # (n, n)
    d_cross = torch.cdist(real, features)  # (m, n): real j to sample i
    n = features.shape[0]
    real_radii = knn_radii(d_real, k)  # (m,)
    in_real_ball = d_cross <= real_radii[:, None]  # (m, n): sample i inside ball of real j
    in_any = in_real_ball.any(0).double()  # (n,)
    dense = real_radii <= real_radii.median()  # (m,): the half of the balls with the smaller radii
    in_dense = (in_real_ball & dense[:, None]).any(0).double()  # (n,): realism score >= 1
    balls_holding = in_real_ball.sum(0).double()  # (n,)
    drawn = (weights > 0).double()  # (B, n)
    out = {"precision": weights @ in_any / n,
           "realism": weights @ in_dense / n,
           "density": weights @ balls_holding / (k * n),
           "coverage": ((in_real_ball.double() @ drawn.T) > 0).double().mean(0)}  # (B,)
    # recall: each drawn sample's ball reaches its k-th nearest other *drawn* sample. Walk the L
    # nearest neighbours of each sample (L = 10k + 2: in a resample each is drawn with probability
    # ~0.63, so fewer than k drawn among them has probability ~1e-11); the rare rest in full.
    others = d_gen + torch.diag(torch.full((n,), float("inf"), dtype=d_gen.dtype))  # (n, n), self excluded
    near = min(n - 1, 10 * k + 2)
    near_d, near_i = others.topk(near, dim=1, largest=False)  # (n, L), nearest first
    recall = []
    for row in drawn.bool():
        found = row[near_i].cumsum(1)  # (n, L): drawn neighbours among the j nearest
        kth = (found < k).sum(1)  # (n,): position of the k-th drawn neighbour (L: not among them)
        radii = near_d.gather(1, kth.clamp(max=near - 1)[:, None]).squeeze(1)  # (n,)
        for i in torch.nonzero(row & (kth >= near)).flatten().tolist():
            radii[i] = _kth_smallest(others[i][row], k)
        covered = ((d_cross <= radii) & row).any(1)  # (m,)
        recall.append(covered.double().mean())
    out["recall"] = torch.stack(recall)
    return out


# ---------------------------------------------------------------------------------------------
# Everything at once
# ---------------------------------------------------------------------------------------------


MEASURES = ("fid", "kid_x1e3", "precision", "realism", "recall", "density", "coverage")
_RANGES = {"fid": (0.0, float("inf")), "kid_x1e3": (-float("inf"), float("inf")), "precision": (0.0, 1.0),
           "realism": (0.0, 1.0), "recall": (0.0, 1.0), "density": (0.0, float("inf")), "coverage": (0.0, 1.0)}


def measure_weighted(features: torch.Tensor, reference: Reference, real: torch.Tensor, weights: torch.Tensor,
                     k: int) -> dict[str, torch.Tensor]:
    """Every measure of MEASURES for each row of weights (W, n): {name: (W,)}; a row of ones
    measures the features (n, D) themselves. KID is given x 10^3."""
    return {"fid": fid_resampled(features, reference, weights),
            "kid_x1e3": kid_resampled(features, reference, weights) * 1e3,
            **manifold_measures(features, real, weights, k)}


def normal_interval(name: str, value: float, spread_of: torch.Tensor) -> dict:
    """{"value", "low", "high"}: value +- 1.96 x the standard deviation of `spread_of` (values of
    the measure `name` on resamples or on repeated draws), clipped to the measure's range."""
    spread = Z_95 * spread_of.std().item() if spread_of.numel() > 1 else 0.0
    low, high = _RANGES[name]
    return {"value": value, "low": max(value - spread, low), "high": min(value + spread, high)}


def check_scoring(n: int, k: int, seed: int, num_resamples: int | None = None) -> None:
    """Refuse arguments the scoring cannot use, naming them."""
    if n < 2:
        raise ValueError(f"features need at least 2 rows, got {n}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if num_resamples is not None and (not isinstance(num_resamples, int) or isinstance(num_resamples, bool)
                                      or num_resamples < 2):
        raise ValueError(f"num_resamples must be an int >= 2, got {num_resamples!r}")


def _real_subset(reference: Reference, n: int, generator: torch.Generator) -> torch.Tensor:
    """min(n, M) random reference features (m, D): the real side of the k-NN measures."""
    return reference.features[torch.randperm(reference.features.shape[0], generator=generator)[:n]]


@single_thread()
def score_features(features: torch.Tensor, reference: Reference, *, seed: int = 0, k: int = 3,
                   num_resamples: int = 100) -> dict:
    """FID, KID x 10^3, precision, realism, recall, density and coverage of generated features
    (n, D) against `reference`, each {"value", "low", "high"}: the 95 % bootstrap interval of the module
    docstring, which covers the draw of the n samples (the reference sets are held fixed).

    FID and KID compare with all reference features; the k-NN measures with min(n, M) reference
    features drawn with `seed`: they depend on the set sizes, so they compare only at equal n (and
    a model and its floor at the same n and seed meet the same real features). With n <= k they use
    k = n - 1. Where the samples are as good as real data, the bootstrap overstates the spread of
    FID and KID (module docstring): there the intervals are conservative."""
    f = _cpu_float64(features, "features")
    n = f.shape[0]
    check_scoring(n, k, seed, num_resamples)
    generator = torch.Generator().manual_seed(seed)
    real = _real_subset(reference, n, generator)  # (m, D)
    k = min(k, real.shape[0] - 1, n - 1)
    weights = torch.cat([torch.ones(1, n, dtype=torch.float64),
                         bootstrap_weights(n, num_resamples, generator)])  # row 0: the set itself
    values = measure_weighted(f, reference, real, weights, k)
    return {"k": k, "reference_n": real.shape[0],
            **{name: normal_interval(name, v[0].item(), v[1:]) for name, v in values.items()},
            "interval": f"95 % bootstrap: value +- 1.96 sd over {num_resamples} resamples of the n samples "
                        f"(seed {seed})"}


@single_thread()
def score_draws(draws: list[torch.Tensor], reference: Reference, *, seed: int = 0, k: int = 3) -> dict:
    """The same measures for several independent sets of n real features (R >= 2 of them, each
    (n, D)): "value" is their mean and the interval mean +- 1.96 sd over the sets, the range in
    which 95 % of single sets of n fall. This is the real-data floor's interval: repeated draws
    show the spread directly, where the bootstrap of one set would overstate it."""
    sets = [_cpu_float64(d, "draws") for d in draws]
    n = sets[0].shape[0]
    if len(sets) < 2 or any(s.shape != sets[0].shape for s in sets):
        raise ValueError(f"draws must be at least 2 feature sets of one shape, got {[tuple(s.shape) for s in sets]}")
    check_scoring(n, k, seed)
    real = _real_subset(reference, n, torch.Generator().manual_seed(seed))  # as in score_features
    k = min(k, real.shape[0] - 1, n - 1)
    ones = torch.ones(1, n, dtype=torch.float64)
    per_set = [measure_weighted(s, reference, real, ones, k) for s in sets]
    report = {"k": k, "reference_n": real.shape[0]}
    for name in MEASURES:
        values = torch.cat([m[name] for m in per_set])  # (R,)
        report[name] = normal_interval(name, values.mean().item(), values)
    report["interval"] = (f"95 % range of one draw: mean +- 1.96 sd over {len(sets)} independent draws of n "
                          f"(seed {seed})")
    return report


@single_thread()
def paired_fid_difference(features_a: torch.Tensor, features_b: torch.Tensor, reference: Reference, *,
                          seed: int = 0, num_resamples: int = 1000) -> dict:
    """FID(a) - FID(b) for two sets whose rows pair up (row i of each drawn from the same x_T), with a 95 %
    interval from resampling the *indices*: every resample takes the same rows of both sets, so what the pair
    shares (the starting noise) cancels and the interval is narrower than either FID's. A tie is an interval
    that holds 0. Returns {"value", "low", "high", "n", "interval"}; the interval is value +- 1.96 sd over the
    resamples, like score_features'."""
    a, b = _cpu_float64(features_a, "features_a"), _cpu_float64(features_b, "features_b")
    if a.shape != b.shape:
        raise ValueError(f"paired sets need the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    n = a.shape[0]
    check_scoring(n, 1, seed, num_resamples)
    weights = torch.cat([torch.ones(1, n, dtype=torch.float64),
                         bootstrap_weights(n, num_resamples, torch.Generator().manual_seed(seed))])   # (1 + B, n)
    difference = fid_resampled(a, reference, weights) - fid_resampled(b, reference, weights)          # (1 + B,)
    value, spread = difference[0].item(), Z_95 * difference[1:].std().item()
    return {"value": value, "low": value - spread, "high": value + spread, "n": n,
            "interval": f"95 % paired bootstrap: value +- 1.96 sd over {num_resamples} resamples of the n indices, "
                        f"the same for both sets (seed {seed})"}
