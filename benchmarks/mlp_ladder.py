"""Notebook 2's ladder (section 4): five MLPs, each adding one change to the one before, trained
with the same recipe and budget, sampled with DDPM-1000 and measured beside the real-data floor.
Run by hand (about ten minutes on a 2-core CPU, too long for a notebook cell); it writes one
result file, benchmarks/results/<date>_<hardware>_mlp_ladder.json, which RESULTS.md's ladder table
(scripts/readme_tables.py) reads.

    python benchmarks/mlp_ladder.py                          # STEPS steps and N digits per rung
    python benchmarks/mlp_ladder.py --steps 20 --n 16 --dry-run   # a smoke test: nothing is written

Everything comes from notebook 2: the models (`PlainMLP`, `MLPDenoiser`) and the training loop
(`train`) from lessons/mlp.py, which is exported from its cells, and the recipe (`CONFIG`: batch
size, lr, gradient clipping, EMA decay, seed) and `CLIP_X0` from its config cell. Each rung starts
from torch.manual_seed(CONFIG["seed"]) and samples from the same x_T and z (a generator seeded
with 4), so the rungs differ only in the model. The file holds per rung the parameter count, the
training seconds, the final loss (mean of the last 100 steps), the quality report and the first
GRID digits (uint8), and for the last rung also the samples of its raw weights next to its EMA
(RESULTS.md compares them).

A finished rung is saved at once to outputs/mlp_ladder/ (keyed by the settings and the code of
lessons/mlp.py and diffusion_utils.py); an interrupted run resumes after the last finished rung.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import diffusion_utils as du  # noqa: E402
from lessons.mlp import MLPDenoiser, PlainMLP, train  # noqa: E402
from notebook_support.checks import DIGIT_COUNT, int_at_least  # noqa: E402
from notebook_support.data import mnist_tensor  # noqa: E402
from notebook_support.environment import OUTPUT_DIR, PROJECT_ROOT, get_device  # noqa: E402
from notebook_support.evaluation import evaluate_samples, format_quality, load_classifier, real_data_floor  # noqa: E402
from notebook_support.export import notebook_config  # noqa: E402
from notebook_support.files import atomic_write_bytes  # noqa: E402
from notebook_support.results import images_to_json, write_result  # noqa: E402

NOTEBOOK = PROJECT_ROOT / "2_custom_mlp.ipynb"
PARTIAL_DIR = OUTPUT_DIR / "mlp_ladder"
GRID = 16              # digits per rung stored in the result file: the notebook's 4 x 4 grids
SAMPLE_SEED = 4        # x_T and z of every rung
STEPS = 2000           # training steps per rung (--steps)
N = 256                # digits drawn and measured per rung (--n)
LADDER = {  # rung name -> (model class, keyword arguments); each rung adds one change to the one before
    "plain (t/T as a number)": (PlainMLP, {"hidden": 512, "time_embedding": "scalar"}),
    "+ sinusoidal t": (PlainMLP, {"hidden": 512, "time_embedding": "sinusoidal"}),
    "+ wider (1024)": (PlainMLP, {"hidden": 1024, "time_embedding": "sinusoidal"}),
    "+ residual, LayerNorm": (MLPDenoiser, {"hidden": 1024, "noise_path": "none"}),
    "+ direct noise path g(t)x_t": (MLPDenoiser, {"hidden": 1024, "noise_path": "per_t"}),
}


def describe(model_class: type, kwargs: dict) -> str:
    """'PlainMLP(hidden=512, time_embedding='scalar')': how the rung's model is built."""
    return f"{model_class.__name__}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"


def code_digest() -> str:
    """Hash of the code that shapes a rung's numbers: a partial run made with other code is not resumed."""
    text = b"".join((PROJECT_ROOT / name).read_bytes() for name in ("lessons/mlp.py", "diffusion_utils.py"))
    return hashlib.sha256(text).hexdigest()[:16]


def sample_and_measure(model, schedule, n: int, clip_x0: bool, classifier, device) -> tuple[dict, torch.Tensor, float]:
    """n DDPM-1000 digits from `model` (x_T and z from SAMPLE_SEED), their report, and the sampling seconds."""
    started = time.perf_counter()
    images = du.p_sample_loop(model, schedule, (n, 1, 28, 28), clip_x0=clip_x0, device=device,
                              generator=torch.Generator().manual_seed(SAMPLE_SEED), progress=False)   # (n, 1, 28, 28)
    seconds = time.perf_counter() - started
    images = images.clamp(-1, 1)
    return evaluate_samples(images, classifier), images, seconds


