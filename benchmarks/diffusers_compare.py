"""Notebook 3's U-Net against diffusers' `UNet2DModel` of the same size, at equal CPU time, on the
same data, sampled by the same DDIM-50 from the same x_T and measured by the same evaluator.
Run by hand (issues 12 and 17):

    pip install -r benchmarks/requirements.txt           # diffusers; the notebooks do not need it
    python benchmarks/diffusers_compare.py train --budget 480    # three models, 480 CPU-seconds each
    python benchmarks/quality.py evaluate --only diffusers-compare   # FID/KID/precision/recall + floor

Three rows, each trained from scratch for `--budget` CPU seconds (time.process_time: the CPU time
of this process, summed over its threads, so that other programs sharing the machine do not
change a row's budget; on an idle 2-core CPU it runs at about twice the wall-clock time):
1. "ours": notebook 3's UNet with LAPTOP_CONFIG's recipe, trained by notebook 3's `train_recipe` loop.
2. "diffusers, our recipe": diffusers' `UNet2DModel` with the same widths (24, 48, 48), one
   ResBlock per level and attention in the bottleneck (the same 598,921 parameters), wrapped to
   predict eps from (x_t, t) and trained by the very same `train_recipe` call, with the same recipe
   (batch 128, lr warm-up and cosine decay, min-SNR-5, EMA, grad-clip, precision). Only the
   network code differs from row 1.
3. "diffusers, tutorial recipe": the same `UNet2DModel` trained by the recipe of diffusers' "Train
   a diffusion model" tutorial (AdamW at lr 1e-4, 500 warm-up steps then cosine decay, batch 16,
   grad-clip 1, no EMA), labelled as such: it shows what a user following that tutorial gets
   in this budget, not a property of the network.
Rows 1 and 2 take as many steps as fit in the budget at their own measured speed (timed after
warm-up), and the lr schedule spans those steps. Precision: bf16 autocast only with `--bf16`, for
a CPU with native bf16 (AVX512-BF16 or AMX); elsewhere it is emulated and about 10x slower.
Each row's 2,000 DDIM-50 digits go to outputs/samples/ in the format of benchmarks/quality.py,
which measures them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import diffusion_utils as du  # noqa: E402
from lessons.unet import UNet, train_recipe  # noqa: E402
from notebook_support.checks import DIGIT_COUNT, int_at_least  # noqa: E402
from notebook_support.data import mnist_tensor  # noqa: E402
from notebook_support.environment import PROJECT_ROOT  # noqa: E402
from notebook_support.export import notebook_config  # noqa: E402
from notebook_support.files import atomic_torch_save, load_torch_file  # noqa: E402
from notebook_support.training import train_kwargs  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DIFFUSERS_ROWS as ROWS, SAMPLE_DIR, draw_digits  # noqa: E402

DIFFUSERS_RECIPE = {"lr": 1e-4, "warmup_steps": 500, "batch_size": 16, "grad_clip": 1.0}
WORK_DIR = PROJECT_ROOT / "outputs" / "diffusers_compare"


def diffusers_model():
    from diffusers import UNet2DModel
    return UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(24, 48, 48), norm_num_groups=8,
                       down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3)


class DiffusersEps(nn.Module):
    """`UNet2DModel` seen as the project's denoisers are: eps = model(x_t, t), (B, 1, 28, 28)."""

    def __init__(self):
        super().__init__()
        self.net = diffusers_model()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, t).sample  # (B, 1, 28, 28)


def train_diffusers(data: torch.Tensor, budget_s: float, resume_path: Path, seed: int = 0, bf16: bool = False):
    """The tutorial's loop, stopped after `budget_s` CPU seconds of training. Saves its state every
    2 minutes to `resume_path` and continues from it (the elapsed time is part of the state).
    The tutorial's mixed precision is bf16 autocast on a CPU; `bf16=False` trains in float32, for
    CPUs that emulate bf16 (there it is about 10x slower than float32)."""
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_cosine_schedule_with_warmup

    torch.manual_seed(seed)
    model = diffusers_model().train()
    scheduler = DDPMScheduler(num_train_timesteps=1000)                   # paper defaults: linear 1e-4..0.02, epsilon
    optimizer = torch.optim.AdamW(model.parameters(), lr=DIFFUSERS_RECIPE["lr"])
    batch = DIFFUSERS_RECIPE["batch_size"]
    # the cosine decay needs the number of steps: estimate it from 10 timed steps of a throwaway copy
    probe = diffusers_model().train()
    probe_optimizer = torch.optim.AdamW(probe.parameters(), lr=DIFFUSERS_RECIPE["lr"])
    x = data[:batch]
    for i in range(11):
        if i == 1:                                                        # the first step is a warm-up
            started = time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.mse_loss(probe(x, torch.randint(0, 1000, (batch,))).sample.float(), torch.randn_like(x))
        loss.backward()
        probe_optimizer.step(), probe_optimizer.zero_grad(set_to_none=True)
    planned_steps = int(budget_s / ((time.process_time() - started) / 10))
    lr_schedule = get_cosine_schedule_with_warmup(optimizer, DIFFUSERS_RECIPE["warmup_steps"], planned_steps)
    generator = torch.Generator().manual_seed(seed)
    step, elapsed, losses = 0, 0.0, []
    if resume_path.is_file():
        state = load_torch_file(resume_path)
        model.load_state_dict(state["model"]), optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"]), generator.set_state(state["generator"])
        step, elapsed, losses, planned_steps = state["step"], state["elapsed"], state["losses"], state["planned_steps"]
        print(f"diffusers: resumed at step {step} ({elapsed:.0f} s trained)", flush=True)
    last_save, started = time.perf_counter(), time.process_time()
    base_elapsed = elapsed
    while elapsed < budget_s:
        x0 = data[torch.randint(0, data.shape[0], (batch,), generator=generator)]   # (16, 1, 28, 28)
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, 1000, (batch,), generator=generator)
        x_t = scheduler.add_noise(x0, noise, t)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.mse_loss(model(x_t, t).sample.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), DIFFUSERS_RECIPE["grad_clip"])
        optimizer.step(), optimizer.zero_grad(set_to_none=True)
        if step < planned_steps:                                          # past the plan the lr stays at its end value
            lr_schedule.step()
        losses.append(loss.item())
        step += 1
        elapsed = base_elapsed + time.process_time() - started
        if time.perf_counter() - last_save > 120:
            atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "lr_schedule": lr_schedule.state_dict(), "generator": generator.get_state(),
                               "step": step, "elapsed": elapsed, "losses": losses, "planned_steps": planned_steps},
                              resume_path)
            last_save = time.perf_counter()
    resume_path.unlink(missing_ok=True)
    return model.eval(), scheduler, {"steps": step, "train_seconds": elapsed, "planned_steps": planned_steps,
                                     "final_loss": sum(losses[-500:]) / len(losses[-500:])}




