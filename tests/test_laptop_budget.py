"""benchmarks/laptop_budget.py's power-function EMA (Karras et al. 2024): its exponent from sigma_rel, and an
average whose profile over the run has that relative width whatever the run's length."""

import importlib.util
import math
import sys

import pytest
import torch

from notebook_support.environment import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))             # the script imports its neighbours
_spec = importlib.util.spec_from_file_location("laptop_budget", PROJECT_ROOT / "benchmarks" / "laptop_budget.py")
laptop_budget = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(laptop_budget)


@pytest.mark.parametrize("sigma_rel, gamma", [(0.05, 16.97), (0.10, 6.94)])   # the paper's pairs
def test_gamma_of_sigma_rel_solves_the_papers_relation(sigma_rel, gamma):
    found = laptop_budget.gamma_of_sigma_rel(sigma_rel)
    assert math.isclose(found, gamma, abs_tol=0.01)
    assert math.isclose((found + 1) / ((found + 2) ** 2 * (found + 3)), sigma_rel ** 2, rel_tol=1e-9)


@pytest.mark.parametrize("bad", [0.0, -0.1, 0.29, 1.0])
def test_gamma_of_sigma_rel_refuses_widths_it_cannot_make(bad):
    with pytest.raises(ValueError, match="sigma_rel must lie in"):
        laptop_budget.gamma_of_sigma_rel(bad)


@pytest.mark.parametrize("steps", [400, 4000])
@pytest.mark.parametrize("sigma_rel", [0.05, 0.2])
def test_power_ema_averages_a_fixed_fraction_of_the_run(sigma_rel, steps):
    """Fed the weights (t, t^2) at update t, the average holds the profile's first two moments: its width
    over the run length is sigma_rel (to 3 %), at 400 updates as at 4,000."""
    model = torch.nn.Linear(1, 2, bias=False).double()
    ema = laptop_budget.PowerEMA(model, sigma_rel)
    for t in range(1, steps + 1):
        with torch.no_grad():
            model.weight.copy_(torch.tensor([[t], [t * t]], dtype=torch.float64))
        ema.update(model)
    mean, mean_square = ema.model.weight.flatten().tolist()
    assert math.isclose(math.sqrt(mean_square - mean ** 2) / steps, sigma_rel, rel_tol=0.03)
    assert ema.current_decay() < 1 and laptop_budget.PowerEMA(model, sigma_rel).current_decay() == 0   # 1st: a copy
