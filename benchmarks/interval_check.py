"""Are the bootstrap intervals of evaluate_samples the right width? For R independent draws of n
random training digits, compare the spread of each measure between the draws (what an interval
for one set of n should cover) with the bootstrap interval computed from a single set, averaged
over the draws. Near the floor the bootstrap overstates the spread of FID and KID (the resampled
sets cannot tell a distance of 0 from a small one); this measures by how much. Writes the result
file interval_check_n<n>, or prints JSON when notebook_support.results is missing.

    python benchmarks/interval_check.py                  # n = 500, 32 draws (~1 minute on 2 cores)
    python benchmarks/interval_check.py --n 2000 --draws 8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from notebook_support.checks import DIGIT_COUNT, int_at_least  # noqa: E402
from notebook_support import metrics  # noqa: E402
from notebook_support.data import mnist_tensor  # noqa: E402
from notebook_support.evaluation import classifier_outputs, load_classifier, prepared_reference  # noqa: E402
from notebook_support.environment import DATA_DIR  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=DIGIT_COUNT, default=500)
    parser.add_argument("--draws", type=int_at_least(2), default=32)
    parser.add_argument("--seed", type=int_at_least(0), default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    classifier = load_classifier()
    reference = prepared_reference(classifier, DATA_DIR)
    images, _ = mnist_tensor(DATA_DIR, train=True)
    pick = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(args.seed + 7))
    features, _ = classifier_outputs(classifier, images[pick[:args.n * args.draws]])  # (R n, 128)
    draws = list(features.split(args.n))
    between = metrics.score_draws(draws, reference, seed=args.seed)
    boot = [metrics.score_features(d, reference, seed=args.seed) for d in draws]
    rows = {}
    for name in metrics.MEASURES:
        spread = (between[name]["high"] - between[name]["low"]) / 2  # 1.96 sd between the draws
        width = sum(b[name]["high"] - b[name]["low"] for b in boot) / (2 * len(boot))  # mean bootstrap half-width
        rows[name] = {"mean": between[name]["value"], "draws_half_width": spread, "bootstrap_half_width": width,
                      "ratio": width / spread}
        print(f"{name:10s} mean {between[name]['value']:9.3f}  95 % half-width: between draws {spread:8.4f}, "
              f"bootstrap {width:8.4f}  ->  {width / spread:.2f}x")
    seconds = time.perf_counter() - started
    payload = {"draws": args.draws, "measures": rows, "bootstrap": boot[0]["interval"]}
    try:
        from notebook_support.results import write_result
    except ImportError:
        print(json.dumps({"n": args.n, "seed": args.seed, "seconds": seconds, **payload}))
        return
    path = write_result(f"interval_check_n{args.n}", payload, n=args.n, seed=args.seed, seconds=seconds,
                        interval=f"between draws: {between['interval']}; bootstrap: {boot[0]['interval']}")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