def run_rung(name: str, config: dict, steps: int, n: int, clip_x0: bool, data, schedule, classifier, device,
             keep_raw: bool) -> dict:
    """Train one rung as the notebook's recipe says, sample and measure it (and its raw weights if keep_raw)."""
    model_class, kwargs = LADDER[name]
    torch.manual_seed(config["seed"])                                     # the same initial draw for every rung
    raw = model_class(**kwargs)
    started = time.perf_counter()
    ema, losses = train(raw, schedule, data, num_steps=steps, batch_size=config["batch_size"], lr=config["lr"],
                        grad_clip=config["grad_clip"], ema_decay=config["ema_decay"], seed=config["seed"],
                        progress=False)
    train_seconds = time.perf_counter() - started
    report, images, sample_seconds = sample_and_measure(ema, schedule, n, clip_x0, classifier, device)
    record = {"name": name, "model": describe(model_class, kwargs), "params": sum(p.numel() for p in raw.parameters()),
              "train_seconds": train_seconds, "final_loss": float(np.mean(losses[-100:])),
              "sample_seconds": sample_seconds, "report": report, "samples": images_to_json(images[:GRID])}
    if keep_raw:   # the same digits from the weights after the last step instead of their EMA
        raw_report, raw_images, raw_seconds = sample_and_measure(raw.eval(), schedule, n, clip_x0, classifier, device)
        record["raw_weights"] = {"report": raw_report, "samples": images_to_json(raw_images[:GRID]),
                                 "sample_seconds": raw_seconds}
    return record


def setup() -> tuple:
    """What every run on notebook 2's recipe needs: (its CONFIG, its CLIP_X0, the device, the
    schedule, the training digits (60000, 1, 28, 28) in [-1, 1], the project's classifier)."""
    config = notebook_config(NOTEBOOK, "CONFIG")
    clip_x0 = notebook_config(NOTEBOOK, "CLIP_X0")
    device = get_device()
    schedule = du.DiffusionSchedule(num_timesteps=config["num_timesteps"], schedule=config["schedule"],
                                    device=device)
    data, _ = mnist_tensor(train=True, device=device)                      # (60000, 1, 28, 28)
    return config, clip_x0, device, schedule, data, load_classifier(device=device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int_at_least(1), default=STEPS, help=f"training steps per rung (default {STEPS})")
    parser.add_argument("--n", type=DIGIT_COUNT, default=N, help=f"digits drawn and measured per rung (default {N})")
    parser.add_argument("--results-dir", type=Path, default=None, help="where to write the result file "
                        "(default: benchmarks/results)")
    parser.add_argument("--dry-run", action="store_true", help="print the table but write no result file")
    parser.add_argument("--fresh", action="store_true", help="ignore finished rungs of an interrupted run")
    args = parser.parse_args()
    if args.steps < 1 or args.n < 2:
        parser.error(f"--steps must be >= 1 and --n >= 2, got {args.steps} and {args.n}")

    config, clip_x0, device, schedule, data, classifier = setup()
    recipe = {key: config[key] for key in ("schedule", "num_timesteps", "batch_size", "lr", "grad_clip", "ema_decay",
                                           "seed")}
    settings = {"steps": args.steps, "n": args.n, "clip_x0": clip_x0, "recipe": recipe, "code": code_digest()}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    partial = PARTIAL_DIR / f"partial_steps{args.steps}_n{args.n}_{key}.json"
    done = [] if args.fresh or not partial.is_file() else json.loads(partial.read_text())["rungs"]
    if done:
        print(f"resuming {partial.relative_to(PROJECT_ROOT)}: {len(done)} of {len(LADDER)} rungs done")

    print(f"{args.steps} steps per rung, n = {args.n} DDPM-1000 digits each (clip_x0={clip_x0}), on {device}",
          flush=True)
    for index, name in enumerate(LADDER):
        if index < len(done):
            continue
        record = run_rung(name, config, args.steps, args.n, clip_x0, data, schedule, classifier, device,
                          keep_raw=index == len(LADDER) - 1)
        done.append(record)
        atomic_write_bytes(partial, (json.dumps({"settings": settings, "rungs": done}) + "\n").encode())
        print(f"[{index + 1}/{len(LADDER)}] {name}: {record['params']:,} params, {record['train_seconds']:.0f} s "
              f"training, loss {record['final_loss']:.4f}, {record['sample_seconds']:.0f} s sampling\n"
              f"    {format_quality(record['report'])}", flush=True)

    floor = real_data_floor(args.n, classifier)        # n random real training digits, measured the same way
    print(f"real digits (floor):\n    {format_quality(floor)}")
    seconds = floor["seconds"] + sum(r["train_seconds"] + r["sample_seconds"] + r["report"]["seconds"]
                                     + r.get("raw_weights", {}).get("sample_seconds", 0.0) for r in done)
    payload = {"steps": args.steps, "clip_x0": clip_x0, "sampler": f"DDPM-1000, x_T and z seeded with {SAMPLE_SEED}",
               "recipe": recipe, "grid_digits": GRID, "rungs": done, "floor": floor}
    if args.dry_run:
        print("dry run: no result file written")
        return
    path = write_result("mlp_ladder", payload, n=args.n, seed=config["seed"], seconds=seconds,
                        interval=done[0]["report"]["interval"], results_dir=args.results_dir)
    partial.unlink()
    print(f"-> {path}")


if __name__ == "__main__":
    main()
