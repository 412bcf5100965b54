"""Notebook 5's targets (lessons.prediction): eps, x0 and v on the DDPM path, the flow's straight path
and its samplers, the AsEps wrapper, and the loop that trains all four.

The flow samplers are checked on data x0 ~ N(0, c^2 I), whose velocity is known: on x_tau = (1 - tau) x0 + tau eps
the pair (eps - x0, x_tau) is jointly Gaussian with Cov = tau - (1 - tau) c^2 and Var(x_tau) = V(tau) = (1 - tau)^2 c^2
+ tau^2, so u(x, tau) = E[eps - x0 | x_tau = x] = (tau - (1 - tau) c^2) / V(tau) * x = V'(tau) / (2 V(tau)) * x. The ODE
dx/dtau = u is then solved by x(tau) = x_1 sqrt(V(tau) / V(1)), so from tau = 1 to 0: x_0 = c x_1 (also checked by
integrating it with many Heun steps).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import diffusion_utils as du
from lessons.prediction import (BAKE_OFF_SAMPLERS, FLOW_TIME_SAMPLINGS, FLOW_TIME_SCALE, PREDICTIONS, AsEps,
                                PredictionTrainer, check_prediction, ddpm_target, eps_and_x0_from_output, flow_euler_step,
                                flow_heun_step, flow_matching_loss, flow_path, flow_sample, min_snr_weight, prediction_loss,
                                sampling_network, signal_and_noise, tau_grid, train_prediction, variant_config)
from lessons.unet import UNet, train_recipe
from notebook_support.checkpoints import validate_config
from notebook_support.environment import PROJECT_ROOT
from notebook_support.export import notebook_config

SMALL_UNET = dict(base_channels=8, channel_mults=[1, 2], num_res_blocks=1, attention_resolutions=[], dropout=0.0)
C = 0.5   # the Gaussian data's standard deviation


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def some_eps(x, t):
    """A fixed nonlinear eps-model that depends on t: a loss that drew other t would differ."""
    return torch.tanh(x) * (1 + t.view(-1, 1, 1, 1) / 500) - 0.1 * x.roll(1, dims=-1)   # (B, 1, H, W)


class Recorder(torch.nn.Module):
    """Returns a fixed function of (x, t) and records each call's t and training flag (no weights of its own)."""

    def __init__(self, fn=some_eps):
        super().__init__()
        self.fn, self.times, self.modes = fn, [], []

    def forward(self, x, t):
        self.times.append(t.clone())
        self.modes.append(self.training)
        return self.fn(x, t)


def abar(schedule) -> torch.Tensor:
    """alphabar_t in float64 from the betas alone: 1 - abar without float32 cancellation at t = 0 (SNR ~ 1e4)."""
    return torch.cumprod(1 - schedule.betas.double(), 0)                            # (T,)


def converted(schedule, prediction: str) -> Recorder:
    """some_eps asked for x0 or v instead, written out here in float64 (not with lessons.prediction)."""
    def output(x, t):
        alpha, sigma = abar(schedule)[t].sqrt().view(-1, 1, 1, 1), (1 - abar(schedule)[t]).sqrt().view(-1, 1, 1, 1)
        eps = some_eps(x, t).double()
        x0 = (x - sigma * eps) / alpha                                               # Eq. 15
        return (x0 if prediction == "x0" else alpha * eps - sigma * x0).float()     # (B, 1, H, W)
    return Recorder(output)


# --- the DDPM path: targets, conversions, losses, weights ------------------------------------


@pytest.mark.parametrize("prediction, gamma", [("eps", None), ("eps", 5.0), ("x0", 5.0), ("v", 5.0)])
def test_each_target_with_min_snr_in_its_form_is_diffusion_utils_eps_loss(prediction, gamma):
    """Same draws as du.diffusion_loss; an x0- or v-model that stands for some_eps, with min-SNR in its target's
    form (min_snr_weight's docstring), has the eps-model's min-SNR loss: one weighting, three ways to write it."""
    schedule, x0 = du.DiffusionSchedule(), torch.rand(64, 1, 8, 8, generator=gen(0)) * 2 - 1
    model = Recorder() if prediction == "eps" else converted(schedule, prediction)
    ours = prediction_loss(model, schedule, x0, prediction, generator=gen(1), min_snr_gamma=gamma)
    reference = du.diffusion_loss(Recorder(), schedule, x0, generator=gen(1), min_snr_gamma=gamma)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=0)
    snr = abar(schedule)[model.times[0]] / (1 - abar(schedule)[model.times[0]])    # (64,) of the t drawn
    assert (snr > 5.0).any() and (snr < 5.0).any()                                   # both sides of the clip


