"""Sample quality of the shipped models at the series' headline n, with intervals and the
real-data floor at the same n. Run by hand (not in CI); it writes one result file per run
under benchmarks/results/, which the notebooks and the README read.

    python benchmarks/quality.py sample                 # draw the digits (resumable, chunk by chunk)
    python benchmarks/quality.py evaluate               # measure them + the floor, write result files
    python benchmarks/quality.py sample --only laptop-ddim50-clip --n 2000
    python benchmarks/quality.py paired --runs RUN_A RUN_B   # FID(A) - FID(B) over digits drawn from one x_T

Without --only every run is drawn, DDPM-1000 for the default U-Net included (hours on a 2-core
CPU, minutes on a GPU). On the 2-core CPU of the committed results the U-Net's unclipped run was
drawn at --n 512 (`sample --only unet-ddim50-noclip --n 512`, then `evaluate --n 512 --only
unet-ddim50-clip unet-ddim50-noclip`): the same x_T as the clipped run's first 512 digits.

Drawing is split from measuring so that the slow part (sampling on a CPU) is done once and can
be interrupted: every chunk of 128 digits is saved to outputs/samples/<run>.pt as soon as it is
drawn, and a re-run continues after the last saved chunk. Each chunk's x_T comes from its own
seeded generator, so the clipped and unclipped runs of one model start from the same noise
(a paired comparison) and a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import diffusion_utils as du  # noqa: E402
from lessons.mlp import MLPDenoiser, PlainMLP  # noqa: E402
from lessons.unet import UNet  # noqa: E402
from notebook_support.checkpoints import load_checkpoint, value_fingerprint  # noqa: E402
from notebook_support.checks import DIGIT_COUNT, int_at_least  # noqa: E402
from notebook_support.environment import CHECKPOINT_DIR, PROJECT_ROOT  # noqa: E402
from notebook_support.evaluation import HEADLINE_N  # noqa: E402
from notebook_support.export import notebook_config  # noqa: E402
from notebook_support.files import atomic_torch_save, load_torch_file  # noqa: E402

SAMPLE_DIR = PROJECT_ROOT / "outputs" / "samples"
CHUNK = 128  # the fastest U-Net batch on a 2-core CPU (see notebook_support.sampling)
DIFFUSERS_ROWS = ("ours", "diffusers-our-recipe", "diffusers-tutorial-recipe")   # benchmarks/diffusers_compare.py

MODELS = {  # name -> (notebook, config name, model class, shipped checkpoint)
    "mlp": ("2_custom_mlp.ipynb", "CONFIG", MLPDenoiser, "mlp_default.pt"),
    "mlp-plain": ("2_custom_mlp.ipynb", "PLAIN_CONFIG", PlainMLP, "mlp_plain.pt"),   # section 1's MLP, CONFIG's recipe
    "unet": ("3_unet.ipynb", "DEFAULT_CONFIG", UNet, "unet_default.pt"),
    "laptop": ("3_unet.ipynb", "LAPTOP_CONFIG", UNet, "unet_laptop.pt"),
}
SAMPLERS = {  # name -> (sampler, keyword arguments)
    "ddpm1000": (du.p_sample_loop, {}),
    "ddim50": (du.ddim_sample, {"num_steps": 50, "eta": 0.0}),
}
RUNS = {  # run name -> (model, sampler, clip x0 to [-1, 1] while sampling)
    "mlp-ddpm1000-clip": ("mlp", "ddpm1000", True),
    "mlp-ddpm1000-noclip": ("mlp", "ddpm1000", False),
    "mlp-plain-ddpm1000-noclip": ("mlp-plain", "ddpm1000", False),   # notebook 2, section 7: beside mlp-ddpm1000-noclip
    "mlp-plain-ddpm1000-clip": ("mlp-plain", "ddpm1000", True),
    "laptop-ddim50-clip": ("laptop", "ddim50", True),
    "laptop-ddim50-noclip": ("laptop", "ddim50", False),
    "unet-ddim50-clip": ("unet", "ddim50", True),
    "unet-ddim50-noclip": ("unet", "ddim50", False),     # drawn at n = 512 here: paired with unet-ddim50-clip's first 512
    "unet-ddpm1000-clip": ("unet", "ddpm1000", True),    # hours on a 2-core CPU: for a GPU
}


def load_model(name: str) -> tuple[torch.nn.Module, du.DiffusionSchedule, dict]:
    """The shipped checkpoint of `name` in the class and config its notebook defines (eval mode)."""
    notebook, config_name, model_class, file_name = MODELS[name]
    config = notebook_config(PROJECT_ROOT / notebook, config_name)
    model = model_class(**config["model_kwargs"])
    payload = load_checkpoint(CHECKPOINT_DIR / file_name, model, config)
    schedule = du.DiffusionSchedule(num_timesteps=config["num_timesteps"], schedule=config["schedule"])
    return model.eval(), schedule, payload


def sample_file(run: str, n: int, seed: int) -> Path:
    return SAMPLE_DIR / f"{run}_n{n}_seed{seed}.pt"


def draw(run: str, n: int, seed: int) -> Path:
    """Draw n digits for the shipped model and sampler of `run` (see `draw_digits`)."""
    model_name, sampler_name, clip = RUNS[run]
    path = sample_file(run, n, seed)
    model, schedule, _ = load_model(model_name)
    return draw_digits(model, schedule, path, n, seed, sampler_name, clip,
                       record={"run": run, "model": model_name})


def drawn_by(model, schedule, sampler_name: str, clip: bool, n: int, seed: int) -> dict:
    """What draws a sample file: the weights (a SHA-256 over every tensor's bytes), the sampler, its
    settings (the grid: num_steps, eta, the step function's code), the schedule (T and a hash of
    its betas), x0 clipping, n, the seed and the chunk size. draw_digits stores it and reuses a
    file only when it records the same."""
    sampler, kwargs = SAMPLERS[sampler_name]
    weights = hashlib.sha256(json.dumps({k: value_fingerprint(v) for k, v in model.state_dict().items()},
                                        sort_keys=True).encode())
    return json.loads(json.dumps({
        "weights_sha256": weights.hexdigest()[:16], "sampler": sampler_name,
        "sampler_function": f"{getattr(sampler, '__module__', '')}.{getattr(sampler, '__qualname__', repr(sampler))}",
        "sampler_kwargs": value_fingerprint(kwargs),
        "schedule": {"num_timesteps": schedule.num_timesteps, "betas": value_fingerprint(schedule.betas)["sha256"]},
        "clip_x0": clip, "n": n, "seed": seed, "chunk": CHUNK}))


def _drawn_by_changes(stored, wanted: dict, ignore=()) -> str | None:
    """Why a sample file's record does not fit what would draw it now (None when it does)."""
    if not isinstance(stored, dict):
        return "it records nothing of what drew it"
    differs = sorted(k for k in set(stored) | set(wanted) if k not in ignore and stored.get(k) != wanted.get(k))
    return f"it was drawn with another {', '.join(differs)}" if differs else None


def draw_digits(model, schedule, path: Path, n: int, seed: int, sampler_name: str, clip: bool,
                record: dict) -> Path:
    """Draw n digits CHUNK at a time, saving to `path` after every chunk; resumes a partial file.
    Chunk i starts from x_T drawn by a generator seeded with (seed, i), so every model and
    setting drawn with the same seed starts from the same noise. `record` is stored alongside,
    and so is drawn_by(...): a file drawn by other weights or another setting is drawn again."""
    identity = drawn_by(model, schedule, sampler_name, clip, n, seed)
    state = load_torch_file(path, what="partial samples") if path.is_file() else None
    if state is not None and (why := _drawn_by_changes(state.get("drawn_by"), identity)):
        print(f"{path.name}: not reused, {why}; drawing again", flush=True)
        state = None
    state = state if state is not None else {"chunks": [], "seconds": 0.0}
    num_chunks = -(-n // CHUNK)
    if len(state["chunks"]) == num_chunks:
        print(f"{path.name}: {n} digits already drawn")
        return path
    sampler, kwargs = SAMPLERS[sampler_name]
    for index in du.progress_bar(range(len(state["chunks"]), num_chunks), desc=path.stem,
                                 initial=len(state["chunks"]), total=num_chunks):
        size = min(CHUNK, n - index * CHUNK)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index)   # x_T of this chunk, shared by clip on/off
        x_T = torch.randn((size, 1, 28, 28), generator=generator)             # (size, 1, 28, 28)
        started = time.perf_counter()
        start = index * CHUNK                                                 # a model with per-image state
        chunk_model = model.for_images(start, start + size, n) if hasattr(model, "for_images") else model   # labels
        images = sampler(chunk_model, schedule, (size, 1, 28, 28), x_T=x_T, clip_x0=clip, generator=generator,
                         progress=False, **kwargs)                             # (size, 1, 28, 28)
        state["seconds"] += time.perf_counter() - started
        state["chunks"].append(images.clamp(-1, 1))
        state.update(record, n=n, seed=seed, sampler=sampler_name, clip_x0=clip, threads=torch.get_num_threads(),
                     params=sum(p.numel() for p in model.parameters()), drawn_by=identity)
        atomic_torch_save(state, path)
    print(f"{path.name}: {n} digits in {state['seconds']:.0f} s ({n / state['seconds']:.2f} digits/s)")
    return path


def load_samples(run: str, n: int, seed: int) -> tuple[torch.Tensor, dict]:
    """The first n drawn digits (n, 1, 28, 28) of `run` and its record (seconds, sampler, ...).
    Takes them from the run's file for exactly n digits, else from its file for HEADLINE_N: chunk
    i starts from the same x_T in both, so a run drawn at n = 512 pairs with the first 512 digits
    of another run drawn at n = 2000."""
    for size in dict.fromkeys((n, HEADLINE_N)):
        path = sample_file(run, size, seed)
        if size >= n and path.is_file():
            state = load_torch_file(path, what="drawn samples")
            images = torch.cat(state["chunks"])                                    # (size, 1, 28, 28)
            if images.shape[0] != size:
                raise ValueError(f"{path} holds {images.shape[0]} of {size} digits: run the sample command again")
            return images[:n], state
    raise FileNotFoundError(f"{sample_file(run, n, seed)} is missing: run "
                            f"`python benchmarks/quality.py sample --only {run} --n {n}`")


def draw_and_measure(model, schedule, run: str, n: int, sampler_name: str, record: dict, classifier,
                     paired_with: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Draw n digits of `run` (seed 0, x0 clipped, resumable: draw_digits) and measure them. Returns the digits
    (n, 1, 28, 28) and a row: the report, the drawing seconds and, given `paired_with` (digits of another run
    from the same x_T), the paired FID difference to them ("paired")."""
    from notebook_support.evaluation import compare_paired, evaluate_samples
    draw_digits(model, schedule, sample_file(run, n, 0), n, 0, sampler_name, True, record={"run": run, **record})
    images, stored = load_samples(run, n, 0)                                  # (n, 1, 28, 28)
    row = {"report": evaluate_samples(images, classifier, seed=0), "sample_seconds": stored["seconds"]}
    if paired_with is not None:
        row["paired"] = compare_paired(images, paired_with, classifier, seed=0)
    return images, row


def evaluate(runs: list[str], n: int, seed: int) -> None:
    """Measure each run's first n digits and the real-data floor at the same n and seed (the same
    reference digits for both), print one line each and write result file quality_<run> (at
    HEADLINE_N; quality_<run>_n<n> at any other n)."""
    from notebook_support.evaluation import evaluate_samples, format_quality, load_classifier, real_data_floor
    from notebook_support.results import write_result

    classifier = load_classifier()
    floor = real_data_floor(n, classifier, seed=seed)
    write_result(f"quality_floor_n{n}", {"floor": floor}, n=n, seed=seed, seconds=floor["seconds"],
                 interval=floor["interval"])
    print(f"real digits (floor): {format_quality(floor)}")
    for run in runs:
        images, record = load_samples(run, n, seed)
        if run in RUNS:   # drawn by today's shipped model and sampler? (the n of a HEADLINE_N file may differ)
            model_name, sampler_name, clip = RUNS[run]
            model, schedule, _ = load_model(model_name)
            why = _drawn_by_changes(record.get("drawn_by"), drawn_by(model, schedule, sampler_name, clip, n, seed),
                                    ignore=("n",))
            if why:
                print(f"{run}: its drawn digits are not reused, {why}; drawing again", flush=True)
                draw_digits(model, schedule, sample_file(run, n, seed), n, seed, sampler_name, clip,
                            record={"run": run, "model": model_name})
                images, record = load_samples(run, n, seed)
        report = evaluate_samples(images, classifier, seed=seed)
        drawn = record["n"]
        payload = {"run": run, "model": record["model"], "sampler": record["sampler"], "clip_x0": record["clip_x0"],
                   "params": record.get("params"), "sample_seconds": record["seconds"] * n / drawn,
                   "digits_per_second": drawn / record["seconds"], "sampling_threads": record["threads"],
                   "training": record.get("training"), "report": report, "floor": floor}
        name = f"quality_{run}" if n == HEADLINE_N else f"quality_{run}_n{n}"
        path = write_result(paired_name(run_a, run_b), payload, n=n, seed=seed, seconds=payload["sample_seconds"] + report["seconds"],
                            interval=report["interval"])
        print(f"{run}: {format_quality(report, floor)}\n  -> {path.relative_to(PROJECT_ROOT)}")


def paired_name(run_a: str, run_b: str) -> str:
    """The result name of `paired`: quality_paired_<a>_minus_<b>, each dot made "p" (a result name has none:
    w1.5 -> w1p5)."""
    return f"quality_paired_{run_a}_minus_{run_b}".replace(".", "p")


def paired(run_a: str, run_b: str, n: int, seed: int) -> None:
    """FID(a) - FID(b), paired over two drawn runs (any two sample files, e.g. two benchmarks/laptop_budget.py
    trials) whose digit i started from the same x_T: both drawn with `seed` in chunks of CHUNK, which
    draw_digits records. Writes result file paired_name(a, b)."""
    from notebook_support.evaluation import compare_paired, load_classifier
    from notebook_support.results import write_result

    started = time.perf_counter()
    (images_a, record_a), (images_b, record_b) = load_samples(run_a, n, seed), load_samples(run_b, n, seed)
    for key in ("seed", "chunk"):
        values = [(record.get("drawn_by") or {}).get(key) for record in (record_a, record_b)]
        if values[0] != values[1] or values[0] is None:
            raise ValueError(f"{run_a} and {run_b} were not drawn from one x_T: their {key} is {values}")
    difference = compare_paired(images_a, images_b, load_classifier(), seed=seed)
    payload = {"runs": [run_a, run_b], "samplers": [record_a["sampler"], record_b["sampler"]],
               "fid_a_minus_b": difference}
    path = write_result(paired_name(run_a, run_b), payload, n=n, seed=seed,
                        seconds=time.perf_counter() - started,
                        interval=difference["interval"])
    print(f"FID({run_a}) - FID({run_b}) = {difference['value']:+.2f} [{difference['low']:+.2f}, "
          f"{difference['high']:+.2f}] at n = {n}\n  -> {path.relative_to(PROJECT_ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["sample", "evaluate", "paired"])
    parser.add_argument("--runs", nargs=2, metavar=("RUN_A", "RUN_B"),
                        help="paired: two drawn runs (outputs/samples/<run>_n<n>_seed<seed>.pt)")
    parser.add_argument("--only", nargs="*", choices=sorted(RUNS) + ["diffusers-compare"],
                        help="runs to do (default: all of RUNS; diffusers-compare: evaluate that script's rows)")
    parser.add_argument("--n", type=DIGIT_COUNT, default=HEADLINE_N,
                        help="digits per run (the series' headline n)")
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    args = parser.parse_args()
    if (args.command == "paired") != (args.runs is not None):
        parser.error("--runs goes with the paired command, and it needs them")
    if args.command == "paired":
        return paired(*args.runs, args.n, args.seed)
    runs = args.only or list(RUNS)
    if args.command == "evaluate" and "diffusers-compare" in runs:    # the rows of benchmarks/diffusers_compare.py
        runs.remove("diffusers-compare")
        runs += [f"diffusers-compare-{row}" for row in DIFFUSERS_ROWS]
    if args.command == "sample":
        for run in runs:
            draw(run, args.n, args.seed)
    else:
        evaluate(runs, args.n, args.seed)


if __name__ == "__main__":
    main()
