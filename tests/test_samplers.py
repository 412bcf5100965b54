"""Notebook 3's few-step samplers (section 6), checked on an eps-model whose ODE has a known solution.

For data x0 ~ N(0, c^2 I) the best noise estimate is linear in x (lessons.unet.GaussianDataEps):
    eps(x, t) = sqrt(1 - abar_t) x / (abar_t c^2 + 1 - abar_t) = sigma xbar / (c^2 + sigma^2)
in xbar = x / sqrt(abar) and sigma = sqrt((1 - abar) / abar). The probability-flow ODE d xbar / d sigma = eps is
then solved by xbar(sigma) = K sqrt(c^2 + sigma^2) with K = xbar_T / sqrt(c^2 + sigma_T^2) (differentiate:
K sigma / sqrt(c^2 + sigma^2) = sigma xbar / (c^2 + sigma^2)). Every sampler ends with the same first-order step
from t = 0 (sigma_0 = 0.01) into sigma = 0, whose error does not shrink with the number of steps; the orders are
therefore measured against the exact path down to t = 0 followed by that step (gaussian_flow_x0's second value).
"""

from __future__ import annotations

import math

import pytest
import torch

import diffusion_utils as du
from lessons.unet import (GaussianDataEps, dpm_solver_2m_sample, dpm_solver_first_order_step, eps_and_x0, euler_sample,
                          gaussian_flow_x0, heun_sample, sigma_alpha)

SAMPLERS = {"euler": euler_sample, "heun": heun_sample, "dpm++2m": dpm_solver_2m_sample}
C = 0.5   # the data's standard deviation


@pytest.fixture(scope="module")
def setup():
    schedule = du.DiffusionSchedule(num_timesteps=1000)
    x_T = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(0))   # (64, 1, 4, 4)
    return schedule, GaussianDataEps(schedule, C), x_T


def rms_error(samples, reference) -> float:
    return (samples.double() - reference).pow(2).mean().sqrt().item()


def test_the_samplers_limit_is_the_ode_solution_up_to_the_last_step(setup):
    schedule, model, x_T = setup
    exact, limit = gaussian_flow_x0(schedule, x_T, C)
    # the shared last step scales x0 by c / sqrt(c^2 + sigma_0^2) = 1 - 2e-4 here
    assert rms_error(limit, exact) < 3e-4 * exact.pow(2).mean().sqrt()
    # and a fine Heun run lands on the limit
    assert rms_error(heun_sample(model, schedule, x_T.shape, x_T=x_T, num_steps=320, progress=False), limit) < 1e-4


@pytest.mark.parametrize("clip_x0", [False, True])
def test_euler_is_ddim_with_eta_zero(setup, clip_x0):
    schedule, model, x_T = setup
    x_T = 3 * x_T   # data of std 1.5 for the clip case: clipping happens
    ours = euler_sample(model, schedule, x_T.shape, x_T=x_T, num_steps=10, clip_x0=clip_x0, progress=False)
    ddim = du.ddim_sample(model, schedule, x_T.shape, x_T=x_T, num_steps=10, eta=0.0, clip_x0=clip_x0, progress=False)
    torch.testing.assert_close(ours, ddim, atol=1e-5, rtol=1e-5)
    assert (ddim.abs() == 1).any() == clip_x0                                   # clipping did happen


@pytest.mark.parametrize("t, t_next", [(999, 899), (500, 450), (100, 0), (0, -1)])
def test_first_order_dpm_solver_step_is_the_ddim_step(setup, t, t_next):
    schedule, model, x_T = setup
    x_t = x_T[:4]
    _, x0 = eps_and_x0(model, schedule, x_t, t)
    ours = dpm_solver_first_order_step(schedule, x_t, t, t_next, x0)
    # DDIM's Eq. 12 with eta = 0, written out: x_next = sqrt(ab_next) x0 + sqrt(1 - ab_next) eps, eps from x0
    (sigma, alpha), (sigma_next, alpha_next) = sigma_alpha(schedule, t), sigma_alpha(schedule, t_next)
    eps = (x_t / alpha - x0) / sigma
    expected = alpha_next * x0 + alpha_next * sigma_next * eps                   # sqrt(1 - ab) = alpha sigma
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_one_step_of_each_sampler_is_one_ddim_step(setup):
    """num_steps = 1: one step from T-1 straight into sigma = 0, first order for every method. (The x0
    predicted at T-1 is a small difference of two numbers near 150 in xbar: float32 round-off of ~1e-5 each.)"""
    schedule, model, x_T = setup
    ddim = du.ddim_sample(model, schedule, x_T.shape, x_T=x_T, num_steps=1, progress=False)
    for sampler in SAMPLERS.values():
        torch.testing.assert_close(sampler(model, schedule, x_T.shape, x_T=x_T, num_steps=1, progress=False), ddim,
                                   atol=1e-4, rtol=0)


# Steps (N, 2N, 4N) at which each method's error has reached its asymptotic rate on this problem (uniform-t
# grid). DPM-Solver++(2M) needs more steps: on the uniform-t grid the step into t = 0 is long in
# lambda = -log(sigma) compared with the one before, and the x0 extrapolation over it is poor until N ~ 40
# (measured: order 0.7 from 10 to 20 steps, 1.5 from 20 to 40, 1.9 from 40 to 80, 2.0 from 80 to 160).
ORDER_CASES = {"euler": ((10, 20, 40), (0.95, 1.05)),
               "heun": ((20, 40, 80), (1.9, 2.2)),
               "dpm++2m": ((40, 80, 160), (1.8, 2.2))}


