"""Notebook 3's few-step sampling (section 6): grids of noise levels, solvers that walk them, and the wrapper that
shows the eps-model to them, checked where the answer is known.

For data x0 ~ N(0, c^2 I) the best denoiser is linear (lessons.unet.GaussianDenoiser):
    x0_hat(xbar, sigma) = c^2 xbar / (c^2 + sigma^2),   i.e. eps = sigma xbar / (c^2 + sigma^2),
in xbar = x / sqrt(abar) and sigma = sqrt((1 - abar) / abar). The probability-flow ODE d xbar / d sigma = eps is then
solved by xbar(sigma) = K sqrt(c^2 + sigma^2) with K = xbar_T / sqrt(c^2 + sigma_T^2). Every grid ends with the same
first-order step from sigma_0 = 0.01 into sigma = 0, whose error does not shrink with the number of steps; the
orders are therefore measured against the exact path down to sigma_0 followed by that step (gaussian_flow_x0's
second value), a reference that is not the solver under test.
"""

from __future__ import annotations

import math

import pytest
import torch

import diffusion_utils as du
from lessons.unet import (EpsDenoiser, GaussianDenoiser, dpm_solver_2m, euler, gaussian_flow_x0, heun, karras_grid,
                          lambda_uniform_grid, ode_sample, schedule_sigmas, t_uniform_grid)

SOLVERS = {"euler": euler, "heun": heun, "dpm++2m": dpm_solver_2m}
GRIDS = {"t-uniform": t_uniform_grid, "lambda": lambda_uniform_grid, "karras": karras_grid}
COST = {"euler": lambda n: n, "heun": lambda n: 2 * n - 1, "dpm++2m": lambda n: n}   # evaluations of n steps
C = 0.5   # the data's standard deviation


class GaussianEps(torch.nn.Module):
    """GaussianDenoiser as an eps-model of (x_t, t), for integer t: what ode_sample and du.ddim_sample call."""

    def __init__(self, schedule):
        super().__init__()
        self.alphas_cumprod = schedule.alphas_cumprod.cpu().double()

    def forward(self, x, t):
        ab = self.alphas_cumprod[t.long()].view(-1, 1, 1, 1).to(x.dtype)            # (B, 1, 1, 1)
        return (1 - ab).sqrt() * x / (ab * C ** 2 + 1 - ab)


@pytest.fixture(scope="module")
def setup():
    schedule = du.DiffusionSchedule(num_timesteps=1000)
    x_T = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)   # (64, 1, 4, 4)
    xbar_T = x_T * (1 + schedule_sigmas(schedule)[-1] ** 2).sqrt()
    return schedule, xbar_T, x_T.float()


def relative_error(samples, reference) -> float:
    return ((samples.double() - reference).pow(2).mean() / reference.pow(2).mean()).sqrt().item()


# --- grids ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("num_steps", [1, 2, 10, 37])
def test_every_grid_runs_from_the_largest_to_the_smallest_trained_sigma_then_zero(setup, grid, num_steps):
    schedule = setup[0]
    sigmas, trained = GRIDS[grid](schedule, num_steps), schedule_sigmas(schedule)
    assert sigmas.shape == (num_steps + 1,) and sigmas.dtype == torch.float64 and sigmas[-1] == 0
    assert (sigmas[1:] < sigmas[:-1]).all()
    torch.testing.assert_close(sigmas[0], trained[-1], rtol=1e-12, atol=0)
    if num_steps > 1:
        torch.testing.assert_close(sigmas[-2], trained[0], rtol=1e-12, atol=0)


def test_how_each_grid_spaces_its_steps(setup):
    schedule = setup[0]
    t_grid = t_uniform_grid(schedule, 10)[:-1]
    assert torch.equal(t_grid, schedule_sigmas(schedule)[du.ddim_timesteps(1000, 10)])
    log_steps = lambda_uniform_grid(schedule, 10)[:-1].log().diff()                  # equal steps in lambda
    torch.testing.assert_close(log_steps, log_steps.mean().expand(9), rtol=1e-9, atol=0)
    root_steps = karras_grid(schedule, 10)[:-1].pow(1 / 7).diff()                    # equal steps in sigma^(1/7)
    torch.testing.assert_close(root_steps, root_steps.mean().expand(9), rtol=1e-9, atol=0)
    # rho = 7 lies between equal steps in sigma (rho = 1) and in log sigma (rho -> infinity): of 10 levels, 3 below
    # sigma = 1 against the lambda grid's 5 (and 3 for t-uniform)
    below_one = {name: int((grid(schedule, 10)[:-1] < 1).sum()) for name, grid in GRIDS.items()}
    assert below_one == {"t-uniform": 3, "lambda": 5, "karras": 3}


@pytest.mark.parametrize("grid", ["lambda", "karras"])
@pytest.mark.parametrize("num_steps, error, match", [
    (0, ValueError, r"num_steps must lie in \[1, 10,000\]"),
    (10_001, ValueError, r"num_steps must lie in \[1, 10,000\]"),
    (2.5, TypeError, "num_steps must be an int, got float"),
    (True, TypeError, "num_steps must be an int, got bool"),
])
def test_bad_step_counts_are_refused(setup, grid, num_steps, error, match):
    with pytest.raises(error, match=match):
        GRIDS[grid](setup[0], num_steps)


