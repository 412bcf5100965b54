"""load_or_train's two guards for a reader's edit that would train: a run estimated above
`max_train_minutes` stops before step 1 with TrainingTooLong (one message: why it would train, the
estimate here, the two ways on), and quick mode trains a short stand-in through the same training
function instead, cached where a full run never finds it. On the tiny run of test_support."""

from __future__ import annotations

import functools
import re

import pytest
import torch

from lessons.mlp import MLPDenoiser, train
from notebook_support import training
from notebook_support.training import TrainingTooLong
from test_support import TINY_KWARGS, tiny_config, tiny_data  # the same tiny run as test_support


def counting(store: list):
    """lessons.mlp.train, recording the num_steps of every call (timing runs included)."""
    @functools.wraps(train)
    def run(*args, **kwargs):
        store.append(kwargs["num_steps"])
        return train(*args, **kwargs)
    return run


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    path = tmp_path_factory.mktemp("shipped") / "mlp.pt"
    training.train_from_config(tiny_config(), MLPDenoiser, train, tiny_data(), path, device="cpu", progress=False)
    return path


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_over_the_limit_stops_before_step_one(shipped, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "seconds_per_step", lambda *args, **kwargs: 1.0)   # 40 steps: 40 s
    calls: list = []
    cache = tmp_path / "cache"
    with pytest.raises(TrainingTooLong) as caught:
        training.load_or_train(tiny_config(lr=2e-3), MLPDenoiser, counting(calls), tiny_data(), shipped, cache,
                               device="cpu", progress=False, max_train_minutes=0.5, quick=False,
                               hint='use the laptop preset: PRESET = "laptop"')
    message = str(caught.value)
    assert calls == [] and not any(cache.glob("*.pt"))                     # not one step, nothing cached
    assert "\n" not in message and isinstance(caught.value, RuntimeError)
    assert message.startswith(f"not training: it would train because {shipped} does not fit: config lr: ")
    assert re.search(r"40 steps at 1\.00 s/step take about 40 s on .+ \(float32, timed after 2 warm-up steps\), "
                     r"more than max_train_minutes = 0\.5\. ", message), message
    assert message.endswith('Two ways on: set MAX_TRAIN_MINUTES = 5 in the config cell and re-run, '
                            'or use the laptop preset: PRESET = "laptop"')
    with pytest.raises(TrainingTooLong, match=r"set MAX_TRAIN_MINUTES = 5 .*, or undo the edit, so that the shipped"):
        training.load_or_train(tiny_config(lr=2e-3), MLPDenoiser, train, tiny_data(), shipped, cache,
                               device="cpu", progress=False, max_train_minutes=0.5, quick=False)
    model, payload = training.load_or_train(tiny_config(lr=2e-3), MLPDenoiser, counting(calls), tiny_data(), shipped,
                                            cache, device="cpu", progress=False, max_train_minutes=1, quick=False)
    assert calls == [40] and payload["steps"] == 40 and "quick_stand_in" not in payload   # under the limit: trains


def test_the_limit_uses_the_timed_estimate(tmp_path):
    """Unpatched: the estimate of the real loop (a few ms per tiny step) is over a limit of 1e-6 minutes."""
    with pytest.raises(TrainingTooLong, match=r"^not training: it would train because no checkpoint is shipped for "
                                              r"it, but 40 steps at \d+\.\d\d s/step take about \d+ s on .*, "
                                              r"or lower num_steps$"):
        training.load_or_train(tiny_config(), MLPDenoiser, train, tiny_data(), None, tmp_path, device="cpu",
                               progress=False, max_train_minutes=1e-6, quick=False)
    assert not any(tmp_path.glob("*.pt"))


def test_the_shipped_model_loads_whatever_the_limit_and_mode(shipped, tmp_path, capsys):
    calls: list = []
    _, payload = training.load_or_train(tiny_config(), MLPDenoiser, counting(calls), tiny_data(), shipped,
                                        tmp_path, device="cpu", progress=False, max_train_minutes=1e-9, quick=True)
    assert calls == [] and payload["steps"] == 40 and "quick_stand_in" not in payload
    assert capsys.readouterr().out.startswith("loaded mlp.pt (40 steps")


