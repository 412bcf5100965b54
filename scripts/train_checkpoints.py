"""Train the shipped checkpoints (classifier, MLP, U-Net, notebook 4's conditional U-Net) and
measure the MLP's and U-Net's sample quality.

Run by hand, not in CI. The denoisers are the notebooks' own: the classes and the training loop
come from lessons/ (exported from notebooks 2, 3 and 4) and the configs are read from the
notebooks' config cells, so a checkpoint written here is exactly what a notebook loads. On a
GPU the whole script takes a few tens of minutes; on this project's 2-core CPU the U-Net alone
would take hours (see the README's timings). Notebook 3's laptop preset is trained by
benchmarks/diffusers_compare.py, in the same run as the model it is compared with.

    python scripts/train_checkpoints.py --out checkpoints            # everything
    python scripts/train_checkpoints.py --only classifier --out checkpoints
    python scripts/train_checkpoints.py --only guidance --out checkpoints   # about 15 min on a 2-core CPU
    python scripts/train_checkpoints.py --quick --out /tmp/ckpt       # tiny smoke run
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import diffusion_utils as du  # noqa: E402
from lessons.guidance import ConditionalUNet  # noqa: E402
from lessons.mlp import MLPDenoiser, train  # noqa: E402
from lessons.unet import UNet  # noqa: E402
from notebook_support.checkpoints import save_checkpoint  # noqa: E402
from notebook_support.data import mnist_tensor  # noqa: E402
from notebook_support.environment import PROJECT_ROOT, get_device  # noqa: E402
from notebook_support.evaluation import (CLASSIFIER_CONFIG, CLASSIFIER_PATH, classifier_accuracy, evaluate_samples,  # noqa: E402
                                         load_classifier, train_classifier)
from notebook_support.export import notebook_config  # noqa: E402
from notebook_support.files import atomic_torch_save, load_torch_file  # noqa: E402
from notebook_support.training import hardware_name, train_from_config  # noqa: E402

MODELS = {  # name -> (notebook, the name of the config it trains, model class)
    "mlp": ("2_custom_mlp.ipynb", "CONFIG", MLPDenoiser),
    "unet": ("3_unet.ipynb", "DEFAULT_CONFIG", UNet),
}
FID_SIZES = (32, 256, 1000, 5000)  # the n at which the notebooks and the README compare models
SAMPLE_CHUNK = 2500  # samples per sampler call (memory); on a CPU use --chunk 128


def train_denoiser(name: str, config: dict, data: torch.Tensor, out: Path, log: dict) -> torch.nn.Module:
    model_class = MODELS[name][2]
    parameters = sum(p.numel() for p in model_class(**config["model_kwargs"]).parameters())
    print(f"{name}: {parameters:,} parameters, {config['num_steps']} steps", flush=True)
    model, payload = train_from_config(config, model_class, train, data, out / f"{name}_default.pt", progress=False)
    log[name] = {"seconds": round(payload["train_seconds"], 1), "steps": payload["steps"],
                 "final_loss": payload["final_loss"], "parameters": parameters}
    print(f"{name}: {payload['steps']} steps in {payload['train_seconds']:.0f} s, "
          f"final loss {payload['final_loss']:.4f}", flush=True)
    return model


def measure(model, config, classifier, device, name: str, ddim: bool, out: Path, chunk: int) -> dict:
    """FID, KID etc. of DDPM-1000 (and DDIM-50) samples at each n in FID_SIZES."""
    schedule = du.DiffusionSchedule(num_timesteps=config["num_timesteps"], schedule=config["schedule"], device=device)
    model = model.to(device).eval()
    common = {"device": device, "clip_x0": True, "progress": False}  # both samplers clip x0, as the notebooks do
    samplers = {"ddpm1000": lambda n, g: du.p_sample_loop(model, schedule, (n, 1, 28, 28), generator=g, **common)}
    if ddim:
        samplers["ddim50"] = lambda n, g: du.ddim_sample(model, schedule, (n, 1, 28, 28), num_steps=50,
                                                         generator=g, **common)
    biggest = max(FID_SIZES)
    results = {}
    for sampler_name, sampler in samplers.items():
        started = time.perf_counter()
        g = torch.Generator(device=device).manual_seed(1234)
        samples = torch.cat([sampler(min(chunk, biggest - i), g) for i in range(0, biggest, chunk)])
        seconds = time.perf_counter() - started
        samples = samples.clamp(-1, 1).cpu()
        results[sampler_name] = {"sample_seconds": round(seconds, 1), "n_sampled": biggest}
        for n in FID_SIZES:
            stats = evaluate_samples(samples[:n], classifier)
            results[sampler_name][str(n)] = stats
            print(f"{name} {sampler_name} n={n}: FID {stats['fid']:.2f}, KID {stats['kid']:.4f}, confident "
                  f"{stats['confident_share']:.3f}", flush=True)
        grids_file = out / "sample_grids.pt"
        grids = load_torch_file(grids_file) if grids_file.is_file() else {}
        grids[f"{name}_{sampler_name}"] = samples[:64].clone()
        atomic_torch_save(grids, grids_file)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "checkpoints")
    parser.add_argument("--only", choices=["classifier", "mlp", "unet", "floors", "guidance"], action="append")
    parser.add_argument("--quick", action="store_true", help="tiny step counts, for a smoke test")
    parser.add_argument("--chunk", type=int, default=SAMPLE_CHUNK, help="samples per sampler call")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    todo = set(args.only or ["classifier", "mlp", "unet", "floors", "guidance"])
    device = get_device()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    log = {"hardware": hardware_name(device), "torch": str(torch.__version__), "out": str(args.out)}
    print(log, flush=True)
    train_x, train_y = mnist_tensor(train=True, device=device)
    test_x, test_y = mnist_tensor(train=False, device=device)

    global FID_SIZES
    if args.quick:
        FID_SIZES = (32, 64)

    classifier_path = args.out / "mnist_classifier.pt"
    if "classifier" in todo:
        started = time.perf_counter()
        classifier = train_classifier(train_x, train_y, epochs=1 if args.quick else 8, progress=False)
        seconds = time.perf_counter() - started
        accuracy = classifier_accuracy(classifier, test_x, test_y)
        save_checkpoint(classifier_path, classifier, CLASSIFIER_CONFIG, test_accuracy=accuracy,
                        train_seconds=seconds, hardware=hardware_name(device))
        log["classifier"] = {"seconds": round(seconds, 1), "test_accuracy": accuracy}
        print(f"classifier: test accuracy {accuracy:.4f} in {seconds:.0f} s", flush=True)
    if not classifier_path.is_file():  # not trained in this run: measure with the shipped one
        classifier_path = CLASSIFIER_PATH
    classifier = load_classifier(classifier_path, device=device)

    if "floors" in todo:
        floors = {}
        g = torch.Generator().manual_seed(0)
        for n in sorted(set(FID_SIZES) | {1000, 2000, 10000}):
            idx = torch.randperm(train_x.shape[0], generator=g)[:n].to(device)
            floors[str(n)] = evaluate_samples(train_x[idx], classifier)
            noise = torch.randn(n, 1, 28, 28, generator=g).clamp(-1, 1)
            floors[f"noise_{n}"] = evaluate_samples(noise, classifier)
            print(f"floor n={n}: train-vs-test FID {floors[str(n)]['fid']:.3f}, KID {floors[str(n)]['kid']:.5f}; "
                  f"noise FID {floors[f'noise_{n}']['fid']:.1f}", flush=True)
        log["floors"] = floors

    for name, (notebook, config_name, _) in MODELS.items():
        if name not in todo:
            continue
        config = notebook_config(PROJECT_ROOT / notebook, config_name)
        if args.quick:
            config["num_steps"] = 100
        model = train_denoiser(name, config, train_x, args.out, log)
        quality = measure(model, config, classifier, device, name, ddim=(name == "unet"), out=args.out,
                          chunk=args.chunk)
        log[f"{name}_quality"] = quality
        # record the measured quality inside the checkpoint, so notebooks can cite it offline
        path = args.out / f"{name}_default.pt"
        payload = load_torch_file(path)
        payload["quality"] = {"measured_on": hardware_name(device), **quality}
        atomic_torch_save(payload, path)
        (args.out / f"results_{name}.json").write_text(json.dumps(log, indent=1, default=str))

    if "guidance" in todo:  # notebook 4's class-conditional U-Net; the notebook measures its samples
        config = notebook_config(PROJECT_ROOT / "4_guidance.ipynb", "CONFIG")
        if args.quick:
            config["num_steps"] = 100
        train_with_labels = functools.partial(train, labels=train_y)   # as the notebook calls it
        _, payload = train_from_config(config, ConditionalUNet, train_with_labels, train_x, args.out / "unet_guidance.pt",
                                       progress=False)
        log["guidance"] = {"seconds": round(payload["train_seconds"], 1), "steps": payload["steps"],
                           "final_loss": payload["final_loss"]}
        print(f"guidance: {payload['steps']} steps in {payload['train_seconds']:.0f} s, "
              f"final loss {payload['final_loss']:.4f}", flush=True)

    (args.out / "results.json").write_text(json.dumps(log, indent=1, default=str))
    print(json.dumps(log, indent=1, default=str))


if __name__ == "__main__":
    main()