@pytest.mark.parametrize("method", sorted(ORDER_CASES))
def test_measured_order(setup, method):
    schedule, model, x_T = setup
    steps, (low, high) = ORDER_CASES[method]
    _, reference = gaussian_flow_x0(schedule, x_T, C)
    errors = [rms_error(SAMPLERS[method](model, schedule, x_T.shape, x_T=x_T, num_steps=n, progress=False), reference)
              for n in steps]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(low <= order <= high for order in orders), (method, errors, orders)


def test_timesteps_replace_the_default_grid(setup):
    schedule, model, x_T = setup
    grid = du.ddim_timesteps(1000, 12)
    for sampler in SAMPLERS.values():
        default = sampler(model, schedule, x_T.shape, x_T=x_T, num_steps=12, progress=False)
        given = sampler(model, schedule, x_T.shape, x_T=x_T, timesteps=grid, progress=False)
        assert torch.equal(default, given)
    # a grid that stops early still ends at x0 (the last step goes on to abar = 1)
    out, frames, labels = dpm_solver_2m_sample(model, schedule, x_T.shape, x_T=x_T, timesteps=[700, 300, 50],
                                               return_trajectory=True, progress=False)
    assert labels == [701, 301, 51, 0] and frames.shape == (4, *x_T.shape) and torch.equal(frames[-1], out)


@pytest.mark.parametrize("method", sorted(SAMPLERS))
def test_samplers_draw_nothing_and_restore_the_mode(setup, method):
    schedule, model, x_T = setup
    generator = torch.Generator().manual_seed(3)
    before = generator.get_state()
    model.train()
    out = SAMPLERS[method](model, schedule, x_T.shape, x_T=x_T, num_steps=5, generator=generator, progress=False)
    assert torch.equal(generator.get_state(), before) and model.training
    again = SAMPLERS[method](model, schedule, x_T.shape, x_T=x_T, num_steps=5, progress=False)
    assert torch.equal(out, again) and torch.isfinite(out).all()
    # without x_T the generator draws it, and the same seed gives the same samples
    a = SAMPLERS[method](model, schedule, (2, 1, 4, 4), num_steps=3, generator=torch.Generator().manual_seed(1),
                         progress=False)
    b = SAMPLERS[method](model, schedule, (2, 1, 4, 4), num_steps=3, generator=torch.Generator().manual_seed(1),
                         progress=False)
    assert torch.equal(a, b)


@pytest.mark.parametrize("method", sorted(SAMPLERS))
@pytest.mark.parametrize("kwargs, error, match", [
    ({"num_steps": 0}, ValueError, r"num_steps must be \[1, 1000\]"),
    ({"num_steps": 1001}, ValueError, r"num_steps must be \[1, 1000\]"),
    ({"num_steps": 2.0}, TypeError, "num_steps must be an int"),
    ({"timesteps": [500, 500, 10]}, ValueError, "must decrease strictly"),
    ({"timesteps": [10, 500]}, ValueError, "must decrease strictly"),
    ({"timesteps": [1000, 10]}, ValueError, r"within \[0, 999\]"),
    ({"timesteps": [500, -1]}, ValueError, r"within \[0, 999\]"),
    ({"timesteps": []}, TypeError, "non-empty list of ints"),
    ({"timesteps": [500.0, 10]}, TypeError, "non-empty list of ints"),
    ({"timesteps": [500, 10], "num_steps": 3}, ValueError, r"num_steps \(3\) must be None or len\(timesteps\) \(2\)"),
    ({"x_T": torch.zeros(2, 1, 4, 4)}, ValueError, r"x_T must have shape \(64, 1, 4, 4\)"),
])
def test_bad_input_is_refused(setup, method, kwargs, error, match):
    schedule, model, x_T = setup
    with pytest.raises(error, match=match):
        SAMPLERS[method](model, schedule, x_T.shape, progress=False, **{"x_T": x_T, **kwargs})


def test_a_model_of_the_wrong_shape_is_refused(setup):
    schedule, _, x_T = setup

    class Flat(torch.nn.Module):
        def forward(self, x, t):
            return x.mean(dim=(1, 2, 3))                                         # (B,): would broadcast silently

    for sampler in SAMPLERS.values():
        with pytest.raises(ValueError, match="the model returned shape"):
            sampler(Flat(), schedule, x_T.shape, x_T=x_T, num_steps=3, progress=False)


@pytest.mark.parametrize("method", sorted(SAMPLERS))
def test_sample_in_chunks_runs_the_samplers(setup, method):
    """The samplers take du.ddim_sample's arguments, so notebook_support.sampling splits them into chunks."""
    from notebook_support.sampling import sample_in_chunks

    schedule, model, x_T = setup
    whole = SAMPLERS[method](model, schedule, x_T.shape, x_T=x_T, num_steps=4, progress=False)
    chunked, frames, labels = sample_in_chunks(SAMPLERS[method], model, schedule, x_T.shape[0], chunk_size=24,
                                               image_shape=tuple(x_T.shape[1:]), x_T=x_T, num_steps=4,
                                               return_trajectory=True, progress=False)
    torch.testing.assert_close(chunked, whole)
    assert frames.shape == (5, *x_T.shape) and labels == [1000, 667, 334, 1, 0]
