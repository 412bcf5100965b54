"""Notebook 3's committed result files say what notebook 3's text and RESULTS.md's notebook 3 section
say about them. The notebook shows these files (its results cell renders README's quality-n2000 table)
but asserts only what it computes live; the checks of the files themselves live here.

Each test names the sentence it backs. If a result file is made again and a test fails, the text
is what has to change (or the run is wrong): the test is not a threshold to tune.
"""

import sys
from pathlib import Path

import pytest

from notebook_support.evaluation import compare_fid
from notebook_support.results import latest_result

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import readme_tables  # noqa: E402

HEADLINE = {"unet": "unet-ddim50-clip", "laptop": "laptop-ddim50-clip", "laptop-noclip": "laptop-ddim50-noclip",
            "mlp": "mlp-ddpm1000-noclip", "unet-ddim20": "unet-ddim20-clip", "dpm20": "unet-dpmpp2m20-clip",
            "dpm10": "unet-dpmpp2m10-clip"}


@pytest.fixture(scope="module")
def headline():
    return {key: latest_result(f"quality_{run}") for key, run in HEADLINE.items()}


def test_headline_files_are_comparable(headline):
    """One n (2,000), one seed, one floor (the same reference digits) for every row the notebook reads."""
    first = headline["unet"]
    assert first["n"] == 2000
    for key, r in headline.items():
        assert (r["n"], r["seed"], r["floor"]["fid"]) == (first["n"], first["seed"], first["floor"]["fid"]), key


def test_reading_the_results_of_notebook_3(headline):
    """'The U-Net's DDIM-50 digits sit a few times above the floor's FID; their precision is below real
    digits' ... while their recall is at the floor's. Fewer steps lose a little. The laptop preset is
    several times further from the floor; clipping or not is a tie for it. Notebook 2's MLP is far
    behind both in FID and recall.'"""
    unet, laptop, mlp = (headline[k]["report"] for k in ("unet", "laptop", "mlp"))
    floor = headline["unet"]["floor"]
    unet_ratio, laptop_ratio = (r["fid"]["value"] / floor["fid"]["value"] for r in (unet, laptop))
    assert 1.5 < unet_ratio < 5                                                    # a few times the floor
    assert unet["precision"]["high"] < floor["precision"]["low"]                   # below real digits'
    assert unet["recall"]["value"] >= floor["recall"]["low"]                       # at the floor's
    for key in ("unet-ddim20", "dpm20", "dpm10"):                                  # fewer steps lose a little
        fid = headline[key]["report"]["fid"]["value"]
        assert unet["fid"]["value"] < fid < 1.5 * unet["fid"]["value"], key
    assert laptop_ratio > 2 * unet_ratio and compare_fid(unet, laptop) == "lower than"
    assert compare_fid(laptop, headline["laptop-noclip"]["report"]) == "a tie with"
    assert compare_fid(laptop, mlp) == "lower than" and mlp["recall"]["high"] < laptop["recall"]["low"]
    assert mlp["recall"]["high"] < unet["recall"]["low"]


def test_clipping_ties_for_the_default_unet():
    """RESULTS.md: 'for the laptop U-Net and the default U-Net (512 paired digits) the two are a tie'."""
    on, off = (latest_result(f"quality_unet-ddim50-{c}_n512")["report"] for c in ("clip", "noclip"))
    assert compare_fid(on, off) == "a tie with"


def test_sampler_files_are_comparable():
    """Every sampler run at n = 500: one n, one seed (the same x_T as DDIM-50), one floor."""
    runs = [run for runs in readme_tables.SAMPLER_RUNS.values() for run in runs.values()]
    results = [latest_result(f"quality_unet-{run}-clip_n500") for run in runs]
    assert all((r["n"], r["seed"], r["floor"]["fid"]) == (500, 0, results[0]["floor"]["fid"]) for r in results)


def test_why_notebook_4_draws_with_ddim_20():
    """RESULTS.md: 'DDIM-20 is the one with the fewest network evaluations whose FID lies within
    DDIM-50's interval, so notebook 4 draws with it; DPM-Solver++(2M) at 20 and 10 evaluations ties
    DDIM-50 by overlapping intervals but lies above DDIM-50's upper bound.'"""
    verdicts = list(readme_tables.sampler_verdicts().values())
    assert verdicts == [("DDIM", 20), ("DPM-Solver++(2M)", 10)]
    ddim50 = latest_result("quality_unet-ddim50-clip")["report"]["fid"]
    for run in ("dpmpp2m20", "dpmpp2m10"):
        fid = latest_result(f"quality_unet-{run}-clip")["report"]["fid"]
        assert fid["low"] <= ddim50["high"] < fid["value"], run


def test_what_the_lab_report_says_of_the_speed_logs():
    """RESULTS.md: 'a shared 2-core CPU whose bf16 was native (faster than fp32)'; batch 128 'ahead
    under no_grad but behind under inference_mode'; 'batch 500 is the slowest in both modes'; chunks
    of 128 'ahead of one batch of 256'."""
    tables = [[[cell.strip() for cell in line.strip("|").split("|")] for line in block.splitlines()[2:]]
              for block in readme_tables.render_region("cpu-speed-logs", "").split("\n\n")[:3]]
    training, forward, chunks = tables
    assert all(float(row[3]) < float(row[2]) for row in training)          # bf16 s/step < fp32 s/step
    speed = {int(row[0]): (int(row[1]), int(row[2])) for row in forward}   # batch -> (no_grad, inference_mode)
    assert speed[128][0] > speed[256][0] and speed[128][1] < speed[256][1]
    assert all(speed[500][mode] == min(s[mode] for s in speed.values()) for mode in (0, 1))
    rate = {row[0]: float(row[2]) for row in chunks}                        # DDIM-50 img/s
    assert rate["chunks of 128, fp32"] > rate["256 at once, fp32"]
