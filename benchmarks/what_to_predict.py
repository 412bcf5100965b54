"""Notebook 5's bake-off: notebook 3's laptop U-Net and recipe loop, trained from scratch for the
same number of steps (the same CPU time: one network, one batch size) with each of the four
targets of 5_what_to_predict.ipynb, then measured at the series' headline n. Run by hand (hours on a
2-core CPU, not in CI); every run writes a result file that the notebook and the lab report (RESULTS.md) read.

    python benchmarks/what_to_predict.py run --variant flow --seed 0     # train, draw n = 2,000, measure
    python benchmarks/what_to_predict.py run --variant eps --seed 1 --samplers ddim20
    python benchmarks/what_to_predict.py speed                          # s/step of each variant, machine otherwise idle
    python benchmarks/what_to_predict.py run --variant flow --steps 1200 --samplers flow-heun10   # another budget
    python benchmarks/what_to_predict.py run --variant flow --bf16 --steps 2000 --samplers flow-heun10   # native bf16
    python benchmarks/what_to_predict.py run --variant flow --flow-time logit-normal --samplers flow-heun10
    python benchmarks/what_to_predict.py run --variant eps --samplers ddim50 heun10-lambda --paired-with ddim50
    python benchmarks/what_to_predict.py laptop                         # the laptop recipe: time, train, measure

`run` trains the notebook's BAKE_OFF_CONFIG for one prediction (lessons.prediction.variant_config)
with the notebook's own loop (train_prediction), saving checkpoints/predict_<variant>.pt for seed 0
and predict_<variant>_seed<k>.pt for other seeds (resumable; a finished file is loaded, not
retrained), then draws n digits with each named sampler (benchmarks/quality.py's chunked drawing:
x_T of chunk i is the same for every variant, so the comparison is paired) and writes
benchmarks/results/<date>_<hardware>_predict_<variant>_seed<k>_<sampler>.json with the model's
training time, steps and loss, the report with 95 % intervals and the real-data floor at the same n.
`--paired-with S` (one of the samplers) draws S first and adds to every other sampler's file its FID
difference to S over the same x_T, bootstrapped over the shared digits (evaluation.compare_paired).

`--steps N` trains the same recipe for N steps instead of BAKE_OFF_CONFIG's (the lr schedule stretched
to N): a probe of what more of the budget buys, outside the equal-steps bake-off. Its checkpoint stays
in the ignored checkpoints/cache/ (the notebook does not load it) and its result file is named
predict-steps<N>_<variant>_seed<k>_<sampler>, so the bake-off's predict_* files are not mixed with it.
`--bf16` trains the same recipe under bf16 autocast (the config's `bf16`), only on a CPU that computes
bfloat16 natively (choose_bf16; emulated bf16 is slower than float32): also a probe, in checkpoints/cache/,
its files named predict-bf16-steps<N>_... (or predict-bf16_... at the bake-off's steps).
`--flow-time logit-normal` trains the flow with Stable Diffusion 3's tau ~ sigmoid(N(0, 1)) instead of the
bake-off's uniform tau (the config's flow_time_sampling): a probe too, its files named predict-logit-normal_...

`laptop` makes notebook 5's laptop recipe, the flow of BAKE_OFF_CONFIG with the changes in LAPTOP_FLOW (the
winner of benchmarks/laptop_budget.py's trials at 15 float32 CPU-minutes): it first times the loop's s/step in
float32 and, where the CPU computes it natively, under bf16 autocast (machine otherwise idle), then trains
checkpoints/laptop_flow.pt in float32 (resumable; loaded when it exists), draws n digits with Heun-10 from the
bake-off's x_T and writes laptop-flow_seed0_flow-heun10 with both timings, the training time and the quality.

`speed` times the loop itself per variant (seconds_per_step after warm-up, as load_or_train's estimate
does) and writes predict-speed: the budget's CPU-minutes are steps x s/step on an otherwise idle
machine, while a run's train_seconds is its wall time (longer when something else used the CPU).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import diffusion_utils as du  # noqa: E402
import quality  # noqa: E402  benchmarks/quality.py: chunked, resumable, paired drawing
from lessons.prediction import (BAKE_OFF_SAMPLERS, FLOW_TIME_SAMPLINGS, PREDICTIONS, laptop_flow_config,  # noqa: E402
                                sampling_network, train_prediction, variant_config)
from lessons.unet import UNet  # noqa: E402
from notebook_support.checkpoints import load_checkpoint  # noqa: E402
from notebook_support.checks import DIGIT_COUNT, int_at_least  # noqa: E402
from notebook_support.data import mnist_tensor  # noqa: E402
from notebook_support.environment import CHECKPOINT_DIR, PROJECT_ROOT  # noqa: E402
from notebook_support.evaluation import HEADLINE_N, compare_paired, evaluate_samples, format_quality, load_classifier, real_data_floor  # noqa: E402
from notebook_support.export import notebook_config  # noqa: E402
from notebook_support.files import load_torch_file  # noqa: E402
from notebook_support.results import write_result  # noqa: E402
from notebook_support.training import (choose_bf16, seconds_per_step, seconds_per_step_by_precision,  # noqa: E402
                                       train_from_config, train_kwargs)

NOTEBOOK = PROJECT_ROOT / "5_what_to_predict.ipynb"
DEFAULT_SAMPLERS = {  # the samplers of BAKE_OFF_SAMPLERS each variant is measured with
   "eps": ["ddim20"], "x0": ["ddim20"], "v": ["ddim20"], "flow": ["flow-euler20", "flow-heun10"]}


def probe_tags(steps: int | None = None, bf16: bool = False, flow_time: str = "uniform") -> list[str]:
    """What a probe changes against the bake-off's recipe, in file names: [] for the bake-off itself."""
    return (["bf16"] if bf16 else []) + ([] if flow_time == "uniform" else [flow_time]) + (
        [] if steps is None else [f"steps{steps}"])


