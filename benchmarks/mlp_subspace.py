"""Notebook 2's affine-subspace bound, tested on its own residual MLP: `MLPDenoiser` 512 wide, with
and without the direct noise path g(t) x_t, at the ladder's budget (benchmarks/mlp_ladder.py's STEPS
and N; CONFIG's recipe and CLIP_X0 read from the notebook's config cell).

Without the noise path the last layer `Linear(512, 784)` puts eps_theta = W h + b in an affine
subspace of dimension <= 512 of the 784 pixels: the loss is at least (784 - 512) / 784 at every t,
and in the 272 directions outside it Algorithm 2 removes no noise and divides x_t by sqrt(alpha_t)
1000 times. The 1,024-wide rungs of benchmarks/mlp_ladder.py escape the bound; this run shows what
the bound alone does to the architecture the notebook ships. It writes
benchmarks/results/<date>_<hardware>_mlp_subspace.json (per model: the final loss, the quality
report of n DDPM-1000 digits from the ladder's x_T and z, the share of samples that stay finite,
and, without the noise path, every 100 steps the rms of the samples in the blind directions beside
what Algorithm 2 with eps_theta = 0 there predicts).

    python benchmarks/mlp_subspace.py                # about 4 minutes on a 2-core CPU
    python benchmarks/mlp_subspace.py --steps 20 --n 16 --dry-run

Each model is trained by notebook_support.training.load_or_train and cached under
checkpoints/cache/, so an interrupted run resumes (a finished model is loaded, not retrained).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import diffusion_utils as du  # noqa: E402
from lessons.mlp import MLPDenoiser, train  # noqa: E402
from notebook_support.checks import DIGIT_COUNT, int_at_least  # noqa: E402
from notebook_support.evaluation import evaluate_samples, format_quality, real_data_floor  # noqa: E402
from notebook_support.results import write_result  # noqa: E402
from notebook_support.training import load_or_train, with_changes  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mlp_ladder  # noqa: E402

SAMPLE_SEED = mlp_ladder.SAMPLE_SEED   # x_T and z: the same as every rung of the ladder
VARIANTS = {           # name -> MLPDenoiser keywords changed from CONFIG's
    "512 wide, no noise path": {"hidden": 512, "noise_path": "none"},
    "512 wide, noise path g(t)x_t": {"hidden": 512, "noise_path": "per_t"},
}


def blind_directions(model: MLPDenoiser, frames: torch.Tensor, labels: list, schedule: du.DiffusionSchedule) -> dict:
    """The directions eps_theta cannot point in (orthogonal to the columns of the last layer's W):
    how many, the loss bound they set, and along the trajectory (frames (F, n, 1, 28, 28) at paper
    t = labels) the share of samples still finite and, over those, the rms per direction outside and
    inside the subspace, beside the rms that Algorithm 2 predicts outside it when it removes nothing
    there (x_T ~ N(0, I), then x / sqrt(alpha_t) + sigma_t z at every step)."""
    weight = model.out.weight.detach().cpu().double()                       # (784, hidden)
    pixels, hidden = weight.shape
    basis, _ = torch.linalg.qr(weight)                                      # (784, hidden) orthonormal
    blind = pixels - hidden
    variance, predicted = 1.0, {schedule.num_timesteps: 1.0}
    for t in range(schedule.num_timesteps - 1, -1, -1):                     # index t = paper t + 1
        variance = variance / schedule.alphas[t].item() + (schedule.betas[t].item() if t > 0 else 0.0)
        predicted[t] = variance ** 0.5
    trajectory = []
    for label, frame in zip(labels, frames):
        flat = frame.flatten(1).double()                                    # (n, 784)
        finite = torch.isfinite(flat).all(1)                                # (n,)
        kept = flat[finite]
        inside = kept @ basis                                               # (k, hidden) coordinates
        outside = kept - inside @ basis.T                                   # (k, 784)
        trajectory.append({"t": int(label), "finite_share": finite.double().mean().item(),
                           "rms_outside": (outside.pow(2).sum(1).mean() / blind).sqrt().item() if len(kept) else None,
                           "rms_inside": (inside.pow(2).sum(1).mean() / hidden).sqrt().item() if len(kept) else None,
                           "predicted_rms_outside_eps0": predicted[int(label)]})
    return {"pixels": pixels, "hidden": hidden, "blind_directions": blind, "loss_bound": blind / pixels,
            "trajectory": trajectory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int_at_least(1), default=mlp_ladder.STEPS)
    parser.add_argument("--n", type=DIGIT_COUNT, default=mlp_ladder.N)
    parser.add_argument("--dry-run", action="store_true", help="print, write no result file")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    started = time.perf_counter()
    config, clip_x0, device, schedule, data, classifier = mlp_ladder.setup()   # notebook 2's recipe
    models = {}
    for name, change in VARIANTS.items():
        run_config = with_changes(config, {"model_kwargs": change, "num_steps": args.steps})
        model, payload = load_or_train(run_config, MLPDenoiser, train, data, None, device=device, progress=False,
                                       max_train_minutes=None)           # asked for: no time guard
        sample_started = time.perf_counter()
        samples, frames, labels = du.p_sample_loop(model, schedule, (args.n, 1, 28, 28), clip_x0=clip_x0,
                                                   device=device, generator=torch.Generator().manual_seed(SAMPLE_SEED),
                                                   progress=False, return_trajectory=True)
        sample_seconds = time.perf_counter() - sample_started
        curve = payload["loss_curve_every_50"]                      # final loss: the last 100 steps, as the ladder
        record = {"model": f"MLPDenoiser(hidden={change['hidden']}, noise_path={change['noise_path']!r})",
                  "model_kwargs": run_config["model_kwargs"], "params": sum(p.numel() for p in model.parameters()),
                  "steps": payload["steps"], "train_seconds": payload["train_seconds"],
                  "final_loss": float(np.mean(curve[-2:])) if len(curve) >= 2 else payload["final_loss"],
                  "sample_seconds": sample_seconds,
                  "finite_share": torch.isfinite(samples.flatten(1)).all(1).double().mean().item(),
                  # a sample that left the floats (inf, NaN) is scored as what it shows: NaN -> 0, +-inf -> +-1
                  "report": evaluate_samples(samples.nan_to_num(0.0, 1.0, -1.0).clamp(-1, 1), classifier)}
        if change["noise_path"] == "none":
            record["subspace"] = blind_directions(model, frames, labels, schedule)
        models[name] = record
        print(f"{name}: {record['params']:,} params, loss {record['final_loss']:.4f} "
              f"(trained {record['train_seconds']:.0f} s), sampled {sample_seconds:.0f} s, "
              f"finite {record['finite_share']:.1%}\n    {format_quality(record['report'])}", flush=True)
        for row in record.get("subspace", {}).get("trajectory", []):
            print(f"    {row}")
    floor = real_data_floor(args.n, classifier)
    print(f"real digits:\n    {format_quality(floor)}")
    payload = {"steps": args.steps, "clip_x0": clip_x0, "sampler": f"DDPM-1000, x_T and z seeded with {SAMPLE_SEED}",
               "recipe": {key: config[key] for key in ("batch_size", "lr", "grad_clip", "ema_decay", "seed")},
               "models": models, "floor": floor}
    if args.dry_run:
        print("dry run: no result file written")
        return
    first = next(iter(models.values()))
    path = write_result("mlp_subspace", payload, n=args.n, seed=config["seed"], seconds=time.perf_counter() - started,
                        interval=first["report"]["interval"])
    print(f"-> {path}")


if __name__ == "__main__":
    main()
