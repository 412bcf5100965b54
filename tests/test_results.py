"""Result files (notebook_support.results) and the tables of README.md and RESULTS.md generated
from them (scripts/readme_tables.py): round trips, atomic writes, refusals, the newest file wins,
and the drift test that fails when a generated table of either file no longer says what the files
say."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import sys
from pathlib import Path

import pytest
import torch

from notebook_support import results
from notebook_support.environment import PROJECT_ROOT


def _readme_tables_module():
    spec = importlib.util.spec_from_file_location("readme_tables", PROJECT_ROOT / "scripts" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


readme_tables = _readme_tables_module()


def _write(tmp_path, name="demo", payload=None, **kwargs):
    kwargs = {"n": 2000, "seed": 0, "seconds": 12.5, "interval": "95 % bootstrap, 200 resamples", **kwargs}
    return results.write_result(name, {"fid": 66.9, "fid_interval": [63.1, 70.8]} if payload is None else payload,
                                device="cpu", results_dir=tmp_path, **kwargs)


# ---------------------------------------------------------------------------------------------
# Writing and reading
# ---------------------------------------------------------------------------------------------


def test_write_result_round_trip_holds_every_key(tmp_path):
    path = _write(tmp_path)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}_cpu_demo\.json", path.name)
    stored = json.loads(path.read_text())
    assert set(results.META_KEYS) - {"file"} <= set(stored) and "file" not in stored
    assert stored["what"] == "demo" and stored["n"] == 2000 and stored["seed"] == 0 and stored["seconds"] == 12.5
    assert stored["interval"].startswith("95 %") and stored["fid"] == 66.9 and stored["fid_interval"] == [63.1, 70.8]
    assert stored["date"][:10] == path.name[:10] and stored["date"].endswith("+00:00")  # UTC
    assert stored["quick_mode"] is True  # conftest.py sets DDPM_QUICK=1: such a result says so
    hardware = stored["hardware"]
    assert {"device", "cpu", "cpu_cores", "torch_threads", "cpu_capability", "native_bf16", "cuda"} <= set(hardware)
    assert hardware["device"] == "cpu" and hardware["torch_threads"] == torch.get_num_threads()
    assert hardware["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert stored["versions"]["torch"] == str(torch.__version__)
    assert {"python", "numpy", "torchvision", "diffusers"} <= set(stored["versions"])
    read = results.read_result(path)
    assert read["file"] == str(path) and {k: v for k, v in read.items() if k != "file"} == stored
    assert results.latest_result("demo", results_dir=tmp_path) == read


def test_native_bf16_is_read_from_the_cpu_flags():
    assert results._native_bf16("flags\t\t: fpu sse avx2 avx512f avx512_bf16\n") is True
    assert results._native_bf16("flags\t\t: fpu sse avx2 amx_bf16 amx_tile\n") is True
    assert results._native_bf16("flags\t\t: fpu sse avx2 avx512f\n") is False
    assert results._native_bf16("Features\t: fp asimd bf16 i8mm\n") is True  # Arm
    assert results._native_bf16("") is None  # no /proc/cpuinfo: unknown, not "no"


def test_hardware_tags():
    assert results.hardware_tag({"device": "cuda", "cuda": "NVIDIA H200"}) == "h200"
    assert results.hardware_tag({"device": "cuda", "cuda": "NVIDIA GeForce RTX 4090"}) == "rtx-4090"
    assert results.hardware_tag({"device": "mps", "cuda": None}) == "mps"
    assert results.hardware_tag({"device": "cpu", "cuda": "NVIDIA H200"}) == "cpu"  # measured on the CPU


def test_write_is_atomic(tmp_path, monkeypatch):
    """A write that dies before the rename leaves the earlier file whole and no temp file."""
    path = _write(tmp_path, payload={"fid": 1.0})
    before = path.read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed before the rename")
    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path, payload={"fid": 2.0})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize("payload, match", [
    ({"fid": torch.tensor(66.9)}, r"payload\['fid'\] is a Tensor"),
    ({"fids": [1.0, float("nan")]}, r"payload\['fids'\]\[1\] is nan"),
    ({"fid": math.inf}, r"is inf"),
    ({"classes": {3: 0.1}}, r"has the key 3 \(int\)"),
    ({"seen": {1, 2}}, r"is a set"),
])
def test_payloads_json_cannot_hold_are_refused(tmp_path, payload, match):
    with pytest.raises((TypeError, ValueError), match=match):
        _write(tmp_path, payload=payload)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@pytest.mark.parametrize("name, payload, kwargs, match", [
    ("demo", {"n": 5}, {}, r"must not use the keys \['n'\]"),
    ("Demo run", {}, {}, "name must be"),
    ("demo", [1, 2], {}, "payload must be a dict"),
    ("demo", {}, {"n": 0}, r"n must be None or an int >= 2"),
    ("demo", {}, {"n": 1}, r"n must be None or an int >= 2"),
    ("demo", {}, {"seed": 1.5}, r"seed must be None or an int"),
    ("demo", {}, {"seconds": -1}, "seconds must be a finite number"),
    ("demo", {}, {"interval": ""}, "interval must be None or a sentence"),
])
def test_bad_arguments_are_refused(tmp_path, name, payload, kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        _write(tmp_path, name=name, payload=payload, **kwargs)


def test_jsonl_rows_accumulate(tmp_path):
    for i in range(3):
        path = results.append_result_row("trials", {"trial": f"t{i}", "fid": 100.0 + i}, n=500, seed=i, seconds=1.0,
                                         device="cpu", results_dir=tmp_path)
    assert path.suffix == ".jsonl" and len(path.read_text().splitlines()) == 3
    read = results.latest_result("trials", results_dir=tmp_path)
    assert [r["trial"] for r in read["rows"]] == ["t0", "t1", "t2"] and read["n"] == 500
    assert all(r["hardware"]["device"] == "cpu" for r in read["rows"])
    assert results.cite(read).startswith(f"{path} (n=500, ")


def _fake(folder: Path, file: str, date: str | None, fid: float) -> None:
    payload = {"fid": fid} if date is None else {"what": file.split("_", 2)[2].rsplit(".", 1)[0], "date": date, "fid": fid}
    (folder / file).write_text(json.dumps(payload))


def test_latest_result_picks_the_newest_by_the_date_in_the_file(tmp_path):
    _fake(tmp_path, "2026-01-02_cpu_quality.json", "2026-01-02T10:00:00+00:00", 1.0)
    _fake(tmp_path, "2026-01-05_h200_quality.json", "2026-01-05T09:00:00+00:00", 2.0)
    _fake(tmp_path, "2026-01-09_cpu_quality.json", "2026-01-01T00:00:00+00:00", 3.0)  # its name says newer, its date not
    _fake(tmp_path, "2026-01-30_cpu_old_quality.json", "2026-01-30T00:00:00+00:00", 4.0)  # another name
    _fake(tmp_path, "2026-01-30_cpu_quality.txt", None, 5.0)  # not a result file
    assert results.latest_result("quality", results_dir=tmp_path)["fid"] == 2.0
    assert results.latest_result("quality", hardware="cpu", results_dir=tmp_path)["fid"] == 1.0
    assert results.read_result("quality", results_dir=tmp_path)["fid"] == 2.0
    # a file written before this module: what and date come from its name
    _fake(tmp_path, "2026-02-01_cpu_legacy.json", None, 6.0)
    legacy = results.read_result("2026-02-01_cpu_legacy.json", results_dir=tmp_path)
    assert (legacy["what"], legacy["date"], legacy["fid"]) == ("legacy", "2026-02-01", 6.0)
    assert results.cite(legacy) == f"{tmp_path / '2026-02-01_cpu_legacy.json'} (no n, cpu, 2026-02-01)"


def test_latest_results_gives_the_newest_of_every_name_with_the_prefix(tmp_path):
    assert results.latest_results("predict_", results_dir=tmp_path) == {}                # no file yet
    _fake(tmp_path, "2026-01-02_cpu_predict_eps_seed0_ddim20.json", "2026-01-02T10:00:00+00:00", 1.0)
    _fake(tmp_path, "2026-01-03_cpu_predict_eps_seed0_ddim20.json", "2026-01-03T10:00:00+00:00", 2.0)  # newer: wins
    _fake(tmp_path, "2026-01-02_cpu_predict_flow_seed0_flow-heun10.json", "2026-01-02T11:00:00+00:00", 3.0)
    _fake(tmp_path, "2026-01-04_cpu_quality_predict_eps.json", "2026-01-04T00:00:00+00:00", 4.0)   # prefix inside
    _fake(tmp_path, "2026-01-04_cpu_predict.json", "2026-01-04T00:00:00+00:00", 5.0)                # no "_" after
    _fake(tmp_path, "2026-01-04_cpu_predict_v_seed0_ddim20.txt", None, 6.0)                         # not a result file
    newest = results.latest_results("predict_", results_dir=tmp_path)
    assert list(newest) == ["predict_eps_seed0_ddim20", "predict_flow_seed0_flow-heun10"]   # names sorted
    assert [r["fid"] for r in newest.values()] == [2.0, 3.0]
    assert newest["predict_eps_seed0_ddim20"]["file"].endswith("2026-01-03_cpu_predict_eps_seed0_ddim20.json")
    assert list(results.latest_results("predict_flow", results_dir=tmp_path)) == ["predict_flow_seed0_flow-heun10"]
    assert list(results.latest_results("predict", results_dir=tmp_path)) == [
        "predict", "predict_eps_seed0_ddim20", "predict_flow_seed0_flow-heun10"]
    assert results.latest_results("predict_", hardware="h200", results_dir=tmp_path) == {}
    _fake(tmp_path, "2026-01-05_h200_predict_v_seed0_ddim20.json", "2026-01-05T00:00:00+00:00", 7.0)
    assert [r["fid"] for r in results.latest_results("predict_", hardware="h200", results_dir=tmp_path).values()] == [7.0]
    assert "predict_v_seed0_ddim20" not in results.latest_results("predict_", hardware="cpu", results_dir=tmp_path)
    for bad in ("Predict", "", "predict/", None):
        with pytest.raises(ValueError, match="prefix must be lower-case letters"):
            results.latest_results(bad, results_dir=tmp_path)


def test_a_missing_result_names_the_folder_and_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no result file for 'quality_n2000' in .*make it with: python x\.py"):
        results.latest_result("quality_n2000", command="python x.py", results_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(results.RESULT_COMMANDS["laptop_recipe_trials"])):
        results.latest_result("laptop_recipe_trials", results_dir=tmp_path)


def test_cite_names_file_n_hardware_and_date(tmp_path):
    result = results.read_result(_write(tmp_path))
    hardware = f"{result['hardware']['cpu']}, {result['hardware']['cpu_cores']} cores"
    assert results.cite(result) == (f"{result['file']} (n=2000, {hardware}, {result['date'][:10]}, "
                                    "QUICK MODE: not for citing)")
    with pytest.raises(TypeError, match="cite needs a dict from read_result"):
        results.cite({"fid": 1.0})


def test_committed_results_read_back():
    trials = results.latest_result("laptop_recipe_trials")
    assert trials["file"].startswith("benchmarks/results/") and len(trials["rows"]) >= 9
    assert "2026-11-29_cpu_laptop_recipe_trials.jsonl" in results.cite(trials)


# ---------------------------------------------------------------------------------------------
# README tables
# ---------------------------------------------------------------------------------------------

README_TEXT = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
RESULTS_TEXT = (PROJECT_ROOT / "RESULTS.md").read_text(encoding="utf-8")      # the lab report


@pytest.mark.parametrize("filename", ["README.md", "RESULTS.md"])
def test_generated_tables_match_the_result_files(filename):
    """README.md's and RESULTS.md's generated tables say what the files say now. If this fails, run
    `python scripts/readme_tables.py` (and check the diff), or restore the edited number."""
    text = (PROJECT_ROOT / filename).read_text(encoding="utf-8")
    assert readme_tables.readme_regions(text), f"{filename} has no generated table"
    drift = readme_tables.readme_drift(text, label=filename)
    assert drift == "", f"{filename} differs from the result files; run python scripts/readme_tables.py\n" + drift


def test_every_registered_table_is_in_readme_or_the_lab_report_once():
    """A table registered in scripts/readme_tables.py is shown by exactly one of README.md and
    RESULTS.md, once (a notebook's show_table shows that very table)."""
    places = readme_tables.table_locations()
    assert {"notebooks", "checkpoints", "quality-n2000"} <= {n for n, p in places.items() if p and p[0][0].name == "README.md"}
    assert {"laptop-trials", "bake-off"} <= {n for n, p in places.items() if p and p[0][0].name == "RESULTS.md"}
    misplaced = {name: [f"{path.name}:{line}" for path, line in where] for name, where in places.items() if len(where) != 1}
    assert not misplaced, f"tables shown in no file or more than once (want exactly one place each): {misplaced}"


def test_the_lab_report_has_a_heading_per_notebook():
    notebooks = sorted(path.name for path in PROJECT_ROOT.glob("[0-9]_*.ipynb"))
    headings = re.findall(r"^## Notebook (\d) · \S", RESULTS_TEXT, flags=re.MULTILINE)
    assert headings == [name[0] for name in notebooks], (headings, notebooks)


def test_a_number_edited_by_hand_is_caught():
    """Change one number inside a generated table: the drift check reports exactly that line and
    rendering restores it. The same change outside the generated regions is prose: no drift."""
    region = next((s, e) for name, s, e in readme_tables.readme_regions(RESULTS_TEXT) if name == "laptop-trials")
    lines = RESULTS_TEXT.splitlines(keepends=True)
    row = next(i for i in range(*region) if lines[i].startswith("| lr4e-3 |"))
    assert "| 252.1 |" in lines[row]
    edited = lines.copy()
    edited[row] = lines[row].replace("| 252.1 |", "| 252.0 |")
    edited_text = "".join(edited)
    drift = readme_tables.readme_drift(edited_text)
    assert "-" + edited[row] in drift and "+" + lines[row] in drift
    assert readme_tables.render_readme(edited_text) == RESULTS_TEXT
    prose = RESULTS_TEXT.replace("\n## The measuring stick\n", "\n## The measuring stick, checked\n")
    assert prose != RESULTS_TEXT and readme_tables.readme_drift(prose) == ""


def test_notebook_table_keeps_its_prose_and_regenerates_the_times():
    region = next((s, e) for name, s, e in readme_tables.readme_regions(README_TEXT) if name == "notebooks")
    current = "".join(README_TEXT.splitlines(keepends=True)[region[0] + 1:region[1]])
    times = re.search(r"\| (\d[\d,]* s / \d[\d,]* s) \|", current).group(1)   # notebook 1's, from the logs
    reworded = current.replace("(and why ε)", "(and why ε, not x₀)").replace(f"| {times} |", "| 1 s / 1 s |")
    assert reworded.count("not x₀") == 1 and "| 1 s / 1 s |" in reworded
    rendered = readme_tables.render_region("notebooks", reworded)
    assert "(and why ε, not x₀)" in rendered and f"| {times} |" in rendered and "| 1 s / 1 s |" not in rendered
    miscounted = re.sub(r"— (\d+) asserts", lambda m: f"— {int(m[1]) + 1} asserts", current)
    assert miscounted != current and readme_tables.render_region("notebooks", miscounted) == current.strip("\n")


def test_a_table_whose_file_is_missing_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setitem(readme_tables.README_TABLES, "not-yet", readme_tables.ReadmeTable(
        "not-yet", lambda current: str(results.latest_result("not_yet", results_dir=tmp_path)), "python make_it.py"))
    text = "intro\n\n<!-- table:not-yet -->\n| stale | 1 |\n<!-- /table:not-yet -->\n\nend\n"
    assert readme_tables.render_readme(text) == ("intro\n\n<!-- table:not-yet -->\n\n"
                                                  "_(no result file yet: run `python make_it.py`)_\n\n"
                                                  "<!-- /table:not-yet -->\n\nend\n")


def _measured(fid: float) -> dict:
    """An evaluate_samples-shaped report: every measure a {value, low, high} around `fid` or 0.8."""
    report = {key: {"value": 0.8, "low": 0.7, "high": 0.9} for key in ("kid_x1e3", "precision", "realism", "recall")}
    return {**report, "fid": {"value": fid, "low": fid - 2, "high": fid + 2}, "classes_with_5pct": 10}


def test_the_bake_off_table_lists_every_run_best_fid_first(tmp_path, monkeypatch):
    monkeypatch.setattr(readme_tables, "latest_results", lambda prefix: results.latest_results(prefix, results_dir=tmp_path))
    monkeypatch.setattr(readme_tables, "latest_result",
                        lambda name, **kwargs: results.latest_result(name, results_dir=tmp_path, **kwargs))
    assert readme_tables.render_region("bake-off").startswith("_(no result file yet: run `python benchmarks/what_to_predict.py")
    _write(tmp_path, name="predict-speed", n=None, payload={"batch_size": 128, "num_steps": 840, "variants": {
        "eps": {"seconds_per_step": 1.0, "budget_minutes": 14.0}, "flow": {"seconds_per_step": 1.01, "budget_minutes": 14.14}}})
    floor = _measured(6.5)
    for variant, seed, sampler, calls, fid in (("eps", 0, "ddim20", 20, 30.0), ("flow", 1, "flow-heun10", 19, 20.0)):
        _write(tmp_path, name=f"predict_{variant}_seed{seed}_{sampler}", payload={
            "variant": variant, "train_seed": seed, "sampler": sampler, "evaluations_per_digit": calls, "clip_x0": True,
            "steps": 840, "train_seconds": 846.0, "train_hardware": "x86_64 CPU, 2 threads", "train_precision": "float32",
            "report": _measured(fid), "floor": floor})
    _write(tmp_path, name="predict_eps_seed0_heun10-lambda", payload={        # a run paired with another sampler
        "variant": "eps", "train_seed": 0, "sampler": "heun10-lambda", "evaluations_per_digit": 19, "clip_x0": True,
        "steps": 840, "train_seconds": 846.0, "train_hardware": "x86_64 CPU, 2 threads", "train_precision": "float32",
        "report": _measured(40.0), "floor": floor, "paired_with": "ddim20",
        "paired_difference": {"value": 0.4, "low": -0.3, "high": 1.1, "n": 2000, "interval": "paired"}})
    lines = readme_tables.render_region("bake-off").splitlines()
    assert lines[0].startswith("| target | training seed | sampler | network calls per digit | steps | training minutes |")
    assert lines[0].endswith("| FID − paired sampler's [95 %] |")
    assert lines[2] == ("| flow velocity | 1 | Heun-10 | 19 | 840 | 14.1 | 20.0 [18.0, 22.0] | 3.1× | 0.800 [0.700, 0.900] "
                        "| 0.800 [0.700, 0.900] |  |")                               # the lower FID first, unpaired
    assert lines[3].startswith("| ε | 0 | DDIM-20 | 20 | 840 | 14.1 | 30.0 [28.0, 32.0] | 4.6× |")
    assert lines[4].startswith("| ε | 0 | Heun-10 (λ-uniform) | 19 |") and lines[4].endswith(
        "| +0.4 [-0.3, +1.1] vs DDIM-20 (tie) |")
    assert lines[5].startswith("| real digits: 2,000 random training digits (the floor) |  |  |  |  |  | 6.5 [4.5, 8.5] | 1× |")
    assert "n = 2,000 digits per row" in lines[7] and "x86_64 CPU, 2 threads (float32)" in lines[7]
    assert "840 steps × s/step" in lines[7] and "eps 1.00 s/step = 14.0 min, flow 1.01 s/step = 14.1 min" in lines[7]
    _write(tmp_path, name="predict_v_seed0_ddim20", n=500, payload={
        "variant": "v", "train_seed": 0, "sampler": "ddim20", "evaluations_per_digit": 20, "clip_x0": True, "steps": 840,
        "train_seconds": 846.0, "train_hardware": "x86_64 CPU, 2 threads", "train_precision": "float32",
        "report": _measured(25.0), "floor": floor})
    with pytest.raises(ValueError, match="different n or against different floors"):
        readme_tables.render_region("bake-off")


def test_the_probe_table_lists_longer_runs_with_their_own_speed(tmp_path, monkeypatch):
    monkeypatch.setattr(readme_tables, "latest_results", lambda prefix: results.latest_results(prefix, results_dir=tmp_path))
    assert readme_tables.render_region("bake-off-probes").startswith("_(no result file yet: run `python benchmarks/")
    _write(tmp_path, name="predict-speed", n=None, payload={"variants": {}})     # not a probe: no variant
    for family, steps, precision, seconds, fid, config in (
            ("predict-logit-normal", 840, "float32", 500.0, 120.0, {"flow_time_sampling": "logit-normal"}),
            ("predict-bf16-steps3000", 3000, "bf16 autocast", 900.0, 50.0, {}),
            ("predict-steps1150", 1150, "float32", 920.0, 100.0, {})):
        _write(tmp_path, name=f"{family}_flow_seed0_flow-heun10", payload={
            "variant": "flow", "train_seed": 0, "sampler": "flow-heun10", "steps": steps, "train_seconds": seconds,
            "config": config, "train_precision": precision, "report": _measured(fid), "floor": _measured(6.5)})
    lines = readme_tables.render_region("bake-off-probes").splitlines()
    assert lines[4].startswith("| flow velocity | 0 | logit-normal | 840 | float32 |")       # other tau sampling last
    assert len(lines) == 7 and lines[0].startswith("| target | training seed | τ sampling | steps | arithmetic | training minutes")
    cpu = torch.backends.cpu.get_cpu_capability()                                 # _write records this machine's
    assert lines[2].startswith("| flow velocity | 0 | uniform | 1,150 | float32 | 15.3 | 0.80 |")   # float32 first
    assert lines[3] == (f"| flow velocity | 0 | uniform | 3,000 | bf16 autocast | 15.0 | 0.30 | {cpu} | Heun-10 | 50.0 [48.0, 52.0] "
                        "| 7.7× | 0.800 [0.700, 0.900] | 0.800 [0.700, 0.900] |")
    assert "real-data floor FID 6.5 [4.5, 8.5]" in lines[6]


@pytest.mark.parametrize("text, match", [
    ("<!-- table:nobody -->\n<!-- /table:nobody -->\n", r"line 1: no registered table 'nobody'"),
    ("<!-- table:checkpoints -->\n| a |\n", r"line 1: table 'checkpoints' has no end marker"),
    ("<!-- /table:checkpoints -->\n", r"line 1: end marker of 'checkpoints' without its start marker"),
    ("<!-- table:checkpoints -->\n<!-- table:notebooks -->\n", r"line 2: table 'notebooks' starts inside"),
])
def test_broken_markers_are_named(text, match):
    with pytest.raises(ValueError, match=match):
        readme_tables.readme_regions(text)


def test_check_command_exits_non_zero_on_drift(tmp_path, capsys):
    """--check fails when either file drifts (here the lab report; README.md is checked beside it)."""
    report, readme = tmp_path / "RESULTS.md", tmp_path / "README.md"
    rendered = readme_tables.render_readme(RESULTS_TEXT)      # as the files say now (the drift test checks the rest)
    assert "| 252.1 |" in rendered
    report.write_text(rendered.replace("| 252.1 |", "| 252.0 |"), encoding="utf-8")
    readme.write_text(readme_tables.render_readme(README_TEXT), encoding="utf-8")
    assert readme_tables.main(["--check", "--file", str(readme), "--file", str(report)]) == 1
    out = capsys.readouterr().out
    assert "+| lr4e-3 |" in out and "RESULTS.md differs" in out and "README.md differs" not in out
    assert readme_tables.main(["--file", str(readme), "--file", str(report)]) == 0  # rewrites the report
    assert report.read_text(encoding="utf-8") == rendered
    assert readme_tables.main(["--check", "--file", str(readme), "--file", str(report)]) == 0


def test_images_round_trip_through_json(tmp_path):
    """A result file can carry a grid: images_to_json stores uint8 levels in one base64 string, and
    images_from_json gives back the images to within half a level (1/255 of [-1, 1])."""
    images = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1   # (3, 1, 28, 28)
    images[0, 0, 0, 0], images[0, 0, 0, 1] = -1.0, 1.0                                       # the ends survive exactly
    stored = results.images_to_json(images)
    assert stored["shape"] == [3, 1, 28, 28] and isinstance(stored["uint8_base64"], str)
    path = _write(tmp_path, payload={"grid": stored})
    back = results.images_from_json(results.read_result(path)["grid"])
    assert back.shape == images.shape and (back - images).abs().max() <= 1 / 255 + 1e-6
    assert back[0, 0, 0, 0] == -1 and back[0, 0, 0, 1] == 1
    with pytest.raises(ValueError, match="float tensor"):
        results.images_to_json(torch.zeros(28, 28))
    with pytest.raises(ValueError, match="need 2352 bytes"):
        results.images_from_json({**stored, "uint8_base64": stored["uint8_base64"][:8]})   # cut short: 6 bytes
