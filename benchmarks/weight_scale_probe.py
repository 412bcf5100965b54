"""A probe of one trained average of benchmarks/laptop_budget.py: every weight multiplied by a factor near 1, each
copy drawing the same n digits from the same x_T, paired with the unscaled weights. Run by hand:

    python benchmarks/weight_scale_probe.py --trial wide7-fp32-15min --ema power-0.05 --scales 1.0097

Why: the first post-hoc EMA of laptop_budget.py (before its mixes were held to sum to one) mixed coefficients that
summed to 1.0097, so its average was about 1 % larger than an average of the iterates, and it drew much better
digits than the tracked average it was meant to rebuild. This asks whether the scaling alone does that. Reads the
weights laptop_budget.py saved in checkpoints/cache/laptop_budget_<trial>_<ema>.pt (not committed: run the trial
first); writes one result file, weight_scale_probe_<trial>_<ema> (its dots as p).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import diffusion_utils as du  # noqa: E402
import quality  # noqa: E402  benchmarks/quality.py: chunked, paired drawing
from laptop_budget import SAMPLERS  # noqa: E402  (registers the trials' samplers with quality.py)
from lessons.prediction import AsEps  # noqa: E402
from lessons.unet import UNet  # noqa: E402
from notebook_support.checks import DIGIT_COUNT  # noqa: E402
from notebook_support.environment import CHECKPOINT_DIR, PROJECT_ROOT  # noqa: E402
from notebook_support.evaluation import HEADLINE_N, format_quality, load_classifier, real_data_floor  # noqa: E402
from notebook_support.files import load_torch_file  # noqa: E402
from notebook_support.results import write_result  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trial", required=True, help="a laptop_budget.py trial name")
    parser.add_argument("--ema", required=True, help="which of its averages, e.g. power-0.05 or recipe")
    parser.add_argument("--scales", type=float, nargs="+", required=True, help="factors for every weight (1.0 is added)")
    parser.add_argument("--n", type=DIGIT_COUNT, default=HEADLINE_N, help="digits drawn per factor")
    args = parser.parse_args()
    if any(not 0.5 <= s <= 2 for s in args.scales):
        parser.error(f"--scales must lie in [0.5, 2], got {args.scales}")
    path = CHECKPOINT_DIR / "cache" / f"laptop_budget_{args.trial}_{args.ema}.pt"
    if not path.is_file():
        parser.error(f"{path.relative_to(PROJECT_ROOT)} is missing: run benchmarks/laptop_budget.py --name {args.trial}")
    saved = load_torch_file(path, what="trial weights")
    config = saved["config"]
    prediction = config.get("prediction", "eps")
    model = UNet(**config["model_kwargs"])
    model.load_state_dict(saved["model_state"])
    schedule = du.DiffusionSchedule(num_timesteps=config["num_timesteps"], schedule=config["schedule"])
    classifier = load_classifier()
    floor = real_data_floor(args.n, classifier, seed=0)
    rows, drawn = [], {}
    for scale in [1.0, *sorted(set(args.scales) - {1.0})]:                 # the unscaled first: the others pair with it
        scaled = copy.deepcopy(model).eval()
        with torch.no_grad():
            for tensor in scaled.state_dict().values():
                if tensor.is_floating_point():
                    tensor.mul_(scale)
        network = scaled if prediction in ("eps", "flow") else AsEps(scaled, schedule, prediction)
        run = f"weight-scale-{args.trial}-{args.ema}-x{scale:g}"
        drawn[scale], measured = quality.draw_and_measure(network, schedule, run, args.n, SAMPLERS[prediction],
                                                          {"model": path.name, "scale": scale}, classifier,
                                                          drawn.get(1.0))
        row = {"scale": scale, **measured}
        report = row["report"]
        if "paired" in row:                                                  # every factor but 1
            row["paired_with_unscaled"] = row.pop("paired")
        rows.append(row)
        paired = row.get("paired_with_unscaled")
        print(f"x{scale:g}: {format_quality(report, floor)}" + (
            f"; FID - unscaled = {paired['value']:+.2f} [{paired['low']:+.2f}, {paired['high']:+.2f}]" if paired else ""),
            flush=True)
    out = write_result(f"weight_scale_probe_{args.trial}_{args.ema}".replace(".", "p"),   # names take no dots
                       {"trial": args.trial, "ema": args.ema, "prediction": prediction, "sampler": SAMPLERS[prediction],
                        "clip_x0": True, "rows": rows, "floor": floor},
                       n=args.n, seed=0, seconds=sum(r["sample_seconds"] for r in rows),
                       interval=rows[0]["report"]["interval"])
    print(f"-> {out.relative_to(PROJECT_ROOT)}")


if __name__ == "__main__":
    main()
