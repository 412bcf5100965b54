"""Notebook 3's committed result files say what notebook 3's text and RESULTS.md's notebook 3 section
say about them. The notebook shows these files (its results cell renders README's quality-n2000 table)
but asserts only what it computes live; the checks of the files themselves live here.

Each test names the sentence it backs. If a result file is made again and a test fails, the text
is what has to change (or the run is wrong): the test is not a threshold to tune.
"""

import functools
import sys
from pathlib import Path

import pytest

from notebook_support.evaluation import compare_fid
from notebook_support.export import notebook_config
from notebook_support.files import load_torch_file
from notebook_support.results import latest_result, read_result

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import readme_tables  # noqa: E402
from quality import paired_name  # noqa: E402
from test_support import notebook_markdown  # noqa: E402

HEADLINE = {"unet": "unet-ddim50-clip", "laptop": "laptop-ddim50-clip", "laptop-noclip": "laptop-ddim50-noclip",
            "mlp": "mlp-ddpm1000-noclip", "unet-ddim20": "unet-euler20-t-uniform-clip",
            "heun10": "unet-heun10-lambda-clip", "dpm10": "unet-dpmpp2m10-t-uniform-clip"}


@pytest.fixture(scope="module")
def headline():
    return {key: latest_result(f"quality_{run}") for key, run in HEADLINE.items()}


def test_headline_files_are_comparable(headline):
    """One n (2,000), one seed, one floor (the same reference digits, to 1e-6) for every row the notebook reads."""
    first = headline["unet"]
    assert first["n"] == 2000
    for key, r in headline.items():
        assert r["seed"] == first["seed"] and readme_tables.same_floor(r["floor"], first["floor"]), key


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
    for key in ("unet-ddim20", "heun10", "dpm10"):                                 # fewer steps lose a little
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


@pytest.fixture(scope="module")
def paired():
    """benchmarks/samplers.py's paired comparisons: {model: samplers_paired_<model>}, and the -interp runs."""
    return {model: latest_result(f"samplers_paired_{model}") for model in ("unet", "laptop", "unet_interp")}


def test_sampler_runs_are_paired_with_their_models_ddim_50(paired):
    """Every run at n = 2,000, seed 0, from the same x_T as the model's DDIM-50 (quality_<model>-ddim50-clip), at 5,
    10 and 20 evaluations for every solver on every grid; the -interp runs pair with their nearest-t twins."""
    for model in ("unet", "laptop"):
        result = paired[model]
        runs = [r for r in result["rows"] if not r["check"]]
        assert (result["n"], result["seed"], result["baseline"]) == (2000, 0, f"{model}-ddim50-clip")
        assert {(r["solver"], r["grid"]) for r in runs} == {(s, g) for s in ("ddim", "heun", "dpm++2m")
                                                           for g in ("t-uniform", "lambda", "karras")}
        assert sorted({r["nfe"] for r in runs}) == [5, 9, 10, 19, 20]       # Heun: 2N - 1 within each budget
        assert all(r["n"] == 2000 for r in result["rows"])
    assert all("vs_nearest" in r for r in paired["unet_interp"]["rows"] if not r["check"])


def test_the_paired_difference_fails_garbage_and_ties_itself(paired):
    """RESULTS.md: the paired difference of DDIM-50 with itself is 0, and with each garbage set far from 0."""
    for model in ("unet", "laptop"):
        checks = {r["run"]: r for r in paired[model]["rows"] if r["check"]}
        assert checks.pop("DDIM-50 itself")["value"] == 0
        assert len(checks) == 4 and all(r["low"] > 100 for r in checks.values()), checks


