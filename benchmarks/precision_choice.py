"""Which precision the laptop preset trains in on this machine, and whether the time estimate holds.

Notebook 3's LAPTOP_CONFIG (and notebook 4's model) train in float32 since issue 26; `"bf16": True` asks
for bf16 autocast, measured 1.8x faster than float32 on a CPU with native bfloat16 (the preset of the
time), and this script times the preset with it. Where bfloat16 is not native (an AVX2-only CPU) the
autocast is emulated in software. notebook_support.training therefore uses a config's bf16 only
where the device computes it natively (`choose_bf16`) and times its "this will take about X"
estimate on a few steps of the real loop after warm-up, with the settings it will use
(`seconds_per_step`). This script checks both on the machine at hand, with the notebooks' own
pieces (lessons.unet.UNet and train_recipe, LAPTOP_CONFIG read from the notebook):

1. seconds per step in float32 and in bf16 autocast, each after the same warm-up, at the config's
   batch size: which one is faster here (fewer steps than the estimate: emulated bf16 is slow);
2. the precision the runner chooses, and why;
3. the estimate load_or_train prints (the same call, the same warm-up and timed steps), then a
   short real run of `--steps` steps with the same settings, timed as a whole: the estimate must
   lie within 1.5x of the measured time per step.

It writes benchmarks/results/<date>_<hardware>_precision_choice.json (notebook_support.results)
and exits 1 if the choice was the slower precision or the estimate missed by more than 1.5x.
A few minutes on a 2-core AVX2 CPU, most of it the real run and the emulated bf16 steps.

    python benchmarks/precision_choice.py
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import diffusion_utils as du  # noqa: E402
from lessons.unet import UNet, train_recipe  # noqa: E402
from notebook_support.checks import int_at_least  # noqa: E402
from notebook_support.data import mnist_tensor  # noqa: E402
from notebook_support.environment import PROJECT_ROOT, get_device  # noqa: E402
from notebook_support.export import notebook_config  # noqa: E402
from notebook_support.results import write_result  # noqa: E402
from notebook_support.training import (choose_bf16, hardware_name, seconds_per_step, train_kwargs,  # noqa: E402
                                       training_settings)

TOLERANCE = 1.5   # the estimate may be off by this factor either way


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int_at_least(1), default=30, help="steps of the real run (default 30)")
    parser.add_argument("--warm-steps", type=int_at_least(0), default=1, help="warm-up steps before timing each precision (default 1)")
    parser.add_argument("--timed-steps", type=int_at_least(1), default=2, help="steps timed for each precision (default 2)")
    args = parser.parse_args()
    started, load_before = time.perf_counter(), os.getloadavg()
    device = get_device()
    config = {**notebook_config(PROJECT_ROOT / "3_unet.ipynb", "LAPTOP_CONFIG"), "bf16": True}   # asks for bf16
    images, _ = mnist_tensor(train=True, device=device)                  # (60000, 1, 28, 28) in [-1, 1]
    schedule = du.DiffusionSchedule(num_timesteps=config["num_timesteps"], schedule=config["schedule"], device=device)
    torch.manual_seed(config["seed"])
    model = UNet(**config["model_kwargs"])
    timing = {"warm_steps": args.warm_steps, "timed_steps": args.timed_steps}
    print(f"laptop U-Net, batch {config['batch_size']}, on {hardware_name(device)}", flush=True)

    per_step = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        per_step[name] = seconds_per_step(model, train_recipe, images, schedule, {**train_kwargs(config), "bf16": bf16}, **timing)
        print(f"{name}: {per_step[name]:.3f} s/step (after {args.warm_steps} warm-up steps, {args.timed_steps} timed)",
              flush=True)
    faster = min(per_step, key=per_step.get)

    kwargs, note = training_settings(config, device)
    chosen = "bf16" if kwargs.get("bf16") else "fp32"
    native, why = choose_bf16(device)
    print(note, flush=True)
    estimate = seconds_per_step(model, train_recipe, images, schedule, kwargs)   # exactly what load_or_train prints
    print(f"estimate: {estimate:.3f} s/step, {config['num_steps']} steps in {estimate * config['num_steps'] / 60:.1f} min",
          flush=True)
    run_started = time.perf_counter()
    _, losses = train_recipe(copy.deepcopy(model), schedule, images, **{**kwargs, "num_steps": args.steps, "progress": False})
    run_seconds = time.perf_counter() - run_started
    measured = run_seconds / args.steps
    ratio = estimate / measured
    within = 1 / TOLERANCE <= ratio <= TOLERANCE
    print(f"real run: {args.steps} steps in {run_seconds:.1f} s = {measured:.3f} s/step; estimate / measured = {ratio:.2f} "
          f"({'within' if within else 'NOT within'} {TOLERANCE}x); the choice ({chosen}) is "
          f"{'the faster' if chosen == faster else 'NOT the faster'} precision here", flush=True)

    payload = {
        "model": "lessons.unet.UNet with 3_unet.ipynb's LAPTOP_CONFIG, bf16 asked for",
        "batch_size": config["batch_size"],
        "config_bf16": config.get("bf16", False),
        "seconds_per_step": {k: round(v, 4) for k, v in per_step.items()},
        "bf16_over_fp32": round(per_step["bf16"] / per_step["fp32"], 2), "faster": faster,
        "chosen": chosen, "why": why, "native_bf16": native, "choice_is_faster": chosen == faster,
        "estimate_seconds_per_step": round(estimate, 4), "real_run_steps": args.steps,
        "real_run_seconds": round(run_seconds, 2), "measured_seconds_per_step": round(measured, 4),
        "estimate_over_measured": round(ratio, 3), "tolerance": TOLERANCE, "estimate_within_tolerance": within,
        "estimated_minutes_for_num_steps": round(estimate * config["num_steps"] / 60, 1),
        "measured_minutes_for_num_steps": round(measured * config["num_steps"] / 60, 1),
        "num_steps": config["num_steps"], "precision_timing": timing, "estimate_timing": "load_or_train's: "
        "seconds_per_step defaults", "final_losses": [round(x, 4) for x in losses[-3:]],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": str(torch.__version__),
        "load_average_1_5_15_min": {"before": [round(x, 2) for x in load_before],   # other processes on the cores
                                    "after": [round(x, 2) for x in os.getloadavg()]},
    }
    path = write_result("precision_choice", payload, n=None, seed=config["seed"],
                        seconds=time.perf_counter() - started, device=device)
    print(f"wrote {path.relative_to(PROJECT_ROOT)}")
    return 0 if within and chosen == faster else 1


if __name__ == "__main__":
    sys.exit(main())
