"""Bad input and faults in the measurement pipeline: nothing publishes or reuses a wrong number.

- a result is validated before it is written, and when it is read: n >= 2, finite numbers,
  positive times, measures that are numbers or an explicit None with a reason; the generator
  names the file and the field it cannot render, and --check fails on it;
- rows appended to one .jsonl series by two processes at once are all kept;
- (further sections: drawn samples, checks before work, the notebook runner, sampler inputs).
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from notebook_support import results
from notebook_support.environment import PROJECT_ROOT


def _script_module(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


readme_tables = _script_module("scripts/readme_tables.py", "readme_tables_round3")


def _measure(value: float) -> dict:
    return {"value": value, "low": value - 1, "high": value + 1}


def _report(fid: float) -> dict:
    return {**{key: _measure(0.8) for key in ("kid_x1e3", "precision", "realism", "recall")}, "fid": _measure(fid),
            "classes_with_5pct": 10}


def _write(tmp_path, name="demo", payload=None, **kwargs):
    kwargs = {"n": 2000, "seed": 0, "seconds": 12.5, "interval": "95 % bootstrap, 100 resamples", **kwargs}
    return results.write_result(name, {"report": _report(20.0)} if payload is None else payload, device="cpu",
                                results_dir=tmp_path, **kwargs)


# ---------------------------------------------------------------------------------------------
# Validated before it is written
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload, kwargs, match", [
    ({"seconds_per_step": -0.5}, {}, r"seconds_per_step is -0.5: a time must be positive"),
    ({"variants": {"eps": {"seconds_per_step": 0.0}}}, {}, r"variants.eps.seconds_per_step is 0.0: a time must be"),
    ({"digits_per_second": 0}, {}, r"digits_per_second is 0"),
    ({"report": {"fid": {"value": None, "low": 1.0, "high": 2.0}}}, {}, r"report.fid.value is None: a measure needs a number"),
    ({"report": {"fid": {"value": "20", "low": 1.0, "high": 2.0}}}, {}, r"report.fid.value is '20'"),
    ({}, {"n": 1}, r"n must be None or an int >= 2"),
    ({}, {"seconds": 0}, r"seconds must be a finite number > 0"),
])
def test_a_result_that_cannot_be_quoted_is_not_written(tmp_path, payload, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _write(tmp_path, payload=payload, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_an_explicit_none_with_a_reason_is_written(tmp_path):
    payload = {"report": {"kid_x1e3": {"value": None, "low": None, "high": None, "reason": "n = 4: too few for KID"}}}
    path = _write(tmp_path, payload=payload)
    assert results.read_result(path)["report"]["kid_x1e3"]["reason"] == "n = 4: too few for KID"


# ---------------------------------------------------------------------------------------------
# ... and validated before it is rendered
# ---------------------------------------------------------------------------------------------


def _bake_off_files(tmp_path, monkeypatch, report=None, floor=None, **changes):
    """Two result files of the bake-off table in tmp_path, the second with `changes` (or `report`)."""
    monkeypatch.setattr(readme_tables, "latest_results", lambda prefix: results.latest_results(prefix, results_dir=tmp_path))
    monkeypatch.setattr(readme_tables, "latest_result",
                        lambda name, **kwargs: results.latest_result(name, results_dir=tmp_path, **kwargs))
    _write(tmp_path, name="predict-speed", n=None, payload={"batch_size": 128, "num_steps": 840, "variants": {
        "eps": {"seconds_per_step": 1.0, "budget_minutes": 14.0}, "flow": {"seconds_per_step": 1.0, "budget_minutes": 14.0}}})
    paths = []
    for variant, fid in (("eps", 30.0), ("flow", 20.0)):
        record = {"variant": variant, "train_seed": 0, "sampler": "ddim20", "evaluations_per_digit": 20,
                  "clip_x0": True, "steps": 840, "train_seconds": 846.0, "train_hardware": "x86_64 CPU, 2 threads",
                  "train_precision": "float32", "report": _report(fid), "floor": _report(6.5)}
        paths.append(_write(tmp_path, name=f"predict_{variant}_seed0_ddim20", payload=record))
    return paths


def _edit(path: Path, edit) -> None:
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))   # allow_nan: as a hand edit or another tool could write it


@pytest.mark.parametrize("edit, match", [
    (lambda r: r["report"]["fid"].update(value=math.nan), r"report.fid.value is nan: not a finite number"),
    (lambda r: r["report"]["fid"].update(value=None), r"report.fid.value is None: a measure needs a number"),
    (lambda r: r.update(n="2000"), r"n is '2000' \(str\): it must be an int >= 2"),
    (lambda r: r.update(seconds=-3.0), r"seconds is -3.0: a time must be positive"),
])
def test_the_generator_names_the_file_and_field_it_cannot_render(tmp_path, monkeypatch, edit, match):
    _, flow = _bake_off_files(tmp_path, monkeypatch)
    assert readme_tables.render_region("bake-off").startswith("| target |")
    _edit(flow, edit)
    with pytest.raises(ValueError, match=match) as info:
        readme_tables.render_region("bake-off")
    assert flow.name in str(info.value)


@pytest.mark.parametrize("field", ["report", "floor"])
def test_a_missing_field_is_named_with_the_files_the_table_read(tmp_path, monkeypatch, field):
    _, flow = _bake_off_files(tmp_path, monkeypatch)
    _edit(flow, lambda r: r.pop(field))
    with pytest.raises(ValueError, match=rf"table 'bake-off' cannot be rendered: the field '{field}' is missing "
                                         rf"\(it read .*{flow.name}"):
        readme_tables.render_region("bake-off")


def test_check_fails_on_a_file_it_cannot_render(tmp_path, monkeypatch, capsys):
    _, flow = _bake_off_files(tmp_path, monkeypatch)
    report = tmp_path / "RESULTS.md"
    report.write_text("<!-- table:bake-off -->\n<!-- /table:bake-off -->\n")
    assert readme_tables.main(["--file", str(report)]) == 0
    assert readme_tables.main(["--check", "--file", str(report)]) == 0
    _edit(flow, lambda r: r["report"]["fid"].update(value=math.nan))
    before = report.read_text()
    assert readme_tables.main(["--check", "--file", str(report)]) == 1
    assert readme_tables.main(["--file", str(report)]) == 1 and report.read_text() == before
    assert f"{flow.name} cannot be quoted: report.fid.value is nan" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Appends from two processes at once
# ---------------------------------------------------------------------------------------------

APPENDER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from notebook_support import results
    for i in range({rows}):
        results.append_result_row("trials", {{"writer": sys.argv[1], "i": i, "padding": "x" * {size}}}, n=500,
                                  seed=i, seconds=1.0, device="cpu", command="test", results_dir=sys.argv[2])
""")


