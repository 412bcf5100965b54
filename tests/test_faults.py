"""Bad input and faults, round 2: guidance inputs, per-image
labels with chunked sampling, inpainting masks, two writers of one file, the fallback save, integrity
of checkpoints and caches, and exports that would break imports.

Tiny models only (a 4x4-pixel MLP, an 8x8 U-Net, T = 20); the concurrency tests start two Python
processes each. Real notebooks and shipped checkpoints are only ever read, or copied first.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import diffusion_utils as du
from lessons.guidance import ConditionalUNet, Guided, guided_eps
from lessons.mlp import MLPDenoiser, train
from notebook_support import checkpoints, export, files, training
from notebook_support.environment import PROJECT_ROOT
from notebook_support.sampling import sample_in_chunks

SMALL_UNET = dict(image_size=8, base_channels=8, channel_mults=[1, 2], num_res_blocks=1, attention_resolutions=[],
                  dropout=0.0)
TINY_KWARGS = {"image_size": 4, "hidden": 16, "depth": 1, "time_dim": 8}
TINY_CONFIG = {"model": "mlp", "model_kwargs": TINY_KWARGS, "schedule": "cosine", "num_timesteps": 20,
               "num_steps": 40, "batch_size": 8, "lr": 1e-3, "grad_clip": 1.0, "ema_decay": 0.9, "seed": 0}


@pytest.fixture(scope="module")
def conditional():
    torch.manual_seed(0)
    model = ConditionalUNet(num_classes=10, **SMALL_UNET).eval()
    torch.nn.init.normal_(model.class_embed.weight)  # a trained-looking table: labels change the output
    return model


def tiny_data(seed: int = 0) -> torch.Tensor:
    return torch.rand(32, 1, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1  # (32, 1, 4, 4)


def flip_a_tensor_byte(path: Path, member_suffix: str = "/data/0", offset: int = 100) -> None:
    """Flip the lowest bit of one byte inside a tensor record of a torch zip file (bit rot): the zip
    stays readable and its metadata unchanged; only the stored CRC-32 no longer fits."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(member_suffix))
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)  # local file header
    position = info.header_offset + 30 + name_len + extra_len + min(offset, info.file_size - 1)
    raw[position] ^= 0x01
    path.write_bytes(bytes(raw))


# ---------------------------------------------------------------------------------------------
# 4. guidance weight and digit
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("w, error, match", [
    (float("nan"), ValueError, "w must be a finite number"),
    (float("inf"), ValueError, "w must be a finite number"),
    (-float("inf"), ValueError, "w must be a finite number"),
    (1e30, ValueError, r"w must lie in \[-50, 50\]"),
    (-51, ValueError, r"w must lie in \[-50, 50\]"),
    ("2", TypeError, "w must be a real number"),
    (None, TypeError, "w must be a real number"),
    (True, TypeError, "w must be a real number"),
])
def test_guidance_weight_must_be_a_finite_number(conditional, w, error, match):
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([3, 9]), torch.tensor([1, 2])
    with pytest.raises(error, match=match):
        Guided(conditional, 3, w)
    with pytest.raises(error, match=match):
        guided_eps(conditional, x, t, y, w)


def test_guidance_weight_accepts_numpy_numbers_and_negative_w(conditional):
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([3, 9]), torch.tensor([1, 2])
    with torch.no_grad():
        eps_c, eps_u = conditional(x, t, y), conditional(x, t)
        assert torch.allclose(guided_eps(conditional, x, t, y, np.float32(2.0)), 2 * eps_c - eps_u, atol=1e-5)
        # negative w pushes away from the label: eps_u - 1 * (eps_c - eps_u)
        assert torch.allclose(guided_eps(conditional, x, t, y, -1), 2 * eps_u - eps_c, atol=1e-5)
        assert torch.allclose(Guided(conditional, y, np.int64(50))(x, t), guided_eps(conditional, x, t, y, 50.0))


