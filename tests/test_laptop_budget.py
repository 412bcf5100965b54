"""The power-function EMA (Karras et al. 2024) that notebook 3 writes out (lessons.unet) and benchmarks/laptop_budget.py
trains with: its exponent from sigma_rel, an average whose profile over the run has that relative width whatever the
run's length, post-hoc mixes of its snapshots, and the budget loop."""

import importlib.util
import math
import sys

import pytest
import torch

from lessons.unet import PowerEMA, gamma_of_sigma_rel, posthoc_coefficients, power_ema_weights
from notebook_support.environment import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))             # the script imports its neighbours
_spec = importlib.util.spec_from_file_location("laptop_budget", PROJECT_ROOT / "benchmarks" / "laptop_budget.py")
laptop_budget = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(laptop_budget)


@pytest.mark.parametrize("sigma_rel, gamma", [(0.05, 16.97), (0.10, 6.94)])   # the paper's pairs
def test_gamma_of_sigma_rel_solves_the_papers_relation(sigma_rel, gamma):
    found = gamma_of_sigma_rel(sigma_rel)
    assert math.isclose(found, gamma, abs_tol=0.01)
    assert math.isclose((found + 1) / ((found + 2) ** 2 * (found + 3)), sigma_rel ** 2, rel_tol=1e-9)


@pytest.mark.parametrize("bad", [0.0, -0.1, 0.29, 1.0])
def test_gamma_of_sigma_rel_refuses_widths_it_cannot_make(bad):
    with pytest.raises(ValueError, match="sigma_rel must lie in"):
        gamma_of_sigma_rel(bad)


@pytest.mark.parametrize("steps", [400, 4000])
@pytest.mark.parametrize("sigma_rel", [0.05, 0.2])
def test_power_ema_averages_a_fixed_fraction_of_the_run(sigma_rel, steps):
    """Fed the weights (t, t^2) at update t, the average holds the profile's first two moments: its width
    over the run length is sigma_rel (to 3 %), at 400 updates as at 4,000."""
    model = torch.nn.Linear(1, 2, bias=False).double()
    ema = PowerEMA(model, sigma_rel)
    for t in range(1, steps + 1):
        with torch.no_grad():
            model.weight.copy_(torch.tensor([[t], [t * t]], dtype=torch.float64))
        ema.update(model)
    mean, mean_square = ema.model.weight.flatten().tolist()
    assert math.isclose(math.sqrt(mean_square - mean ** 2) / steps, sigma_rel, rel_tol=0.03)
    assert ema.current_decay() < 1 and PowerEMA(model, sigma_rel).current_decay() == 0   # 1st: a copy


def test_power_ema_weights_are_the_average_the_loop_keeps():
    gamma, values = gamma_of_sigma_rel(0.1), torch.randn(300, generator=torch.Generator().manual_seed(0))
    model = torch.nn.Linear(1, 1, bias=False).double()
    ema = PowerEMA(model, 0.1)
    for value in values[:250]:
        with torch.no_grad():
            model.weight.fill_(value.item())
        ema.update(model)
    weights = power_ema_weights(gamma, 250, 300)                     # (300,) zero after update 250
    assert math.isclose(weights.sum(), 1, rel_tol=1e-12) and (weights[250:] == 0).all()
    assert math.isclose(ema.model.weight.item(), float((weights * values.double().numpy()).sum()), rel_tol=1e-9)


def test_posthoc_rebuilds_a_stored_average_exactly_and_a_width_between_closely():
    widths = (0.05, 0.2)
    snapshots = [(gamma_of_sigma_rel(s), t) for s in widths for t in range(100, 1001, 100)]
    exact, residual = posthoc_coefficients(snapshots, gamma_of_sigma_rel(0.2), 1000)
    assert residual < 1e-9 and math.isclose(exact[-1], 1, abs_tol=1e-6)        # the last snapshot of 0.2 itself
    between, residual = posthoc_coefficients(snapshots, gamma_of_sigma_rel(0.1), 1000)
    assert residual < 0.05 and math.isclose(between.sum(), 1, abs_tol=0.01)     # weights that still average