def test_two_processes_appending_large_rows_keep_every_row(tmp_path):
    """Two writers append 30 rows of ~200 kB each to one series at the same time: all 60 rows are
    there, whole, each writer's in its own order (without the lock, a read-modify-write race
    keeps 40 to 59)."""
    script = APPENDER.format(root=str(PROJECT_ROOT), rows=30, size=200_000)
    writers = [subprocess.Popen([sys.executable, "-c", script, name, str(tmp_path)]) for name in ("a", "b")]
    assert [w.wait(timeout=300) for w in writers] == [0, 0]
    [series] = tmp_path.glob("*_trials.jsonl")
    rows = results.read_result(series)["rows"]
    assert len(rows) == 60
    for name in ("a", "b"):
        assert [r["i"] for r in rows if r["writer"] == name] == list(range(30))
    assert all(len(r["padding"]) == 200_000 for r in rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == [series.name]   # no lock file left behind


# ---------------------------------------------------------------------------------------------
# Samplers refuse non-finite inputs and absurd step counts; resume files are validated
# ---------------------------------------------------------------------------------------------

import functools  # noqa: E402

import torch  # noqa: E402

import diffusion_utils as du  # noqa: E402
from lessons.mlp import MLPDenoiser  # noqa: E402
from lessons.unet import dpm_solver_2m, heun, karras_grid, lambda_uniform_grid, ode_sample  # noqa: E402
from notebook_support import checks, files  # noqa: E402

from test_support import (TINY_KWARGS, assert_same_state, interrupt_after, interruptible,  # noqa: E402,F401
                          train_tiny, uninterrupted)

NAN_X_T = torch.zeros(2, 1, 4, 4).index_put_((torch.tensor([1]),), torch.tensor(float("nan")))   # (2, 1, 4, 4)


HEUN_KARRAS = functools.partial(ode_sample, solver=heun, grid=karras_grid)          # notebook 3's few-step samplers
DPM_LAMBDA = functools.partial(ode_sample, solver=dpm_solver_2m, grid=lambda_uniform_grid)


@pytest.mark.parametrize("sampler", [du.p_sample_loop, du.ddim_sample, HEUN_KARRAS, DPM_LAMBDA])
def test_the_samplers_refuse_a_non_finite_x_T(sampler):
    model, schedule = MLPDenoiser(**TINY_KWARGS), du.DiffusionSchedule(num_timesteps=20, schedule="cosine")
    steps = {} if sampler is du.p_sample_loop else {"num_steps": 5}
    with pytest.raises(ValueError, match=r"x_T holds NaN or infinite values"):
        sampler(model, schedule, (2, 1, 4, 4), x_T=NAN_X_T, progress=False, **steps)
    assert sampler(model, schedule, (2, 1, 4, 4), x_T=torch.zeros(2, 1, 4, 4), progress=False,
                   **steps).isfinite().all()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"x_T": NAN_X_T}, ValueError, r"x_T holds 16 NaN or infinite value\(s\) of 32"),
    ({"x_T": torch.full((1, 1), float("inf"))}, ValueError, r"x_T holds 1 NaN"),
    ({"tau": float("nan")}, ValueError, r"tau must be finite, got nan"),
    ({"tau": torch.tensor([0.5, float("inf")])}, ValueError, r"tau holds 1 NaN or infinite"),
    ({"num_steps": 10**9}, ValueError, r"num_steps must lie in \[1, 10,000\] \(MAX_SAMPLER_STEPS in "
                                       r"notebook_support.checks\), got 1,000,000,000"),
    ({"num_steps": 0}, ValueError, r"num_steps must lie in \[1, 10,000\]"),
    ({"num_steps": 2.5}, TypeError, r"num_steps must be an int, got float 2.5"),
    ({"num_steps": True}, TypeError, r"num_steps must be an int, got bool"),
])
def test_the_shared_sampler_check_names_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        checks.check_sampler_inputs(**kwargs)