def test_guided_accepts_integer_like_digits_and_refuses_others(conditional):
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([1, 5, 9])
    with torch.no_grad():
        three = Guided(conditional, 3, 2.0)(x, t)
        for digit in (3.0, np.int64(3), np.float64(3.0), torch.tensor(3)):
            assert torch.equal(Guided(conditional, digit, 2.0)(x, t), three), repr(digit)
        for labels in ([3, 3, 3], np.array([3, 3, 3]), torch.tensor([3.0, 3.0, 3.0])):
            assert torch.equal(Guided(conditional, labels, 2.0)(x, t), three), repr(labels)
        # None is "no class" for every image, as ConditionalUNet's y=None: the unconditional model, whatever w
        assert torch.equal(Guided(conditional, None, 5.0)(x, t), conditional(x, t))
    for digit, error, match in [("3", TypeError, "digit must be an int"), (3.5, ValueError, "digit must be a whole"),
                                (True, TypeError, "digit must be an int"), (11, ValueError, r"digit must lie in \[0, 10\]"),
                                (-1, ValueError, r"digit must lie in \[0, 10\]"),
                                (torch.tensor([[1, 2]]), ValueError, "one label per image, shape"),
                                (torch.tensor([1.5, 2.0]), ValueError, "whole numbers"),
                                (torch.tensor([1, 12]), ValueError, r"labels must lie in \[0, 10\]"),
                                (float("nan"), ValueError, "digit must be a whole")]:
        with pytest.raises(error, match=match):
            Guided(conditional, digit, 2.0)


def test_guided_labels_must_match_the_batch(conditional):
    with pytest.raises(ValueError, match="Guided holds 4 labels, one per image, but was called on 3 images"):
        Guided(conditional, torch.tensor([1, 2, 3, 4]), 2.0)(torch.randn(3, 1, 8, 8), torch.tensor([1, 2, 3]))


# ---------------------------------------------------------------------------------------------
# 5. per-image labels with chunked sampling
# ---------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:alphabar_T")
def test_per_image_labels_are_split_with_the_chunks(conditional):
    schedule = du.DiffusionSchedule(num_timesteps=20)
    labels = torch.tensor([0, 3, 3, 7, 9])
    x_T = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    whole = du.ddim_sample(Guided(conditional, labels, 2.0), schedule, (5, 1, 8, 8), x_T=x_T, num_steps=4,
                           progress=False)
    for chunk in (1, 2, 3):
        chunked = sample_in_chunks(du.ddim_sample, Guided(conditional, labels, 2.0), schedule, 5, chunk_size=chunk,
                                   x_T=x_T, image_shape=(1, 8, 8), num_steps=4, progress=False)
        assert torch.allclose(whole, chunked, atol=1e-5), chunk
    with pytest.raises(ValueError, match="Guided holds 5 labels, one per image, but 4 images were asked for"):
        sample_in_chunks(du.ddim_sample, Guided(conditional, labels, 2.0), schedule, 4, chunk_size=2,
                         image_shape=(1, 8, 8), num_steps=2, progress=False)


# ---------------------------------------------------------------------------------------------
# 6. inpainting: mask shape, mask values, x0 range
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inpaint_setup(conditional):
    from lessons.guidance import inpaint  # an export of notebook 4 (section 5)
    x0 = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1   # (2, 1, 8, 8)
    return inpaint, Guided(conditional, torch.tensor([1, 2]), 2.0), du.DiffusionSchedule(num_timesteps=20), x0


@pytest.mark.filterwarnings("ignore:alphabar_T")
def test_inpainting_keeps_the_known_pixels_for_every_documented_mask_shape(inpaint_setup):
    inpaint, denoiser, schedule, x0 = inpaint_setup
    half = torch.zeros(1, 8, 8)
    half[..., :4] = 1                                                    # the left half is kept
    results = [inpaint(denoiser, schedule, x0, mask, torch.Generator().manual_seed(0))
               for mask in (half.expand(2, 1, 8, 8), half[None], half, half.bool(), half.to(torch.uint8))]
    for result in results:
        assert result.shape == x0.shape and torch.equal(result[..., :4], x0[..., :4])
        assert torch.allclose(result, results[0])                       # the same mask, however given
    assert not torch.allclose(results[0][..., 4:], x0[..., 4:])         # the unknown half is drawn