def checkpoint_file(variant: str, seed: int, steps: int | None = None, bf16: bool = False,
                    flow_time: str = "uniform") -> Path:
    """checkpoints/predict_<variant>.pt for seed 0 (the notebook loads it), predict_<variant>_seed<k>.pt else;
    a probe (probe_tags): checkpoints/cache/predict_<variant>_seed<k>_<tag>_....pt (not shipped)."""
    tags = "".join(f"_{tag}" for tag in probe_tags(steps, bf16, flow_time))
    if tags:
        return CHECKPOINT_DIR / "cache" / f"predict_{variant}_seed{seed}{tags}.pt"
    return CHECKPOINT_DIR / (f"predict_{variant}.pt" if seed == 0 else f"predict_{variant}_seed{seed}.pt")


def trained_model(variant: str, seed: int, data: torch.Tensor, steps: int | None = None, bf16: bool = False,
                  flow_time: str = "uniform") -> tuple[torch.nn.Module, du.DiffusionSchedule, dict]:
    """The variant's EMA U-Net: loaded when its checkpoint exists, else trained now (resumable)."""
    config = variant_config(notebook_config(NOTEBOOK, "BAKE_OFF_CONFIG"), variant, seed)
    if steps is not None:
        config["num_steps"] = steps
    config["bf16"] = config["bf16"] or bf16
    if flow_time != "uniform":                                                # absent = the bake-off's uniform tau
        config["flow_time_sampling"] = flow_time
    path = checkpoint_file(variant, seed, steps, bf16, flow_time)
    schedule = du.DiffusionSchedule(num_timesteps=config["num_timesteps"], schedule=config["schedule"])
    if path.is_file():
        model = UNet(**config["model_kwargs"])
        payload = load_checkpoint(path, model, config)
        print(f"{variant} seed {seed}: loaded {path.name}", flush=True)
        return model.eval(), schedule, payload
    print(f"{variant} seed {seed}: training {config['num_steps']} steps", flush=True)
    model, payload = train_from_config(config, UNet, train_prediction, data, path, device="cpu", progress=False)
    print(f"{variant} seed {seed}: {payload['steps']} steps in {payload['train_seconds']:.0f} s, "
          f"final loss {payload['final_loss']:.4f} -> {path.relative_to(PROJECT_ROOT)}", flush=True)
    return model, schedule, payload