def test_the_shared_sampler_check_passes_good_inputs():
    checks.check_sampler_inputs(torch.zeros(2, 1, 4, 4), 10_000, tau=0.5)
    checks.check_sampler_inputs(None, None, tau=torch.tensor([0.0, 1.0]))
    assert checks.check_num_steps(1) == 1


def _forge(path, edit) -> None:
    saved = files.load_torch_file(path, what="resume file")
    edit(saved)
    torch.save(saved, path)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("optimizer"), "misses ['optimizer']"),
    (lambda s: s["model"].update({k: torch.zeros(3) for k in list(s["model"])[:1]}),
     "holds state that does not fit this run (RuntimeError: "),
    (lambda s: s.update(losses=[0.5] * 50), "records 50 losses, more than the run's 40 steps"),
    (lambda s: s.update(losses=[float("nan")] * 10), "holds losses that are not a list of finite numbers"),
    (lambda s: s.update(torch_rng=[1, 2]), "holds a torch_rng state that is not a byte tensor"),
])
def test_a_forged_resume_file_is_named_and_the_run_starts_fresh(edit, message, uninterrupted, interruptible, tmp_path,
                                                                 capsys):
    path = tmp_path / "m.pt"
    interrupt_after(path, 10, interruptible)
    resume_file = tmp_path / ".m.resume.pt"
    _forge(resume_file, edit)
    capsys.readouterr()
    interruptible.calls = 0
    _, payload = train_tiny(path, interruptible)
    out = capsys.readouterr().out
    assert f"the resume file {resume_file} {message}" in out and "starting from step 0 instead" in out, out
    assert interruptible.calls == 40
    assert_same_state(payload["state_dict"], uninterrupted[0]["state_dict"])   # nothing of the forged file kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


# ---------------------------------------------------------------------------------------------
# The notebook runner survives a broken notebook
# ---------------------------------------------------------------------------------------------


