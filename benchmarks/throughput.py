"""How fast notebook 3's laptop recipe trains on this CPU, and how far that is from what the CPU can do.

Run by hand on an otherwise idle machine (timings flake; never in CI):

    python benchmarks/throughput.py --timed-steps 20   # every variant, 20 timed steps each
    python benchmarks/throughput.py --variants fp32 batch64 --timed-steps 20

Each variant is the laptop preset (LAPTOP_CONFIG of 3_unet.ipynb, its own loop `train_recipe`) with one
change (the committed files time the preset before issue 26, base 24 with mults [1, 2, 2]; today's preset is
`wide7` itself), timed by notebook_support.training.seconds_per_step (the loop itself after warm-up steps, as
load_or_train's estimate is):

    fp32            the recipe in float32 (the baseline every other row is compared with)
    bf16            bf16 autocast (only where the CPU computes bfloat16 natively; emulated it is ~10x slower)
    batch64         batch 64: half the images a step, so twice the steps for the same images
    channels_last   the network's weights in channels-last memory order
    compile         torch.compile of the network (3 more warm-up steps; their seconds hold the compilation)
    wide28          base 32, channel_mults [1, 1, 2]: the width moved to the 28 x 28 and 14 x 14 levels
    wide7           base 16, channel_mults [1, 2, 4]: the width moved to the 7 x 7 level

Per variant it writes seconds per step, images per second, the FLOPs of one step (forward and backward,
counted by torch.utils.flop_counter on the real model and batch) and the fraction of the CPU's measured
peak they reach: the peak is the best of three float32 (and bf16) matmuls of 2048 x 2048 on the same
threads. One result file, benchmarks/results/<date>_<hardware>_throughput_laptop.json.
(`benchmarks/laptop_recipe.py speed` is the earlier survey of candidate U-Nets; it prints and files nothing.)
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# torch.compile caches what it compiled: a fresh cache per run times the compilation a reader's first run pays
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="throughput_inductor_")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], True)
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import diffusion_utils as du  # noqa: E402
from lessons.unet import UNet, train_recipe  # noqa: E402
from notebook_support.checks import int_at_least  # noqa: E402
from notebook_support.data import mnist_tensor  # noqa: E402
from notebook_support.environment import PROJECT_ROOT  # noqa: E402
from notebook_support.export import notebook_config  # noqa: E402
from notebook_support.results import write_result  # noqa: E402
from notebook_support.training import choose_bf16, seconds_per_step, train_kwargs  # noqa: E402

VARIANTS = ("fp32", "bf16", "batch64", "channels_last", "compile", "wide28", "wide7")
WIDTHS = {"wide28": {"base_channels": 32, "channel_mults": [1, 1, 2]},
          "wide7": {"base_channels": 16, "channel_mults": [1, 2, 4]}}


def throughput_config(base: dict, variant: str) -> dict:
    """The laptop config with the one change of `variant` (float32 unless the variant is bf16)."""
    config = {**base, "model_kwargs": {**base["model_kwargs"], **WIDTHS.get(variant, {})}, "bf16": variant == "bf16"}
    if variant == "batch64":
        config["batch_size"] = 64
    return config


def peak_flops(dtype: torch.dtype, size: int = 2048, repeats: int = 3) -> float:
    """FLOP/s of the best of `repeats` size x size matmuls: what this CPU's threads reach on the easiest work."""
    a, b = (torch.randn(size, size).to(dtype) for _ in range(2))
    torch.mm(a, b)                                                            # warm-up: allocation, kernel choice
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size ** 3 / best


def flops_per_step(config: dict, data: torch.Tensor) -> int:
    """FLOPs of one training step's forward and backward pass (the optimizer's elementwise work is left out)."""
    model = UNet(**config["model_kwargs"])
    schedule = du.DiffusionSchedule(num_timesteps=config["num_timesteps"], schedule=config["schedule"])
    with FlopCounterMode(display=False) as counter:
        du.diffusion_loss(model, schedule, data[:config["batch_size"]]).backward()
    return counter.get_total_flops()


