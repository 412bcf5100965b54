"""Train the shipped checkpoints: the classifier, the MLP, the plain MLP, the U-Net, notebook 3's
laptop preset and notebook 4's conditional U-Net. Their sample quality is measured by
benchmarks/quality.py, which writes result files (n, intervals, the real-data floor) that the
notebooks and README read.

Run by hand, not in CI. The denoisers are the notebooks' own: the classes and the training loops
come from lessons/ (exported from notebooks 2, 3 and 4) and the configs are read from the
notebooks' config cells, so a checkpoint written here is exactly what a notebook loads. On a
GPU the whole script takes a few tens of minutes; on this project's 2-core CPU the U-Net alone
would take hours (see the README's timings); the laptop preset and notebook 4's model take about
20 minutes each, in float32.

    python scripts/train_checkpoints.py --out checkpoints            # everything
    python scripts/train_checkpoints.py --only classifier --out checkpoints
    python scripts/train_checkpoints.py --only guidance --out checkpoints   # about 20 min on a 2-core CPU
    python scripts/train_checkpoints.py --only laptop --out checkpoints     # notebook 3's LAPTOP_CONFIG
    python scripts/train_checkpoints.py --only plain --out checkpoints      # notebook 2's PLAIN_CONFIG
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
from lessons.guidance import ConditionalUNet, train_conditional  # noqa: E402
from lessons.mlp import MLPDenoiser, PlainMLP, train  # noqa: E402
from lessons.unet import UNet, train_recipe  # noqa: E402
from notebook_support.checkpoints import save_checkpoint  # noqa: E402
from notebook_support.data import mnist_tensor  # noqa: E402
from notebook_support.environment import PROJECT_ROOT, get_device  # noqa: E402
from notebook_support.evaluation import CLASSIFIER_CONFIG, classifier_accuracy, train_classifier  # noqa: E402
from notebook_support.export import notebook_config  # noqa: E402
from notebook_support.training import hardware_name, train_from_config  # noqa: E402

MODELS = {  # name -> (notebook, the name of the config it trains, model class, the notebook's training function,
    #                   checkpoint file)
    "mlp": ("2_custom_mlp.ipynb", "CONFIG", MLPDenoiser, train, "mlp_default.pt"),
    "plain": ("2_custom_mlp.ipynb", "PLAIN_CONFIG", PlainMLP, train, "mlp_plain.pt"),
    "unet": ("3_unet.ipynb", "DEFAULT_CONFIG", UNet, train, "unet_default.pt"),
    "laptop": ("3_unet.ipynb", "LAPTOP_CONFIG", UNet, train_recipe, "unet_laptop.pt"),
}


def train_denoiser(name: str, config: dict, data: torch.Tensor, out: Path, log: dict) -> torch.nn.Module:
    _, _, model_class, train_fn, file = MODELS[name]
    parameters = sum(p.numel() for p in model_class(**config["model_kwargs"]).parameters())
    print(f"{name}: {parameters:,} parameters, {config['num_steps']} steps", flush=True)
    model, payload = train_from_config(config, model_class, train_fn, data, out / file, progress=False)
    log[name] = {"seconds": round(payload["train_seconds"], 1), "steps": payload["steps"],
                 "final_loss": payload["final_loss"], "parameters": parameters}
    print(f"{name}: {payload['steps']} steps in {payload['train_seconds']:.0f} s, "
          f"final loss {payload['final_loss']:.4f}", flush=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "checkpoints")
    parser.add_argument("--only", choices=["classifier", *MODELS, "guidance"], action="append")
    parser.add_argument("--quick", action="store_true", help="tiny step counts, for a smoke test")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    todo = set(args.only or ["classifier", *MODELS, "guidance"])
    device = get_device()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    log = {"hardware": hardware_name(device), "torch": str(torch.__version__), "out": str(args.out)}
    print(log, flush=True)
    train_x, train_y = mnist_tensor(train=True, device=device)
    test_x, test_y = mnist_tensor(train=False, device=device)

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
    for name, (notebook, config_name, *_) in MODELS.items():
        if name not in todo:
            continue
        config = notebook_config(PROJECT_ROOT / notebook, config_name)
        if args.quick:
            config["num_steps"] = 100
        train_denoiser(name, config, train_x, args.out, log)
        (args.out / f"results_{name}.json").write_text(json.dumps(log, indent=1, default=str))

    if "guidance" in todo:  # notebook 4's class-conditional U-Net; the notebook measures its samples
        config = notebook_config(PROJECT_ROOT / "4_guidance.ipynb", "CONFIG")
        if args.quick:
            config["num_steps"] = 100
        train_with_labels = functools.partial(train_conditional, labels=train_y)   # as the notebook calls it
        _, payload = train_from_config(config, ConditionalUNet, train_with_labels, train_x, args.out / "unet_guidance.pt",
                                       progress=False)
        log["guidance"] = {"seconds": round(payload["train_seconds"], 1), "steps": payload["steps"],
                           "final_loss": payload["final_loss"]}
        print(f"guidance: {payload['steps']} steps in {payload['train_seconds']:.0f} s, "
              f"final loss {payload['final_loss']:.4f}", flush=True)

    (args.out / "results.json").write_text(json.dumps(log, indent=1, default=str))
    print(json.dumps(log, indent=1, default=str))
    print("measure the samples: python benchmarks/quality.py sample && python benchmarks/quality.py evaluate")


if __name__ == "__main__":
    main()
