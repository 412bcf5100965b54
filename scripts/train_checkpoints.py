"""Train the shipped checkpoints (classifier, MLP, U-Net) and measure their sample quality.

Run by hand, not in CI. On a GPU the whole script takes a few minutes; on this project's
2-core CPU the U-Net alone would take hours (see the README's timings), so the notebooks
load the checkpoints this script writes instead of training them.

    python scripts/train_checkpoints.py --out checkpoints            # everything
    python scripts/train_checkpoints.py --only classifier --out checkpoints
    python scripts/train_checkpoints.py --quick --out /tmp/ckpt       # tiny smoke run

The default configs below are the ones the notebooks' config cells spell out; a checkpoint
is loaded by a notebook only when its stored config equals the notebook's.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import diffusion_utils as du  # noqa: E402
from models import build_model, count_parameters  # noqa: E402

MLP_CONFIG = {
    "model": "mlp",
    "model_kwargs": {"hidden": 512, "depth": 3, "time_dim": 128, "time_mode": "sinusoidal"},
    "schedule": "linear", "num_timesteps": 1000,
    "num_steps": 40000, "batch_size": 128, "lr": 1e-3, "grad_clip": 1.0, "ema_decay": 0.9995,
    "seed": 0,
}
UNET_CONFIG = {
    "model": "unet",
    "model_kwargs": {"base_channels": 32, "channel_mults": (1, 2, 2), "num_res_blocks": 2,
                     "attention_resolutions": (7,), "dropout": 0.1},
    "schedule": "linear", "num_timesteps": 1000,
    "num_steps": 16000, "batch_size": 128, "lr": 2e-4, "grad_clip": 1.0, "ema_decay": 0.9995,
    "seed": 0,
}
FID_SIZES = (32, 256, 1000, 5000)  # the n at which notebook 3 and the README compare models


def hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def train_denoiser(config: dict, data: torch.Tensor, out: Path, log: dict) -> torch.nn.Module:
    name = config["model"]
    print(f"{name}: {count_parameters(build_model(config)):,} parameters, {config['num_steps']} steps", flush=True)
    model, payload = du.train_from_config(config, build_model, data, out / f"{name}_default.pt",
                                          progress=False, hardware=hardware(), log_every=1000)
    log[name] = {"seconds": round(payload["train_seconds"], 1), "steps": payload["steps"],
                 "final_loss": payload["final_loss"], "parameters": count_parameters(model)}
    print(f"{name}: {payload['steps']} steps in {payload['train_seconds']:.0f} s, "
          f"final loss {payload['final_loss']:.4f}", flush=True)
    return model


def train_graphed(config: dict, data: torch.Tensor, out: Path, log: dict, budget_s: float) -> torch.nn.Module:
    """GPU-only fast path: the whole Algorithm 1 step (forward, backward, gradient clipping,
    Adam) captured once as a CUDA graph and replayed, for as many steps as fit `budget_s`
    (rounded down to a multiple of 500; the checkpoint's config records the steps done).

    A small U-Net is launch-bound on a GPU (hundreds of tiny kernels per step); replaying one
    graph removes that overhead. Same maths as `du.train_ddpm`: uniform t over 0..T-1, epsilon
    target, MSE, clip 1.0, Adam, EMA (updated eagerly after each replay, with its warm-up).
    """
    device = data.device
    torch.manual_seed(config["seed"])
    model = build_model(config).to(device).train()
    schedule = du.DiffusionSchedule(num_timesteps=config["num_timesteps"], schedule=config["schedule"],
                                    device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"], capturable=True)
    ema = du.EMA(model, decay=config["ema_decay"])
    batch = config["batch_size"]
    static_x0 = data[:batch].clone()  # (B, 1, 28, 28), refilled before every replay

    def step_loss() -> torch.Tensor:
        # Algorithm 1 without the input checks of du.diffusion_loss (they read values back to
        # the CPU, which is not allowed while a graph is being captured)
        t = torch.randint(0, schedule.num_timesteps, (batch,), device=device)  # (B,)
        noise = torch.randn_like(static_x0)  # (B, 1, 28, 28)
        x_t = (schedule.sqrt_alphas_cumprod[t].view(-1, 1, 1, 1) * static_x0
               + schedule.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1, 1) * noise)
        return torch.nn.functional.mse_loss(model(x_t, t), noise)

    def full_step() -> torch.Tensor:
        loss = step_loss()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config["grad_clip"])
        optimizer.step()
        return loss

    generator = torch.Generator().manual_seed(config["seed"])
    batches = du._batches(data, batch, generator)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up steps (real training steps, counted below)
        for _ in range(3):
            static_x0.copy_(next(batches))
            optimizer.zero_grad(set_to_none=True)
            full_step()
            ema.update(model)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = full_step()
    losses_gpu = torch.zeros(200_000, device=device)
    started = time.perf_counter()
    steps = 3
    while True:
        static_x0.copy_(next(batches))
        graph.replay()
        ema.update(model)
        losses_gpu[steps].copy_(static_loss.detach())
        steps += 1
        if steps % 500 == 0:
            if not torch.isfinite(losses_gpu[steps - 500:steps]).all():
                raise FloatingPointError(f"U-Net loss became non-finite before step {steps}")
            if time.perf_counter() - started > budget_s * (steps / (steps + 500)):
                break
            if steps % 5000 == 0:
                print(f"unet: step {steps}, loss {losses_gpu[steps - 500:steps].mean().item():.4f}, "
                      f"{time.perf_counter() - started:.0f} s", flush=True)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    config = dict(config, num_steps=steps)
    payload = du.save_trained(out / f"{config['model']}_default.pt", ema.model, config,
                              losses_gpu[3:steps].cpu(),  # the warm-up losses were not recorded
                              seconds, hardware() + " (CUDA graph replay)")
    final_loss = payload["final_loss"]
    log["unet"] = {"seconds": round(seconds, 1), "steps": steps, "final_loss": final_loss,
                   "parameters": count_parameters(model), "config": config}
    print(f"unet: {steps} steps in {seconds:.0f} s ({seconds / steps * 1000:.1f} ms/step), "
          f"final loss {final_loss:.4f}", flush=True)
    return ema.model


def measure(model, config, classifier, device, log, name, ddim: bool) -> dict:
    """FID etc. of DDPM-1000 (and DDIM-50) samples at each n in FID_SIZES; store in log."""
    schedule = du.DiffusionSchedule(num_timesteps=config["num_timesteps"],
                                    schedule=config["schedule"], device=device)
    model = model.to(device).eval()
    results = {}
    # both samplers clip the predicted x0 to [-1, 1], as the notebooks do
    common = {"device": device, "clip_x0": True, "progress": False}
    samplers = {"ddpm1000": lambda n, g: du.p_sample_loop(model, schedule, (n, 1, 28, 28), generator=g, **common)}
    if ddim:
        samplers["ddim50"] = lambda n, g: du.ddim_sample(model, schedule, (n, 1, 28, 28), num_steps=50,
                                                         generator=g, **common)
    biggest = max(FID_SIZES)
    for sampler_name, sampler in samplers.items():
        started = time.perf_counter()
        g = torch.Generator(device=device).manual_seed(1234)
        samples = torch.cat([sampler(min(2500, biggest - i), g) for i in range(0, biggest, 2500)])
        seconds = time.perf_counter() - started
        samples = samples.clamp(-1, 1).cpu()
        results[sampler_name] = {"sample_seconds": round(seconds, 1), "n_sampled": biggest}
        for n in FID_SIZES:
            stats = du.evaluate_samples(samples[:n], classifier)
            results[sampler_name][str(n)] = stats
            print(f"{name} {sampler_name} n={n}: FID {stats['fid']:.2f}, confident "
                  f"{stats['confident_share']:.3f}", flush=True)
        grids_file = Path(log["out"]) / "sample_grids.pt"
        grids = torch.load(grids_file) if grids_file.is_file() else {}
        grids[f"{name}_{sampler_name}"] = samples[:64].clone()
        torch.save(grids, grids_file)
    log[f"{name}_quality"] = results
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("checkpoints"))
    parser.add_argument("--only", choices=["classifier", "mlp", "unet", "floors"], action="append")
    parser.add_argument("--quick", action="store_true", help="tiny step counts, for a smoke test")
    parser.add_argument("--unet-steps", type=int, default=None, help="override U-Net num_steps")
    parser.add_argument("--unet-budget-s", type=float, default=None,
                        help="on a GPU: train the U-Net with CUDA-graph replay for this many seconds")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    todo = set(args.only or ["classifier", "mlp", "unet", "floors"])
    device = du.get_device()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    log = {"hardware": hardware(), "torch": torch.__version__, "out": str(args.out)}
    print(log, flush=True)
    train_x, train_y = du.mnist_tensor("data", train=True, device=device)
    test_x, test_y = du.mnist_tensor("data", train=False, device=device)

    global FID_SIZES
    mlp_config, unet_config = dict(MLP_CONFIG), dict(UNET_CONFIG)
    if args.unet_steps:
        unet_config["num_steps"] = args.unet_steps
    if args.quick:
        FID_SIZES = (32, 64)
        mlp_config["num_steps"] = unet_config["num_steps"] = 100

    classifier_path = args.out / "mnist_classifier.pt"
    if "classifier" in todo:
        started = time.perf_counter()
        classifier = du.train_classifier(train_x, train_y, epochs=1 if args.quick else 8, progress=False)
        seconds = time.perf_counter() - started
        accuracy = du.classifier_accuracy(classifier, test_x, test_y)
        du.save_checkpoint(classifier_path, classifier, du.CLASSIFIER_CONFIG,
                           test_accuracy=accuracy, train_seconds=seconds, hardware=hardware())
        log["classifier"] = {"seconds": round(seconds, 1), "test_accuracy": accuracy}
        print(f"classifier: test accuracy {accuracy:.4f} in {seconds:.0f} s", flush=True)
    classifier = du.load_classifier(classifier_path, device=device)

    if "floors" in todo:
        floors = {}
        g = torch.Generator().manual_seed(0)
        for n in sorted(set(FID_SIZES) | {1000, 2000, 10000}):
            idx = torch.randperm(train_x.shape[0], generator=g)[:n].to(device)
            floors[str(n)] = du.evaluate_samples(train_x[idx], classifier)["fid"]
            noise = torch.randn(n, 1, 28, 28, generator=g).clamp(-1, 1)
            floors[f"noise_{n}"] = du.evaluate_samples(noise, classifier)["fid"]
            print(f"floor n={n}: train-vs-test FID {floors[str(n)]:.3f}, noise FID {floors[f'noise_{n}']:.1f}",
                  flush=True)
        log["floors"] = floors

    for name, config in (("mlp", mlp_config), ("unet", unet_config)):
        if name not in todo:
            continue
        if name == "unet" and args.unet_budget_s and device.type == "cuda":
            try:
                model = train_graphed(config, train_x, args.out, log, args.unet_budget_s)
                config = log["unet"]["config"]
            except RuntimeError as exc:  # graph capture unsupported: eager, as many steps as fit
                print(f"CUDA graph path failed ({exc}); training eagerly", flush=True)
                config = dict(config, num_steps=max(500, int(args.unet_budget_s / 0.07) // 500 * 500))
                model = train_denoiser(config, train_x, args.out, log)
        else:
            model = train_denoiser(config, train_x, args.out, log)
        quality = measure(model, config, classifier, device, log, name, ddim=(name == "unet"))
        # record the measured quality inside the checkpoint, so notebooks can cite it offline
        path = args.out / f"{name}_default.pt"
        payload = torch.load(path, weights_only=False)
        payload["quality"] = {"measured_on": hardware(), **quality}
        du._atomic_torch_save(payload, path)
        (args.out / f"results_{name}.json").write_text(json.dumps(log, indent=1, default=str))

    (args.out / "results.json").write_text(json.dumps(log, indent=1, default=str))
    print(json.dumps(log, indent=1, default=str))


if __name__ == "__main__":
    main()