def test_the_t_uniform_grid_has_at_most_T_steps(setup):
    with pytest.raises(ValueError, match="num_steps"):
        t_uniform_grid(setup[0], 1001)


# --- the denoiser that shows the eps-model to the ODE ---------------------------------------------------------------

def test_a_sigma_reaches_the_model_as_the_nearest_or_a_fractional_timestep(setup):
    schedule = setup[0]
    nearest, interpolate = (EpsDenoiser(GaussianEps(schedule), schedule, timestep=m) for m in ("nearest", "interpolate"))
    trained = schedule_sigmas(schedule)
    for t in (0, 1, 500, 999):                                             # a trained sigma: its own timestep
        assert nearest.t_of(trained[t].item()) == t and interpolate.t_of(trained[t].item()) == pytest.approx(t)
    between = (trained[10].log() * 0.3 + trained[11].log() * 0.7).exp().item()   # 70 % of the way in log sigma
    assert nearest.t_of(between) == 11 and interpolate.t_of(between) == pytest.approx(10.7)
    assert nearest.t_of(1e-6) == 0 and nearest.t_of(1e6) == 999            # outside: the end timesteps
    with pytest.raises(ValueError, match="timestep must be 'nearest' or 'interpolate'"):
        EpsDenoiser(GaussianEps(schedule), schedule, timestep="round")


def test_the_fractional_timestep_is_what_the_model_sees(setup):
    schedule = setup[0]

    class ShowsT(torch.nn.Module):
        def forward(self, x, t):
            return torch.zeros_like(x) + t.view(-1, 1, 1, 1)                 # eps = t: x0 = xbar - sigma t

    sigma = (schedule_sigmas(schedule)[10].log() * 0.4 + schedule_sigmas(schedule)[11].log() * 0.6).exp().item()
    xbar = torch.zeros(2, 1, 4, 4)
    for timestep, t in (("nearest", 11), ("interpolate", 10.6)):
        x0 = EpsDenoiser(ShowsT(), schedule, timestep=timestep)(xbar, sigma)
        torch.testing.assert_close(x0, torch.full_like(xbar, -sigma * t), rtol=1e-5, atol=1e-6)


# --- solvers --------------------------------------------------------------------------------------------------------

def test_the_solvers_limit_is_the_ode_solution_up_to_the_last_step(setup):
    schedule, xbar_T, _ = setup
    exact, limit = gaussian_flow_x0(schedule, xbar_T, C)
    # the shared last step scales x0 by c^2 / (c^2 + sigma_0^2) = 1 - 4e-4 here
    assert relative_error(limit, exact) < 5e-4
    # and a fine Heun run on the Karras grid lands on the limit
    assert relative_error(heun(GaussianDenoiser(C), xbar_T, karras_grid(schedule, 2000)), limit) < 1e-5


@pytest.mark.parametrize("clip_x0", [False, True])
def test_euler_on_the_t_uniform_grid_is_ddim_with_eta_zero(setup, clip_x0):
    schedule, _, x_T = setup
    x_T, model = 3 * x_T, GaussianEps(schedule)   # data of std 1.5 for the clip case: clipping happens
    ours = ode_sample(model, schedule, x_T.shape, solver=euler, grid=t_uniform_grid, num_steps=10, x_T=x_T,
                      clip_x0=clip_x0, progress=False)
    ddim = du.ddim_sample(model, schedule, x_T.shape, x_T=x_T, num_steps=10, eta=0.0, clip_x0=clip_x0, progress=False)
    torch.testing.assert_close(ours, ddim, atol=1e-5, rtol=1e-5)
    assert (ddim.abs() == 1).any() == clip_x0                                   # clipping did happen


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_one_step_of_each_solver_is_one_ddim_step(setup, grid):
    """num_steps = 1: from sigma_T straight into sigma = 0, first order for every solver: x0_hat at sigma_T."""
    schedule, xbar_T, _ = setup
    expected = GaussianDenoiser(C)(xbar_T, schedule_sigmas(schedule)[-1].item())
    for solver in SOLVERS.values():
        torch.testing.assert_close(solver(GaussianDenoiser(C), xbar_T, GRIDS[grid](schedule, 1)), expected)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_evaluations_are_counted(setup, solver, grid):
    schedule, xbar_T, _ = setup
    for num_steps in (1, 2, 7):
        denoiser = GaussianDenoiser(C)
        SOLVERS[solver](denoiser, xbar_T, GRIDS[grid](schedule, num_steps))
        assert denoiser.evaluations == COST[solver](num_steps)


