"""Notebook 3's laptop preset against what a user would pick instead: a diffusers `UNet2DModel`
trained with the recipe of diffusers' own "Train a diffusion model" tutorial, for the same CPU
time, on the same data, measured by the same evaluator, in one run. Run by hand (issue 12):

    pip install -r benchmarks/requirements.txt           # diffusers; the notebooks do not need it
    python benchmarks/diffusers_compare.py --out checkpoints 2>&1 | tee benchmarks/results/<date>_cpu_diffusers_compare.txt

1. The laptop preset (LAPTOP_CONFIG of 3_unet.ipynb) is trained with notebook 2's loop through
   the project's runner and saved as <out>/unet_laptop.pt: the shipped checkpoint is this run.
2. diffusers: `UNet2DModel` with the same widths (24, 48, 48), one ResBlock per level and
   attention in the bottleneck (the same parameter count), `DDPMScheduler` with the paper's
   defaults (T = 1000, linear betas 1e-4..0.02, epsilon), and the tutorial's recipe: AdamW at
   lr 1e-4, 500 warm-up steps then cosine decay to the end of the budget, batch 16, gradient
   norm clipped at 1, mixed precision (bfloat16 autocast on a CPU, where float16 is not
   available), no EMA. It trains for the wall-clock seconds the laptop preset took.
3. Both draw `--n` digits with DDIM-50 (diffusers: its `DDIMScheduler`) in chunks of 128 and are
   measured with notebook_support.evaluation (FID and KID against the 10,000 test digits).
4. Sampling speed of the shipped default U-Net, before (one batch of 256 under no_grad, as
   notebook 3 drew them) and after (chunks of 128), in float32 and in bfloat16 autocast.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import diffusion_utils as du  # noqa: E402
from lessons.mlp import train  # noqa: E402
from lessons.unet import UNet  # noqa: E402
from notebook_support.checkpoints import load_checkpoint  # noqa: E402
from notebook_support.data import mnist_tensor  # noqa: E402
from notebook_support.environment import CHECKPOINT_DIR, PROJECT_ROOT  # noqa: E402
from notebook_support.evaluation import evaluate_samples, load_classifier  # noqa: E402
from notebook_support.export import notebook_config  # noqa: E402
from notebook_support.files import atomic_torch_save, load_torch_file  # noqa: E402
from notebook_support.sampling import sample_in_chunks  # noqa: E402
from notebook_support.training import train_from_config  # noqa: E402

DIFFUSERS_RECIPE = {"lr": 1e-4, "warmup_steps": 500, "batch_size": 16, "grad_clip": 1.0, "precision": "bf16 autocast"}


def diffusers_model():
    from diffusers import UNet2DModel
    return UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(24, 48, 48), norm_num_groups=8,
                       down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3)


def train_diffusers(data: torch.Tensor, budget_s: float, resume_path: Path, seed: int = 0):
    """The tutorial's loop, stopped after `budget_s` seconds of training. Saves its state every
    2 minutes to `resume_path` and continues from it (the elapsed time is part of the state)."""
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
            started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.mse_loss(probe(x, torch.randint(0, 1000, (batch,))).sample.float(), torch.randn_like(x))
        loss.backward()
        probe_optimizer.step(), probe_optimizer.zero_grad(set_to_none=True)
    planned_steps = int(budget_s / ((time.perf_counter() - started) / 10))
    lr_schedule = get_cosine_schedule_with_warmup(optimizer, DIFFUSERS_RECIPE["warmup_steps"], planned_steps)
    generator = torch.Generator().manual_seed(seed)
    step, elapsed, losses = 0, 0.0, []
    if resume_path.is_file():
        state = load_torch_file(resume_path)
        model.load_state_dict(state["model"]), optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"]), generator.set_state(state["generator"])
        step, elapsed, losses, planned_steps = state["step"], state["elapsed"], state["losses"], state["planned_steps"]
        print(f"diffusers: resumed at step {step} ({elapsed:.0f} s trained)", flush=True)
    last_save = started = time.perf_counter()
    base_elapsed = elapsed
    while elapsed < budget_s:
        x0 = data[torch.randint(0, data.shape[0], (batch,), generator=generator)]   # (16, 1, 28, 28)
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, 1000, (batch,), generator=generator)
        x_t = scheduler.add_noise(x0, noise, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.mse_loss(model(x_t, t).sample.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), DIFFUSERS_RECIPE["grad_clip"])
        optimizer.step(), optimizer.zero_grad(set_to_none=True)
        if step < planned_steps:                                          # past the plan the lr stays at its end value
            lr_schedule.step()
        losses.append(loss.item())
        step += 1
        elapsed = base_elapsed + time.perf_counter() - started
        if time.perf_counter() - last_save > 120:
            atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "lr_schedule": lr_schedule.state_dict(), "generator": generator.get_state(),
                               "step": step, "elapsed": elapsed, "losses": losses, "planned_steps": planned_steps},
                              resume_path)
            last_save = time.perf_counter()
    resume_path.unlink(missing_ok=True)
    return model.eval(), scheduler, {"steps": step, "train_seconds": elapsed, "planned_steps": planned_steps,
                                     "final_loss": sum(losses[-500:]) / len(losses[-500:])}


@torch.inference_mode()
def diffusers_ddim(model, n: int, chunk: int = 128, seed: int = 1234) -> torch.Tensor:
    from diffusers import DDIMScheduler
    sampler = DDIMScheduler(num_train_timesteps=1000)                     # eta = 0, clip_sample=True (its default)
    sampler.set_timesteps(50)
    generator, out = torch.Generator().manual_seed(seed), []
    for start in range(0, n, chunk):
        x = torch.randn(min(chunk, n - start), 1, 28, 28, generator=generator)
        for t in sampler.timesteps:
            x = sampler.step(model(x, t).sample, t, x).prev_sample
        out.append(x)
    return torch.cat(out)


def sampling_speed(model, schedule, steps: int = 10) -> dict:
    """Images/s of one denoising step (DDPM and DDIM steps cost one forward pass each), timed over
    `steps` steps and scaled to DDPM-1000 and DDIM-50: 256 at once vs chunks of 128, fp32 vs bf16."""
    rates = {}
    for label, chunk, bf16 in (("256 at once, fp32", 256, False), ("chunks of 128, fp32", 128, False),
                               ("chunks of 128, bf16", 128, True)):
        x = torch.randn(256, 1, 28, 28)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), torch.inference_mode():
            model(x[:chunk], torch.full((chunk,), 999))                    # warm-up
            started = time.perf_counter()
            for i in range(steps):
                for part in x.split(chunk):
                    model(part, torch.full((part.shape[0],), 999 - i))
            per_step = (time.perf_counter() - started) / steps                 # seconds per step for 256 images
        rates[label] = {"ddpm1000_img_s": 256 / (1000 * per_step), "ddim50_img_s": 256 / (50 * per_step)}
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(CHECKPOINT_DIR), help="where unet_laptop.pt is written")
    parser.add_argument("--n", type=int, default=2000, help="DDIM-50 samples per model for FID and KID")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    out = Path(args.out)
    print(f"machine: {platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC", flush=True)
    train_images, _ = mnist_tensor()                                       # (60000, 1, 28, 28) in [-1, 1]
    classifier = load_classifier()
    results = {}

    config = notebook_config(PROJECT_ROOT / "3_unet.ipynb", "LAPTOP_CONFIG")
    print(f"laptop preset: {config}", flush=True)
    laptop, payload = train_from_config(config, UNet, train, train_images, out / "unet_laptop.pt", progress=False,
                                        hardware=f"{platform.machine()} CPU, {torch.get_num_threads()} threads")
    budget = payload["train_seconds"]
    schedule = du.DiffusionSchedule(num_timesteps=config["num_timesteps"], schedule=config["schedule"])
    started = time.perf_counter()
    samples = sample_in_chunks(du.ddim_sample, laptop, schedule, args.n, num_steps=50, clip_x0=True,
                               generator=torch.Generator().manual_seed(1234), progress=False)
    sample_seconds = time.perf_counter() - started
    results["laptop preset"] = {"params": sum(p.numel() for p in laptop.parameters()), "steps": payload["steps"],
                                "batch": config["batch_size"], "train_seconds": budget,
                                "final_loss": payload["final_loss"], "sample_seconds": sample_seconds,
                                **evaluate_samples(samples.clamp(-1, 1), classifier)}
    print("laptop preset:", json.dumps({k: v for k, v in results["laptop preset"].items()
                                        if k != "class_histogram"}), flush=True)
    started = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        samples_bf16 = sample_in_chunks(du.ddim_sample, laptop, schedule, args.n, num_steps=50, clip_x0=True,
                                        generator=torch.Generator().manual_seed(1234), progress=False)
    results["laptop preset, bf16 sampling"] = {"sample_seconds": time.perf_counter() - started,
                                               **evaluate_samples(samples_bf16.float().clamp(-1, 1), classifier)}

    model, _, info = train_diffusers(train_images, budget, out / ".diffusers_compare.resume.pt")
    started = time.perf_counter()
    samples = diffusers_ddim(model, args.n)
    sample_seconds = time.perf_counter() - started
    results["diffusers UNet2DModel"] = {"params": sum(p.numel() for p in model.parameters()), "steps": info["steps"],
                                        "batch": DIFFUSERS_RECIPE["batch_size"], "train_seconds": info["train_seconds"],
                                        "final_loss": info["final_loss"], "sample_seconds": sample_seconds,
                                        **evaluate_samples(samples.clamp(-1, 1), classifier)}

    floor_pick = torch.randperm(train_images.shape[0], generator=torch.Generator().manual_seed(0))[:args.n]
    floor = evaluate_samples(train_images[floor_pick], classifier)
    print(f"\nDDIM-50, n = {args.n} each, FID/KID against the 10,000 test digits; real-data floor "
          f"(n = {args.n} random training digits): FID {floor['fid']:.2f}, KID {floor['kid']:.3f}")
    print(f"{'model':<30} {'params':>8} {'steps':>6} {'batch':>5} {'train s':>8} {'train img/s':>11} "
          f"{'DDIM-50 img/s':>13} {'FID':>7} {'KID':>8} {'p>0.9':>6} {'classes':>12}")
    for name, r in results.items():
        trained = name in ("laptop preset", "diffusers UNet2DModel")
        train_cols = (f"{r['params']:>8,} {r['steps']:>6} {r['batch']:>5} {r['train_seconds']:>8.0f} "
                      f"{r['steps'] * r['batch'] / r['train_seconds']:>11.0f}") if trained else f"{'(same model)':>42}"
        print(f"{name:<30} {train_cols} {args.n / r['sample_seconds']:>13.1f} {r['fid']:>7.2f} {r['kid']:>8.3f} "
              f"{r['confident_share']:>6.1%} {min(r['class_histogram']):>5.1%}..{max(r['class_histogram']):.1%}")
    ratio = results["laptop preset"]["fid"] / results["diffusers UNet2DModel"]["fid"]
    print(f"laptop preset FID / diffusers FID = {ratio:.2f} (target: at most 0.5)")

    default = UNet(**notebook_config(PROJECT_ROOT / "3_unet.ipynb", "DEFAULT_CONFIG")["model_kwargs"])
    load_checkpoint(CHECKPOINT_DIR / "unet_default.pt", default)
    speeds = sampling_speed(default.eval(), schedule)
    print("\nshipped default U-Net (1.6M parameters), sampling images/s from 10 timed steps for 256 digits:")
    for label, r in speeds.items():
        print(f"  {label:<22} DDPM-1000 {r['ddpm1000_img_s']:6.2f} img/s, DDIM-50 {r['ddim50_img_s']:6.1f} img/s")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "floor": floor, "sampling": speeds}, indent=1))


if __name__ == "__main__":
    main()
