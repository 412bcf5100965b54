"""Unit tests of diffusion_utils: fixed seeds, stated tolerances, and every bad-input error."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import diffusion_utils as du

T = 1000


@pytest.fixture(scope="module")
def schedule():
    return du.DiffusionSchedule()


class ZeroModel(nn.Module):
    """Predicts zero noise; has one parameter so it can be trained/EMA'd."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        return self.scale * x


class OracleModel(nn.Module):
    """Knows the one data point x0: returns the exact noise eps = (x_t - sqrt(ab) x0) / sqrt(1-ab)."""

    def __init__(self, schedule, x0):
        super().__init__()
        self.schedule, self.x0 = schedule, x0

    def forward(self, x, t):
        ab = self.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
        return (x - ab.sqrt() * self.x0) / (1 - ab).sqrt()


# --- schedules ---------------------------------------------------------------------------------

def test_linear_schedule_endpoints_and_monotone():
    betas = du.linear_beta_schedule(T)
    assert betas.shape == (T,)
    assert betas[0].item() == pytest.approx(1e-4)
    assert betas[-1].item() == pytest.approx(0.02)
    assert bool((betas[1:] > betas[:-1]).all())


def test_cosine_schedule_shape_range_and_alphas_cumprod():
    betas = du.cosine_beta_schedule(T)
    assert betas.shape == (T,)
    assert bool((betas > 0).all()) and betas.max().item() <= 0.999
    assert bool((betas[1:] >= betas[:-1]).all())
    # alphas_cumprod follows cos^2 of Nichol & Dhariwal Eq. 17 (before clipping matters)
    ab = torch.cumprod(1 - betas, 0)
    f = lambda t: math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2
    for t in (1, 250, 500, 900):
        assert ab[t - 1].item() == pytest.approx(f(t) / f(0), rel=1e-6)


def test_schedule_quantities(schedule):
    assert schedule.alphas_cumprod[-1].item() == pytest.approx(4.04e-5, rel=0.01)
    assert schedule.alphas_cumprod_prev[0].item() == 1.0
    assert torch.allclose(schedule.alphas_cumprod_prev[1:], schedule.alphas_cumprod[:-1])
    assert torch.allclose(schedule.sqrt_alphas_cumprod ** 2 + schedule.sqrt_one_minus_alphas_cumprod ** 2,
                          torch.ones(T))
    assert schedule.posterior_variance[0].item() == 0.0
    assert schedule.num_timesteps == T


def test_posterior_coefficients_match_float64_derivation(schedule):
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    alphas = 1 - betas
    ab = torch.cumprod(alphas, 0)
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    var = (1 - ab_prev) / (1 - ab) * betas
    coef1 = ab_prev.sqrt() * betas / (1 - ab)
    coef2 = alphas.sqrt() * (1 - ab_prev) / (1 - ab)
    for ours, ref in ((schedule.posterior_variance, var), (schedule.posterior_mean_coef1, coef1),
                      (schedule.posterior_mean_coef2, coef2)):
        assert torch.allclose(ours.double(), ref, rtol=1e-6, atol=1e-9)


def test_schedule_to_device_moves_everything(schedule):
    moved = du.DiffusionSchedule().to("cpu")
    assert moved.device.type == "cpu" and moved.betas.device.type == "cpu"


@pytest.mark.parametrize("betas, error", [
    (torch.tensor([0.1, 1.0]), ValueError),
    (torch.tensor([0.0, 0.1]), ValueError),
    (torch.tensor([[0.1]]), ValueError),
    ([0.1, 0.2], TypeError),
])
def test_schedule_rejects_bad_betas(betas, error):
    with pytest.raises(error, match="betas"):
        du.DiffusionSchedule(betas)