def test_the_loop_rebuilds_a_tracked_average_from_its_snapshots():
    """ManyEMATrainer: snapshots every num_steps / num_snapshots steps and at the last; the widest tracked EMA,
    rebuilt from the snapshots, is that EMA's weights (its last snapshot)."""
    import diffusion_utils as du
    from lessons.unet import UNet

    torch.manual_seed(0)
    model = UNet(base_channels=8, channel_mults=[1, 2], num_res_blocks=1, attention_resolutions=[], dropout=0.0)
    data = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    trainer = laptop_budget.ManyEMATrainer(model, du.DiffusionSchedule(), data, sigma_rels=(0.05, 0.2),
                                           num_snapshots=3, num_steps=7, batch_size=4, lr=1e-3)
    trainer.run(progress=False)
    assert [(s, t) for s, _, t, _ in trainer.snapshots] == [(0.05, 2), (0.2, 2), (0.05, 4), (0.2, 4), (0.05, 6),
                                                            (0.2, 6), (0.05, 7), (0.2, 7)]
    rebuilt, how = trainer.posthoc_model(0.2, (0.05, 0.2))
    assert how["relative_residual"] < 1e-9
    for key, value in trainer.power_emas[0.2].model.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_nonnegative_least_squares_finds_the_best_of_every_support():
    """Lawson-Hanson against brute force: the best unconstrained fit on each subset of columns whose coefficients
    are all >= 0 (the constrained optimum is one of them), on random problems where the plain fit goes negative."""
    import itertools

    import numpy as np

    rng = np.random.default_rng(0)
    negative_seen = 0
    for _ in range(30):
        matrix, target = rng.normal(size=(12, 5)), rng.normal(size=12)
        negative_seen += np.linalg.lstsq(matrix, target, rcond=None)[0].min() < 0
        best = np.linalg.norm(target)                                        # x = 0
        for size in range(1, 6):
            for support in itertools.combinations(range(5), size):
                x = np.linalg.lstsq(matrix[:, support], target, rcond=None)[0]
                if x.min() >= 0:
                    best = min(best, np.linalg.norm(matrix[:, support] @ x - target))
        found = laptop_budget.nonnegative_least_squares(matrix, target)
        assert found.min() >= 0
        assert math.isclose(np.linalg.norm(matrix @ found - target), best, rel_tol=1e-9, abs_tol=1e-12)
    assert negative_seen > 10                                                # the constraint mattered


@pytest.mark.parametrize("nonnegative", [False, True])
def test_posthoc_mixes_are_averages_whose_weights_sum_to_one(nonnegative):
    """A narrow width rebuilt from two broader ones: unconstrained, least squares would scale the mix up to reach
    the target's peak; the coefficients sum to 1 (to 1e-6) either way, and are >= 0 when asked."""
    gammas = [gamma_of_sigma_rel(s) for s in (0.02, 0.1)]
    snapshots = [(g, t) for t in range(200, 2001, 200) for g in gammas]
    coefficients, residual = posthoc_coefficients(
        snapshots, gamma_of_sigma_rel(0.05), 2000,
        solve=laptop_budget.nonnegative_least_squares if nonnegative else None)
    assert math.isclose(coefficients.sum(), 1, abs_tol=1e-6) and residual < 0.3
    assert (coefficients.min() >= 0) == nonnegative                         # the free fit takes negative ones


def test_a_budget_run_stops_when_the_clock_has_used_it_and_decays_lr_to_zero_with_it(monkeypatch):
    """budget_seconds: steps until the process clock (here a fake one, 1 s per reading) has used the budget; the
    cosine decay follows the budget used after the warm-up, the snapshots its quarters, the last at the last step."""
    import diffusion_utils as du
    from lessons.unet import UNet

    ticks = iter(range(10_000))
    monkeypatch.setattr(laptop_budget, "cpu_seconds", lambda: float(next(ticks)))
    torch.manual_seed(0)
    model = UNet(base_channels=8, channel_mults=[1, 2], num_res_blocks=1, attention_resolutions=[], dropout=0.0)
    data = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    trainer = laptop_budget.ManyEMATrainer(model, du.DiffusionSchedule(), data, sigma_rels=(0.05,), num_snapshots=4,
                                           budget_seconds=12, num_steps=1000, batch_size=4, lr=1e-3, warmup_steps=2,
                                           lr_decay="cosine")
    rates = []
    original = trainer.learning_rate
    monkeypatch.setattr(trainer, "learning_rate", lambda step: rates.append(original(step)) or rates[-1])
    trainer.run(progress=False)
    assert trainer.num_steps == 12 and len(trainer.losses) == 12             # one clock reading per step
    assert rates[:2] == [5e-4, 1e-3] and all(a > b for a, b in zip(rates[2:], rates[3:]))
    assert rates[-1] < 0.05 * 1e-3                                           # cosine near 0 as the budget ends
    assert [t for _, _, t, _ in trainer.snapshots] == [3, 6, 9, 12]
    with pytest.raises(ValueError, match="budget_seconds must be > 0"):
        laptop_budget.ManyEMATrainer(model, du.DiffusionSchedule(), data, budget_seconds=0, num_steps=10)
    with pytest.raises(ValueError, match="cannot resume"):
        trainer.run(progress=False, resume=object())


