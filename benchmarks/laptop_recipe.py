"""The search for notebook 3's laptop preset: which U-Net and training recipe draws the best digits
from a fixed CPU-time budget. Run by hand (timings flake in CI); logs go to benchmarks/results/.

    python benchmarks/laptop_recipe.py speed                      # s/step and sampling img/s per variant
    python benchmarks/laptop_recipe.py trial --name narrow --budget 300 --set model_kwargs.base_channels=16
    python benchmarks/laptop_recipe.py table --log benchmarks/results/<log>.jsonl   # the lab report's table

`speed` times training steps (batch 128 unless --batch) of candidate U-Nets in float32 and in
bfloat16 autocast, and the U-Net forward pass at several batch sizes under no_grad and
inference_mode. `trial` trains the notebook's laptop preset (LAPTOP_CONFIG in 3_unet.ipynb) with
the given overrides for `--budget` seconds of wall-clock time on this machine (the step count
is set from a short timing run, so a cosine lr decay ends with the budget), then samples
`--n` digits with DDIM-50 and measures them with the project's evaluator. One JSON line per
trial is appended to `--log`.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import diffusion_utils as du  # noqa: E402
from lessons.unet import UNet, train_recipe  # noqa: E402
from notebook_support.checks import DIGIT_COUNT, int_at_least  # noqa: E402
from notebook_support.checkpoints import validate_config  # noqa: E402
from notebook_support.data import mnist_tensor  # noqa: E402
from notebook_support.environment import PROJECT_ROOT  # noqa: E402
from notebook_support.evaluation import evaluate_samples, load_classifier  # noqa: E402
from notebook_support.export import notebook_config  # noqa: E402
from notebook_support.sampling import sample_in_chunks  # noqa: E402
from notebook_support.training import train_kwargs  # noqa: E402

SPEED_MODELS = {  # name -> UNet kwargs
    "shipped 32x(1,2,2) 2res attn7": dict(base_channels=32, channel_mults=[1, 2, 2], num_res_blocks=2, attention_resolutions=[7]),
    "32x(1,2,2) 1res attn7": dict(base_channels=32, channel_mults=[1, 2, 2], num_res_blocks=1, attention_resolutions=[7]),
    "32x(1,2,2) 1res": dict(base_channels=32, channel_mults=[1, 2, 2], num_res_blocks=1, attention_resolutions=[]),
    "24x(1,2,2) 1res": dict(base_channels=24, channel_mults=[1, 2, 2], num_res_blocks=1, attention_resolutions=[]),
    "16x(1,2,2) 2res attn7": dict(base_channels=16, channel_mults=[1, 2, 2], num_res_blocks=2, attention_resolutions=[7]),
    "16x(1,2,4) 1res": dict(base_channels=16, channel_mults=[1, 2, 4], num_res_blocks=1, attention_resolutions=[]),
    "16x(1,2,2) 1res": dict(base_channels=16, channel_mults=[1, 2, 2], num_res_blocks=1, attention_resolutions=[]),
}


def machine() -> str:
    return (f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")


def seconds_per_train_step(model_kwargs: dict, batch: int, bf16: bool, data: torch.Tensor, steps: int = 4,
                           channels_last: bool = False) -> float:
    """Wall time of one step of notebook 3's recipe loop (loss, backward, clip, Adam, EMA) after one warm-up step."""
    torch.manual_seed(0)
    model = UNet(**model_kwargs)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    schedule = du.DiffusionSchedule()
    train_recipe(model, schedule, data, num_steps=1, batch_size=batch, bf16=bf16, progress=False)  # warm-up
    started = time.perf_counter()
    train_recipe(model, schedule, data, num_steps=steps, batch_size=batch, bf16=bf16, progress=False)
    return (time.perf_counter() - started) / steps


@torch.no_grad()
def forward_images_per_second(model: torch.nn.Module, batch: int, mode: str, repeats: int = 3) -> float:
    x, t = torch.randn(batch, 1, 28, 28), torch.full((batch,), 500)
    context = torch.inference_mode() if mode == "inference_mode" else torch.no_grad()
    with context:
        model(x, t)
        started = time.perf_counter()
        for _ in range(repeats):
            model(x, t)
    return batch * repeats / (time.perf_counter() - started)


def speed(args) -> None:
    data = mnist_tensor()[0][:4096]                                        # (4096, 1, 28, 28) in [-1, 1]
    print(f"# training s/step at batch {args.batch} ({machine()})")
    print(f"{'model':<32} {'params':>9} {'fp32 s/step':>12} {'bf16 s/step':>12} {'bf16 gain':>10}")
    for name, kwargs in SPEED_MODELS.items():
        params = sum(p.numel() for p in UNet(**kwargs).parameters())
        fp32 = seconds_per_train_step(kwargs, args.batch, False, data)
        bf16 = seconds_per_train_step(kwargs, args.batch, True, data)
        print(f"{name:<32} {params:>9,} {fp32:>12.3f} {bf16:>12.3f} {fp32 / bf16:>9.2f}x", flush=True)
    kwargs = SPEED_MODELS[args.detail_model]
    print(f"\n# {args.detail_model}: other settings, training s/step at batch {args.batch}")
    for label, options in (("bf16 + channels_last", dict(bf16=True, channels_last=True)),
                           ("bf16, batch 64", dict(bf16=True, batch=64)),
                           ("bf16, batch 256", dict(bf16=True, batch=256))):
        batch = options.pop("batch", args.batch)
        print(f"{label:<24} {seconds_per_train_step(kwargs, batch, data=data, **options):.3f} s/step "
              f"(batch {batch})", flush=True)
    print(f"\n# U-Net forward pass, images/s (sampling cost), shipped model and {args.detail_model}")
    for name in ("shipped 32x(1,2,2) 2res attn7", args.detail_model):
        model = UNet(**SPEED_MODELS[name]).eval()
        for batch in (64, 128, 256, 500):
            rates = {mode: forward_images_per_second(model, batch, mode) for mode in ("no_grad", "inference_mode")}
            with torch.autocast("cpu", dtype=torch.bfloat16):
                rates["bf16"] = forward_images_per_second(model, batch, "inference_mode")
            print(f"{name:<32} batch {batch:>3}: " + ", ".join(f"{m} {r:6.0f}" for m, r in rates.items()), flush=True)