@pytest.mark.parametrize("gamma", [0, -1.0, float("nan"), "5"])
def test_prediction_loss_refuses_a_min_snr_gamma_that_is_not_a_positive_number(gamma):
    with pytest.raises(ValueError, match="min_snr_gamma"):
        prediction_loss(Recorder(), du.DiffusionSchedule(), torch.zeros(4, 1, 4, 4), "x0", min_snr_gamma=gamma)


@pytest.mark.parametrize("wrong", [lambda x, t: x[:1], lambda x, t: x.flatten(1).mean(1, keepdim=True)])
def test_the_losses_refuse_an_output_that_would_broadcast(wrong):
    x0 = torch.zeros(4, 1, 4, 4)                                                     # (1, 1, 4, 4) and (4, 1) broadcast
    for prediction in ("eps", "x0", "v"):
        with pytest.raises(ValueError, match="the model returned shape"):
            prediction_loss(Recorder(wrong), du.DiffusionSchedule(), x0, prediction)
    with pytest.raises(ValueError, match="the model returned shape"):
        flow_matching_loss(Recorder(wrong), x0)


def test_each_target_fed_back_gives_the_true_eps_and_x0():
    schedule, g = du.DiffusionSchedule(), gen(0)
    t = torch.cat([torch.tensor([0, 999]), torch.randint(0, 1000, (30,), generator=g)])   # (32,) both ends too
    x0, eps = torch.rand(32, 1, 8, 8, generator=g) * 2 - 1, torch.randn(32, 1, 8, 8, generator=g)
    alpha, sigma = signal_and_noise(schedule, t)                                     # (32, 1, 1, 1) each
    ab = abar(schedule)[t].view(-1, 1, 1, 1)                                         # (32, 1, 1, 1)
    torch.testing.assert_close(alpha.double(), ab.sqrt()), torch.testing.assert_close(sigma.double(), (1 - ab).sqrt())
    torch.testing.assert_close(ddpm_target("v", x0, eps, alpha, sigma).double(),
                               ab.sqrt() * eps.double() - (1 - ab).sqrt() * x0.double(), rtol=0, atol=1e-6)
    x_t = du.q_sample(schedule, x0, t, eps)                                          # (32, 1, 8, 8)
    # float32 round-off of x_t (~1e-7) is divided by alpha or sigma (sigma_0 = 0.01) in the conversions
    atol = 2e-6 / torch.minimum(alpha, sigma)                                        # (32, 1, 1, 1)
    for prediction in ("eps", "x0", "v"):
        eps_back, x0_back = eps_and_x0_from_output(prediction, ddpm_target(prediction, x0, eps, alpha, sigma), x_t,
                                                   alpha, sigma)
        assert ((eps_back - eps).abs() <= atol).all() and ((x0_back - x0).abs() <= atol).all(), prediction
    for convert in (ddpm_target, eps_and_x0_from_output):                          # the flow has no x_t, eps, x0
        with pytest.raises(ValueError, match="DDPM path"):
            convert("flow", x0, eps, alpha, sigma)


# --- the flow: path, loss, samplers ------------------------------------------------------------


def test_the_straight_path_its_ends_and_its_velocity():
    x0, eps = torch.randn(3, 1, 4, 4, generator=gen(0)).double(), torch.randn(3, 1, 4, 4, generator=gen(1)).double()
    assert torch.equal(flow_path(x0, eps, torch.zeros(3, dtype=torch.float64))[0], x0)
    assert torch.equal(flow_path(x0, eps, torch.ones(3, dtype=torch.float64))[0], eps)
    tau, h = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), 1e-4               # one tau per image
    x_tau, velocity = flow_path(x0, eps, tau)
    torch.testing.assert_close(x_tau[1], 0.5 * (x0[1] + eps[1]))
    finite_difference = (flow_path(x0, eps, tau + h)[0] - flow_path(x0, eps, tau - h)[0]) / (2 * h)
    torch.testing.assert_close(velocity, finite_difference, rtol=0, atol=1e-9)


