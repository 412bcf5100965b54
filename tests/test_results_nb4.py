"""The lab report's claims about notebook 4's guidance at the headline n (benchmarks/guidance_headline.py) against the
committed result file: a re-run that changes a verdict fails here, naming the sentence to rewrite."""

from pathlib import Path

import pytest

from notebook_support.evaluation import compare_fid
from notebook_support.results import latest_result, read_result
from test_results_nb3 import FIXED_EMA, paired_with_fixed_decay, shipped_run
from test_support import notebook_markdown

RESULTS_TEXT = " ".join((Path(__file__).resolve().parent.parent / "RESULTS.md").read_text(encoding="utf-8").split())


@pytest.fixture(scope="module")
def sweep() -> dict:
    result = latest_result("guidance_headline")
    assert result["n"] == 2000 and result["weights"] == [1.0, 1.25, 1.5, 2.0, 3.0]
    return {row["w"]: row | {"floor": result["floor"]} for row in result["rows"]}


def _fid(row: dict) -> float:
    return row["report"]["fid"]["value"]


def test_w_1_5_meets_the_target_and_ties_w_1s_fid(sweep):
    """'met by the shipped model at w = 1.5, with 99.7 % [99.3 %, 99.9 %] requested digits at FID 19.5 = 3.0x, a tie
    with w = 1's FID (paired -3.2 [-7.7, +1.3]) where w = 1 draws 95.4 %'."""
    chosen, plain = sweep[1.5], sweep[1.0]
    share, floor = chosen["requested_share"], chosen["floor"]["fid"]["value"]
    assert share["value"] >= 0.99 and _fid(chosen) <= 3 * floor and chosen["meets_target"]
    assert plain["requested_share"]["high"] < 0.99 and not plain["meets_target"]
    paired = chosen["paired_with_w1"]
    assert paired["low"] < 0 < paired["high"]
    text = (f"w = 1.5, with {share['value']:.1%} [{share['low']:.1%}, {share['high']:.1%}] requested digits at FID "
            f"{_fid(chosen):.1f} = {_fid(chosen) / floor:.1f}×, a tie with w = 1's FID (paired {paired['value']:.1f} "
            f"[{paired['low']:.1f}, {paired['high']:+.1f}]) where w = 1 draws {plain['requested_share']['value']:.1%}")
    assert text.replace("%", " %").replace("-", "−") in RESULTS_TEXT


def test_stronger_guidance_pays_for_the_last_percent_with_fid_and_coverage(sweep):
    """'w = 2 ... reaches 99.9 % but at FID 37.5 = 5.8x, and w = 3 73.7: ... recall falls from 0.899 at w = 1 to 0.602
    at w = 3'."""
    floor = sweep[2.0]["floor"]["fid"]["value"]
    assert sweep[2.0]["paired_with_w1"]["low"] > 0 and sweep[3.0]["paired_with_w1"]["low"] > sweep[2.0]["paired_with_w1"]["high"]
    recalls = [sweep[w]["report"]["recall"]["value"] for w in (1.0, 1.25, 1.5, 2.0, 3.0)]
    assert recalls == sorted(recalls, reverse=True)
    assert (f"reaches {sweep[2.0]['requested_share']['value']:.1%} but at FID {_fid(sweep[2.0]):.1f} = "
            f"{_fid(sweep[2.0]) / floor:.1f}×, and w = 3 {_fid(sweep[3.0]):.1f}").replace("%", " %") in RESULTS_TEXT
    assert f"recall falls from {recalls[0]:.3f} at w = 1 to {recalls[-1]:.3f} at w = 3" in RESULTS_TEXT


def test_notebook_4_states_its_models_minutes_from_its_files():
    """Section 2: '`checkpoints/unet_guidance.pt` was trained with `CONFIG` in 20 minutes of float32 on a 2-core CPU
    (about 13 with bf16 autocast where native)'."""
    minutes, speed = shipped_run("guidance", "4_guidance.ipynb", "CONFIG", "unet_guidance.pt")
    bf16 = speed["estimate_minutes"].get("bfloat16")
    assert bf16 is not None, "the file was made where bf16 is not native: the text's bf16 minutes have no source"
    assert (f"was trained with `CONFIG` in {minutes:.0f} minutes of float32 on a 2-core CPU (about {bf16:.0f} with "
            "bf16 autocast where native)") in notebook_markdown("4_guidance.ipynb")