def test_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_timesteps"):
        du.linear_beta_schedule(0)
    with pytest.raises(TypeError, match="num_timesteps"):
        du.linear_beta_schedule(10.5)
    with pytest.raises(ValueError, match="beta_end"):
        du.linear_beta_schedule(10, beta_start=0.1, beta_end=1.5)
    with pytest.raises(ValueError, match="schedule"):
        du.DiffusionSchedule(schedule="quadratic")
    with pytest.raises(ValueError, match="max_beta"):
        du.cosine_beta_schedule(10, max_beta=1.0)


# --- forward process ----------------------------------------------------------------------------

def test_q_sample_closed_form_value(schedule):
    x0 = torch.full((2, 1, 28, 28), 0.5)
    noise = torch.ones_like(x0)
    t = torch.tensor([0, 999])
    x_t = du.q_sample(schedule, x0, t, noise)
    ab = schedule.alphas_cumprod[t]
    expected = ab.sqrt() * 0.5 + (1 - ab).sqrt()
    assert torch.allclose(x_t[:, 0, 0, 0], expected)


def forward_loop(schedule, x0, t, generator):
    """The reference forward process: Eq. 2, one small step at a time, for indices 0..t."""
    x = x0
    for s in range(t + 1):
        beta = schedule.betas[s]
        x = (1 - beta).sqrt() * x + beta.sqrt() * torch.randn(x.shape, generator=generator)
    return x


def test_closed_form_and_iterative_agree_in_mean_and_variance(schedule):
    """5000 draws of one 4-pixel 'image': sample mean/variance of the looped process must match
    sqrt(ab_t) x0 and 1 - ab_t. Standard errors: mean ~ sqrt(1/5000) = 0.014, variance ~
    sqrt(2/5000) = 0.02; tolerances 0.06 (4+ sigma). A missing sqrt would put the mean at
    ab_t x0 (off by 0.36 at t=100 for x0=1) and fail."""
    g = torch.Generator().manual_seed(0)
    n = 5000
    x0 = torch.tensor([1.0, -1.0, 0.5, 0.0]).repeat(n, 1)  # (n, 4)
    for t in (0, 100, 500, 999):
        looped = forward_loop(schedule, x0, t, g)
        direct = du.q_sample(schedule, x0, torch.full((n,), t), generator=g)
        ab = schedule.alphas_cumprod[t]
        for x in (looped, direct):
            assert torch.allclose(x.mean(0), ab.sqrt() * x0[0], atol=0.06), t
            assert torch.allclose(x.var(0), (1 - ab).expand(4), atol=0.06), t


