"""Notebook 3's few-step samplers (section 6), a solver walking a grid of noise levels: checked against
diffusers, and measured for sample quality against the number of network evaluations (NFE). Run by hand.

    python benchmarks/samplers.py match                     # DPM-Solver++(2M) == diffusers' DPMSolverMultistepScheduler
    python benchmarks/samplers.py quality --model unet      # every solver on every grid at NFE 5, 10, 20; n = 2,000
    python benchmarks/samplers.py quality --model laptop --solvers dpm++2m --grids lambda --nfe 10

`match` runs both on the same x_T (clip off) at 10 and 20 steps, on diffusers' own "linspace" grid and on
DDIM's t-uniform grid, writes the result file sampler_match_diffusers and exits 1 when the largest
difference exceeds 1e-4.

`quality` draws and measures with benchmarks/quality.py's functions, so its runs are that script's runs:
digits saved chunk by chunk to outputs/samples/<run>_n<n>_seed<seed>.pt (resumable), chunk i of every run
starting from the x_T of a generator seeded with (seed, i). Every solver, grid and NFE therefore starts
from the same noise as quality.py's DDIM-50 run of the model (`<model>-ddim50-clip`, drawn first if
missing): all comparisons are paired. x0 is clipped to [-1, 1] while sampling (notebook 3's setting).
Run names are `<model>-<solver><steps>-<grid>-clip`: euler<N> and dpmpp2m<N> cost N evaluations, heun<N>
2N - 1 (its step into sigma = 0 is an Euler step), so an NFE target takes the most Heun steps within it
(NFE 5, 10, 20, 50 -> heun3, heun5, heun10, heun25: 5, 9, 19, 49 evaluations). A sigma between two
trained timesteps goes to the nearest one; `--timestep interpolate` adds `-interp` runs that feed the
model a fractional t instead. Each run writes quality.py's result file quality_<run>, and the command
then writes samplers_paired_<model>: for every run its FID minus DDIM-50's, with the 95 % interval of a
paired bootstrap over the digits' indices (notebook_support.metrics.paired_fid_difference; a tie is an
interval that holds 0), plus the same difference for the four garbage sets of quality's measuring
stick (pure noise, blanks, one digit repeated, a one-class collapse; paired by index), which must fail, and
for DDIM-50 against itself (0). `--timestep interpolate` writes samplers_paired_<model>_interp, where each
run is also paired with its nearest-t twin.
`--pair-only` skips the measuring of runs measured by earlier calls (e.g. one call per NFE, then one that pairs
them all). `--results-dir` sends samples and result files to another folder inside the project (a smoke test:
`quality --n 8 --nfe 5 --results-dir outputs/smoke`).
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
from lessons.unet import (dpm_solver_2m, euler, heun, karras_grid, lambda_uniform_grid, ode_sample,  # noqa: E402
                          schedule_sigmas, t_uniform_grid)
from notebook_support.checks import DIGIT_COUNT, int_at_least  # noqa: E402
from notebook_support import results  # noqa: E402

SOLVERS = {  # command-line name -> (run-name prefix, solver, NFE of n steps)
    "ddim": ("euler", euler, lambda steps: steps),
    "heun": ("heun", heun, lambda steps: 2 * steps - 1),
    "dpm++2m": ("dpmpp2m", dpm_solver_2m, lambda steps: steps),
}
GRIDS = {"t-uniform": t_uniform_grid, "lambda": lambda_uniform_grid, "karras": karras_grid}
NFE_TARGETS = (5, 10, 20)
MATCH_TOLERANCE = 1e-4


def grid_sample(model, schedule, shape, *, solver: str, grid: str, num_steps: int, timestep: str = "nearest",
                **kwargs) -> torch.Tensor:
    """notebook 3's ode_sample with the solver and grid named by strings (so that a sample file records them)."""
    return ode_sample(model, schedule, shape, solver=SOLVERS[solver][1], grid=GRIDS[grid], num_steps=num_steps,
                      timestep=timestep, **kwargs)


def steps_within(solver: str, nfe: int) -> int:
    """The most steps of `solver` whose evaluations do not exceed `nfe`."""
    return max(s for s in range(1, nfe + 1) if SOLVERS[solver][2](s) <= nfe)