def test_the_retrained_model_meets_the_bound_only_on_its_point_value(sweep):
    """'This is the retrained model (float32, 2,800 steps), and it meets the FID bound only just: 2.997x on the point
    value, while the interval, 2.2x to 3.8x, lies on both sides of it ... The previous bf16 model (2,500 steps)
    drew 17.5 at w = 1.5, a tie with this one'."""
    chosen = sweep[1.5]
    fid, floor = chosen["report"]["fid"], chosen["floor"]["fid"]["value"]
    assert fid["low"] < 3 * floor < fid["high"] and fid["value"] <= 3 * floor
    previous = read_result(Path(__file__).resolve().parent.parent
                           / "benchmarks/results/superseded/2026-12-07_cpu_guidance_headline.json")
    before = next(row for row in previous["rows"] if row["w"] == 1.5)["report"]
    assert compare_fid(chosen["report"], before) == "a tie with"
    assert (f"meets the FID bound only just: {fid['value'] / floor:.3f}× on the point value, while the interval, "
            f"{fid['low'] / floor:.1f}× to {fid['high'] / floor:.1f}×, lies on both sides of it") in RESULTS_TEXT
    assert f"The previous bf16 model (2,500 steps) drew {before['fid']['value']:.1f} at w = 1.5, a tie" in RESULTS_TEXT


def test_the_average_alone_paired_with_the_fixed_decays(sweep):
    """'Averaged with the fixed decay 0.999, the same run (the same losses) drew 19.5 at w = 1.5; paired over the
    same x_T, the power EMA's FID differs by ... at w = 1, ... at w = 1.25 and ... at w = 1.5'."""
    before = read_result(FIXED_EMA / "2026-12-07_cpu_training_speed_guidance.json")["shipped"]
    assert before["final_loss"] == latest_result("training_speed_guidance")["shipped"]["final_loss"]
    old = read_result(FIXED_EMA / "2026-12-07_cpu_guidance_headline.json")
    old_fid = next(row for row in old["rows"] if row["w"] == 1.5)["report"]["fid"]["value"]
    differences = []
    for w in ("1", "1.25", "1.5"):
        paired, difference = paired_with_fixed_decay(f"guidance-headline-w{w}", f"guidance-fixedema-w{w}")
        assert paired["n"] == 2000
        differences.append(f"{difference} at w = {w}")
    assert (f"Averaged with the fixed decay 0.999, the same run (the same losses) drew {old_fid:.1f} at w = 1.5; "
            f"paired over the same x_T, the power EMA's FID differs by {differences[0]}, {differences[1]} and "
            f"{differences[2]}") in RESULTS_TEXT


def test_w_1_25_draws_the_lowest_fid_but_misses_99_percent(sweep):
    """'w = 1.25, measured since, draws the lowest FID of the sweep, 15.4 = 2.4x (paired with w = 1 -7.2 [...]), but
    98.7 % [98.0 %, 99.1 %] requested digits, short of 99 %: of the weights measured, only w = 1.5 meets both halves'."""
    row, floor = sweep[1.25], sweep[1.25]["floor"]["fid"]["value"]
    assert _fid(row) == min(_fid(r) for r in sweep.values()) and row["paired_with_w1"]["high"] < 0
    assert row["requested_share"]["value"] < 0.99 and not row["meets_target"]
    assert [w for w, r in sweep.items() if r["meets_target"]] == [1.5]
    share, paired = row["requested_share"], row["paired_with_w1"]
    text = (f"draws the lowest FID of the sweep, {_fid(row):.1f} = {_fid(row) / floor:.1f}× (paired with w = 1 "
            f"{paired['value']:.1f} [{paired['low']:.1f}, {paired['high']:.1f}]), but {share['value']:.1%} "
            f"[{share['low']:.1%}, {share['high']:.1%}] requested digits")
    assert f"{text.replace('%', ' %').replace('-', '−')}, short of 99 %" in RESULTS_TEXT
