"""Notebook 3's laptop recipe trained for a fixed CPU time in float32, with several weight averages
(EMAs) kept side by side, each measured at the headline n. Run by hand on an otherwise idle machine:

    python benchmarks/laptop_budget.py --name base                 # 15 minutes, the recipe as it is
    python benchmarks/laptop_budget.py --name lr2e-3 --set lr=2e-3 --minutes 10
    python benchmarks/laptop_budget.py --name flow --set prediction=flow --set flow_time_sampling=logit-normal
    python benchmarks/laptop_budget.py --name base --sigma-rels 0.05 0.1 0.2 --posthoc 0.1 0.15 --n 2000

The budget is CPU time, not steps: the loop trains until the process clock (time.process_time() over the
torch threads; on an idle machine it is the wall time; run it alone, since a busy machine still costs it
steps) has used --minutes, and the cosine lr decay follows the fraction of the budget used, so it ends at 0
with the budget whatever the machine's speed. --set prediction=x0 | v | flow trains notebook 5's objectives
(lessons.prediction.PredictionTrainer).

Besides the recipe's EMA (LAPTOP_CONFIG's: a power-function EMA of width ema_sigma_rel; the trials filed
before it had one had a fixed decay with warm-up, recipe_ema_decay), the loop keeps power-function EMAs
(Karras et al. 2024, "Analyzing and improving the training dynamics of diffusion models", section 3): after n updates
the decay is (1 - 1/n)^(gamma + 1), so each averages a fixed *fraction* of the run, its relative width
sigma_rel, however long the run is. Every average of the one run draws n digits from the same x_T
(benchmarks/quality.py's chunks) with notebook 3's Heun-10 on the lambda-uniform grid, x0 clipped (the flow:
notebook 5's Heun-10), and is measured beside the real-data floor and paired with the recipe's EMA (the FID
difference bootstrapped over the shared digits). `--posthoc S` rebuilds, after training, the power EMA of
width S from evenly spaced snapshots of the narrowest and widest tracked EMAs alone (post-hoc EMA, the
paper's section 3.2), twice, the coefficients held to sum to one: with the paper's least squares on each
update's weight, whose signed mix may weigh the run's iterates with cancelling coefficients, and with
non-negative coefficients, a true average of the iterates. A tracked width rebuilt from the others checks
the method: the file records how far each rebuilt average lies from the tracked one. One result file,
laptop_budget_<name>; the EMA weights go to checkpoints/cache/. A run is not resumable: it is one trial of
--minutes.

--edm trains the same U-Net with EDM's objective instead (Karras et al. 2022, "Elucidating the design space of
diffusion-based generative models", Table 1): noise levels ln sigma ~ N(-1.2, 1.2^2), the network preconditioned
(c_in, c_skip, c_out from sigma_data) and trained on the target that gives EDM's loss weight. It is written on the
flow's straight path, which is the same family of noisy images rescaled: x_tau = (1 - tau) x0 + tau eps is
(1 - tau) times EDM's x0 + sigma eps with sigma = tau / (1 - tau), so ln sigma = logit tau and EDM's noise levels
are the flow's logit-normal tau with mean -1.2 and sd 1.2 (notebook 5's flow: mean 0, sd 1). The network is told
1000 tau, the flow's clock, in place of EDM's ln(sigma) / 4 (the U-Net's sinusoidal embedding was built for 0..999).
The EDM denoiser is read as a flow velocity (EDMAsFlow) and drawn with the flow's Heun-10 from the same x_T as every
trial, so `python benchmarks/quality.py paired` sets it against a flow trial with the sampler held fixed:

    python benchmarks/laptop_budget.py --name edm --edm --set lr=2e-3                  # EDM's noise levels
    python benchmarks/laptop_budget.py --name edm-flow-levels --edm --ln-sigma 0 1 --set lr=2e-3
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import diffusion_utils as du  # noqa: E402
import quality  # noqa: E402  benchmarks/quality.py: chunked, paired drawing
from laptop_recipe import set_key  # noqa: E402
from lessons.prediction import (BAKE_OFF_SAMPLERS, FLOW_TIME_SCALE, AsEps, PredictionTrainer,  # noqa: E402
                                flow_path, train_prediction, variant_config)
from lessons.unet import PowerEMA, UNet, gamma_of_sigma_rel, posthoc_coefficients  # noqa: E402  notebook 3's
from notebook_support.checkpoints import validate_config  # noqa: E402
from notebook_support.checks import DIGIT_COUNT, int_at_least  # noqa: E402
from notebook_support.data import mnist_tensor  # noqa: E402
from notebook_support.environment import CHECKPOINT_DIR, PROJECT_ROOT  # noqa: E402
from notebook_support.evaluation import HEADLINE_N, format_quality, load_classifier, real_data_floor  # noqa: E402
from notebook_support.export import notebook_config  # noqa: E402
from notebook_support.files import atomic_torch_save  # noqa: E402
from notebook_support.results import write_result  # noqa: E402
from notebook_support.training import choose_bf16, train_kwargs  # noqa: E402

SAMPLERS = {"eps": "heun10-lambda", "x0": "heun10-lambda", "v": "heun10-lambda",   # notebook 3's fewest-call
            "flow": "flow-heun10"}                        # sampler that ties DDIM-50 (19 calls); the flow's Heun-10
for _name in set(SAMPLERS.values()):
    quality.SAMPLERS[_name] = BAKE_OFF_SAMPLERS[_name][:2]    # drawn by quality.py's paired chunks
MAX_BUDGET_STEPS = 100_000    # a budget run's cap on steps: far beyond what 120 CPU-minutes train


def cpu_seconds() -> float:
    """The process clock over the torch threads: CPU time this process used per thread. On an idle machine it
    runs with the wall clock. Another job on the machine does not advance it, but it still costs steps: torch's
    threads wait for the one that lost its core by spinning, and the spinning is charged."""
    return time.process_time() / torch.get_num_threads()


def nonnegative_least_squares(matrix: np.ndarray, target: np.ndarray, tolerance: float = 1e-12) -> np.ndarray:
    """argmin ||matrix x - target|| over x >= 0 (Lawson and Hanson's active-set method, 1974): grow the set of
    free coefficients by the one whose gradient most wants to rise, and step back along the segment to the
    unconstrained solution on that set whenever it would turn one negative. (M, S), (M,) -> (S,)."""
    size = matrix.shape[1]
    free, x = np.zeros(size, dtype=bool), np.zeros(size)
    for _ in range(3 * size):                                    # the method ends in at most a few passes per column
        gradient = matrix.T @ (target - matrix @ x)              # (S,) where the residual wants each coefficient
        if free.all() or gradient[~free].max() <= tolerance:
            break
        free[np.argmax(np.where(free, -np.inf, gradient))] = True
        while True:
            trial = np.zeros(size)
            trial[free] = np.linalg.lstsq(matrix[:, free], target, rcond=None)[0]
            if trial[free].min() > 0:
                x = trial
                break
            blocked = free & (trial <= 0)                        # stop where the first of them reaches 0
            step = np.min(x[blocked] / (x[blocked] - trial[blocked]))
            x = x + step * (trial - x)
            free &= x > tolerance
            x[~free] = 0.0
    return x


class ManyEMATrainer(PredictionTrainer):
    """Notebook 3's recipe loop (notebook 5's, for another `prediction`) that also updates power-function EMAs
    after every step and keeps `num_snapshots` evenly spaced copies of each (the last at the final step) for
    post-hoc EMA. With `budget_seconds` it trains until the process clock (cpu_seconds) has used them: the
    cosine lr decay and the snapshots then follow the fraction of the budget used, and num_steps is only a cap,
    set to the steps taken when the run ends."""

    def __init__(self, model, schedule, data, *, sigma_rels=(), num_snapshots=10, budget_seconds=None,
                 **settings):
        if budget_seconds is not None and not budget_seconds > 0:
            raise ValueError(f"budget_seconds must be > 0, got {budget_seconds!r}")
        super().__init__(model, schedule, data, **settings)
        self.power_emas = {sigma_rel: PowerEMA(self.model, sigma_rel) for sigma_rel in sigma_rels}
        self.num_snapshots, self.budget_seconds = num_snapshots, budget_seconds
        self.snapshot_every = max(1, self.num_steps // num_snapshots)
        self.snapshots = []                                    # (sigma_rel, gamma, update t, state_dict)
        self.snapshot_rounds = 0
        self.started = None                                    # the process clock when a budget run began
        self.budget_used = 0.0                                 # the fraction of budget_seconds used so far
        self.decay_from = None                                 # the fraction used when the warm-up ended

    def learning_rate(self, step: int) -> float:
        """The recipe's warm-up over steps; on a budget, the cosine decay over the budget left after it."""
        if self.budget_seconds is None or step < self.warmup_steps or self.lr_decay != "cosine":
            return super().learning_rate(step)
        if self.decay_from is None:
            self.decay_from = self.budget_used
        progress = min(1.0, (self.budget_used - self.decay_from) / (1 - self.decay_from))   # 0 -> 1
        return self.lr * 0.5 * (1 + math.cos(math.pi * progress))

    def snapshot_due(self, step: int) -> bool:
        if self.budget_seconds is None:
            return (step + 1) % self.snapshot_every == 0 or step + 1 == self.num_steps
        return self.budget_used >= (self.snapshot_rounds + 1) / self.num_snapshots or self.budget_used >= 1

    def train_step(self, step: int) -> float:
        loss = super().train_step(step)
        if self.budget_seconds is not None:
            self.budget_used = (cpu_seconds() - self.started) / self.budget_seconds
        snapshot = self.snapshot_due(step)
        self.snapshot_rounds += snapshot
        for sigma_rel, ema in self.power_emas.items():
            ema.update(self.model)
            if snapshot:
                state = {k: v.detach().clone() for k, v in ema.model.state_dict().items()}
                self.snapshots.append((sigma_rel, ema.gamma, step + 1, state))
        return loss

    def run(self, progress: bool = True, resume=None) -> tuple[torch.nn.Module, list]:
        """num_steps steps, or (with budget_seconds) steps until the budget is used -> (EMA model, losses)."""
        if self.budget_seconds is None:
            return super().run(progress, resume)
        if resume is not None:
            raise ValueError("a budget run is one sitting: it cannot resume")
        self.started = cpu_seconds()
        bar = du.progress_bar(None, total=100, desc="training, % of the CPU budget", disable=not progress)
        step = 0
        while self.budget_used < 1:
            if step == self.num_steps:
                raise RuntimeError(f"{self.num_steps} steps did not use the budget: is the clock running?")
            loss = self.train_step(step)
            if not math.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss} at step {step}: lower lr or check the data")
            self.losses.append(loss)
            bar.update(min(100, int(100 * self.budget_used)) - bar.n)
            bar.set_postfix(step=step + 1, loss=f"{loss:.4f}", refresh=False)
            step += 1
        bar.close()
        self.num_steps = step
        self.model.eval()
        return self.ema.model, self.losses

    def posthoc_model(self, sigma_rel: float, from_sigma_rels, *, nonnegative: bool = False
                      ) -> tuple[torch.nn.Module, dict]:
        """The weights of a power EMA of `sigma_rel` at the last step, mixed from the snapshots of the EMAs
        `from_sigma_rels` alone (with `nonnegative`, non-negative coefficients); and what the mix is."""
        used = [s for s in self.snapshots if s[0] in from_sigma_rels]
        coefficients, residual = posthoc_coefficients([(g, t) for _, g, t, _ in used], gamma_of_sigma_rel(sigma_rel),
                                                      self.num_steps,
                                                      solve=nonnegative_least_squares if nonnegative else None)
        model = copy.deepcopy(self.ema.model)
        model.load_state_dict({key: sum(float(c) * state[key].double() for c, (*_, state) in zip(coefficients, used))
                               .to(value.dtype) for key, value in model.state_dict().items()})
        return model.eval(), {"coefficients": coefficients.tolist(), "relative_residual": residual,
                              "nonnegative": nonnegative, "from": [(s, t) for s, _, t, _ in used]}


