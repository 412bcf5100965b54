"""Does the measuring stick fail garbage? Real digits and four kinds of garbage (pure noise, blank
images, one digit repeated n times, a one-class collapse) at the headline n, through
evaluate_samples, beside the real-data floor at the same n and seed. Prints a table and writes the
result file garbage_check (garbage_check_n<n> at another n; benchmarks/results/), or prints JSON
when notebook_support.results is missing. About 1-2 minutes on a 2-core CPU at n = 2000.

    python benchmarks/garbage_check.py             # n = HEADLINE_N (2000), seed 0
    python benchmarks/garbage_check.py --n 500
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from notebook_support.checks import DIGIT_COUNT, int_at_least  # noqa: E402
from notebook_support.evaluation import (HEADLINE_N, evaluate_samples, garbage_sets, load_classifier,  # noqa: E402
                                         real_data_floor)

COLUMNS = (("fid", "FID", 1), ("kid_x1e3", "KID x1e3", 1), ("precision", "precision", 3), ("realism", "realism", 3),
           ("recall", "recall", 3), ("density", "density", 3), ("coverage", "coverage", 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=DIGIT_COUNT, default=HEADLINE_N, help="images per set (default: the headline n)")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the floor, the reference digits and the bootstrap")
    args = parser.parse_args()
    started = time.perf_counter()
    classifier = load_classifier()
    reports = {"real-data floor": real_data_floor(args.n, classifier, seed=args.seed)}
    for name, images in garbage_sets(args.n, seed=args.seed + 1).items():
        reports[name] = evaluate_samples(images, classifier, seed=args.seed)
    seconds = time.perf_counter() - started

    print(f"n = {args.n}, seed {args.seed}; intervals: 95 %")
    print("| set | " + " | ".join(label for _, label, _ in COLUMNS) + " | classes >= 5 % | class TV | s |")
    print("|---" * (len(COLUMNS) + 4) + "|")
    for name, r in reports.items():
        cells = [f"{r[key]['value']:.{d}f} [{r[key]['low']:.{d}f}, {r[key]['high']:.{d}f}]" for key, _, d in COLUMNS]
        print(f"| {name} | " + " | ".join(cells) + f" | {r['classes_with_5pct']} | {r['class_tv']:.2f} | "
              f"{r['seconds']:.1f} |")
    interval = (f"sets: {reports['real digits']['interval']}; floor: {reports['real-data floor']['interval']}")
    try:
        from notebook_support.results import write_result
    except ImportError:
        print(json.dumps({"n": args.n, "seed": args.seed, "seconds": seconds, "interval": interval, "sets": reports}))
        return
    name = "garbage_check" if args.n == HEADLINE_N else f"garbage_check_n{args.n}"
    path = write_result(name, {"sets": reports}, n=args.n, seed=args.seed, seconds=seconds, interval=interval)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
