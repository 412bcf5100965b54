"""The small shared helper of the MNIST diffusion notebooks: schedule, forward process, loss, samplers.

Denoising Diffusion Probabilistic Models, Ho, Jain & Abbeel 2020 (arXiv:2006.11239); equation
numbers are the paper's. A timestep index ``t`` runs over 0..T-1 as in the paper's code release:
``betas[t]`` is the paper's beta_{t+1} and ``q_sample(x0, t)`` the paper's x_{t+1}. Notebook 1 writes
every formula here out by hand and checks it; notebooks 2 and 3 do so for the loss and samplers. Sections:

    1. noise schedules: linear (Sec. 4) and cosine (Nichol & Dhariwal 2021, Eq. 17)
    2. forward process q(x_t | x_0) (Eq. 4), x_0 from eps, posterior q(x_{t-1} | x_t, x_0) (Eq. 6-7)
    3. the training loss of Algorithm 1 (Eq. 14)
    4. samplers: Algorithm 2 (sigma_t^2 = beta_t) and DDIM (Song, Meng & Ermon 2021, Eq. 12)
What the notebooks use but do not teach lives in the ``notebook_support`` package.
"""

from __future__ import annotations

import math
import sys
import warnings
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.std import tqdm

def progress_bar(iterable, **kwargs):
    """tqdm's text bar on stdout: in a committed notebook no frozen widget and no red stderr box."""
    return tqdm(iterable, file=sys.stdout, dynamic_ncols=True, **kwargs)