def test_fewer_evaluations_than_ddim_50_tie_it_from_19_on(paired):
    """RESULTS.md and notebook 3, section 7: for the shipped U-Net no solver on any grid ties DDIM-50 at 10
    evaluations or fewer; the fewest that tie are Heun's 10 steps on the lambda-uniform grid (19 evaluations), which
    notebooks 3 (section 7) and 4 draw with."""
    from notebook_support.export import notebook_config

    rows = [r for r in paired["unet"]["rows"] if not r["check"]]
    assert not any(r["low"] <= 0 for r in rows if r["nfe"] <= 10)
    tied = readme_tables.fewest_tied("unet")
    assert (tied["solver"], tied["grid"], tied["num_steps"], tied["nfe"]) == ("heun", "lambda", 10, 19)
    notebook3 = {name: notebook_config(readme_tables.PROJECT_ROOT / "3_unet.ipynb", name)
                 for name in ("FEW_STEP_SOLVER", "FEW_STEP_GRID", "FEW_STEP_STEPS")}
    assert notebook3 == {"FEW_STEP_SOLVER": "Heun", "FEW_STEP_GRID": "lambda-uniform", "FEW_STEP_STEPS": 10}
    notebook4 = (readme_tables.PROJECT_ROOT / "4_guidance.ipynb").read_text(encoding="utf-8")
    for line in ("SAMPLER = functools.partial(ode_sample, solver=heun, grid=lambda_uniform_grid)",
                 'SAMPLER_NAME, SAMPLER_STEPS = \\"Heun (lambda-uniform)\\", 10'):
        assert line in notebook4, line


def test_a_fractional_timestep_barely_moves_the_fid(paired):
    """RESULTS.md: feeding the network a fractional t instead of the nearest trained t changes the FID by a
    fraction of a point, small against the run's distance to DDIM-50."""
    for row in (r for r in paired["unet_interp"]["rows"] if not r["check"]):
        assert abs(row["vs_nearest"]["value"]) < 0.5 and abs(row["vs_nearest"]["value"]) < row["value"] / 10, row


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


@functools.cache
def shipped_run(model: str, notebook: str, config_name: str, checkpoint: str) -> tuple[float, dict]:
    """(float32 minutes of the shipped run, benchmarks/training_speed.py's file for it), after checking that the
    file describes the shipped checkpoint. The file's estimate_minutes["bfloat16"] (absent where bf16 is not native)
    is the bf16 minutes of the run's steps at the timed s/step."""
    speed = latest_result(f"training_speed_{model}")
    payload = load_torch_file(readme_tables.PROJECT_ROOT / "checkpoints" / checkpoint)
    assert speed["config"] == notebook_config(readme_tables.PROJECT_ROOT / notebook, config_name) == payload["config"]
    assert speed["shipped"]["train_seconds"] == payload["train_seconds"] and payload["precision"] == "float32"
    return payload["train_seconds"] / 60, speed


# the laptop checkpoints' result files from before they averaged with a power-function EMA (the same runs)
FIXED_EMA = readme_tables.PROJECT_ROOT / "benchmarks" / "results" / "superseded" / "fixed-ema"


def paired_with_fixed_decay(run: str, fixed_run: str) -> tuple[dict, str]:
    """benchmarks/quality.py's paired file of `run` against `fixed_run`, the same run averaged with the fixed decay and
    drawn from the same x_T, and its difference as the lab report writes it ('−0.9 [−1.7, −0.1]')."""
    paired = latest_result(paired_name(run, fixed_run))
    return paired, readme_tables._difference(paired["fid_a_minus_b"]).replace("-", "−")


def test_notebook_3_and_readme_state_the_laptop_presets_minutes_from_its_files():
    """Notebook 3: '`LAPTOP_CONFIG` retrains from scratch in about 21 minutes of float32 on a 2-core CPU (about 13 with
    bf16 autocast where native ...)'; README, twice: 'about 21 float32 CPU-minutes'."""
    minutes, speed = shipped_run("laptop", "3_unet.ipynb", "LAPTOP_CONFIG", "unet_laptop.pt")
    bf16 = speed["estimate_minutes"].get("bfloat16")
    assert bf16 is not None, "the file was made where bf16 is not native: the text's bf16 minutes have no source"
    assert (f"retrains from scratch in about {minutes:.0f} minutes of float32 on a 2-core CPU (about {bf16:.0f} with "
            "bf16 autocast where native;") in notebook_markdown("3_unet.ipynb")
    readme = " ".join((readme_tables.PROJECT_ROOT / "README.md").read_text(encoding="utf-8").split())
    assert readme.count(f"about {minutes:.0f} float32 CPU-minutes") == 2