@pytest.mark.parametrize("mask, match", [
    (torch.ones(8), r"known must have x0's shape \(2, 1, 8, 8\), or \(1, 1, 8, 8\) or \(1, 8, 8\) for one mask"),
    (torch.ones(8, 8), r"known must have x0's shape \(2, 1, 8, 8\)"),
    (torch.ones(3, 1, 8, 8), r"known must have x0's shape \(2, 1, 8, 8\)"),
    (torch.full((2, 1, 8, 8), 255, dtype=torch.uint8), r"known must hold only 0 \(draw\) and 1 \(keep\), got values .*255"),
    (torch.full((2, 1, 8, 8), 0.5), r"known must hold only 0 \(draw\) and 1 \(keep\), got values .*0\.5"),
    ([[1, 0]], "known must be a torch.Tensor"),
])
def test_inpainting_refuses_bad_masks(inpaint_setup, mask, match):
    inpaint, denoiser, schedule, x0 = inpaint_setup
    with pytest.raises((ValueError, TypeError), match=match):
        inpaint(denoiser, schedule, x0, mask, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("scale, match", [(lambda x: x * 127.5 + 127.5, r"x0 must lie in \[-1, 1\]"),
                                          (lambda x: (x + 1) / 2, "x0 lie in .* look like \\[0, 1\\]"),
                                          (lambda x: x[0], r"x0 must be images \(N, C, H, W\)")])
def test_inpainting_refuses_x0_outside_minus_one_one(inpaint_setup, scale, match):
    inpaint, denoiser, schedule, x0 = inpaint_setup
    with pytest.raises(ValueError, match=match):
        inpaint(denoiser, schedule, scale(x0), torch.ones(1, 8, 8), torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------------
# 9. two writers, one file
# ---------------------------------------------------------------------------------------------


def run_python(code: str, *args: str, timeout: float = 240) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


BARRIER = """
import sys, time
from pathlib import Path

def barrier(folder, name, me, parties=2):
    # every process waits here until all `parties` have arrived: their writes then overlap
    Path(folder, f"{name}.{me}").touch()
    deadline = time.monotonic() + 60
    while len(list(Path(folder).glob(f"{name}.*"))) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(name)
        time.sleep(0.01)
"""


def run_two(code: str, folder: Path, timeout: float = 240) -> list[dict]:
    """Run `code` (which may call barrier(folder, name, me)) in two processes; their last stdout lines, as JSON."""
    processes = [run_python(BARRIER + textwrap.dedent(code), str(folder), str(me)) for me in range(2)]
    outputs = [process.communicate(timeout=timeout) for process in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n\n".join(err[-3000:] for _, err in outputs)
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]


def test_two_processes_saving_one_checkpoint_never_fail(tmp_path):
    """Two writers (two kernels, or a notebook and the training script) save the same checkpoint 60
    times each, at the same moments: every save succeeds and the file is always a whole checkpoint."""
    results = run_two("""
        import json, torch
        from notebook_support.checkpoints import save_checkpoint
        folder, me = sys.argv[1], sys.argv[2]
        model = torch.nn.Linear(512, 512)                        # a 1 MB checkpoint: writes take a while
        failures = []
        barrier(folder, "start", me)
        for i in range(60):
            try:
                save_checkpoint(Path(folder) / "model.pt", model, {"model": "linear"}, architecture={}, step=i)
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
        print(json.dumps({"failures": failures}))
    """, tmp_path)
    assert [r["failures"] for r in results] == [[], []]
    assert checkpoints.load_checkpoint(tmp_path / "model.pt")["step"] == 59
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tmp") == []   # no temp file left behind


def test_two_training_runs_of_one_config_both_finish(tmp_path):
    """Two processes train the same tiny config into the same file at the same time, three times, saving
    their resume state after every step: both finish every time, with the same weights."""
    results = run_two(f"""
        import json, torch
        from lessons.mlp import MLPDenoiser, train
        from notebook_support import training
        folder, me = sys.argv[1], sys.argv[2]
        torch.set_num_threads(1)
        config = {TINY_CONFIG!r}
        data = torch.rand(32, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
        sums = []
        for trial in range(3):
            barrier(folder, f"trial{{trial}}", me)
            model, payload = training.train_from_config(config, MLPDenoiser, train, data, Path(folder) / f"m{{trial}}.pt",
                                                        device="cpu", progress=False, save_every_s=0)
            sums.append(sum(v.double().sum().item() for v in model.state_dict().values()))
        print(json.dumps({{"sums": sums}}))
    """, tmp_path)
    assert results[0]["sums"] == results[1]["sums"]
    for trial in range(3):
        assert checkpoints.load_checkpoint(tmp_path / f"m{trial}.pt")["steps"] == 40


def test_only_provably_stale_temp_files_are_removed(tmp_path):
    target = tmp_path / "model.pt"
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    live = tmp_path / (files.temp_prefix(target) + "a1b2c3.tmp")           # an in-flight write of this (live) process
    dead = tmp_path / (files.temp_prefix(target, dead_pid) + "d4e5f6.tmp")  # what a killed writer left
    other_host = tmp_path / f".model.pt.0123abcd-{os.getpid()}-x1y2z3.tmp"   # another machine's writer (a shared folder)
    old_other_host = tmp_path / ".model.pt.0123abcd-77-q9w8e7.tmp"
    legacy = tmp_path / ".model.pt.k1ll3d.tmp"             # the older naming, no owner: judged by age only
    for path in (live, dead, other_host, old_other_host, legacy):
        path.write_bytes(b"half a checkpoint")
    hours_ago = os.path.getmtime(legacy) - 2 * 3600
    os.utime(old_other_host, (hours_ago, hours_ago))
    assert sorted(files.remove_stale_temp_files(target)) == sorted([dead, old_other_host])
    assert live.exists() and other_host.exists() and legacy.exists()
    os.utime(legacy, (hours_ago, hours_ago))
    files.atomic_write_bytes(target, b"new")
    assert not legacy.exists() and live.exists() and target.read_bytes() == b"new"


# ---------------------------------------------------------------------------------------------
# 10. the fallback save
# ---------------------------------------------------------------------------------------------


def test_fallback_save_goes_to_a_private_folder_of_this_user(tmp_path, monkeypatch, capsys):
    system_tmp = tmp_path / "system_tmp"
    system_tmp.mkdir()
    (system_tmp / "mnist-diffusion").write_text("another user's")   # the old fixed folder cannot be used
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    real_save, attempts = training.save_checkpoint, []

    def disk_full_once(path, *args, **kwargs):
        attempts.append(Path(path))
        if len(attempts) == 1:
            raise OSError(28, "No space left on device")
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(training, "save_checkpoint", disk_full_once)
    target = tmp_path / "out" / "m.pt"
    model, payload = training.train_from_config(TINY_CONFIG, MLPDenoiser, train, tiny_data(), target, device="cpu",
                                                progress=False)
    fallback = attempts[-1]
    assert len(attempts) == 2 and fallback.name == "m.pt" and fallback.parent.parent == system_tmp
    assert fallback.parent.name.startswith("mnist-diffusion-") and fallback.parent.stat().st_mode & 0o777 == 0o700
    assert f"could not write {target} (OSError: [Errno 28] No space left on device); the trained weights are in " \
           f"{fallback}" in capsys.readouterr().out
    loaded = checkpoints.load_checkpoint(fallback, MLPDenoiser(**TINY_KWARGS))
    assert all(torch.equal(loaded["state_dict"][k], v) for k, v in model.state_dict().items())


def test_when_every_save_fails_the_error_says_so_and_where_the_resume_state_is(tmp_path, monkeypatch):
    def always_full(path, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(training, "save_checkpoint", always_full)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "system_tmp"))
    target = tmp_path / "out" / "m.pt"
    resume = target.with_name(".m.resume.pt")
    with pytest.raises(OSError, match=re.escape(f"the trained weights could not be saved: {target} (OSError: ")) as info:
        training.train_from_config(TINY_CONFIG, MLPDenoiser, train, tiny_data(), target, device="cpu",
                                   progress=False, save_every_s=0)
    assert f"the last resume state is {resume}" in str(info.value)
    assert resume.is_file() and files.load_torch_file(resume, what="resume file")["losses"]


# ---------------------------------------------------------------------------------------------
# 11. integrity
# ---------------------------------------------------------------------------------------------


def test_a_flipped_bit_in_a_shipped_checkpoint_is_found_and_the_file_named(tmp_path):
    copy = tmp_path / "unet_laptop.pt"
    shutil.copyfile(PROJECT_ROOT / "checkpoints" / "unet_laptop.pt", copy)
    assert checkpoints.load_checkpoint(copy)["steps"] > 0        # the intact copy loads
    flip_a_tensor_byte(copy)
    with pytest.raises(files.CorruptFileError, match=re.escape(f"the checkpoint {copy} is damaged")):
        checkpoints.load_checkpoint(copy)
    with pytest.raises(files.CorruptFileError, match=r"archive/data/0.*CRC"):
        files.load_torch_file(copy)


def test_tensors_that_do_not_fit_their_metadata_name_the_file(tmp_path):
    model = MLPDenoiser(**TINY_KWARGS)
    path = checkpoints.save_checkpoint(tmp_path / "m.pt", model, TINY_CONFIG, steps=1)
    payload = files.load_torch_file(path)
    first = next(iter(payload["state_dict"]))
    payload["state_dict"][first] = torch.zeros(3)               # config and fingerprint still fit, one tensor does not
    files.atomic_torch_save(payload, path)
    with pytest.raises(files.CorruptFileError, match=re.escape(f"the checkpoint {path} records this config and code, "
                                                               f"but its weights do not fit MLPDenoiser")):
        checkpoints.load_checkpoint(path, MLPDenoiser(**TINY_KWARGS), TINY_CONFIG)


@pytest.mark.parametrize("damage", ["flipped bit", "wrong tensor"])
def test_a_damaged_cache_entry_is_rebuilt(tmp_path, capsys, damage):
    cache, store = tmp_path / "cache", []

    @functools.wraps(train)                                      # validate_config reads train's keywords
    def recording(*args, **kwargs):
        store.append(1)
        return train(*args, **kwargs)

    first, _ = training.load_or_train(TINY_CONFIG, MLPDenoiser, recording, tiny_data(), None, cache, device="cpu",
                                      progress=False)
    (cached,) = cache.glob("*.pt")
    if damage == "flipped bit":
        flip_a_tensor_byte(cached, offset=8)
    else:
        payload = files.load_torch_file(cached)
        payload["state_dict"] = {k: v[..., :1] for k, v in payload["state_dict"].items()}
        files.atomic_torch_save(payload, cached)
    capsys.readouterr()
    again, _ = training.load_or_train(TINY_CONFIG, MLPDenoiser, recording, tiny_data(), None, cache, device="cpu",
                                      progress=False)
    out = capsys.readouterr().out
    assert len(store) == 2, out                                  # trained again instead of loading bad weights
    assert str(cached) in out and "it will be rebuilt" in out
    assert all(torch.equal(again.state_dict()[k], v) for k, v in first.state_dict().items())
    assert checkpoints.load_checkpoint(cached, MLPDenoiser(**TINY_KWARGS))["steps"] == 40


# ---------------------------------------------------------------------------------------------
# 13. exports that would break imports
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def project_copy(tmp_path, monkeypatch):
    """The exported notebooks and lessons/ copied into tmp_path, which export then treats as the root."""
    for name in export.EXPORTS:
        shutil.copyfile(PROJECT_ROOT / name, tmp_path / name)
    shutil.copytree(PROJECT_ROOT / "lessons", tmp_path / "lessons", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(export, "PROJECT_ROOT", tmp_path)
    monkeypatch.setattr(sys, "argv", ["notebook_support.export"])
    return tmp_path


def lessons_bytes(root: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted((root / "lessons").iterdir()) if p.is_file()}


def test_export_refuses_a_syntax_error_and_leaves_lessons_untouched(project_copy, capsys):
    before = lessons_bytes(project_copy)
    path = project_copy / "4_guidance.ipynb"
    notebook = json.loads(path.read_text(encoding="utf-8"))
    cell_number, cell = next((n, c) for n, c in enumerate(notebook["cells"], start=1)
                             if "def guided_eps" in "".join(c["source"]))
    cell["source"] = "".join(cell["source"]).replace("def guided_eps(", "def guided_eps((")
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    assert export.main() != 0
    err = capsys.readouterr().err
    first_line = next(line for line in cell["source"].splitlines()[1:] if line.strip() and not line.startswith("#"))
    assert f"4_guidance.ipynb, cell {cell_number} ({first_line[:40]}" in err, err
    assert "SyntaxError at line " in err and "def guided_eps((" in err, err
    assert "lessons/ was left as it was" in err
    assert lessons_bytes(project_copy) == before                 # not one module rewritten, not even mlp.py
    assert export.main(["--check"]) != 0


def test_export_names_a_truncated_notebook(project_copy, capsys):
    before = lessons_bytes(project_copy)
    path = project_copy / "3_unet.ipynb"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert export.main() != 0
    err = capsys.readouterr().err
    assert f"{path} is not a readable notebook (invalid JSON at line " in err and "lessons/ was left as it was" in err
    assert lessons_bytes(project_copy) == before
    with pytest.raises(export.ExportError, match=re.escape(f"{path} is not a readable notebook")):
        export.notebook_config(path, "LAPTOP_CONFIG")