def train_seconds_per_step(make_model, schedule, data, recipe: dict, steps: int = 3) -> float:
    """CPU seconds per training step of `train_recipe` with `recipe`, timed on a throwaway model after one
    warm-up step (the first step allocates and is slower)."""
    probe = dict(recipe, num_steps=1, progress=False)
    train_recipe(make_model(), schedule, data, **probe)                    # warm-up
    started = time.process_time()
    train_recipe(make_model(), schedule, data, **dict(probe, num_steps=steps))
    return (time.process_time() - started) / steps


def train_row(row: str, data: torch.Tensor, budget_s: float, bf16: bool) -> tuple[nn.Module, dict]:
    config = notebook_config(PROJECT_ROOT / "3_unet.ipynb", "LAPTOP_CONFIG")
    schedule = du.DiffusionSchedule(num_timesteps=config["num_timesteps"], schedule=config["schedule"])
    if row == "diffusers-tutorial-recipe":
        model, _, info = train_diffusers(data, budget_s, WORK_DIR / f"{row}.resume.pt", bf16=bf16)
        return model_as_eps(model), dict(info, batch=DIFFUSERS_RECIPE["batch_size"], recipe=DIFFUSERS_RECIPE)
    make_model = (lambda: UNet(**config["model_kwargs"])) if row == "ours" else DiffusersEps
    recipe = dict(train_kwargs(config), bf16=bf16)
    per_step = train_seconds_per_step(make_model, schedule, data, recipe)
    recipe["num_steps"] = max(1, int(budget_s / per_step))
    torch.manual_seed(0)                                                   # the initial weights
    started = time.process_time()
    model, losses = train_recipe(make_model(), schedule, data, **dict(recipe, progress=True))
    seconds = time.process_time() - started
    return model, {"steps": recipe["num_steps"], "train_seconds": seconds, "timed_seconds_per_step": per_step,
                   "batch": recipe["batch_size"], "final_loss": sum(losses[-100:]) / len(losses[-100:]),
                   "recipe": {k: v for k, v in recipe.items() if k != "progress"}}


def model_as_eps(net) -> nn.Module:
    wrapper = DiffusersEps()
    wrapper.net = net
    return wrapper.eval()


def draw_row(model: nn.Module, row: str, n: int, seed: int, info: dict) -> Path:
    """n DDIM-50 digits (x0 clipped, as the notebooks sample) from the same x_T as quality.py's runs."""
    path = SAMPLE_DIR / f"diffusers-compare-{row}_n{n}_seed{seed}.pt"
    path.unlink(missing_ok=True)                                           # a new model: never resume old digits
    return draw_digits(model.eval(), du.DiffusionSchedule(num_timesteps=1000), path, n, seed, "ddim50", True,
                       record={"run": f"diffusers-compare-{row}", "model": row, "training": info})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["train"])
    parser.add_argument("--budget", type=float, default=480, help="training CPU seconds per row (all threads)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (only on a CPU with native bf16)")
    parser.add_argument("--rows", nargs="*", choices=ROWS, default=list(ROWS))
    parser.add_argument("--n", type=DIGIT_COUNT, default=2000, help="DDIM-50 digits per row")
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    args = parser.parse_args()
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    data, _ = mnist_tensor()                                               # (60000, 1, 28, 28) in [-1, 1]
    for row in args.rows:
        print(f"{row}: training for {args.budget:.0f} CPU-s ({'bf16' if args.bf16 else 'fp32'})", flush=True)
        model, info = train_row(row, data, args.budget, args.bf16)
        info.update(budget_seconds=args.budget, bf16=args.bf16)
        print(f"{row}: {info['steps']} steps x {info['batch']} in {info['train_seconds']:.0f} CPU-s, "
              f"final loss {info['final_loss']:.4f}", flush=True)
        draw_row(model, row, args.n, args.seed, info)


if __name__ == "__main__":
    main()