def sampler_run(model: str, solver: str, grid: str, nfe: int, timestep: str) -> str:
    """The run name of `solver` on `grid` at the NFE target, registering its run and sampler with quality.py."""
    steps = steps_within(solver, nfe)
    name = f"{SOLVERS[solver][0]}{steps}-{grid}" + ("-interp" if timestep == "interpolate" else "")
    quality.SAMPLERS.setdefault(name, (grid_sample, {"solver": solver, "grid": grid, "num_steps": steps,
                                                     "timestep": timestep}))
    run = f"{model}-{name}-clip"
    quality.RUNS.setdefault(run, (model, name, True))
    return run


def paired_differences(model: str, schedule, runs: list[str], n: int, seed: int, timestep: str = "nearest") -> Path:
    """FID(run) - FID(DDIM-50) over the same x_T for every run, with the paired bootstrap interval; the same for
    four sets that must fail and for DDIM-50 against itself. An -interp run is also paired with its nearest-t
    twin. Writes samplers_paired_<model> (samplers_paired_<model>_interp for --timestep interpolate)."""
    from notebook_support.evaluation import classifier_outputs, garbage_sets, load_classifier, prepared_reference
    from notebook_support.metrics import paired_fid_difference

    started, classifier = time.perf_counter(), load_classifier()
    reference = prepared_reference(classifier)
    features = lambda images: classifier_outputs(classifier, images)[0]                      # (n, 128)
    baseline_run = f"{model}-ddim50-clip"
    baseline = features(quality.load_samples(baseline_run, n, seed)[0])
    rows = []
    checks = {"DDIM-50 itself": baseline, **{name: features(images) for name, images in garbage_sets(n).items()
                                            if name != "real digits"}}
    for name, garbage in checks.items():
        rows.append({"run": name, "check": True, **paired_fid_difference(garbage, baseline, reference, seed=seed)})
    for run in runs:
        _, sampler_name, _ = quality.RUNS[run]
        _, settings = quality.SAMPLERS[sampler_name]
        record = results.read_result(f"quality_{run}" if n == quality.HEADLINE_N else f"quality_{run}_n{n}")
        drawn = features(quality.load_samples(run, n, seed)[0])                                   # (n, 128)
        difference = paired_fid_difference(drawn, baseline, reference, seed=seed)
        rows.append({"run": run, "check": False, **settings, "nfe": SOLVERS[settings["solver"]][2](settings["num_steps"]),
                     "fid": record["report"]["fid"], "digits_per_second": record["digits_per_second"], **difference,
                     "tie": difference["low"] <= 0 <= difference["high"]})
        nearest = run.replace("-interp-", "-")
        if nearest != run:   # a fractional t against the nearest trained t, same solver, grid and x_T
            rows[-1]["vs_nearest"] = paired_fid_difference(
                drawn, features(quality.load_samples(nearest, n, seed)[0]), reference, seed=seed)
            print(f"  {run} - {nearest}: {rows[-1]['vs_nearest']['value']:+.2f} "
                  f"[{rows[-1]['vs_nearest']['low']:+.2f}, {rows[-1]['vs_nearest']['high']:+.2f}]")
        print(f"{run:<34} NFE {rows[-1]['nfe']:>2}  FID - DDIM-50's = {difference['value']:+7.2f} "
              f"[{difference['low']:+.2f}, {difference['high']:+.2f}]{'  tie' if rows[-1]['tie'] else ''}")
    grids = {name: [round(s, 4) for s in grid(schedule, 10).tolist()] for name, grid in GRIDS.items()}
    payload = {"model": model, "baseline": baseline_run, "rows": rows, "grids_at_10_steps": grids,
               "clip_x0": True, "difference": "FID(run) - FID(baseline), both on the same n digits' x_T"}
    name = f"samplers_paired_{model}" + ("_interp" if timestep == "interpolate" else "")
    path = results.write_result(name, payload, n=n, seed=seed,
                                seconds=time.perf_counter() - started, interval=rows[0]["interval"])
    print(f"-> {path}")
    return path


