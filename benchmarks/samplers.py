"""Notebook 3's few-step samplers (section 6) on the shipped default U-Net: checked against diffusers, and
measured for sample quality against the number of network evaluations (NFE). Run by hand (not in CI).

    python benchmarks/samplers.py match        # our DPM-Solver++(2M) == diffusers' DPMSolverMultistepScheduler
    python benchmarks/samplers.py quality      # DDIM, Heun, DPM-Solver++(2M) at NFE 5, 10, 20, 50, n = 500
    python benchmarks/samplers.py quality --methods dpm++2m --nfe 20 --n 2000    # one run at the headline n

`match` runs both on the same x_T (clip off) at 10 and 20 steps, on diffusers' own "linspace" grid and on
our default grid (du.ddim_timesteps), writes the result file sampler_match_diffusers and exits 1 when the
largest difference exceeds 1e-4.

`quality` draws and measures with benchmarks/quality.py's own functions, so its runs are that script's
runs: digits saved chunk by chunk to outputs/samples/<run>_n<n>_seed<seed>.pt (resumable), chunk i of every
run starting from the x_T of a generator seeded with (seed, i). Every method and NFE therefore starts from
the same noise as quality.py's DDIM-50 run `unet-ddim50-clip` (its committed n = 2,000 result), and a run at
n = 500 from the first 500 of those x_T: all comparisons are paired. x0 is clipped to [-1, 1] while sampling
(notebook 3's setting). Run names are `unet-<sampler>-clip` with <sampler> the method and its number of
steps: ddim<N> and dpmpp2m<N> cost N evaluations, heun<N> 2N - 1 (the last step is an Euler step), so an NFE
target picks the most Heun steps within it (NFE 5, 10, 20, 50 -> heun3, heun5, heun10, heun25: 5, 9, 19, 49).
DDIM-50 is quality.py's unet-ddim50-clip: its digits are reused, not drawn again. Each run writes the
result file quality_<run> (at n = 2,000) or quality_<run>_n<n>, holding the report, the real-data floor at
the same n and seed, and the sampling speed (digits/s); `--results-dir` sends samples and result files to
another folder inside the project (for a smoke test: `quality --n 8 --nfe 5 --results-dir outputs/smoke`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import diffusion_utils as du  # noqa: E402
import quality  # noqa: E402  (benchmarks/quality.py: model loading, drawing, measuring)
from lessons.unet import dpm_solver_2m_sample, heun_sample  # noqa: E402
from notebook_support.checks import DIGIT_COUNT, int_at_least  # noqa: E402
from notebook_support import results  # noqa: E402

METHODS = {  # command-line name -> (run-name prefix, sampler, NFE of n steps)
    "ddim": ("ddim", du.ddim_sample, lambda steps: steps),
    "heun": ("heun", heun_sample, lambda steps: 2 * steps - 1),
    "dpm++2m": ("dpmpp2m", dpm_solver_2m_sample, lambda steps: steps),
}
NFE_TARGETS = (5, 10, 20, 50)
MATCH_TOLERANCE = 1e-4


def steps_within(method: str, nfe: int) -> int:
    """The most steps of `method` whose evaluations do not exceed `nfe`."""
    _, _, cost = METHODS[method]
    steps = max(s for s in range(1, nfe + 1) if cost(s) <= nfe)
    return steps


def sampler_run(method: str, nfe: int) -> tuple[str, str]:
    """(run name, sampler name) of `method` at the NFE target, registering the sampler in quality.SAMPLERS
    so that quality.draw_digits can draw it (DDIM-50 is already there: quality.py's own run)."""
    prefix, sampler, _ = METHODS[method]
    steps = steps_within(method, nfe)
    name = f"{prefix}{steps}"
    extra = {"eta": 0.0} if method == "ddim" else {}
    quality.SAMPLERS.setdefault(name, (sampler, {"num_steps": steps, **extra}))
    return f"unet-{name}-clip", name


def run_quality(methods: list[str], nfes: list[int], n: int, seed: int) -> None:
    """Draw (or resume, or reuse) every run's n digits, then measure them with quality.evaluate."""
    model, schedule, _ = quality.load_model("unet")
    runs = []
    for method in methods:
        for nfe in nfes:
            run, sampler_name = sampler_run(method, nfe)
            print(f"{method} at NFE <= {nfe}: {sampler_name}, {METHODS[method][2](steps_within(method, nfe))} "
                  f"evaluations per digit -> run {run}")
            try:
                quality.load_samples(run, n, seed)    # drawn already, at this n or as the first n of n = 2,000
            except (FileNotFoundError, ValueError):   # missing, or a partial file to resume
                quality.draw_digits(model, schedule, quality.sample_file(run, n, seed), n, seed, sampler_name, True,
                                    record={"run": run, "model": "unet"})
            runs.append(run)
    quality.evaluate(list(dict.fromkeys(runs)), n, seed)


def diffusers_run(model, scheduler, x_T: torch.Tensor) -> torch.Tensor:
    """diffusers' scheduler loop on our model: eps at each of its timesteps, then scheduler.step."""
    x = x_T.clone()
    with torch.inference_mode():
        for t in scheduler.timesteps:
            eps = model(x, t.expand(x.shape[0]))                                  # (n, 1, 28, 28)
            x = scheduler.step(eps, t, x).prev_sample
    return x


def match_diffusers(n: int, seed: int, steps_list=(10, 20)) -> int:
    """Max |ours - diffusers| per grid and step count; writes sampler_match_diffusers; 1 if above tolerance."""
    from diffusers import DPMSolverMultistepScheduler

    model, schedule, _ = quality.load_model("unet")
    x_T = torch.randn((n, 1, 28, 28), generator=torch.Generator().manual_seed(seed))   # (n, 1, 28, 28)
    config = dict(num_train_timesteps=schedule.num_timesteps, beta_start=1e-4, beta_end=0.02,
                  beta_schedule="linear", algorithm_type="dpmsolver++", solver_order=2, prediction_type="epsilon",
                  final_sigmas_type="zero", lower_order_final=False, timestep_spacing="linspace")
    started, rows = time.perf_counter(), []
    for grid in ("diffusers linspace", "ours (du.ddim_timesteps)"):
        for steps in steps_list:
            scheduler = DPMSolverMultistepScheduler(**config)
            if grid.startswith("ours"):
                scheduler.set_timesteps(timesteps=du.ddim_timesteps(schedule.num_timesteps, steps))
            else:
                scheduler.set_timesteps(steps)
            timesteps = scheduler.timesteps.tolist()
            theirs = diffusers_run(model, scheduler, x_T)
            ours = dpm_solver_2m_sample(model, schedule, x_T.shape, x_T=x_T, timesteps=timesteps, progress=False)
            difference = (ours - theirs).abs().max().item()
            rows.append({"grid": grid, "steps": steps, "timesteps": timesteps, "max_abs_difference": difference,
                         "max_abs_sample": theirs.abs().max().item()})
            print(f"{grid:<26} {steps:>3} steps (t = {timesteps[0]}..{timesteps[-1]}, then sigma = 0): "
                  f"max |ours - diffusers| = {difference:.2e}")
    worst = max(r["max_abs_difference"] for r in rows)
    payload = {"rows": rows, "max_abs_difference": worst, "tolerance": MATCH_TOLERANCE, "clip_x0": False,
               "model": "unet", "scheduler": "diffusers.DPMSolverMultistepScheduler", "scheduler_config": config}
    path = results.write_result("sampler_match_diffusers", payload, n=n, seed=seed,
                                seconds=time.perf_counter() - started)
    print(f"largest difference {worst:.2e} (tolerance {MATCH_TOLERANCE:g}) -> {path}")
    return 0 if worst <= MATCH_TOLERANCE else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["match", "quality"])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--nfe", nargs="+", type=int, default=list(NFE_TARGETS),
                        help="targets for the network evaluations per digit (Heun: the most steps within)")
    parser.add_argument("--n", type=DIGIT_COUNT, default=None, help="digits per run (default: 500 for quality, 16 for match)")
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="write result files here and samples to its samples/, a folder inside the project "
                             "(default: benchmarks/results and outputs/samples)")
    args = parser.parse_args()
    if any(nfe < 1 for nfe in args.nfe):
        parser.error(f"--nfe must be positive, got {args.nfe}")
    if args.n is not None and args.n < 1:
        parser.error(f"--n must be positive, got {args.n}")
    if args.results_dir is not None:   # both modules read these folders when they write
        folder = args.results_dir.resolve()
        if not folder.is_relative_to(quality.PROJECT_ROOT):   # quality.evaluate prints paths relative to the project
            parser.error(f"--results-dir must lie inside the project {quality.PROJECT_ROOT}, got {folder}")
        results.RESULTS_DIR = folder
        quality.SAMPLE_DIR = folder / "samples"
    if args.command == "match":
        sys.exit(match_diffusers(args.n or 16, args.seed))
    run_quality(args.methods, args.nfe, args.n or 500, args.seed)


if __name__ == "__main__":
    main()