def run(args) -> None:
    if args.variant not in PREDICTIONS:
        raise SystemExit(f"--variant must be one of {PREDICTIONS}")
    samplers = args.samplers or DEFAULT_SAMPLERS[args.variant]
    for name in samplers:
        if args.variant not in BAKE_OFF_SAMPLERS[name][3]:
            raise SystemExit(f"sampler {name} does not fit a {args.variant} model")
    if args.paired_with is not None:                                          # drawn first, then paired with
        samplers = [args.paired_with, *(name for name in samplers if name != args.paired_with)]
    if args.steps is not None and args.steps < 1:
        raise SystemExit(f"--steps must be a positive number of training steps, got {args.steps}")
    native_bf16, why = choose_bf16("cpu")
    if args.bf16 and not native_bf16:                                         # a float32 run must not be filed as bf16
        raise SystemExit(f"--bf16: {why}; run it on a CPU with AVX512-BF16 or AMX")
    if args.flow_time != "uniform" and args.variant != "flow":
        raise SystemExit("--flow-time is how the flow draws tau: use it with --variant flow")
    data = mnist_tensor()[0]                                                  # (60000, 1, 28, 28) in [-1, 1]
    model, schedule, payload = trained_model(args.variant, args.seed, data, args.steps, args.bf16, args.flow_time)
    family = "-".join(["predict", *probe_tags(args.steps, args.bf16, args.flow_time)])
    sampled_model = sampling_network(model, schedule, args.variant)
    classifier = load_classifier()
    floor = real_data_floor(args.n, classifier, seed=0)
    drawn = {}                                                                # sampler -> its n digits
    for name in samplers:
        sampler, kwargs, evaluations, _ = BAKE_OFF_SAMPLERS[name]
        quality.SAMPLERS[name] = (sampler, kwargs)                            # drawn by quality.py's paired chunks
        run_name = f"{family}-{args.variant}-seed{args.seed}-{name}"
        path = quality.draw_digits(sampled_model, schedule, quality.sample_file(run_name, args.n, 0), args.n, 0, name,
                                   True, record={"run": run_name, "model": f"predict_{args.variant}"})
        record = load_torch_file(path, what="drawn samples")
        images = drawn[name] = torch.cat(record["chunks"])                    # (n, 1, 28, 28) in [-1, 1]
        started = time.perf_counter()
        report = evaluate_samples(images, classifier, seed=0)
        paired = {} if args.paired_with in (None, name) else {                # the same x_T, digit by digit
            "paired_with": args.paired_with,
            "paired_difference": compare_paired(images, drawn[args.paired_with], classifier, seed=0)}
        result = {"variant": args.variant, "train_seed": args.seed, "sampler": name, "evaluations_per_digit": evaluations,
                  "clip_x0": True, "checkpoint": checkpoint_file(args.variant, args.seed, args.steps, args.bf16,
                                                                args.flow_time).name,
                  "steps": payload["steps"], "train_seconds": payload["train_seconds"],
                  "train_hardware": payload["hardware"], "train_precision": payload["precision"],
                  "final_loss": payload["final_loss"], "config": payload["config"],
                  "sample_seconds": record["seconds"], "digits_per_second": args.n / record["seconds"],
                  "sampling_threads": record["threads"], "report": report, "floor": floor, **paired}
        out = write_result(f"{family}_{args.variant}_seed{args.seed}_{name}", result, n=args.n, seed=0,
                           seconds=record["seconds"] + time.perf_counter() - started, interval=report["interval"])
        if paired:
            d = paired["paired_difference"]
            print(f"{run_name}: FID - {args.paired_with}'s = {d['value']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]")
        print(f"{run_name}: {format_quality(report, floor)}\n  -> {out.relative_to(PROJECT_ROOT)}", flush=True)