def time_variant(variant: str, base: dict, data: torch.Tensor, warm_steps: int, timed_steps: int) -> dict:
    config = throughput_config(base, variant)
    model = UNet(**config["model_kwargs"])
    params = sum(p.numel() for p in model.parameters())
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    if variant == "compile":
        model = torch.compile(model)
    schedule = du.DiffusionSchedule(num_timesteps=config["num_timesteps"], schedule=config["schedule"])
    kwargs = train_kwargs(config)                                             # bf16 only where asked and native
    started = time.perf_counter()
    per_step = seconds_per_step(model, train_recipe, data, schedule, kwargs, warm_steps=warm_steps,
                                timed_steps=timed_steps)
    wall = time.perf_counter() - started
    flops = flops_per_step(config, data)
    return {"variant": variant, "params": params, "batch_size": config["batch_size"], "bf16": config["bf16"],
            "model_kwargs": config["model_kwargs"], "seconds_per_step": per_step,
            "images_per_second": config["batch_size"] / per_step, "flops_per_step": flops,
            "flops_per_second": flops / per_step,
            # the untimed warm-up steps with their setup: for "compile", the compilation is in here
            "warm_up_seconds": wall - timed_steps * per_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--warm-steps", type=int_at_least(1), default=3, help="untimed steps first (compile: + 3)")
    parser.add_argument("--timed-steps", type=int_at_least(1), default=8)
    args = parser.parse_args()
    base = notebook_config(PROJECT_ROOT / "3_unet.ipynb", "LAPTOP_CONFIG")
    native_bf16, why = choose_bf16("cpu")
    variants = [v for v in args.variants if v != "bf16" or native_bf16]
    if len(variants) < len(args.variants):
        print(f"bf16 left out: {why}")
    data = mnist_tensor()[0][:4096]                                           # (4096, 1, 28, 28): batches only
    started = time.perf_counter()
    peaks = {"float32": peak_flops(torch.float32), **({"bfloat16": peak_flops(torch.bfloat16)} if native_bf16 else {})}
    print("peak: " + ", ".join(f"{name} {flops / 1e9:.0f} GFLOP/s" for name, flops in peaks.items()), flush=True)
    rows = []
    for variant in variants:
        warm = args.warm_steps + (3 if variant == "compile" else 0)
        try:
            row = time_variant(variant, base, data, warm, args.timed_steps)
        except Exception as exc:                                              # e.g. no C++ compiler for torch.compile
            rows.append({"variant": variant, "failed": f"{type(exc).__name__}: {str(exc)[:300]}"})
            print(f"{variant:>13}: failed, {rows[-1]['failed']}", flush=True)
            continue
        row["fraction_of_peak"] = row["flops_per_second"] / peaks["bfloat16" if row["bf16"] else "float32"]
        fp32 = next((r for r in rows if r["variant"] == "fp32"), row if variant == "fp32" else None)
        row["images_per_second_vs_fp32"] = fp32 and row["images_per_second"] / fp32["images_per_second"]
        rows.append(row)
        print(f"{variant:>13}: {row['params']:,} params, batch {row['batch_size']}, {row['seconds_per_step']:.3f} s/step, "
              f"{row['images_per_second']:.0f} images/s, {row['flops_per_step'] / 1e9:.1f} GFLOP/step = "
              f"{row['fraction_of_peak']:.1%} of peak, {warm} warm-up steps {row['warm_up_seconds']:.0f} s"
              + (f", {row['images_per_second_vs_fp32']:.2f}x fp32's images/s" if row["images_per_second_vs_fp32"] else ""),
              flush=True)
    payload = {"config": base, "peak_flops": peaks, "warm_steps": args.warm_steps, "timed_steps": args.timed_steps,
               "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "rows": rows}
    out = write_result("throughput_laptop", payload, n=None, seed=None, seconds=time.perf_counter() - started)
    print(f"-> {out.relative_to(PROJECT_ROOT)}")


if __name__ == "__main__":
    main()