def test_the_shipped_preset_paragraph_quotes_its_files():
    """RESULTS.md, 'The shipped preset, in float32': the run's minutes and the loop's s/step in each precision
    (training_speed_laptop), and its DDIM-50 and Heun-10 FIDs, each beside the same run averaged with the fixed decay
    (the files in benchmarks/results/superseded/fixed-ema/: the same losses, so the average alone differs) and paired
    with it over the same x_T."""
    text = " ".join((readme_tables.PROJECT_ROOT / "RESULTS.md").read_text(encoding="utf-8").split())
    minutes, speed = shipped_run("laptop", "3_unet.ipynb", "LAPTOP_CONFIG", "unet_laptop.pt")
    per_step, estimate = speed["seconds_per_step"], speed["estimate_minutes"]
    assert (f"trained it in {minutes:.1f} minutes on this 2-core CPU; `benchmarks/training_speed.py` times its loop at "
            f"{per_step['float32']:.3f} s/step in float32 ({estimate['float32']:.1f} minutes for its steps) and "
            f"{per_step['bfloat16']:.3f} under bf16 autocast ({estimate['bfloat16']:.1f} minutes;") in text
    before = read_result(FIXED_EMA / "2026-12-07_cpu_training_speed_laptop.json")["shipped"]
    assert before["final_loss"] == speed["shipped"]["final_loss"] and before["steps"] == speed["shipped"]["steps"]
    for run, words in (("laptop-ddim50-clip", "DDIM-50 at n = 2,000 it draws FID"),
                       ("laptop-heun10-lambda-clip", "Heun-10 on the λ-uniform grid,")):
        new = latest_result(f"quality_{run}")
        old = read_result(FIXED_EMA / f"2026-12-07_cpu_quality_{run}.json")
        paired, difference = paired_with_fixed_decay(run, run.replace("laptop-", "laptop-fixedema-"))
        assert new["n"] == old["n"] == paired["n"] == 2000, run
        ratio = new["report"]["fid"]["value"] / new["floor"]["fid"]["value"]
        assert (f"{words} {readme_tables._measure(new['report']['fid'], 1)} ({ratio:.1f}×; the fixed decay's "
                f"{old['report']['fid']['value']:.1f}, paired {difference})") in text, run
    runs = ("laptop-ddim50-clip", "laptop-heun10-lambda-clip")
    # issue 26's previous preset (bf16, the width at 28x28): its files are one folder up
    bf16 = [read_result(FIXED_EMA.parent / f"2026-12-07_cpu_quality_{run}.json")["report"] for run in runs]
    for run, old in zip(runs, bf16):
        assert compare_fid(latest_result(f"quality_{run}")["report"], old) == "a tie with", run
    assert (f"the previous bf16 preset drew {readme_tables._measure(bf16[0]['fid'], 1)} with DDIM-50 and "
            f"{readme_tables._measure(bf16[1]['fid'], 1)} with Heun-10, ties with both") in text


def test_the_laptop_unet_tells_the_same_story(paired):
    """RESULTS.md: 'The laptop U-Net tells the same story: nothing ties at 10 evaluations or fewer, and the fewest that
    tie are again Heun's 10 steps on the lambda-uniform grid (19 evaluations)'."""
    rows = [r for r in paired["laptop"]["rows"] if not r["check"]]
    assert not any(r["low"] <= 0 for r in rows if r["nfe"] <= 10)
    tied = readme_tables.fewest_tied("laptop")
    assert (tied["solver"], tied["grid"], tied["num_steps"], tied["nfe"]) == ("heun", "lambda", 10, 19)