def test_quick_mode_trains_a_stand_in_that_a_full_run_never_loads(shipped, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(training, "QUICK_TRAIN_STEPS", 8)          # tests/conftest.py turns stand-ins off
    monkeypatch.setenv("DDPM_QUICK", "1")
    calls: list = []
    cache = tmp_path / "cache"
    edited = tiny_config(lr=2e-3)
    model, payload = training.load_or_train(edited, MLPDenoiser, counting(calls), tiny_data(), shipped, cache,
                                            device="cpu", progress=False, max_train_minutes=1e-9)   # quick: no limit
    out = capsys.readouterr().out
    assert calls == [8]                                              # 8 steps, the same train function, no timing run
    assert payload["quick_stand_in"] is True and payload["quick_steps"] == 8 and payload["full_num_steps"] == 40
    assert payload["steps"] == 8 and payload["config"]["num_steps"] == 8
    (stand_in_file,) = cache.glob("*.pt")
    assert stand_in_file.name.startswith("quick8_mlp_")
    assert f"training a quick-mode stand-in because {shipped} does not fit: config lr: " in out
    line = next(line for line in out.splitlines() if line.startswith("quick mode (DDPM_QUICK=1): "))
    assert re.fullmatch(rf"quick mode \(DDPM_QUICK=1\): {stand_in_file.name} is a stand-in trained for 8 of the "
                        r"config's 40 steps \(the same training code; at its \d+\.\d\d s/step the full run takes about "
                        r"\d+ s on .+\), so checks of its quality are skipped; full mode trains or loads the real model",
                        line), line
    direct, _ = training.train_from_config(training.quick_stand_in_config(edited), MLPDenoiser, train, tiny_data(),
                                           tmp_path / "direct.pt", device="cpu", progress=False)
    assert same_weights(model.state_dict(), direct.state_dict())    # the config's own run, cut to 8 steps

    again, payload_again = training.load_or_train(edited, MLPDenoiser, counting(calls), tiny_data(), shipped, cache,
                                                  device="cpu", progress=False)
    out = capsys.readouterr().out
    assert calls == [8] and out.startswith(f"loaded {stand_in_file.name} (8 steps") and "a stand-in trained" in out
    assert payload_again["quick_stand_in"] is True and same_weights(again.state_dict(), model.state_dict())

    for config in (edited, tiny_config(lr=2e-3, num_steps=8)):      # full mode, even at the stand-in's 8 steps
        _, full = training.load_or_train(config, MLPDenoiser, counting(calls), tiny_data(), shipped, cache,
                                         device="cpu", progress=False, quick=False)
        assert "quick_stand_in" not in full and full["steps"] == config["num_steps"]
        assert "training because" in capsys.readouterr().out
    assert calls[1:] == [40, 8]              # the real runs (the timing run calls the unwrapped function)
    assert len(list(cache.glob("*.pt"))) == 3


def test_a_stand_in_config_is_the_config_cut_short():
    config = {**tiny_config(), "num_steps": 2500, "warmup_steps": 100}
    assert training.quick_stand_in_config(config, 8) == {**config, "num_steps": 8, "warmup_steps": 8}
    assert training.quick_stand_in_config({**config, "warmup_steps": 3}, 8)["warmup_steps"] == 3
    assert training.quick_stand_in_config(tiny_config(num_steps=8), 8) is None     # no longer than that: as is
    assert training.quick_stand_in_config(config, 0) is None                       # stand-ins off
    assert TINY_KWARGS == tiny_config()["model_kwargs"]


@pytest.mark.parametrize("native", [True, False])
def test_each_precision_is_timed_only_where_it_runs_natively(native, monkeypatch):
    """seconds_per_step_by_precision times float32 always and bf16 autocast only where choose_bf16 says the device
    computes it natively, whatever the config's own bf16, and passes each precision to the loop."""
    asked = []

    def fake_seconds_per_step(model, train_fn, data, schedule, kwargs, *, timed_steps):
        asked.append((kwargs["bf16"], timed_steps))
        return 0.25 if kwargs["bf16"] else 0.5

    monkeypatch.setattr(training, "choose_bf16", lambda device: (native, "the reason"))
    monkeypatch.setattr(training, "seconds_per_step", fake_seconds_per_step)
    config = {**tiny_config(), "bf16": not native}
    per_step, why = training.seconds_per_step_by_precision(None, train, tiny_data(), None, config, timed_steps=7)
    assert why == "the reason"
    assert per_step == ({"float32": 0.5, "bfloat16": 0.25} if native else {"float32": 0.5})
    assert asked == ([(False, 7), (True, 7)] if native else [(False, 7)])