# Steps (N, 2N, 4N) at which each solver's error has reached its asymptotic rate on this problem. DPM-Solver++(2M)
# needs more steps on the t-uniform grid: its step into t = 0 is long in lambda = -log(sigma) next to the one
# before, and the x0 extrapolation over it is poor until N ~ 40 (order 0.7 from 10 to 20 steps, 1.5 from 20 to 40).
ORDER_STEPS = {("dpm++2m", "t-uniform"): (40, 80, 160)}
ORDER_BANDS = {"euler": (0.95, 1.05), "heun": (1.9, 2.25), "dpm++2m": (1.8, 2.2)}


@pytest.mark.parametrize("solver", sorted(SOLVERS))
@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_measured_order(setup, solver, grid):
    schedule, xbar_T, _ = setup
    _, reference = gaussian_flow_x0(schedule, xbar_T, C)
    low, high = ORDER_BANDS[solver]
    errors = [relative_error(SOLVERS[solver](GaussianDenoiser(C), xbar_T, GRIDS[grid](schedule, n)), reference)
              for n in ORDER_STEPS.get((solver, grid), (20, 40, 80))]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(low <= order <= high for order in orders), (solver, grid, errors, orders)


def test_the_lambda_grid_fixes_dpm_solvers_slow_start(setup):
    """At 10 steps DPM-Solver++(2M) on the t-uniform grid is further off than DDIM; on the lambda grid 10x closer."""
    schedule, xbar_T, _ = setup
    _, reference = gaussian_flow_x0(schedule, xbar_T, C)
    error = {(s, g): relative_error(SOLVERS[s](GaussianDenoiser(C), xbar_T, GRIDS[g](schedule, 10)), reference)
             for s in ("euler", "dpm++2m") for g in ("t-uniform", "lambda")}
    assert error["dpm++2m", "t-uniform"] > error["euler", "t-uniform"]
    assert error["dpm++2m", "lambda"] < error["dpm++2m", "t-uniform"] / 10


# --- ode_sample: the sampler the notebooks and benchmarks call -------------------------------------------------------

@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_ode_sample_draws_nothing_and_restores_the_mode(setup, solver):
    schedule, _, x_T = setup
    model, generator = GaussianEps(schedule), torch.Generator().manual_seed(3)
    before = generator.get_state()
    model.train()
    run = lambda **kw: ode_sample(model, schedule, kw.pop("shape", x_T.shape), solver=SOLVERS[solver],
                                  grid=karras_grid, num_steps=5, progress=False, **kw)
    out = run(x_T=x_T, generator=generator)
    assert torch.equal(generator.get_state(), before) and model.training
    assert torch.equal(out, run(x_T=x_T)) and torch.isfinite(out).all()
    # without x_T the generator draws it, and the same seed gives the same samples
    a, b = (run(shape=(2, 1, 4, 4), generator=torch.Generator().manual_seed(1)) for _ in range(2))
    assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"num_steps": 0}, ValueError, r"num_steps must lie in \[1, 10,000\]"),
    ({"num_steps": 2.0}, TypeError, "num_steps must be an int"),
    ({"x_T": torch.zeros(2, 1, 4, 4)}, ValueError, r"x_T must have shape \(64, 1, 4, 4\)"),
    ({"x_T": torch.full((64, 1, 4, 4), float("nan"))}, ValueError, "x_T holds NaN or infinite values"),
    ({"timestep": "round"}, ValueError, "timestep must be 'nearest' or 'interpolate'"),
    ({"return_trajectory": True}, ValueError, "return_trajectory must be False"),
])
def test_bad_input_is_refused(setup, kwargs, error, match):
    schedule, _, x_T = setup
    with pytest.raises(error, match=match):
        ode_sample(GaussianEps(schedule), schedule, x_T.shape, solver=heun, grid=karras_grid, progress=False,
                   **{"x_T": x_T, "num_steps": 4, **kwargs})


def test_a_model_of_the_wrong_shape_is_refused(setup):
    schedule, _, x_T = setup

    class Flat(torch.nn.Module):
        def forward(self, x, t):
            return x.mean(dim=(1, 2, 3))                                         # (B,): would broadcast silently

    for solver in SOLVERS.values():
        with pytest.raises(ValueError, match="the model returned shape"):
            ode_sample(Flat(), schedule, x_T.shape, solver=solver, grid=lambda_uniform_grid, num_steps=3, x_T=x_T,
                       progress=False)


def test_sample_in_chunks_runs_ode_sample(setup):
    """ode_sample takes du.ddim_sample's arguments, so notebook_support.sampling splits it into chunks."""
    from notebook_support.sampling import sample_in_chunks

    schedule, _, x_T = setup
    kwargs = dict(solver=dpm_solver_2m, grid=lambda_uniform_grid, num_steps=4)
    whole = ode_sample(GaussianEps(schedule), schedule, x_T.shape, x_T=x_T, progress=False, **kwargs)
    chunked = sample_in_chunks(ode_sample, GaussianEps(schedule), schedule, x_T.shape[0], chunk_size=24,
                               image_shape=tuple(x_T.shape[1:]), x_T=x_T, progress=False, **kwargs)
    torch.testing.assert_close(chunked, whole)