def test_a_broken_notebook_is_logged_by_name_and_the_rest_run(tmp_path, monkeypatch, capfd):
    import nbformat

    run_notebooks = _script_module("scripts/run_notebooks.py", "run_notebooks_round3")
    good = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import warnings\nwarnings.warn('a warning of the notebook itself')\nprint(6 * 7)")])
    nbformat.write(good, tmp_path / "good.ipynb")
    text = nbformat.writes(good)
    (tmp_path / "broken.ipynb").write_text(text[:len(text) // 2])          # cut short, as by a full disk
    monkeypatch.setattr(run_notebooks, "PROJECT_ROOT", tmp_path)
    monkeypatch.setattr(sys, "argv", ["run_notebooks.py", "broken.ipynb", "good.ipynb", "--quick", "--no-log"])
    assert run_notebooks.main() == 1
    out, err = capfd.readouterr()
    assert "broken.ipynb: not a readable notebook, left as it is (" in out
    assert re.search(r"^broken\.ipynb: rc [1-9]\d*, \d+ s, finished ", out, re.M), out
    assert re.search(r"^good\.ipynb: rc 0, \d+ s, finished ", out, re.M), out
    assert re.search(r"^total: \d+ s \(.* min\) for 2 notebooks; FAILED: broken\.ipynb$", out, re.M), out
    outputs = nbformat.read(tmp_path / "good.ipynb", as_version=4).cells[0].outputs
    assert any("42" in o.get("text", "") for o in outputs)                 # the next notebook ran
    assert any("a warning of the notebook itself" in o.get("text", "") for o in outputs)   # warnings stay
    assert (tmp_path / "broken.ipynb").read_text() == text[:len(text) // 2]
    if run_notebooks.encryption_options():
        assert "without encryption" not in out + err


# ---------------------------------------------------------------------------------------------
# Drawn samples know what drew them
# ---------------------------------------------------------------------------------------------

quality = _script_module("benchmarks/quality.py", "quality_round3")


def _mlp28(seed: int) -> MLPDenoiser:
    torch.manual_seed(seed)
    return MLPDenoiser(image_size=28, hidden=16, depth=1, time_dim=8).eval()


def test_drawn_samples_are_reused_only_when_everything_that_drew_them_matches(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(quality.SAMPLERS, "tiny2", (du.ddim_sample, {"num_steps": 2}))
    monkeypatch.setitem(quality.SAMPLERS, "tiny3", (du.ddim_sample, {"num_steps": 3}))
    schedule, path = du.DiffusionSchedule(num_timesteps=20, schedule="cosine"), tmp_path / "run_n6_seed0.pt"

    def draw(model, sampler="tiny2", clip=True, seed=0):
        quality.draw_digits(model, schedule, path, 6, seed, sampler, clip, record={"run": "run", "model": "tiny"})
        return capsys.readouterr().out

    first = _mlp28(0)
    draw(first)
    stored = files.load_torch_file(path)
    assert stored["drawn_by"] == quality.drawn_by(first, schedule, "tiny2", True, 6, 0)
    assert "6 digits already drawn" in draw(_mlp28(0))                       # the same weights, another object
    out = draw(_mlp28(1))                                                     # another model of the same config
    assert f"{path.name}: not reused, it was drawn with another weights_sha256; drawing again" in out, out
    assert files.load_torch_file(path)["drawn_by"]["weights_sha256"] != stored["drawn_by"]["weights_sha256"]
    for changes, field in (({"sampler": "tiny3"}, "sampler, sampler_kwargs"), ({"sampler": "tiny3", "clip": False}, "clip_x0")):
        assert f"not reused, it was drawn with another {field}; drawing again" in draw(_mlp28(1), **changes)
    legacy = files.load_torch_file(path)
    legacy.pop("drawn_by")
    torch.save(legacy, path)                                                  # a file from before the record
    assert "not reused, it records nothing of what drew it; drawing again" in draw(_mlp28(1), clip=False)



def test_a_model_with_per_image_state_is_given_each_chunks_share(tmp_path, monkeypatch):
    """draw_digits asks a model with for_images (notebook 4's Guided, one label per image) for the part of each
    chunk, as sample_in_chunks does: without it every chunk would be drawn with the first chunk's labels."""
    monkeypatch.setitem(quality.SAMPLERS, "tiny2", (du.ddim_sample, {"num_steps": 2}))
    monkeypatch.setattr(quality, "CHUNK", 4)
    asked = []

    class PerImage(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def for_images(self, start, stop, total):
            asked.append((start, stop, total))
            return self

        def forward(self, x, t):
            return self.inner(x, t)

    schedule = du.DiffusionSchedule(num_timesteps=20, schedule="cosine")
    quality.draw_digits(PerImage(_mlp28(0)), schedule, tmp_path / "r_n6_seed0.pt", 6, 0, "tiny2", True,
                        record={"run": "r", "model": "tiny"})
    assert asked == [(0, 4, 6), (4, 6, 6)]


# ---------------------------------------------------------------------------------------------
# Checks before work
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script, arguments, match", [
    ("what_to_predict.py", ["speed", "--steps", "-5"], "argument --steps: must be an int >= 1, got -5"),
    ("what_to_predict.py", ["speed", "--steps", "0"], "argument --steps: must be an int >= 1, got 0"),
    ("what_to_predict.py", ["run", "--variant", "eps", "--steps", "0"], "argument --steps: must be an int >= 1"),
    ("what_to_predict.py", ["run", "--variant", "eps", "--n", "4"], "argument --n: must be an int >= 5"),
    ("what_to_predict.py", ["laptop", "--n", "4"], "argument --n: must be an int >= 5"),
    ("what_to_predict.py", ["laptop", "--timed-steps", "0"], "argument --timed-steps: must be an int >= 1"),
    ("quality.py", ["sample", "--n", "0"], "argument --n: must be an int >= 5 (fewer digits have no interval), got 0"),
    ("quality.py", ["sample", "--n", "-5"], "argument --n: must be an int >= 5"),
    ("samplers.py", ["quality", "--n", "0"], "argument --n: must be an int >= 5"),
    ("what_to_predict.py", ["run", "--variant", "eps", "--samplers", "ddim20", "--paired-with", "ddim50"],
     "--paired-with ddim50: name it in --samplers too"),
    ("throughput.py", ["--timed-steps", "0"], "argument --timed-steps: must be an int >= 1"),
    ("laptop_budget.py", ["--name", "x", "--minutes", "0"], "--minutes must lie in (0, 120], got 0.0"),
    ("laptop_budget.py", ["--name", "x", "--edm", "--set", "prediction=eps"], "--edm sets its own objective"),
    ("quality.py", ["paired"], "--runs goes with the paired command"),
    ("guidance_headline.py", ["--weights", "1", "nan"], "--weights: w must be a finite number, got nan"),
    ("weight_scale_probe.py", ["--trial", "x", "--ema", "y", "--scales", "3"], "--scales must lie in [0.5, 2]"),
])
def test_benchmark_arguments_are_checked_before_any_work(script, arguments, match):
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "benchmarks" / script), *arguments],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and match in result.stderr, result.stderr
    assert "already drawn" not in result.stdout and "->" not in result.stdout


def test_the_evaluator_refuses_too_few_digits_before_any_work():
    from notebook_support import evaluation

    class NoClassifier:
        def __call__(self, *args):
            raise AssertionError("the classifier ran")

    with pytest.raises(ValueError, match=r"n = 4 digits are too few to measure: below 5 a bootstrap resample"):
        evaluation.evaluate_samples(torch.zeros(4, 1, 28, 28), NoClassifier())
    with pytest.warns(UserWarning, match=r"at n = 5, one of the 100 bootstrap resamples draws a single digit 5 times "
                                         r"with probability 14.8%"):
        evaluation.check_evaluation_n(5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluation.check_evaluation_n(8)                                      # 100 x 8^-7: no warning


def test_flow_sample_refuses_nan_x_T_and_absurd_steps():
    """Notebook 5's flow sampler makes the same checks as the others before its first network call."""
    from lessons.prediction import flow_sample, flow_velocity
    model = MLPDenoiser(**TINY_KWARGS)
    with pytest.raises(ValueError, match="x_T holds 16 NaN"):
        flow_sample(model, None, (2, 1, 4, 4), x_T=NAN_X_T, progress=False)
    with pytest.raises(ValueError, match=r"num_steps must lie in \[1, 10,000\]"):
        flow_sample(model, None, (2, 1, 4, 4), num_steps=10**9, progress=False)
    with pytest.raises(ValueError, match="tau must be finite"):
        flow_velocity(model, torch.zeros(2, 1, 4, 4), float("nan"))