EDM_LN_SIGMA_MEAN, EDM_LN_SIGMA_SD = -1.2, 1.2    # EDM's training noise levels (Karras et al. 2022, Table 1)


def edm_coefficients(tau: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EDM's preconditioning (Table 1: c_in, c_skip, c_out) for the flow's x_tau = (1 - tau) x, where x = x0 + sigma
    eps is EDM's noisy image and sigma = tau / (1 - tau). Multiplying through by (1 - tau) keeps every coefficient
    finite at tau = 1 (pure noise): with r = sqrt(tau^2 + sigma_data^2 (1 - tau)^2), the denoised image is
    D = c_skip x_tau + c_out F(c_in x_tau) with c_in = 1 / r, c_skip = sigma_data^2 (1 - tau) / r^2 and
    c_out = sigma_data tau / r. tau (B,) -> three (B, 1, 1, 1)."""
    tau = tau.view(-1, 1, 1, 1)                                          # (B, 1, 1, 1)
    r = (tau ** 2 + sigma_data ** 2 * (1 - tau) ** 2).sqrt()             # (B, 1, 1, 1) = (1 - tau) sqrt(sigma^2 + sd^2)
    return 1 / r, sigma_data ** 2 * (1 - tau) / r ** 2, sigma_data * tau / r


class EDMAsFlow(nn.Module):
    """An EDM-trained network F read as the flow's velocity model, so the flow's samplers draw it: from
    D = c_skip x_tau + c_out F(c_in x_tau, 1000 tau), the velocity of the straight path through x_tau and D is
    (x_tau - D) / tau."""

    def __init__(self, network: nn.Module, sigma_data: float):
        super().__init__()
        self.network, self.sigma_data = network, sigma_data

    def forward(self, x_tau: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tau = t / FLOW_TIME_SCALE                                        # (B,) in (0, 1]
        c_in, c_skip, c_out = edm_coefficients(tau, self.sigma_data)
        denoised = c_skip * x_tau + c_out * self.network(c_in * x_tau, t).float()   # (B, 1, 28, 28)
        return (x_tau - denoised) / tau.view(-1, 1, 1, 1)                # (B, 1, 28, 28)


class EDMTrainer(ManyEMATrainer):
    """ManyEMATrainer with EDM's loss: tau = sigmoid(n) with n ~ N(-1.2, 1.2^2), EDM's log-normal sigma (N(0, 1) is
    the flow's logit-normal tau), and || F(c_in x_tau, 1000 tau) - (x0 - c_skip x_tau) / c_out ||^2, which is EDM's
    lambda(sigma) || D - x0 ||^2 with lambda = 1 / c_out^2 in EDM's own units (its Eq. 2 with Table 1's weight)."""

    def __init__(self, model, schedule, data, *, sigma_data: float, ln_sigma_mean: float = EDM_LN_SIGMA_MEAN,
                 ln_sigma_sd: float = EDM_LN_SIGMA_SD, **settings):
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data!r}")
        super().__init__(model, schedule, data, **settings)
        self.sigma_data, self.ln_sigma_mean, self.ln_sigma_sd = sigma_data, ln_sigma_mean, ln_sigma_sd

    def loss(self, x0: torch.Tensor, model_inputs: dict) -> torch.Tensor:
        gen_device = self.generator.device
        normal = torch.randn(x0.shape[0], generator=self.generator, device=gen_device).to(x0.device)  # (B,)
        tau = torch.sigmoid(self.ln_sigma_mean + self.ln_sigma_sd * normal)      # (B,) logit tau = ln sigma
        eps = torch.randn(x0.shape, generator=self.generator, device=gen_device).to(x0.device)      # (B, 1, 28, 28)
        x_tau, _ = flow_path(x0, eps, tau)                                       # (B, 1, 28, 28)
        c_in, c_skip, c_out = edm_coefficients(tau, self.sigma_data)
        target = (x0 - c_skip * x_tau) / c_out                                   # (B, 1, 28, 28)
        with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=self.bf16):   # the forward pass only
            output = self.model(c_in * x_tau, FLOW_TIME_SCALE * tau)             # (B, 1, 28, 28)
        return (output.float() - target).pow(2).mean()


def parameter_distance(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """|| theta_a - theta_b || over all parameters."""
    return float(sum((x.double() - y.double()).pow(2).sum() for x, y in zip(a.parameters(), b.parameters())) ** 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="names the result file laptop_budget_<name>")
    parser.add_argument("--minutes", type=float, default=15.0,
                        help="the training budget in minutes of the process clock per torch thread (the run stops "
                             "when it is used; the lr decay follows it)")
    parser.add_argument("--set", action="append", default=[], help="override, e.g. lr=2e-3 or model_kwargs.base_channels=16")
    parser.add_argument("--bf16", action="store_true", help="the recipe's bf16 autocast (default: float32)")
    parser.add_argument("--sigma-rels", type=float, nargs="*", default=[0.05, 0.1, 0.2],
                        help="the power-function EMAs kept beside the recipe's")
    parser.add_argument("--posthoc", type=float, nargs="*", default=[],
                        help="power EMAs of these sigma_rel rebuilt after training from the snapshots of the smallest "
                             "and largest --sigma-rels alone (post-hoc EMA), by least squares and with non-negative "
                             "coefficients, each measured like the others")
    parser.add_argument("--snapshots", type=int_at_least(2), default=10, help="snapshots kept of each power EMA")
    parser.add_argument("--n", type=DIGIT_COUNT, default=HEADLINE_N, help="digits drawn and measured per EMA")
    parser.add_argument("--edm", action="store_true",
                        help="EDM's objective (EDMTrainer: log-normal sigma, preconditioning), drawn as a flow")
    parser.add_argument("--sigma-data", type=float, default=None,
                        help="EDM's sigma_data (default: the training digits' standard deviation)")
    parser.add_argument("--ln-sigma", type=float, nargs=2, metavar=("MEAN", "SD"), default=None,
                        help="EDM's training noise levels, ln sigma ~ N(MEAN, SD^2) (default: EDM's -1.2 1.2; "
                             "0 1 is notebook 5's logit-normal tau)")
    args = parser.parse_args()
    if not 0 < args.minutes <= 120:
        parser.error(f"--minutes must lie in (0, 120], got {args.minutes}")
    if args.sigma_data is not None and not (args.edm and args.sigma_data > 0):
        parser.error(f"--sigma-data is EDM's: give it with --edm, and > 0 (got {args.sigma_data})")
    if args.ln_sigma is not None and not (args.edm and math.isfinite(args.ln_sigma[0]) and 0 < args.ln_sigma[1] < 10):
        parser.error(f"--ln-sigma is EDM's: give it with --edm, a finite MEAN and 0 < SD < 10 (got {args.ln_sigma})")
    if args.posthoc and len(set(args.sigma_rels)) < 2:
        parser.error("--posthoc rebuilds from two tracked EMAs: give at least two --sigma-rels")
    for sigma_rel in [*args.sigma_rels, *args.posthoc]:
        try:
            gamma_of_sigma_rel(sigma_rel)
        except ValueError as exc:
            parser.error(f"--sigma-rels: {exc}")
    native_bf16, why = choose_bf16("cpu")
    if args.bf16 and not native_bf16:                                         # a float32 run must not be filed as bf16
        parser.error(f"--bf16: {why}")
    config = copy.deepcopy(notebook_config(PROJECT_ROOT / "3_unet.ipynb", "LAPTOP_CONFIG"))
    config["bf16"] = args.bf16
    for item in args.set:
        set_key(config, *item.split("=", 1))
    if args.edm:                                                              # EDM is written on the flow's path
        if config.get("prediction", "flow") != "flow" or "flow_time_sampling" in config:
            parser.error("--edm sets its own objective: drop --set prediction / flow_time_sampling")
        config["prediction"] = "flow"
    config = variant_config(config, config.get("prediction", "eps"))        # the flow drops min-SNR, as in notebook 5
    prediction = config["prediction"]
    validate_config(config, UNet, train_prediction)
    data = mnist_tensor()[0]                                                  # (60000, 1, 28, 28) in [-1, 1]
    schedule = du.DiffusionSchedule(num_timesteps=config["num_timesteps"], schedule=config["schedule"])
    torch.manual_seed(config["seed"])
    model = UNet(**config["model_kwargs"])
    config["num_steps"] = MAX_BUDGET_STEPS                                   # a cap: the budget ends the run
    edm = None
    if args.edm:
        sigma_data = float(data.std()) if args.sigma_data is None else args.sigma_data
        ln_sigma_mean, ln_sigma_sd = args.ln_sigma or (EDM_LN_SIGMA_MEAN, EDM_LN_SIGMA_SD)
        edm = {"sigma_data": sigma_data, "ln_sigma_mean": ln_sigma_mean, "ln_sigma_sd": ln_sigma_sd,
               "time_input": "1000 tau = 1000 sigma / (1 + sigma)"}
    print(f"{args.name}: {sum(p.numel() for p in model.parameters()):,} parameters, {'edm' if edm else prediction}, "
          f"training for {args.minutes:g} minutes of the process clock on {torch.get_num_threads()} threads",
          flush=True)
    trainer_class, extra = (EDMTrainer, {key: edm[key] for key in ("sigma_data", "ln_sigma_mean", "ln_sigma_sd")}
                            ) if edm else (ManyEMATrainer, {})
    trainer = trainer_class(model, schedule, data, sigma_rels=args.sigma_rels, num_snapshots=args.snapshots,
                            budget_seconds=args.minutes * 60, **extra, **train_kwargs(config))
    wall, cpu = time.perf_counter(), time.process_time()
    _, losses = trainer.run(progress=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    config["num_steps"] = trainer.num_steps
    emas = {"recipe": trainer.ema.model, **{f"power-{s:g}": ema.model for s, ema in trainer.power_emas.items()}}
    rebuilt = {}                                                             # label -> (model, how it was mixed)
    for width in args.posthoc:
        for nonnegative, suffix in ((False, ""), (True, "-nonneg")):
            rebuilt_model, mix = trainer.posthoc_model(width, (min(args.sigma_rels), max(args.sigma_rels)),
                                                       nonnegative=nonnegative)
            if width in trainer.power_emas:                                  # a tracked width rebuilt: how close?
                tracked = trainer.power_emas[width].model
                nearest = min((s for s in trainer.power_emas if s != width), key=lambda s: abs(s - width))
                mix.update(distance_to_tracked=parameter_distance(rebuilt_model, tracked), nearest_width=nearest,
                           tracked_distance_to_nearest_width=parameter_distance(tracked,
                                                                                trainer.power_emas[nearest].model))
            rebuilt[f"posthoc-{width:g}{suffix}"] = (rebuilt_model, mix)
    emas.update({label: model for label, (model, _) in rebuilt.items()})
    print(f"trained {trainer.num_steps} steps: {wall / 60:.1f} min wall, {cpu / torch.get_num_threads() / 60:.1f} "
          f"CPU-min per thread, final loss {np.mean(losses[-100:]):.4f}", flush=True)

    classifier = load_classifier()
    floor = real_data_floor(args.n, classifier, seed=0)
    rows, drawn = [], {}
    for label, ema_model in emas.items():
        path = CHECKPOINT_DIR / "cache" / f"laptop_budget_{args.name}_{label}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({"model_state": ema_model.state_dict(), "config": config, "edm": edm}, path)
        run = f"laptop-budget-{args.name}-{label}"
        network = ema_model.eval() if prediction in ("eps", "flow") else AsEps(ema_model.eval(), schedule, prediction)
        if edm:
            network = EDMAsFlow(network, edm["sigma_data"])
        drawn[label], measured = quality.draw_and_measure(network, schedule, run, args.n, SAMPLERS[prediction],
                                                          {"model": path.name}, classifier, drawn.get("recipe"))
        row = {"ema": label, **measured}
        report = row["report"]
        if label in rebuilt:
            row["posthoc"] = rebuilt[label][1]
        if "paired" in row:                                                  # every average but the recipe's
            row["paired_with_recipe_ema"] = row.pop("paired")
        rows.append(row)
        paired = row.get("paired_with_recipe_ema")
        print(f"{label:>12}: {format_quality(report, floor)}" + (
            f"\n{'':>14}FID - recipe EMA's = {paired['value']:+.2f} [{paired['low']:+.2f}, {paired['high']:+.2f}]"
            if paired else ""), flush=True)
    payload = {"name": args.name, "overrides": args.set, "config": config, "edm": edm,
               "prediction": "edm (drawn as a flow)" if edm else prediction,
               "sampler": SAMPLERS[prediction], "clip_x0": True, "budget_minutes": args.minutes,
               "budget_clock": "process CPU time / torch threads", "steps": trainer.num_steps,
               "train_wall_seconds": wall, "train_cpu_seconds": cpu, "threads": torch.get_num_threads(),
               "cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "final_loss": float(np.mean(losses[-100:])), "sigma_rels": args.sigma_rels,
               "recipe_ema_decay": config.get("ema_decay"), "recipe_ema_sigma_rel": config.get("ema_sigma_rel"),
               "emas": rows, "floor": floor}
    out = write_result(f"laptop_budget_{args.name}", payload, n=args.n, seed=0, seconds=wall,
                       interval=rows[0]["report"]["interval"])
    print(f"-> {out.relative_to(PROJECT_ROOT)}")


if __name__ == "__main__":
    main()