def test_predict_x0_recovers_data_exactly(schedule):
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(8, 1, 28, 28, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    for t_value in (0, 10, 500, 999):
        t = torch.full((8,), t_value)
        x_t = du.q_sample(schedule, x0, t, noise)
        recovered = du.predict_x0_from_eps(schedule, x_t, t, noise)
        # float32 rounding is amplified by 1/sqrt(ab_t) (~157 at t=999)
        assert torch.allclose(recovered, x0, atol=1e-5 / schedule.sqrt_alphas_cumprod[t_value].item())


def test_posterior_mean_variance_by_monte_carlo(schedule):
    """q(x_{t-1} | x_t, x0) from Bayes: draw x_{t-1} ~ q(.|x0), then x_t ~ q(x_t|x_{t-1}); among
    pairs, regress x_{t-1} on x_t. The conditional mean slope is coef2 and the residual variance
    is posterior_variance (checked to 3%)."""
    g = torch.Generator().manual_seed(2)
    t = 300
    n = 200_000
    x0 = torch.full((n, 1), 0.7)
    x_prev = du.q_sample(schedule, x0, torch.full((n,), t - 1), generator=g)
    beta = schedule.betas[t]
    x_t = (1 - beta).sqrt() * x_prev + beta.sqrt() * torch.randn(n, 1, generator=g)
    mean, var = du.q_posterior_mean_variance(schedule, x0, x_t, torch.full((n,), t))
    residual = x_prev - mean
    assert abs(residual.mean().item()) < 0.002
    assert residual.var().item() == pytest.approx(var[0].item(), rel=0.03)


@pytest.mark.parametrize("t, error", [
    (torch.tensor([1000, 0]), ValueError),
    (torch.tensor([-1, 0]), ValueError),
    (torch.tensor([0.5, 1.0]), TypeError),
    (torch.tensor([0, 1, 2]), ValueError),  # wrong batch size
    ([0, 1], TypeError),
])
def test_q_sample_rejects_bad_t(schedule, t, error):
    with pytest.raises(error, match="t "):
        du.q_sample(schedule, torch.zeros(2, 1, 28, 28), t)


def test_forward_process_rejects_bad_inputs(schedule):
    with pytest.raises(TypeError, match="x0"):
        du.q_sample(schedule, [[0.0]], torch.tensor([0]))
    with pytest.raises(TypeError, match="x0"):
        du.q_sample(schedule, torch.zeros(2, 4, dtype=torch.long), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="noise"):
        du.q_sample(schedule, torch.zeros(2, 4), torch.tensor([0, 0]), noise=torch.zeros(2, 5))
    with pytest.raises(ValueError, match="eps"):
        du.predict_x0_from_eps(schedule, torch.zeros(2, 4), torch.tensor([0, 0]), torch.zeros(2, 3))


# --- loss ---------------------------------------------------------------------------

def test_diffusion_loss_is_mse_of_noise(schedule):
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(4, 1, 28, 28, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    loss = du.diffusion_loss(ZeroModel(), schedule, x0, t=torch.tensor([0, 1, 2, 999]), noise=noise)
    assert loss.item() == pytest.approx(noise.pow(2).mean().item(), rel=1e-6)


def test_diffusion_loss_draws_all_timesteps(schedule):
    seen = []

    class Spy(ZeroModel):
        def forward(self, x, t):
            seen.append(t)
            return super().forward(x, t)

    g = torch.Generator().manual_seed(4)
    du.diffusion_loss(Spy(), schedule, torch.zeros(20000, 1), generator=g)
    t = seen[0]
    assert t.min().item() == 0 and t.max().item() == T - 1  # both ends reachable (no off-by-one)


class _IgnoreT(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, t):
        return self.model(x)


# --- samplers ------------------------------------------------------------------------------------

def test_ddpm_sampler_shape_and_determinism(schedule):
    shape = (3, 1, 28, 28)
    a = du.p_sample_loop(ZeroModel(), schedule, shape, generator=torch.Generator().manual_seed(5), progress=False)
    b = du.p_sample_loop(ZeroModel(), schedule, shape, generator=torch.Generator().manual_seed(5), progress=False)
    c = du.p_sample_loop(ZeroModel(), schedule, shape, generator=torch.Generator().manual_seed(6), progress=False)
    assert a.shape == shape and torch.equal(a, b) and not torch.equal(a, c)


def test_ddpm_last_step_adds_no_noise(schedule):
    x = torch.randn(2, 1, 4, 4)
    one = du.p_sample(ZeroModel(), schedule, x, 0, generator=torch.Generator().manual_seed(0))
    two = du.p_sample(ZeroModel(), schedule, x, 0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(one, two)
    assert torch.allclose(one, x / schedule.alphas[0].sqrt())
    noisy = du.p_sample(ZeroModel(), schedule, x, 1, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(noisy, x / schedule.alphas[1].sqrt())


def test_ddpm_step_matches_algorithm_2_line_4(schedule):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 1, 4, 4, generator=g)
    model = _IgnoreT(nn.Identity())  # eps_theta(x, t) = x
    t = 500
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(8))
    beta, alpha, ab = schedule.betas[t], schedule.alphas[t], schedule.alphas_cumprod[t]
    expected = (x - beta / (1 - ab).sqrt() * x) / alpha.sqrt() + beta.sqrt() * z
    ours = du.p_sample(model, schedule, x, t, generator=torch.Generator().manual_seed(8))
    assert torch.allclose(ours, expected, atol=1e-6)
    # the clipped path uses the posterior mean of Eq. 7, equal when nothing is clipped
    small = x * 1e-3
    clipped = du.p_sample(model, schedule, small, t, clip_x0=True, generator=torch.Generator().manual_seed(8))
    plain = du.p_sample(model, schedule, small, t, generator=torch.Generator().manual_seed(8))
    assert torch.allclose(clipped, plain, atol=1e-5)


def test_oracle_model_recovers_data(schedule):
    x0 = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(9)) * 2 - 1
    oracle = OracleModel(schedule, x0)
    ddpm = du.p_sample_loop(oracle, schedule, (2, 1, 28, 28), generator=torch.Generator().manual_seed(0),
                            progress=False)
    ddim = du.ddim_sample(oracle, schedule, (2, 1, 28, 28), num_steps=20,
                          generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.allclose(ddpm, x0.expand_as(ddpm), atol=1e-3)
    assert torch.allclose(ddim, x0.expand_as(ddim), atol=1e-3)


def test_ddim_eta0_is_deterministic_given_x_T_and_eta1_is_not(schedule):
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(10))
    model = _IgnoreT(nn.Tanh())
    a = du.ddim_sample(model, schedule, x_T.shape, x_T=x_T, num_steps=10, eta=0.0,
                       generator=torch.Generator().manual_seed(1), progress=False)
    b = du.ddim_sample(model, schedule, x_T.shape, x_T=x_T, num_steps=10, eta=0.0,
                       generator=torch.Generator().manual_seed(2), progress=False)
    c = du.ddim_sample(model, schedule, x_T.shape, x_T=x_T, num_steps=10, eta=1.0,
                       generator=torch.Generator().manual_seed(2), progress=False)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_ddim_timesteps_cover_both_ends():
    steps = du.ddim_timesteps(T, 50)
    assert steps[0] == T - 1 and steps[-1] == 0 and len(set(steps)) == 50
    assert du.ddim_timesteps(T, T) == list(range(T - 1, -1, -1))
    with pytest.raises(ValueError, match="num_steps"):
        du.ddim_timesteps(T, 0)
    with pytest.raises(ValueError, match="num_steps"):
        du.ddim_timesteps(T, T + 1)


def test_trajectory_frames_and_labels(schedule):
    x, frames, labels = du.p_sample_loop(ZeroModel(), schedule, (2, 1, 4, 4), return_trajectory=True,
                                         trajectory_stride=250, progress=False)
    assert labels == [1000, 750, 500, 250, 0]
    assert frames.shape == (5, 2, 1, 4, 4) and torch.equal(frames[-1], x)
    x, frames, labels = du.ddim_sample(ZeroModel(), schedule, (2, 1, 4, 4), num_steps=5,
                                       return_trajectory=True, progress=False)
    assert labels[0] == 1000 and labels[-1] == 0 and len(labels) == 6


def test_sampler_rejects_bad_inputs(schedule):
    with pytest.raises(ValueError, match="x_T"):
        du.p_sample_loop(ZeroModel(), schedule, (2, 1, 4, 4), x_T=torch.zeros(1, 1, 4, 4), progress=False)
    with pytest.raises(ValueError, match="t must be"):
        du.p_sample(ZeroModel(), schedule, torch.zeros(1, 1, 4, 4), T)
    with pytest.raises(TypeError, match="t must be an int"):
        du.p_sample(ZeroModel(), schedule, torch.zeros(1, 1, 4, 4), 5.0)
    with pytest.raises(ValueError, match="trajectory_stride"):
        du.p_sample_loop(ZeroModel(), schedule, (1, 1, 4, 4), return_trajectory=True, trajectory_stride=0,
                         progress=False)


@pytest.mark.parametrize("eta", [-1, float("nan"), float("inf"), 1.5])
def test_ddim_rejects_eta_outside_0_1(schedule, eta):
    with pytest.raises(ValueError, match="eta must be a finite number in \\[0, 1\\]"):
        du.ddim_sample(ZeroModel(), schedule, (2, 1, 4, 4), eta=eta, progress=False)


def test_ddim_eta1_step_is_the_ddpm_posterior_step():
    """DDIM (Eq. 12) with consecutive steps and eta = 1 samples from the posterior of Eq. 7 at the
    predicted x0: mean mu_tilde(x0_pred, x_t) and variance beta_tilde, drawn with the same z."""
    schedule = du.DiffusionSchedule(torch.tensor([0.5, 0.99], dtype=torch.float64))  # T = 2, alphabar_T = 0.005
    model = _IgnoreT(nn.Tanh())  # eps_theta(x, t) = tanh(x)
    x_T = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(11))
    _, frames, labels = du.ddim_sample(model, schedule, x_T.shape, x_T=x_T, num_steps=2, eta=1.0,
                                       return_trajectory=True, progress=False,
                                       generator=torch.Generator().manual_seed(12))
    t = torch.full((3,), 1)
    x0_pred = du.predict_x0_from_eps(schedule, x_T, t, torch.tanh(x_T))
    mean, variance = du.q_posterior_mean_variance(schedule, x0_pred, x_T, t)
    z = torch.randn(x_T.shape, generator=torch.Generator().manual_seed(12))
    assert labels[:2] == [2, 1]
    assert torch.allclose(frames[1], mean + variance.sqrt() * z, atol=1e-5)