LAPTOP_CHECKPOINT = CHECKPOINT_DIR / "laptop_flow.pt"
LAPTOP_SAMPLER = "flow-heun10"


def laptop_config() -> dict:
    """Notebook 5's laptop recipe, made as the notebook makes it: BAKE_OFF_CONFIG's flow with LAPTOP_FLOW."""
    return laptop_flow_config(notebook_config(NOTEBOOK, "BAKE_OFF_CONFIG"), notebook_config(NOTEBOOK, "LAPTOP_FLOW"))


def laptop(args) -> None:
    config = laptop_config()
    if config["bf16"]:
        raise SystemExit("LAPTOP_FLOW is the float32 recipe: its checkpoint is trained with bf16 False")
    data = mnist_tensor()[0]                                                  # (60000, 1, 28, 28) in [-1, 1]
    schedule = du.DiffusionSchedule(num_timesteps=config["num_timesteps"], schedule=config["schedule"])
    torch.manual_seed(0)
    per_step, why = seconds_per_step_by_precision(UNet(**config["model_kwargs"]), train_prediction, data[:4096],
                                                  schedule, config, timed_steps=args.timed_steps)  # before training
    native_bf16 = "bfloat16" in per_step
    for precision, seconds in per_step.items():
        print(f"{precision}: {seconds:.3f} s/step -> {config['num_steps']} steps = "
              f"{seconds * config['num_steps'] / 60:.1f} min", flush=True)
    if LAPTOP_CHECKPOINT.is_file():
        model = UNet(**config["model_kwargs"])
        payload = load_checkpoint(LAPTOP_CHECKPOINT, model, config)
        model.eval()
    else:
        print(f"training {config['num_steps']} steps in float32 -> {LAPTOP_CHECKPOINT.name}", flush=True)
        model, payload = train_from_config(config, UNet, train_prediction, data, LAPTOP_CHECKPOINT, device="cpu",
                                           progress=False)
    print(f"laptop flow: {payload['steps']} steps in {payload['train_seconds'] / 60:.1f} min, final loss "
          f"{payload['final_loss']:.4f}", flush=True)
    sampler, kwargs, evaluations, _ = BAKE_OFF_SAMPLERS[LAPTOP_SAMPLER]
    quality.SAMPLERS[LAPTOP_SAMPLER] = (sampler, kwargs)                      # drawn by quality.py's paired chunks
    classifier = load_classifier()
    floor = real_data_floor(args.n, classifier, seed=0)
    started = time.perf_counter()
    _, row = quality.draw_and_measure(sampling_network(model, schedule, "flow"), schedule,
                                      f"laptop-flow-seed0-{LAPTOP_SAMPLER}", args.n, LAPTOP_SAMPLER,
                                      {"model": LAPTOP_CHECKPOINT.stem}, classifier)
    result = {"variant": "flow", "train_seed": config["seed"], "sampler": LAPTOP_SAMPLER,
              "evaluations_per_digit": evaluations, "clip_x0": True, "checkpoint": LAPTOP_CHECKPOINT.name,
              "parameters": sum(p.numel() for p in model.parameters()), "steps": payload["steps"],
              "train_seconds": payload["train_seconds"], "train_hardware": payload["hardware"],
              "train_precision": payload["precision"], "final_loss": payload["final_loss"], "config": payload["config"],
              "seconds_per_step": per_step, "timed_steps": args.timed_steps, "native_bf16": native_bf16,
              "bf16_why": why, "sample_seconds": row["sample_seconds"], "report": row["report"], "floor": floor}
    out = write_result(f"laptop-flow_seed{config['seed']}_{LAPTOP_SAMPLER}", result, n=args.n, seed=0,
                       seconds=time.perf_counter() - started, interval=row["report"]["interval"])
    print(f"laptop flow, {LAPTOP_SAMPLER}: {format_quality(row['report'], floor)}\n  -> {out.relative_to(PROJECT_ROOT)}")