def _randn(shape, generator: torch.Generator | None, device, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise drawn with `generator` (which may live on another device)."""
    gen_device = generator.device if generator is not None else torch.device(device)
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def _check_int(value, name: str, low: int, high: int | None = None) -> int:
    """`value` as an int in [low, high]; a TypeError for floats and bools, a ValueError outside."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        allowed = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return value


# --- 1. Noise schedules ----------------------------------------------------------------------


def linear_beta_schedule(num_timesteps: int = 1000, beta_start: float = 1e-4,
                         beta_end: float = 0.02) -> torch.Tensor:
    """Linear betas from beta_start to beta_end (Sec. 4: 1e-4 .. 0.02 with T = 1000), float64 (T,).

    Like the paper's code we keep the end points for any T, so a small T never reaches noise
    (DiffusionSchedule warns about that).
    """
    _check_int(num_timesteps, "num_timesteps", 1)
    for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
        if not 0.0 < float(value) < 1.0:  # also rejects NaN
            raise ValueError(f"{name} must lie in (0, 1), got {value}")
    if beta_end < beta_start:
        raise ValueError(f"beta_end ({beta_end}) must be >= beta_start ({beta_start})")
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def cosine_beta_schedule(num_timesteps: int = 1000, s: float = 0.008,
                         max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021, Eq. 17): alphas_cumprod(t) = f(t) / f(0) with
    f(t) = cos^2(((t/T + s) / (1 + s)) pi/2); beta_t = 1 - alphas_cumprod(t) / alphas_cumprod(t-1),
    clipped at max_beta (the last few betas are large: f reaches 0 at t = T). float64 (T,)."""
    _check_int(num_timesteps, "num_timesteps", 1)
    if not 0.0 < max_beta < 1.0:
        raise ValueError(f"max_beta must lie in (0, 1), got {max_beta}")
    if not (math.isfinite(s) and s >= 0):
        raise ValueError(f"s must be a finite number >= 0, got {s}")
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps  # (T+1,)
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alphas_cumprod = f / f[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]  # (T,)
    return betas.clamp(min=1e-8, max=max_beta)


class DiffusionSchedule:
    """Every per-timestep quantity DDPM needs, computed once in float64, stored in float32.

    Attributes, all of shape (T,): betas, alphas, alphas_cumprod, alphas_cumprod_prev,
    sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod, sqrt_recip_alphas_cumprod,
    sqrt_recipm1_alphas_cumprod, posterior_variance (beta-tilde of Eq. 7) and
    posterior_mean_coef1 / posterior_mean_coef2 (the factors of x_0 and x_t in mu-tilde, Eq. 7).
    Warns when alphabar_T > 0.01: x_T then still holds the digit, yet sampling starts from N(0, I).
    """

    _names = ("betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
              "sqrt_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
              "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_mean_coef1",
              "posterior_mean_coef2")

    def __init__(self, betas: torch.Tensor | None = None, *, num_timesteps: int = 1000,
                 schedule: str = "linear", device: torch.device | str = "cpu"):
        given = betas
        if betas is None:
            if schedule not in ("linear", "cosine"):
                raise ValueError(f"schedule must be 'linear' or 'cosine', got {schedule!r}")
            make = linear_beta_schedule if schedule == "linear" else cosine_beta_schedule
            betas = make(num_timesteps)
        if not isinstance(betas, torch.Tensor):
            raise TypeError(f"betas must be a torch.Tensor, got {type(betas).__name__}")
        if betas.ndim != 1 or betas.numel() < 1:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        betas = betas.detach().to("cpu", torch.float64)
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must all lie in the open interval (0, 1); got min "
                             f"{betas.min().item():.3g}, max {betas.max().item():.3g}")
        self.schedule_name, self.num_timesteps = schedule if given is None else "custom", int(betas.numel())
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        if alphas_cumprod[-1] > 0.01:
            warnings.warn(f"alphabar_T = {alphas_cumprod[-1]:.3f}: after T = {self.num_timesteps} steps "
                          f"x_T still holds {alphas_cumprod[-1]:.0%} of the digit's variance, but sampling "
                          "starts from pure noise N(0, I); use more steps or larger betas", stacklevel=2)
        values = {
            "betas": betas, "alphas": alphas, "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
            "sqrt_recip_alphas_cumprod": (1 / alphas_cumprod).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1 / alphas_cumprod - 1).sqrt(),
            # Eq. 7: beta_tilde_t = (1 - alphabar_{t-1}) / (1 - alphabar_t) * beta_t
            "posterior_variance": betas * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod),
            # Eq. 7: mu_tilde = coef1 * x_0 + coef2 * x_t
            "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1 - alphas_cumprod),
            "posterior_mean_coef2": (1 - alphas_cumprod_prev) * alphas.sqrt() / (1 - alphas_cumprod),
        }
        for name in self._names:
            setattr(self, name, values[name].to(torch.float32))
        self.to(device)

    def to(self, device: torch.device | str) -> "DiffusionSchedule":
        """Move every tensor to `device` (in place) and return self."""
        self.device = torch.device(device)
        for name in self._names:
            setattr(self, name, getattr(self, name).to(self.device))
        return self

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
        """`name`[t] for each batch item, shaped (B, 1, ..., 1) to broadcast over an image."""
        values = getattr(self, name).to(t.device)[t]  # (B,)
        return values.view(-1, *([1] * (ndim - 1)))


def _check_x(x, name: str = "x0") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{name} must have a batch dimension, shape (B, ...), got {tuple(x.shape)}")


def check_image_range(x: torch.Tensor, name: str = "images") -> None:
    """Images must be scaled to [-1, 1] (the paper's data range); say how to fix the usual mistakes."""
    _check_x(x, name)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = x.min().item(), x.max().item()
    if hi > 1 + 1e-3 or lo < -1 - 1e-3:
        hint = " (they look like bytes: use x / 127.5 - 1)" if hi > 2 else " (clamp them first)"
        raise ValueError(f"{name} must lie in [-1, 1], got [{lo:.3f}, {hi:.3f}]{hint}")
    if lo >= 0 and hi > 0.5:
        raise ValueError(f"{name} lie in [{lo:.3f}, {hi:.3f}]: never below 0, so they look like [0, 1] "
                         "images; DDPM expects [-1, 1]: use x * 2 - 1")


# --- 2. Forward process and posterior --------------------------------------------------------


def q_sample(schedule: DiffusionSchedule, x0: torch.Tensor, t: torch.Tensor,
             noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Jump straight to step t (Eq. 4): x_t = sqrt(alphabar_t) x_0 + sqrt(1 - alphabar_t) eps.

    x0: (B, ...) float; t: (B,) integer indices in [0, T-1]; noise: like x0, or None to draw it.
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


def predict_x0_from_eps(schedule: DiffusionSchedule, x_t: torch.Tensor, t: torch.Tensor,
                        eps: torch.Tensor) -> torch.Tensor:
    """Eq. 4 solved for x_0: x_0 = (x_t - sqrt(1 - alphabar_t) eps) / sqrt(alphabar_t)."""
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


# --- 3. Training objective: Algorithm 1 ------------------------------------------------------


def diffusion_loss(model: nn.Module, schedule: DiffusionSchedule, x0: torch.Tensor,
                   t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                   generator: torch.Generator | None = None, min_snr_gamma: float | None = None) -> torch.Tensor:
    """Algorithm 1 / Eq. 14: || eps - eps_theta(sqrt(ab_t) x_0 + sqrt(1-ab_t) eps, t) ||^2.

    t is drawn uniformly from all of 0..T-1 when not given (Algorithm 1 line 3); the mean over
    pixels and batch is plain MSE, the paper's L_simple. With `min_snr_gamma` each image's MSE is
    weighted by min(SNR(t), gamma) / SNR(t) (Hang et al. 2023), which damps the easy low-noise t.
    """
    if min_snr_gamma is not None and not (isinstance(min_snr_gamma, (int, float)) and min_snr_gamma > 0):
        raise ValueError(f"min_snr_gamma must be a positive number or None, got {min_snr_gamma!r}")
    _check_x(x0)
    if t is None:  # Algorithm 1 line 3: t ~ Uniform({1, ..., T})
        gen_device = generator.device if generator is not None else x0.device
        t = torch.randint(0, schedule.num_timesteps, (x0.shape[0],), generator=generator,
                          device=gen_device).to(x0.device)  # (B,)
    if noise is None:  # Algorithm 1 line 4: eps ~ N(0, I)
        noise = _randn(x0.shape, generator, x0.device, x0.dtype)
    x_t = q_sample(schedule, x0, t, noise)  # (B, 1, 28, 28)
    eps_pred = model(x_t, t)  # (B, 1, 28, 28)
    _check_model_output(eps_pred, noise)
    if min_snr_gamma is None:
        return F.mse_loss(eps_pred.float(), noise)  # Algorithm 1 line 5 (float32 also under autocast)
    snr = schedule.alphas_cumprod[t] / (1 - schedule.alphas_cumprod[t])  # (B,) SNR(t) = ab_t / (1 - ab_t)
    per_image = (eps_pred.float() - noise).pow(2).flatten(1).mean(1)  # (B,)
    return (snr.clamp(max=min_snr_gamma) / snr * per_image).mean()


def _check_model_output(eps: torch.Tensor, x: torch.Tensor) -> None:
    if eps.shape != x.shape:  # a (B, 1) or (1, 28, 28) output would broadcast silently
        raise ValueError(f"the model returned shape {tuple(eps.shape)}, expected the input's {tuple(x.shape)}")


# --- 4. Sampling: Algorithm 2 (DDPM) and DDIM ------------------------------------------------

@torch.inference_mode()
def p_sample(model: nn.Module, schedule: DiffusionSchedule, x_t: torch.Tensor, t: int,
             clip_x0: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """One reverse step x_t -> x_{t-1} of Algorithm 2 with sigma_t^2 = beta_t.

    Without clipping this is Algorithm 2 line 4 verbatim:
        x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alphabar_t) eps_theta) + sigma_t z.
    With clip_x0 (a deviation the paper's code also makes) the predicted x_0 is clipped to
    [-1, 1] and the posterior mean of Eq. 7 is used, which is the same formula when nothing is
    clipped. No noise is added at the last step (index 0), Algorithm 2 line 3.
    """
    _check_x(x_t, "x_t")
    _check_int(t, "t", 0, schedule.num_timesteps - 1)
    tb = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)  # (B,)
    eps = model(x_t, tb)  # (B, 1, 28, 28)
    _check_model_output(eps, x_t)
    if clip_x0:
        x0_pred = predict_x0_from_eps(schedule, x_t, tb, eps).clamp(-1, 1)
        mean, _ = q_posterior_mean_variance(schedule, x0_pred, x_t, tb)
    else:
        beta, alpha = schedule.betas[t], schedule.alphas[t]
        mean = (x_t - beta / schedule.sqrt_one_minus_alphas_cumprod[t] * eps) / alpha.sqrt()
    if t == 0:
        return mean
    return mean + schedule.betas[t].sqrt() * _randn(x_t.shape, generator, x_t.device, x_t.dtype)  # sigma_t^2 = beta_t


def _start(shape, x_T, generator, device) -> torch.Tensor:
    """x_T ~ N(0, I) of the requested shape, or the given x_T after a shape and finiteness check."""
    if x_T is None:
        return _randn(tuple(shape), generator, device)  # Algorithm 2 line 1
    elif tuple(x_T.shape) != tuple(shape):
        raise ValueError(f"x_T must have shape {tuple(shape)}, got {tuple(x_T.shape)}")
    elif not bool(torch.isfinite(x_T).all()):
        raise ValueError("x_T holds NaN or infinite values: every digit sampled from it would be NaN")
    return x_T.to(device)


@torch.inference_mode()
def p_sample_loop(model: nn.Module, schedule: DiffusionSchedule, shape: Sequence[int], *,
                  clip_x0: bool = False, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None, x_T: torch.Tensor | None = None,
                  return_trajectory: bool = False, trajectory_stride: int = 100, progress: bool = True):
    """Algorithm 2: start from x_T ~ N(0, I) and apply `p_sample` for t = T-1, ..., 0.

    Returns the samples (shape `shape`), or with return_trajectory a tuple (samples, frames
    (K, *shape) on the CPU, labels): labels are the paper's t of each frame, T (pure noise),
    every multiple of `trajectory_stride`, down to 0 (the samples). The model's train/eval mode
    is restored afterwards, also when sampling is interrupted.
    """
    _check_int(trajectory_stride, "trajectory_stride", 1)
    device = torch.device(device) if device is not None else schedule.device
    x = _start(shape, x_T, generator, device)
    T = schedule.num_timesteps
    frames, labels = ([x.cpu()], [T]) if return_trajectory else ([], [])
    was_training = model.training
    model.eval()
    try:
        for t in progress_bar(range(T - 1, -1, -1), desc="DDPM sampling", disable=not progress):  # Algorithm 2 line 2
            x = p_sample(model, schedule, x, t, clip_x0=clip_x0, generator=generator)
            # x now holds the paper's x_t (index t was the step x_{t+1} -> x_t in paper numbering)
            if return_trajectory and t % trajectory_stride == 0:
                frames.append(x.cpu()), labels.append(t)
    finally:
        model.train(was_training)
    return (x, torch.stack(frames), labels) if return_trajectory else x


def ddim_timesteps(num_timesteps: int, num_steps: int) -> list[int]:
    """`num_steps` evenly spaced indices from T-1 down to 0 (both ends included)."""
    _check_int(num_steps, "num_steps", 1, num_timesteps)
    if num_steps == 1:
        return [num_timesteps - 1]
    return torch.linspace(num_timesteps - 1, 0, num_steps).round().long().tolist()


@torch.inference_mode()
def ddim_sample(model: nn.Module, schedule: DiffusionSchedule, shape: Sequence[int], *,
                num_steps: int = 50, eta: float = 0.0, clip_x0: bool = False,
                generator: torch.Generator | None = None, device: torch.device | str | None = None,
                x_T: torch.Tensor | None = None, return_trajectory: bool = False, progress: bool = True):
    """DDIM sampling (Song et al. 2021, Eq. 12) with any number of steps, from a DDPM model.

        x_prev = sqrt(ab_prev) x0_pred + sqrt(1 - ab_prev - sigma^2) eps + sigma z,
        sigma = eta * sqrt((1 - ab_prev) / (1 - ab_t)) * sqrt(1 - ab_t / ab_prev)     (Eq. 16)

    eta in [0, 1]: 0 is deterministic given x_T, 1 takes DDPM's posterior variance beta-tilde;
    above 1, sigma^2 would exceed 1 - ab_prev and the eps term would be undefined. With clip_x0
    the clipped x0_pred is used and eps recomputed from it, so both terms stay consistent.
    Returns samples, or (samples, frames, labels) like `p_sample_loop` (labels are paper t).
    """
    if not (isinstance(eta, (int, float)) and math.isfinite(eta) and 0 <= eta <= 1):
        raise ValueError(f"eta must be a finite number in [0, 1], got {eta!r}")
    device = torch.device(device) if device is not None else schedule.device
    timesteps = ddim_timesteps(schedule.num_timesteps, num_steps)
    x = _start(shape, x_T, generator, device)
    frames, labels = ([x.cpu()], [schedule.num_timesteps]) if return_trajectory else ([], [])
    was_training = model.training
    model.eval()
    try:
        for i, t in enumerate(progress_bar(timesteps, desc=f"DDIM-{num_steps} sampling", disable=not progress)):
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            tb = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)  # (B,)
            ab_t = schedule.alphas_cumprod[t]
            ab_prev = schedule.alphas_cumprod[t_prev] if t_prev >= 0 else torch.ones_like(ab_t)
            eps = model(x, tb)  # (B, 1, 28, 28)
            _check_model_output(eps, x)
            x0_pred = predict_x0_from_eps(schedule, x, tb, eps)  # (B, 1, 28, 28)
            if clip_x0:
                x0_pred = x0_pred.clamp(-1, 1)
                eps = (x - ab_t.sqrt() * x0_pred) / (1 - ab_t).sqrt()
            sigma = eta * ((1 - ab_prev) / (1 - ab_t)).sqrt() * (1 - ab_t / ab_prev).sqrt()
            # round-off can push 1 - ab_prev - sigma^2 a hair below 0 at eta = 1
            x = ab_prev.sqrt() * x0_pred + (1 - ab_prev - sigma ** 2).clamp(min=0).sqrt() * eps
            if eta > 0 and t_prev >= 0:
                x = x + sigma * _randn(x.shape, generator, x.device, x.dtype)
            if return_trajectory:
                frames.append(x.cpu()), labels.append(t_prev + 1)
    finally:
        model.train(was_training)
    return (x, torch.stack(frames), labels) if return_trajectory else x
