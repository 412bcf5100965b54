"""What the laptop models of notebooks 3 and 4 cost to train here: seconds per step of each one's own loop in
float32 and, where the CPU computes it natively, under bf16 autocast (emulated bf16 is slower than float32, so
it is not timed there), beside the shipped checkpoint's real training time. Run by hand on an otherwise idle
machine, about a minute per model; one result file per model, training_speed_<model>, which the notebooks'
text quotes (the float32 time on this machine, the bf16 time where native).

    python benchmarks/training_speed.py                        # laptop (notebook 3) and guidance (notebook 4)
    python benchmarks/training_speed.py --models laptop --timed-steps 20

The loop is timed as load_or_train times it before it trains (seconds_per_step: warm-up steps first), on the
first 4,096 training digits: batches are drawn from them, so the step costs what a full run's step costs.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import diffusion_utils as du  # noqa: E402
from notebook_support.checks import int_at_least  # noqa: E402
from notebook_support.data import mnist_tensor  # noqa: E402
from notebook_support.environment import CHECKPOINT_DIR, PROJECT_ROOT  # noqa: E402
from notebook_support.export import notebook_config  # noqa: E402
from notebook_support.files import load_torch_file  # noqa: E402
from notebook_support.results import write_result  # noqa: E402
from notebook_support.training import seconds_per_step_by_precision  # noqa: E402
from restamp_checkpoints import SHIPPED  # noqa: E402  each shipped file's notebook, config, class and loop

MODELS = {"laptop": "unet_laptop.pt", "guidance": "unet_guidance.pt"}   # name -> shipped checkpoint


def measure(name: str, timed_steps: int, images: torch.Tensor, labels: torch.Tensor) -> Path:
    """Time `name`'s loop in each precision, read its shipped checkpoint and write training_speed_<name>."""
    checkpoint = MODELS[name]
    notebook, config_name, model_class, train_fn, with_labels = SHIPPED[checkpoint]
    config = notebook_config(PROJECT_ROOT / notebook, config_name)
    if with_labels:                                                     # as notebook 4 calls its loop
        train_fn = functools.partial(train_fn, labels=labels)
    shipped = load_torch_file(CHECKPOINT_DIR / checkpoint, what="a shipped checkpoint")
    if shipped["config"] != config:
        raise SystemExit(f"{checkpoint} was trained with another config than {notebook}'s {config_name}: "
                         f"retrain it (scripts/train_checkpoints.py) before timing it")
    schedule = du.DiffusionSchedule(num_timesteps=config["num_timesteps"], schedule=config["schedule"])
    started = time.perf_counter()
    torch.manual_seed(0)
    model = model_class(**config["model_kwargs"])
    per_step, bf16_why = seconds_per_step_by_precision(model, train_fn, images, schedule, config,
                                                       timed_steps=timed_steps)
    estimate = {precision: s * config["num_steps"] / 60 for precision, s in per_step.items()}
    for precision, s in per_step.items():
        print(f"{name}, {precision}: {s:.3f} s/step -> {config['num_steps']:,} steps = {estimate[precision]:.1f} min",
              flush=True)
    print(f"{name}: the shipped run took {shipped['train_seconds'] / 60:.1f} min ({shipped['precision']}, "
          f"{shipped['hardware']})", flush=True)
    result = {"model": name, "notebook": notebook, "config_name": config_name, "config": config,
              "checkpoint": checkpoint, "parameters": sum(p.numel() for p in model.parameters()),
              "timed_steps": timed_steps, "threads": torch.get_num_threads(), "seconds_per_step": per_step,
              "estimate_minutes": estimate, "bf16_why": bf16_why,
              "shipped": {key: shipped[key] for key in ("steps", "train_seconds", "hardware", "precision",
                                                         "final_loss")}}
    return write_result(f"training_speed_{name}", result, n=None, seed=0, seconds=time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--timed-steps", type=int_at_least(1), default=20,
                        help="steps timed after the warm-up, per precision (default 20)")
    args = parser.parse_args()
    images, labels = mnist_tensor()                                   # (60000, 1, 28, 28), (60000,)
    for name in args.models:
        out = measure(name, args.timed_steps, images[:4096], labels[:4096])
        print(f"-> {out.relative_to(PROJECT_ROOT)}")


if __name__ == "__main__":
    main()
