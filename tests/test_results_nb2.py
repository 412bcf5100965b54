"""Notebook 2's committed result files say what the notebook and RESULTS.md say they do.

The notebook measures live at its own scale; these checks are about the files it and the lab report
quote: the ladder (benchmarks/mlp_ladder.py), the affine-subspace run (benchmarks/mlp_subspace.py),
the MLP rows at n = 2,000 (benchmarks/quality.py) and the interval check (benchmarks/interval_check.py).
"""

import importlib.util
import re
from pathlib import Path

import pytest

from notebook_support.export import notebook_config
from notebook_support.results import latest_result
from test_support import notebook_markdown

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "2_custom_mlp.ipynb"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_nb2_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ladder():
    return latest_result("mlp_ladder")


@pytest.fixture(scope="module")
def subspace():
    return latest_result("mlp_subspace")


def test_ladder_made_with_the_scripts_settings_and_the_notebooks_recipe(ladder):
    script = _script("mlp_ladder")
    config = notebook_config(NOTEBOOK, "CONFIG")
    assert (ladder["steps"], ladder["n"]) == (script.STEPS, script.N)
    assert ladder["clip_x0"] == notebook_config(NOTEBOOK, "CLIP_X0")
    assert ladder["recipe"] == {key: config[key] for key in ladder["recipe"]}
    assert [r["name"] for r in ladder["rungs"]] == list(script.LADDER)


def test_ladder_the_four_changes_help(ladder):
    """Section 4's changes together: more than half the loss, and a FID interval below the plain rung's."""
    first, last = ladder["rungs"][0], ladder["rungs"][-1]
    assert last["final_loss"] < 0.5 * first["final_loss"]
    assert last["report"]["fid"]["high"] < first["report"]["fid"]["low"]


def test_ladder_prose_of_the_lab_report(ladder):
    """RESULTS.md: the loss falls at every change but the sinusoidal embedding alone, most at the residual
    blocks; the plain rungs have precision 0; the EMA's FID interval lies below the raw weights'."""
    losses = [r["final_loss"] for r in ladder["rungs"]]
    changes = [b / a - 1 for a, b in zip(losses, losses[1:])]
    assert changes[0] > 0 and all(c < 0 for c in changes[1:])
    assert min(changes) == changes[2]                                   # + residual, LayerNorm
    assert all(r["report"]["precision"]["high"] == 0 for r in ladder["rungs"][:3])
    last = ladder["rungs"][-1]
    assert last["report"]["fid"]["high"] < last["raw_weights"]["report"]["fid"]["low"]


def test_subspace_run_matches_the_ladder(subspace, ladder):
    assert (subspace["steps"], subspace["n"], subspace["clip_x0"]) == (ladder["steps"], ladder["n"], ladder["clip_x0"])
    assert subspace["recipe"] == {key: ladder["recipe"][key] for key in subspace["recipe"]}


def test_subspace_bound_holds_and_predicts_the_blind_directions(subspace):
    """The affine-subspace bound: the 512-wide MLPDenoiser without the noise path cannot reach a loss
    below (784 - 512) / 784, and until its samples leave the data's range their spread in the blind
    directions is what Algorithm 2 with eps_theta = 0 there predicts."""
    blind = subspace["models"]["512 wide, no noise path"]
    bound = blind["subspace"]
    assert bound["blind_directions"] == 784 - 512 and bound["loss_bound"] == pytest.approx(272 / 784)
    assert blind["final_loss"] >= bound["loss_bound"]
    early = [row for row in bound["trajectory"] if row["t"] >= 800]
    assert len(early) == 3
    for row in early:
        assert row["rms_outside"] == pytest.approx(row["predicted_rms_outside_eps0"], rel=0.01), row


def test_subspace_the_noise_path_is_what_lifts_the_512_wide_mlp(subspace):
    without = subspace["models"]["512 wide, no noise path"]["report"]
    with_path = subspace["models"]["512 wide, noise path g(t)x_t"]["report"]
    assert with_path["fid"]["high"] < without["fid"]["low"]
    assert with_path["precision"]["low"] > without["precision"]["high"]


def test_clip_x0_default_follows_the_measurement_at_n2000():
    """CLIP_X0 = False in notebook 2 because clipping measured worse for the MLP at n = 2,000."""
    clipped = latest_result("quality_mlp-ddpm1000-clip")["report"]["fid"]
    plain = latest_result("quality_mlp-ddpm1000-noclip")["report"]["fid"]
    assert notebook_config(NOTEBOOK, "CLIP_X0") is (clipped["high"] < plain["low"])


def test_interval_check_numbers_quoted_by_the_notebook():
    """Notebook 2 section 7 quotes the bootstrap / between-draws ratios: 1.7x (FID), 2.0x (KID) and
    1.1-1.4x for precision, realism and recall."""
    ratios = {key: m["ratio"] for key, m in latest_result("interval_check_n500")["measures"].items()}
    text = notebook_markdown(NOTEBOOK)
    match = re.search(r"(\d\.\d)× \(FID\) and (\d\.\d)× \(KID\).*?(\d\.\d)–(\d\.\d)× for precision, realism and recall",
                      text)
    assert match, "the interval-check sentence of section 7 changed: update this test"
    fid, kid, low, high = (float(g) for g in match.groups())
    assert (round(ratios["fid"], 1), round(ratios["kid_x1e3"], 1)) == (fid, kid)
    knn = [ratios[key] for key in ("precision", "realism", "recall")]
    assert (round(min(knn), 1), round(max(knn), 1)) == (low, high)