def run_quality(model: str, solvers: list[str], grids: list[str], nfes: list[int], n: int, seed: int,
                timestep: str, pair_only: bool = False) -> None:
    """Draw (or resume, or reuse) every run's n digits, measure them with quality.evaluate, then pair them.
    pair_only: the runs were drawn and measured already (by earlier calls): only pair them."""
    baseline = f"{model}-ddim50-clip"
    quality.draw(baseline, n, seed)
    weights, schedule, _ = quality.load_model(model)
    runs = []
    for nfe in nfes:                          # the NFE targets in the order given: the first ones finish first
        for grid in grids:
            for solver in solvers:
                run = sampler_run(model, solver, grid, nfe, timestep)
                print(f"{run}: {SOLVERS[solver][2](steps_within(solver, nfe))} evaluations per digit", flush=True)
                quality.draw_digits(weights, schedule, quality.sample_file(run, n, seed), n, seed,
                                    quality.RUNS[run][1], True, record={"run": run, "model": model})
                runs.append(run)
    if not pair_only:
        quality.evaluate([baseline] + runs, n, seed)
    paired_differences(model, schedule, runs, n, seed, timestep)


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
    for grid in ("diffusers linspace", "t-uniform (du.ddim_timesteps)"):
        for steps in steps_list:
            scheduler = DPMSolverMultistepScheduler(**config)
            if grid.startswith("t-uniform"):
                scheduler.set_timesteps(timesteps=du.ddim_timesteps(schedule.num_timesteps, steps))
            else:
                scheduler.set_timesteps(steps)
            timesteps = scheduler.timesteps.tolist()
            theirs = diffusers_run(model, scheduler, x_T)

            def their_grid(schedule, num_steps):   # sigma at diffusers' timesteps, then 0
                return torch.cat([schedule_sigmas(schedule)[timesteps], torch.zeros(1, dtype=torch.float64)])
            ours = ode_sample(model, schedule, x_T.shape, solver=dpm_solver_2m, grid=their_grid,
                              num_steps=len(timesteps), x_T=x_T, progress=False)
            difference = (ours - theirs).abs().max().item()
            rows.append({"grid": grid, "steps": steps, "timesteps": timesteps, "max_abs_difference": difference,
                         "max_abs_sample": theirs.abs().max().item()})
            print(f"{grid:<30} {steps:>3} steps (t = {timesteps[0]}..{timesteps[-1]}, then sigma = 0): "
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
    parser.add_argument("--model", choices=["unet", "laptop"], default="unet")
    parser.add_argument("--solvers", nargs="+", choices=list(SOLVERS), default=list(SOLVERS))
    parser.add_argument("--grids", nargs="+", choices=list(GRIDS), default=list(GRIDS))
    parser.add_argument("--nfe", nargs="+", type=int_at_least(1), default=list(NFE_TARGETS),
                        help="targets for the network evaluations per digit (Heun: the most steps within)")
    parser.add_argument("--timestep", choices=["nearest", "interpolate"], default="nearest",
                        help="how a sigma between two trained timesteps reaches the model")
    parser.add_argument("--n", type=DIGIT_COUNT, default=None,
                        help="digits per run (default: 2,000 for quality, 16 for match)")
    parser.add_argument("--pair-only", action="store_true",
                        help="the runs are drawn and measured (quality_<run> files exist): only write the paired file")
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="write result files here and samples to its samples/, a folder inside the project "
                             "(default: benchmarks/results and outputs/samples)")
    args = parser.parse_args()
    if args.results_dir is not None:   # both modules read these folders when they write
        folder = args.results_dir.resolve()
        if not folder.is_relative_to(quality.PROJECT_ROOT):   # quality.evaluate prints paths relative to the project
            parser.error(f"--results-dir must lie inside the project {quality.PROJECT_ROOT}, got {folder}")
        results.RESULTS_DIR = folder
        quality.SAMPLE_DIR = folder / "samples"
    if args.command == "match":
        sys.exit(match_diffusers(args.n or 16, args.seed))
    run_quality(args.model, args.solvers, args.grids, args.nfe, args.n or quality.HEADLINE_N, args.seed, args.timestep,
                args.pair_only)


if __name__ == "__main__":
    main()