def test_edm_coefficients_on_the_flow_path_are_edms_table_1():
    """With sigma = tau / (1 - tau) and EDM's noisy image x = x_tau / (1 - tau): c_in x = c_in' x_tau,
    c_skip x = c_skip' x_tau and c_out = c_out' for EDM's c_in = 1 / sqrt(sigma^2 + sd^2),
    c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2); finite at tau = 1."""
    tau, sigma_data = torch.tensor([0.05, 0.3, 0.5, 0.9], dtype=torch.float64), 0.6
    sigma = tau / (1 - tau)
    c_in, c_skip, c_out = (c.flatten() for c in laptop_budget.edm_coefficients(tau, sigma_data))
    root = (sigma ** 2 + sigma_data ** 2).sqrt()
    torch.testing.assert_close(c_in, 1 / root / (1 - tau))
    torch.testing.assert_close(c_skip, sigma_data ** 2 / root ** 2 / (1 - tau))
    torch.testing.assert_close(c_out, sigma * sigma_data / root)
    at_noise = laptop_budget.edm_coefficients(torch.ones(1, dtype=torch.float64), sigma_data)
    assert [c.item() for c in at_noise] == [1.0, 0.0, sigma_data]         # D = sd F(x_tau): no skip from noise


class _Perfect(torch.nn.Module):
    """F that outputs EDM's training target for known x0: the network every EDM loss term asks for."""

    def __init__(self, x0: torch.Tensor, sigma_data: float):
        super().__init__()
        self.x0, self.sigma_data, self.inputs = x0, sigma_data, []

    def forward(self, scaled: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.inputs.append((scaled, t))
        c_in, c_skip, c_out = laptop_budget.edm_coefficients(t / 1000, self.sigma_data)
        return (self.x0 - c_skip * scaled / c_in) / c_out


def test_edm_read_as_a_flow_gives_the_straight_paths_velocity():
    """EDMAsFlow: the denoiser D = x0 makes the velocity (x_tau - x0) / tau = eps - x0, the flow's target."""
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 28, 28, generator=generator) * 2 - 1
    eps = torch.randn(4, 1, 28, 28, generator=generator)
    tau = torch.tensor([0.02, 0.3, 0.7, 1.0])
    x_tau = (1 - tau.view(-1, 1, 1, 1)) * x0 + tau.view(-1, 1, 1, 1) * eps
    velocity = laptop_budget.EDMAsFlow(_Perfect(x0, 0.6), 0.6)(x_tau, 1000 * tau)
    torch.testing.assert_close(velocity, eps - x0, rtol=1e-4, atol=1e-4)


def test_edm_loss_is_zero_for_the_perfect_network_and_draws_edms_noise_levels():
    """EDMTrainer's loss: 0 for the network that outputs its target; the network is told the flow's clock 1000 tau,
    with logit tau = ln sigma ~ N(-1.2, 1.2^2) (mean and sd within 0.1 over 4,096 draws)."""
    import diffusion_utils as du
    from lessons.unet import UNet

    data = torch.rand(4096, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    model = UNet(base_channels=8, channel_mults=[1, 2], num_res_blocks=1, attention_resolutions=[], dropout=0.0)
    trainer = laptop_budget.EDMTrainer(model, du.DiffusionSchedule(), data, sigma_data=0.6, num_steps=1,
                                       batch_size=4096, prediction="flow")
    perfect = _Perfect(data, 0.6)
    trainer.model = perfect
    assert trainer.loss(data, {}).item() < 1e-8
    (_, t), = perfect.inputs
    log_sigma = torch.logit(t / 1000)                                     # (4096,)
    assert abs(log_sigma.mean() - laptop_budget.EDM_LN_SIGMA_MEAN) < 0.1
    assert abs(log_sigma.std() - laptop_budget.EDM_LN_SIGMA_SD) < 0.1
    with pytest.raises(ValueError, match="sigma_data must be > 0"):
        laptop_budget.EDMTrainer(model, du.DiffusionSchedule(), data, sigma_data=0.0, num_steps=1)


def test_quality_paired_refuses_runs_not_drawn_from_one_x_t(monkeypatch):
    """benchmarks/quality.py paired: two runs pair only when both were drawn with the same seed and chunk size (the
    same x_T for digit i); otherwise a ValueError before any measuring."""
    import quality

    records = {"a": {"drawn_by": {"seed": 0, "chunk": 128}}, "b": {"drawn_by": {"seed": 1, "chunk": 128}},
               "c": {"drawn_by": {"seed": 0, "chunk": 64}}, "old": {}}
    monkeypatch.setattr(quality, "load_samples", lambda run, n, seed: (torch.zeros(n, 1, 28, 28), records[run]))
    for other, key in (("b", "seed"), ("c", "chunk"), ("old", "seed")):
        with pytest.raises(ValueError, match=f"not drawn from one x_T: their {key}"):
            quality.paired("a", other, 16, 0)
