"""Speed of the notebooks' default MLP and U-Net: training and sampling throughput.

Run by hand (never in CI: timings flake), then copy the printed table into RESULTS.md (the lab report):

    python benchmarks/bench.py                 # eager + channels_last + bf16 autocast + compile
    python benchmarks/bench.py --variants eager --train-steps 5 --sample-steps 10

Training throughput is images/s over `--train-steps` Adam steps at batch 128 (after warm-up
steps that are not timed). Sampling throughput is images/s for a batch of 64 digits, from
`--sample-steps` timed denoising steps scaled to 1000 steps (DDPM) and 50 steps (DDIM): every
step of either sampler is one forward pass of the same cost, plus negligible elementwise work.
Each speed-up is measured against plain eager in the same run, on the same machine.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import diffusion_utils as du  # noqa: E402
from lessons.mlp import MLPDenoiser  # noqa: E402
from lessons.unet import UNet  # noqa: E402
from notebook_support.checks import int_at_least  # noqa: E402
from notebook_support.environment import PROJECT_ROOT, get_device  # noqa: E402
from notebook_support.export import notebook_config  # noqa: E402

# the notebooks' own classes and configs (read from their config cells)
MODELS = {"mlp": (MLPDenoiser, "2_custom_mlp.ipynb", "CONFIG"), "unet": (UNet, "3_unet.ipynb", "DEFAULT_CONFIG")}

VARIANTS = ("eager", "channels_last", "bf16_autocast", "compile")


def make(config: dict, variant: str, device: torch.device):
    """Model, input memory format and autocast context for one variant."""
    model = MODELS[config["model"]][0](**config["model_kwargs"]).to(device)
    memory_format = torch.contiguous_format
    if variant == "channels_last" and config["model"] == "unet":
        model = model.to(memory_format=torch.channels_last)
        memory_format = torch.channels_last
    if variant == "compile":
        model = torch.compile(model)
    if variant == "bf16_autocast":
        autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    else:
        autocast = contextlib.nullcontext
    return model, memory_format, autocast


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of `step()`, over `steps` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - started) / steps


def time_training(config, variant, device, steps, warmup, batch=128) -> float:
    """Training images per second (one Algorithm 1 step with clipping and Adam per call)."""
    model, memory_format, autocast = make(config, variant, device)
    schedule = du.DiffusionSchedule(device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    x0 = torch.rand(batch, 1, 28, 28, device=device).mul(2).sub(1).to(memory_format=memory_format)

    def step():
        with autocast():
            loss = du.diffusion_loss(model, schedule, x0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return batch / timed(step, steps, warmup, device)


@torch.no_grad()
def time_denoising_step(config, variant, device, steps, warmup, batch=64) -> float:
    """Seconds per denoising step (one p_sample call) for `batch` images."""
    model, memory_format, autocast = make(config, variant, device)
    model.eval()
    schedule = du.DiffusionSchedule(device=device)
    x = torch.randn(batch, 1, 28, 28, device=device).to(memory_format=memory_format)

    def step():
        with autocast():
            du.p_sample(model, schedule, x, 500)

    return timed(step, steps, warmup, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--models", nargs="+", default=["mlp", "unet"], choices=["mlp", "unet"])
    parser.add_argument("--train-steps", type=int_at_least(1), default=20)
    parser.add_argument("--sample-steps", type=int_at_least(1), default=50)
    parser.add_argument("--warmup", type=int_at_least(0), default=3)
    parser.add_argument("--threads", type=int_at_least(1), default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = get_device()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        hardware = torch.cuda.get_device_name(0)
    else:
        hardware = f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"# {datetime.date.today()} | {hardware} | torch {torch.__version__}\n")
    print("| model | params | variant | train img/s (batch 128) | DDPM-1000 img/s (batch 64) "
          "| DDIM-50 img/s (batch 64) | speed-up train / sample |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        model_class, notebook, config_name = MODELS[name]
        config = notebook_config(PROJECT_ROOT / notebook, config_name)
        params = sum(p.numel() for p in model_class(**config["model_kwargs"]).parameters())
        base = None
        for variant in args.variants:
            warmup = args.warmup + (5 if variant == "compile" else 0)
            try:
                train = time_training(config, variant, device, args.train_steps, warmup)
                step = time_denoising_step(config, variant, device, args.sample_steps, warmup)
            except Exception as exc:  # e.g. no compiler for torch.compile
                print(f"| {name} | {params:,} | {variant} | failed: {type(exc).__name__} | | | |")
                continue
            base = base or (train, step)
            print(f"| {name} | {params:,} | {variant} | {train:,.0f} | {64 / (1000 * step):,.2f} "
                  f"| {64 / (50 * step):,.1f} | {train / base[0]:.2f}x / {base[1] / step:.2f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