def test_flow_matching_loss_is_the_velocity_mse_with_its_draws():
    x0, g = torch.rand(8, 1, 4, 4, generator=gen(0)) * 2 - 1, gen(1)
    tau, eps = torch.rand(8, generator=g), torch.randn(x0.shape, generator=g)       # the loss's draws, in its order
    x_tau, model = (1 - tau.view(-1, 1, 1, 1)) * x0 + tau.view(-1, 1, 1, 1) * eps, Recorder()
    expected = (some_eps(x_tau, FLOW_TIME_SCALE * tau) - (eps - x0)).pow(2).mean()
    torch.testing.assert_close(flow_matching_loss(model, x0, generator=gen(1)), expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(model.times[0], FLOW_TIME_SCALE * tau)               # the U-Net's clock: 1000 tau
    # a model that knows x0 outputs the exact velocity (x_tau - x0) / tau: the loss is round-off
    oracle = Recorder(lambda x, t: (x.double() - x0) / (t.double() / FLOW_TIME_SCALE).view(-1, 1, 1, 1))
    assert flow_matching_loss(oracle, x0, generator=gen(1)).item() < 1e-9


def test_logit_normal_time_sampling_draws_sigmoid_of_a_normal_and_nothing_else_changes():
    x0 = torch.rand(8, 1, 4, 4, generator=gen(0)) * 2 - 1
    g = gen(1)
    tau = torch.sigmoid(torch.randn(8, generator=g))                                 # SD3's tau, then eps, in that order
    eps = torch.randn(x0.shape, generator=g)
    x_tau, model = (1 - tau.view(-1, 1, 1, 1)) * x0 + tau.view(-1, 1, 1, 1) * eps, Recorder()
    expected = (some_eps(x_tau, FLOW_TIME_SCALE * tau) - (eps - x0)).pow(2).mean()
    loss = flow_matching_loss(model, x0, time_sampling="logit-normal", generator=gen(1))
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(model.times[0], FLOW_TIME_SCALE * tau)
    # the default is the uniform tau of the bake-off, draw for draw
    torch.testing.assert_close(flow_matching_loss(Recorder(), x0, generator=gen(1)),
                               flow_matching_loss(Recorder(), x0, time_sampling="uniform", generator=gen(1)), rtol=0, atol=0)
    # over many draws: the middle of the path more often than uniform, the ends less, symmetric about 1/2
    many = Recorder(lambda x, t: x)
    flow_matching_loss(many, torch.zeros(20000, 1, 1, 1), time_sampling="logit-normal", generator=gen(2))
    tau = many.times[0] / FLOW_TIME_SCALE
    assert abs(tau.mean().item() - 0.5) < 0.01 and ((tau > 0.25) & (tau < 0.75)).float().mean().item() > 0.65
    assert tau.min().item() > 0 and tau.max().item() < 1
    with pytest.raises(ValueError, match="time_sampling must be one of"):
        flow_matching_loss(Recorder(), x0, time_sampling="lognormal")
    assert FLOW_TIME_SAMPLINGS == ("uniform", "logit-normal")


def gaussian_velocity(x, t):
    """The exact velocity of N(0, C^2 I) data (module docstring)."""
    tau = (t.double() / FLOW_TIME_SCALE).view(-1, 1, 1, 1)                           # (B, 1, 1, 1)
    return (tau - (1 - tau) * C ** 2) / ((1 - tau) ** 2 * C ** 2 + tau ** 2) * x


@pytest.fixture(scope="module")
def x_T():
    return torch.randn(64, 1, 4, 4, generator=gen(0), dtype=torch.float64)          # (64, 1, 4, 4) tau = 1


def solve(x_T, step, num_steps, model=None):
    model = model or Recorder(gaussian_velocity)
    return flow_sample(model, None, x_T.shape, x_T=x_T, num_steps=num_steps, step=step, device="cpu", progress=False)


def test_fine_heun_reaches_the_exact_solution(x_T):
    # Heun's own error at 1000 steps is ~1e-6; the float32 velocities add round-off of ~6e-7
    torch.testing.assert_close(solve(x_T, flow_heun_step, 1000), C * x_T, rtol=0, atol=5e-6)


@pytest.mark.parametrize("step, order, steps", [(flow_euler_step, 1, [10, 20, 40, 80]),
                                                (flow_heun_step, 2, [10, 20, 40, 80])])
def test_euler_is_first_order_and_heun_second(x_T, step, order, steps):
    errors = [(solve(x_T, step, n) - C * x_T).pow(2).mean().sqrt().item() for n in steps]
    rates = [math.log2(a / b) for a, b in zip(errors, errors[1:])]                   # error ~ N^-order
    assert all(abs(rate - order) < 0.25 for rate in rates), (errors, rates)


def test_flow_sample_calls_the_model_at_1000_tau_and_uses_x_T(x_T):
    euler, heun = Recorder(gaussian_velocity), Recorder(gaussian_velocity)
    solve(x_T, flow_euler_step, 4, euler), solve(x_T, flow_heun_step, 4, heun)
    assert [t.unique().tolist() for t in euler.times] == [[1000.0], [750.0], [500.0], [250.0]]
    # Heun: both ends of each step, except the last (tau_next = 0): 2N - 1 calls
    assert [t.unique().item() for t in heun.times] == [1000.0, 750.0, 750.0, 500.0, 500.0, 250.0, 250.0]
    assert all(t.shape == (64,) for t in euler.times + heun.times)
    # x_T given is the start (test_fine_heun_reaches_the_exact_solution: c x_T); without it, it is drawn from generator
    drawn = flow_sample(Recorder(gaussian_velocity), None, (4, 1, 4, 4), num_steps=3, generator=gen(5), device="cpu",
                        progress=False)
    torch.testing.assert_close(drawn, solve(torch.randn(4, 1, 4, 4, generator=gen(5)), flow_euler_step, 3))


def test_tau_grid_runs_from_noise_to_data_and_crowds_the_data_end_as_rho_grows():
    assert tau_grid(4) == [1.0, 0.75, 0.5, 0.25, 0.0] and tau_grid(1, 3) == [1.0, 0.0]
    assert tau_grid(4, 2) == [1.0, 0.5625, 0.25, 0.0625, 0.0]                        # (1 - i/4)^2
    for rho in (1, 1.5, 2, 7):
        taus = tau_grid(10, rho)
        steps = [a - b for a, b in zip(taus, taus[1:])]                                # (10,) widths
        assert taus[0] == 1 and taus[-1] == 0 and all(w > 0 for w in steps), rho
        assert steps[-1] <= steps[0] and (rho == 1) == math.isclose(steps[-1], steps[0]), rho
    # a larger rho: a narrower last step (the data end) and a wider first one (the noise end)
    assert tau_grid(10, 3)[-2] < tau_grid(10, 2)[-2] and tau_grid(10, 3)[1] < tau_grid(10, 2)[1]
    for num_steps, rho, match in [(0, 1, "num_steps"), (2.0, 1, "num_steps"), (True, 1, "num_steps"),
                                  (10**9, 1, "num_steps must lie in"),            # refused before a list is built
                                  (4, 0.5, "rho"), (4, float("nan"), "rho"), (4, True, "rho"), (4, "2", "rho")]:
        with pytest.raises(ValueError, match=match):
            tau_grid(num_steps, rho)


def test_flow_sample_walks_the_grid_of_rho_and_heun_stays_second_order_on_it(x_T):
    heun = Recorder(gaussian_velocity)
    flow_sample(heun, None, x_T.shape, x_T=x_T, num_steps=2, step=flow_heun_step, rho=2, device="cpu", progress=False)
    assert [t.unique().item() for t in heun.times] == [1000.0, 250.0, 250.0]           # tau = 1, 1/4, (1/4,) 0
    errors = [(flow_sample(Recorder(gaussian_velocity), None, x_T.shape, x_T=x_T, num_steps=n, step=flow_heun_step,
                           rho=2, device="cpu", progress=False) - C * x_T).pow(2).mean().sqrt().item()
              for n in (10, 20, 40, 80)]
    rates = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(abs(rate - 2) < 0.25 for rate in rates), (errors, rates)


@pytest.mark.parametrize("kwargs, match", [({"num_steps": 0}, "num_steps"), ({"num_steps": True}, "num_steps"),
                                           ({"num_steps": 2.0}, "num_steps"), ({"x_T": torch.zeros(3, 1, 4, 4)}, "x_T"),
                                           ({"rho": 0}, "rho"), ({"return_trajectory": True}, "trajectory")])
def test_flow_sample_refuses_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        flow_sample(Recorder(), None, (2, 1, 4, 4), device="cpu", progress=False, **kwargs)


def test_flow_sample_finds_its_device_and_samples_in_eval_mode():
    """The device: the model's first weight, else x_T's, else the CPU ("meta" tensors stand for a second device)."""
    model, on_meta = Recorder(lambda x, t: 0.1 * x), torch.zeros(2, 1, 4, 4, device="meta")
    sample = lambda model, **kwargs: flow_sample(model, None, (2, 1, 4, 4), num_steps=2, progress=False, **kwargs)
    assert sample(model).device.type == "cpu" and sample(model, x_T=on_meta).device.type == "meta"
    model.weight = torch.nn.Parameter(torch.zeros((), device="meta"))
    assert sample(model, x_T=torch.zeros(2, 1, 4, 4)).device.type == "meta"
    for training in (True, False):                                                   # dropout off, the flag restored
        model.modes.clear()
        assert sample(model.train(training)).device.type == "meta" and model.training == training
        assert model.modes == [False, False]
    failing = Recorder(lambda x, t: 1 / 0).train()
    with pytest.raises(ZeroDivisionError):
        sample(failing)
    assert failing.modes == [False] and failing.training                             # restored on error too


def test_each_bake_off_sampler_calls_the_network_as_often_as_it_says():
    schedule = du.DiffusionSchedule()
    assert {p for *_, targets in BAKE_OFF_SAMPLERS.values() for p in targets} == set(PREDICTIONS)   # all four
    for name, (sampler, kwargs, calls, targets) in BAKE_OFF_SAMPLERS.items():
        for prediction in targets:
            model = Recorder(lambda x, t: 0.1 * x)                                   # counts its calls in .times
            network = sampling_network(model, schedule, prediction)
            assert (network is model) == (prediction == "flow") and getattr(network, "model", model) is model
            digits = sampler(network, schedule, (2, 1, 8, 8), generator=gen(0), progress=False, **kwargs)
            assert digits.shape == (2, 1, 8, 8) and digits.isfinite().all(), (name, prediction)
            assert len(model.times) == calls and all(t.shape == (2,) for t in model.times), (name, prediction)


# --- AsEps: x0- and v-models for the eps samplers ------------------------------------------------


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_as_eps_makes_an_x0_or_v_model_the_eps_model_it_stands_for(prediction):
    schedule = du.DiffusionSchedule()
    wrapped = AsEps(converted(schedule, prediction), schedule, prediction)
    x, t = torch.randn(6, 1, 8, 8, generator=gen(0)), torch.tensor([0, 1, 10, 300, 700, 999])
    torch.testing.assert_close(wrapped(x, t), some_eps(x, t), rtol=0, atol=1e-4)    # x0 -> eps: / sigma_0 = 0.01
    x_T = torch.randn(6, 1, 8, 8, generator=gen(1))
    ours = du.ddim_sample(wrapped, schedule, x_T.shape, x_T=x_T, num_steps=10, progress=False)
    reference = du.ddim_sample(Recorder(), schedule, x_T.shape, x_T=x_T, num_steps=10, progress=False)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-4)