def seconds_per_step_of_each_target(args) -> None:
    base = notebook_config(NOTEBOOK, "BAKE_OFF_CONFIG")
    data = mnist_tensor()[0][:4096]                                           # (4096, 1, 28, 28): batches only
    schedule = du.DiffusionSchedule(num_timesteps=base["num_timesteps"], schedule=base["schedule"])
    started, rows = time.perf_counter(), {}
    for variant in PREDICTIONS:
        config = variant_config(base, variant)
        torch.manual_seed(0)
        per_step = seconds_per_step(UNet(**config["model_kwargs"]), train_prediction, data, schedule,
                                    train_kwargs(config), timed_steps=args.steps)
        rows[variant] = {"seconds_per_step": per_step, "budget_minutes": per_step * config["num_steps"] / 60}
        print(f"{variant:>4}: {per_step:.3f} s/step -> {config['num_steps']} steps = "
              f"{rows[variant]['budget_minutes']:.1f} min", flush=True)
    out = write_result("predict-speed", {"batch_size": base["batch_size"], "num_steps": base["num_steps"],
                                         "timed_steps": args.steps, "threads": torch.get_num_threads(),
                                         "variants": rows}, n=None, seed=0, seconds=time.perf_counter() - started)
    print(f"-> {out.relative_to(PROJECT_ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run")
    p_run.add_argument("--variant", required=True, choices=PREDICTIONS)
    p_run.add_argument("--seed", type=int_at_least(0), default=0,
                       help="training seed (initial weights, batches, t and noise)")
    p_run.add_argument("--samplers", nargs="*", choices=sorted(BAKE_OFF_SAMPLERS), help="default: DEFAULT_SAMPLERS[variant]")
    p_run.add_argument("--paired-with", choices=sorted(BAKE_OFF_SAMPLERS),
                       help="one of --samplers: every other sampler's FID difference to it, bootstrapped over "
                            "the shared x_T (evaluation.compare_paired)")
    p_run.add_argument("--n", type=DIGIT_COUNT, default=HEADLINE_N,
                       help="digits drawn and measured per sampler")
    p_run.add_argument("--steps", type=int_at_least(1),
                       help="train this many steps instead of BAKE_OFF_CONFIG's (a probe, not shipped)")
    p_run.add_argument("--bf16", action="store_true", help="bf16 autocast, only where the CPU computes it natively (a probe)")
    p_run.add_argument("--flow-time", default="uniform", choices=FLOW_TIME_SAMPLINGS,
                       help="how the flow's loss draws tau (a probe unless uniform)")
    p_speed = sub.add_parser("speed")
    p_speed.add_argument("--steps", type=int_at_least(1), default=20,
                         help="timed steps per variant (after 2 warm-up steps)")
    p_laptop = sub.add_parser("laptop")
    p_laptop.add_argument("--n", type=DIGIT_COUNT, default=HEADLINE_N, help="digits drawn and measured")
    p_laptop.add_argument("--timed-steps", type=int_at_least(1), default=20,
                          help="timed steps per precision (after the warm-up steps)")
    args = parser.parse_args()
    if args.command == "run" and args.paired_with not in (None, *(args.samplers or DEFAULT_SAMPLERS[args.variant])):
        parser.error(f"--paired-with {args.paired_with}: name it in --samplers too")
    {"run": run, "speed": seconds_per_step_of_each_target, "laptop": laptop}[args.command](args)


if __name__ == "__main__":
    main()