def set_key(config: dict, dotted: str, value: str) -> None:
    """config['a']['b'] = json value, for --set a.b=value."""
    *parents, last = dotted.split(".")
    for key in parents:
        config = config[key]
    try:
        config[last] = json.loads(value)
    except json.JSONDecodeError:
        config[last] = value                                               # a bare string such as cosine


def trial(args) -> None:
    config = copy.deepcopy(notebook_config(PROJECT_ROOT / "3_unet.ipynb", "LAPTOP_CONFIG"))
    for item in args.set:
        set_key(config, *item.split("=", 1))
    data = mnist_tensor()[0]                                                # (60000, 1, 28, 28) in [-1, 1]
    if args.steps:                                                          # same model and speed as a trial before
        per_step = args.budget / args.steps
    else:
        per_step = seconds_per_train_step(config["model_kwargs"], config["batch_size"], config.get("bf16", False),
                                          data[:4096])
    config["num_steps"] = args.steps or max(1, int(args.budget / per_step))
    kwargs = train_kwargs(config)                                          # what train_recipe takes of the config
    validate_config(config, UNet, train_recipe)
    schedule = du.DiffusionSchedule(num_timesteps=config["num_timesteps"], schedule=config["schedule"])
    torch.manual_seed(config.get("seed", 0))
    model = UNet(**config["model_kwargs"])
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.name}: {params:,} parameters, {per_step:.3f} s/step -> {config['num_steps']} steps", flush=True)
    started = time.perf_counter()
    ema_model, losses = train_recipe(model, schedule, data, progress=False, **kwargs)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    samples = sample_in_chunks(du.ddim_sample, ema_model, schedule, args.n, num_steps=50, clip_x0=True,
                               generator=torch.Generator().manual_seed(1234), progress=False)
    sample_seconds = time.perf_counter() - started
    report = evaluate_samples(samples.clamp(-1, 1), load_classifier())
    row = {"name": args.name, "overrides": args.set, "params": params, "budget_s": args.budget,
           "steps": config["num_steps"], "train_s": round(train_seconds, 1), "s_per_step": round(per_step, 4),
           "final_loss": round(sum(losses[-200:]) / len(losses[-200:]), 4), "n": args.n,
           **{name: {bound: round(value, 4) for bound, value in report[name].items()}
              for name in ("fid", "kid_x1e3", "precision", "recall")}, "interval": report["interval"],
           "class_min": round(min(report["class_histogram"]), 4), "class_max": round(max(report["class_histogram"]), 4),
           "ddim50_s": round(sample_seconds, 1), "machine": machine(), "config": config}
    print(json.dumps(row), flush=True)
    with open(args.log, "a") as log:
        log.write(json.dumps(row) + "\n")


def table(args) -> None:
    """The trials of a log as a markdown table, each against the first trial at the same n."""
    rows = [json.loads(line) for line in Path(args.log).read_text().splitlines() if line.strip()]
    def shown(measure, digits: int) -> str:  # rows written before the intervals hold a bare number
        if not isinstance(measure, dict):
            return "–" if measure is None else f"{measure:.{digits}f}"
        return f"{measure['value']:.{digits}f} [{measure['low']:.{digits}f}, {measure['high']:.{digits}f}]"

    print("| trial | change against the base | params | steps | train s | FID [95 %] | KID ×10³ | precision | recall "
          "| classes min–max |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["n"] != args.n:
            continue
        change = ", ".join(r["overrides"]) or "(the base recipe)"
        print(f"| {r['name']} | {change} | {r['params']:,} | {r['steps']} | {r['train_s']:.0f} | "
              f"{shown(r['fid'], 1)} | {shown(r.get('kid_x1e3'), 1)} | {shown(r.get('precision'), 3)} | {shown(r.get('recall'), 3)} | "
              f"{r['class_min']:.1%}–{r['class_max']:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_speed = sub.add_parser("speed")
    p_speed.add_argument("--batch", type=int_at_least(1), default=128)
    p_speed.add_argument("--detail-model", default="16x(1,2,2) 1res", choices=list(SPEED_MODELS))
    p_trial = sub.add_parser("trial")
    p_trial.add_argument("--name", required=True)
    p_trial.add_argument("--budget", type=float, default=300.0, help="training seconds on this machine")
    p_trial.add_argument("--n", type=DIGIT_COUNT, default=1000, help="DDIM-50 samples to evaluate")
    p_trial.add_argument("--steps", type=int, default=0,
                         help="train this many steps instead of timing the model (for trials that differ in "
                              "lr, loss or EMA only, so timing noise does not change their step count)")
    p_trial.add_argument("--set", action="append", default=[], help="override, e.g. lr=1e-3 or model_kwargs.base_channels=16")
    p_trial.add_argument("--log", default=str(PROJECT_ROOT / "benchmarks/results/laptop_recipe_trials.jsonl"))
    p_table = sub.add_parser("table")
    p_table.add_argument("--n", type=DIGIT_COUNT, default=500, help="show the trials evaluated at this n")
    p_table.add_argument("--log", default=str(PROJECT_ROOT / "benchmarks/results/laptop_recipe_trials.jsonl"))
    args = parser.parse_args()
    {"speed": speed, "trial": trial, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