@pytest.mark.parametrize("bad", ["flow", "EPS", "eps ", None, 1, ["eps"]])
def test_as_eps_min_snr_weight_and_check_prediction_refuse_what_they_cannot_convert(bad):
    with pytest.raises(ValueError, match="flow_sample" if bad == "flow" else "prediction must be one of"):
        AsEps(Recorder(), du.DiffusionSchedule(), bad)
    with pytest.raises(ValueError, match="plain MSE" if bad == "flow" else "prediction must be one of"):
        min_snr_weight(bad, torch.ones(3), 5.0)
    if bad != "flow":
        with pytest.raises(ValueError, match="prediction must be one of"):
            check_prediction(bad)
    assert [check_prediction(p) for p in PREDICTIONS] == list(PREDICTIONS)


# --- the loop that trains all four ----------------------------------------------------------------


DATA = torch.rand(64, 1, 8, 8, generator=gen(0)) * 2 - 1                             # (64, 1, 8, 8) in [-1, 1]
RECIPE = dict(batch_size=8, lr=2e-3, warmup_steps=2, lr_decay="cosine", seed=1, progress=False)


def test_the_eps_loop_is_notebook_3s_recipe_loop_bit_for_bit():
    runs = []
    for loop in (train_recipe, train_prediction):
        torch.manual_seed(0)                                                         # same initial weights and dropout
        model = UNet(image_size=8, **{**SMALL_UNET, "dropout": 0.1})
        ema, losses = loop(model, du.DiffusionSchedule(), DATA, num_steps=3, min_snr_gamma=5.0, **RECIPE)
        runs.append((model, ema, losses))
    (model_a, ema_a, losses_a), (model_b, ema_b, losses_b) = runs
    assert losses_a == losses_b
    for a, b in ((model_a, model_b), (ema_a, ema_b)):
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_every_target_trains_and_the_flow_refuses_min_snr():
    first_losses = {}
    for prediction in PREDICTIONS:
        torch.manual_seed(0)
        model = UNet(image_size=8, **SMALL_UNET)
        before = copy.deepcopy(model.state_dict())
        _, losses = train_prediction(model, du.DiffusionSchedule(), DATA, prediction=prediction, num_steps=2,
                                     min_snr_gamma=None if prediction == "flow" else 5.0, **RECIPE)
        assert len(losses) == 2 and all(math.isfinite(v) for v in losses), prediction
        assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items()), prediction
        first_losses[prediction] = losses[0]
    assert len(set(first_losses.values())) == 4                                      # the target did change the loss
    with pytest.raises(ValueError, match="min_snr_gamma"):
        PredictionTrainer(UNet(image_size=8, **SMALL_UNET), du.DiffusionSchedule(), DATA, prediction="flow",
                          num_steps=1, min_snr_gamma=5.0)
    with pytest.raises(ValueError, match="prediction must be one of"):
        train_prediction(UNet(image_size=8, **SMALL_UNET), du.DiffusionSchedule(), DATA, prediction="score",
                         num_steps=1, progress=False)
    for prediction, sampling in (("eps", "logit-normal"), ("flow", "beta")):       # the flow's alone; known names only
        with pytest.raises(ValueError, match="flow_time_sampling must be one of"):
            PredictionTrainer(UNet(image_size=8, **SMALL_UNET), du.DiffusionSchedule(), DATA, prediction=prediction,
                              flow_time_sampling=sampling, num_steps=1)
    torch.manual_seed(0)
    _, losses = train_prediction(UNet(image_size=8, **SMALL_UNET), du.DiffusionSchedule(), DATA, prediction="flow",
                                 flow_time_sampling="logit-normal", num_steps=2, **RECIPE)
    assert len(losses) == 2 and losses[0] != first_losses["flow"]                    # the same draws, other tau


def test_variant_configs_of_the_notebooks_bake_off_config():
    base = notebook_config(PROJECT_ROOT / "5_what_to_predict.ipynb", "BAKE_OFF_CONFIG")
    untouched = copy.deepcopy(base)
    for prediction in PREDICTIONS:
        config = variant_config(base, prediction, seed=7)
        assert config["prediction"] == prediction and config["seed"] == 7
        assert config["min_snr_gamma"] == (None if prediction == "flow" else base["min_snr_gamma"])
        assert {**config, "prediction": 0, "seed": 0, "min_snr_gamma": 0} == \
            {**base, "prediction": 0, "seed": 0, "min_snr_gamma": 0}                 # nothing else changed
        assert variant_config(base, prediction)["seed"] == base["seed"]
        validate_config(variant_config(base, prediction), UNet, train_prediction)
    assert base == untouched and base["min_snr_gamma"] is not None
    with pytest.raises(ValueError, match="prediction must be one of"):
        variant_config(base, "score")