class _WrongShape(nn.Module):
    def forward(self, x, t):
        return x[:, :, :1, :1]  # (B, 1, 1, 1): would broadcast against x_t


def test_samplers_reject_a_wrongly_shaped_model_output(schedule):
    for sample in (lambda: du.p_sample_loop(_WrongShape(), schedule, (2, 1, 4, 4), progress=False),
                   lambda: du.ddim_sample(_WrongShape(), schedule, (2, 1, 4, 4), num_steps=5, progress=False)):
        with pytest.raises(ValueError, match="the model returned shape \\(2, 1, 1, 1\\)"):
            sample()


def test_interrupted_sampling_restores_the_training_mode(schedule):
    class Interrupt(ZeroModel):
        def forward(self, x, t):
            if int(t[0]) == T - 3:
                raise KeyboardInterrupt
            return super().forward(x, t)

    model = Interrupt().train()
    for sample in (du.p_sample_loop, du.ddim_sample):
        with pytest.raises(KeyboardInterrupt):
            sample(model, schedule, (1, 1, 4, 4), progress=False, **({"num_steps": T} if sample is du.ddim_sample else {}))
        assert model.training


@pytest.mark.parametrize("num_timesteps, alphabar", [(10, 0.90), (50, 0.60)])
def test_schedule_that_never_reaches_noise_warns(num_timesteps, alphabar):
    with pytest.warns(UserWarning, match=f"alphabar_T = {alphabar:.2f}"):
        du.DiffusionSchedule(num_timesteps=num_timesteps)


def test_paper_and_cosine_schedules_do_not_warn():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        du.DiffusionSchedule()
        du.DiffusionSchedule(schedule="cosine")


@pytest.mark.parametrize("s", [float("nan"), float("inf"), -0.1])
def test_cosine_schedule_rejects_bad_offset(s):
    with pytest.raises(ValueError, match="s must be a finite number"):
        du.cosine_beta_schedule(100, s=s)


@pytest.mark.parametrize("scale, hint", [(255.0, "x / 127.5 - 1"), (1.0, "x \\* 2 - 1")])
def test_image_range_check_names_the_fix(scale, hint):
    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * scale
    with pytest.raises(ValueError, match=hint):
        du.check_image_range(images, "training data")
    du.check_image_range(images / scale * 2 - 1)  # correctly scaled data passes


