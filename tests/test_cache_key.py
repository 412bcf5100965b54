"""The cache knows what trained a model; labels and configs
are checked up front; a *args wrapper is explained; bf16 only where it is native.

1+2. The key of shipped and cached checkpoints covers the config, the model's code, the training
     function's code and the project functions it calls, the arguments bound with
     functools.partial (labels) and the data; the message says which of them differ.
3.   Training labels are checked before step 1, naming `labels` and the bad values.
7.   Sizes that cannot be allocated, seeds beyond 64 bits and warmup_steps > num_steps are refused
     up front, naming the key.
8.   A `*args, **kwargs` wrapper of train: the error says the keys could not be read from it.
14.  A config's bf16 means bf16 autocast where native, else float32 with a one-line note; the
     estimate is timed on the loop itself after warm-up.

Tiny models (a 4x4-pixel MLP, an 8x8 U-Net, T = 20); the shipped checkpoints are only read.
"""

from __future__ import annotations

import ast
import dis
import functools
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import diffusion_utils as du
from lessons.guidance import ConditionalUNet, train_conditional
from lessons.mlp import MLPDenoiser, PlainMLP, train
from lessons.prediction import PREDICTIONS, laptop_flow_config, train_prediction, variant_config
from lessons.unet import UNet, train_recipe
from notebook_support import checkpoints, export, training
from notebook_support.data import mnist_tensor
from notebook_support.environment import PROJECT_ROOT, is_quick_mode

from test_support import TINY_KWARGS, tiny_config, tiny_data  # the same tiny run as test_support

SMALL_UNET = dict(image_size=8, base_channels=8, channel_mults=[1, 2], num_res_blocks=1, attention_resolutions=[],
                  dropout=0.0)


TINY_LABELS = torch.arange(32) % 3  # (32,): three "digits"


class TinyConditional(MLPDenoiser):
    """A 4x4-pixel class-conditional MLP with notebook 4's interface: num_classes, and y=None or
    label num_classes means "no class"."""

    def __init__(self, num_classes: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.class_embed = nn.Embedding(num_classes + 1, 16)

    def forward(self, x, t, y=None):
        y = torch.full((x.shape[0],), self.num_classes, device=x.device) if y is None else y   # (B,)
        return super().forward(x, t) + self.class_embed(y).view(x.shape)                      # (B, 1, 4, 4)


def conditional_config() -> dict:
    return tiny_config(model="tiny_conditional", model_kwargs={**TINY_KWARGS, "num_classes": 3}, label_dropout=0.1)


def run(config, model_class, train_fn, data, shipped, cache):
    return training.load_or_train(config, model_class, train_fn, data, shipped, cache, device="cpu", progress=False)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A 'shipped' tiny MLP trained on all of tiny_data()."""
    path = tmp_path_factory.mktemp("shipped") / "mlp.pt"
    training.train_from_config(tiny_config(), MLPDenoiser, train, tiny_data(), path, device="cpu", progress=False)
    return path


# ---------------------------------------------------------------------------------------------
# 1. changed data, changed bound arguments
# ---------------------------------------------------------------------------------------------


def test_a_subset_of_the_data_does_not_load_the_all_digit_model(shipped, tmp_path, capsys):
    sevens = tiny_data()[TINY_LABELS == 1]                       # (11, 1, 4, 4): "train on the 7s only"
    _, payload = run(tiny_config(), MLPDenoiser, train, sevens, shipped, tmp_path / "cache")
    out = capsys.readouterr().out
    assert re.search(rf"^training because {re.escape(str(shipped))} does not fit: data: stored shape \[32, 1, 4, 4\] "
                     r"vs wanted \[11, 1, 4, 4\]\. 40 steps at ", out, re.M), out
    assert payload["data"]["shape"] == [11, 1, 4, 4]
    # the cache holds the 7s model now; asking for all digits must not return it
    _, payload = run(tiny_config(), MLPDenoiser, train, tiny_data(), None, tmp_path / "cache")
    out = capsys.readouterr().out
    assert out.startswith("training because no checkpoint is shipped for it. "), out
    assert payload["data"]["shape"] == [32, 1, 4, 4] and len(list((tmp_path / "cache").glob("mlp_*.pt"))) == 2
    # and each is found again under its own key
    run(tiny_config(), MLPDenoiser, train, sevens, None, tmp_path / "cache")
    sevens_file = training.cache_file(tiny_config(), MLPDenoiser, train, sevens, tmp_path / "cache")
    assert capsys.readouterr().out.startswith(f"loaded {sevens_file.name}")


def test_inverted_digits_do_not_load_the_model_of_the_digits(shipped, tmp_path, capsys):
    _, payload = run(tiny_config(), MLPDenoiser, train, -tiny_data(), shipped, tmp_path / "cache")
    out = capsys.readouterr().out
    assert f"training because {shipped} does not fit: data: other values (same shape and dtype). 40 steps at " in out
    assert payload["data"] == training.data_fingerprint(-tiny_data())
    run(tiny_config(), MLPDenoiser, train, tiny_data(), shipped, tmp_path / "cache")
    assert capsys.readouterr().out.startswith("loaded mlp.pt (40 steps")


def test_shuffled_labels_bound_with_partial_do_not_load_the_model_of_the_true_labels(tmp_path, capsys):
    shipped = tmp_path / "conditional.pt"
    labelled = functools.partial(train_conditional, labels=TINY_LABELS)
    training.train_from_config(conditional_config(), TinyConditional, labelled, tiny_data(), shipped, device="cpu",
                               progress=False)
    run(conditional_config(), TinyConditional, functools.partial(train_conditional, labels=TINY_LABELS.clone()), tiny_data(),
        shipped, tmp_path / "cache")
    assert capsys.readouterr().out.startswith("loaded conditional.pt")   # the same labels, another tensor: fits
    shuffled = TINY_LABELS[torch.randperm(32, generator=torch.Generator().manual_seed(0))]
    _, payload = run(conditional_config(), TinyConditional, functools.partial(train_conditional, labels=shuffled), tiny_data(),
                     shipped, tmp_path / "cache")
    out = capsys.readouterr().out
    assert f"training because {shipped} does not fit: bound arguments: labels differs. 40 steps at " in out, out
    assert payload["bound_arguments"]["labels"] == checkpoints.value_fingerprint(shuffled)
    unbound = training.run_fingerprint(train_conditional, tiny_data())   # no labels bound at all
    assert checkpoints.checkpoint_mismatch(torch.load(shipped, weights_only=True), conditional_config(), None, unbound) \
        == ["bound arguments: labels is gone"]


@pytest.fixture(scope="module")
def mnist():
    images, labels = mnist_tensor(train=True)              # (60000, 1, 28, 28), (60000,)
    return images, labels, training.data_fingerprint(images)


def laptop_flow(bake_off: dict) -> dict:
    """Notebook 5's laptop recipe (laptop_flow.pt): the flow's bake-off config with LAPTOP_FLOW's changes."""
    return laptop_flow_config(bake_off, export.notebook_config(PROJECT_ROOT / "5_what_to_predict.ipynb", "LAPTOP_FLOW"))


SHIPPED = {  # file -> (notebook, config name, model class, the notebook's training function, labels bound to it
    #                   [, what builds the file's config from the notebook's])
    "mlp_default.pt": ("2_custom_mlp.ipynb", "CONFIG", MLPDenoiser, train, False),
    "mlp_plain.pt": ("2_custom_mlp.ipynb", "PLAIN_CONFIG", PlainMLP, train, False),
    "unet_default.pt": ("3_unet.ipynb", "DEFAULT_CONFIG", UNet, train, False),
    "unet_laptop.pt": ("3_unet.ipynb", "LAPTOP_CONFIG", UNet, train_recipe, False),
    "unet_guidance.pt": ("4_guidance.ipynb", "CONFIG", ConditionalUNet, train_conditional, True),
    # notebook 5's bake-off: BAKE_OFF_CONFIG through variant_config, per target and training seed
    **{f"predict_{p}.pt" if seed == 0 else f"predict_{p}_seed{seed}.pt":
       ("5_what_to_predict.ipynb", "BAKE_OFF_CONFIG", UNet, train_prediction, False,
        functools.partial(variant_config, prediction=p, seed=seed))
       for p in PREDICTIONS for seed in (0, 1)},
    # notebook 5's laptop recipe: the flow's bake-off config with LAPTOP_FLOW's changes
    "laptop_flow.pt": ("5_what_to_predict.ipynb", "BAKE_OFF_CONFIG", UNet, train_prediction, False, laptop_flow),
}


def shipped_config(file: str) -> dict:
    """The config the notebook of checkpoints/<file> asks for (notebook 5's: built per target and seed)."""
    notebook, name, *_ = entry = SHIPPED[file]
    config = export.notebook_config(PROJECT_ROOT / notebook, name)
    return entry[5](config) if len(entry) > 5 else config


def shipped_files() -> list:
    """SHIPPED's files as test cases; a bake-off file that benchmarks/what_to_predict.py has not
    trained (yet) is skipped, saying so (a second seed is trained for some targets only)."""
    cases = []
    for file in sorted(SHIPPED):
        if file.startswith("predict_") and not (PROJECT_ROOT / "checkpoints" / file).is_file():
            variant, _, seed = file.removeprefix("predict_").removesuffix(".pt").partition("_seed")
            why = " (a second seed is trained for some targets only)" if seed else " yet"
            cases.append(pytest.param(file, marks=pytest.mark.skip(
                reason=f"checkpoints/{file} is not trained{why}: python benchmarks/what_to_predict.py run "
                       f"--variant {variant} --seed {seed or 0}")))
        else:
            cases.append(file)
    return cases


def shipped_reasons(file: str, mnist, data=None, labels=None) -> list[str]:
    """Why checkpoints/<file> would not load in its notebook (as load_or_train decides), with
    other data or labels if given."""
    _, _, model_class, train_fn, with_labels = SHIPPED[file][:5]
    config = shipped_config(file)
    images, true_labels, fingerprint = mnist
    if with_labels:
        train_fn = functools.partial(train_fn, labels=true_labels if labels is None else labels)
    run_ = training.run_fingerprint(train_fn, images[:1])
    run_["data"] = fingerprint if data is None else training.data_fingerprint(data)
    payload = torch.load(PROJECT_ROOT / "checkpoints" / file, weights_only=True)
    return checkpoints.checkpoint_mismatch(payload, config, checkpoints.architecture_fingerprint(
        model_class(**config["model_kwargs"])), run_)


@pytest.mark.parametrize("file", shipped_files())
def test_shipped_checkpoints_record_what_trained_them(file, mnist):
    """Each shipped file fits its notebook's config, model code, training code (notebook 2's
    train, notebook 3's train_recipe, notebook 4's train_conditional or notebook 5's
    train_prediction), bound labels (notebook 4) and the MNIST training split: the notebook loads it."""
    assert shipped_reasons(file, mnist) == []


def test_the_shipped_models_do_not_load_for_other_data_or_labels(mnist):
    images, labels, _ = mnist
    sevens = images[labels == 7]
    assert shipped_reasons("unet_laptop.pt", mnist, data=sevens) == [
        f"data: stored shape [60000, 1, 28, 28] vs wanted [{len(sevens)}, 1, 28, 28]"]
    assert shipped_reasons("unet_laptop.pt", mnist, data=-images) == ["data: other values (same shape and dtype)"]
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    assert shipped_reasons("unet_guidance.pt", mnist, labels=shuffled) == ["bound arguments: labels differs"]


# ---------------------------------------------------------------------------------------------
# 2. the training loop's code
# ---------------------------------------------------------------------------------------------

EMA_CALL = "        self.ema.update(self.model)"   # Trainer.train_step's EMA update (its comment may move)


@pytest.fixture
def loop_copies(tmp_path, monkeypatch):
    """Copies of lessons/mlp.py as project modules: as shipped, without the EMA update in
    Trainer.train_step, and with comments and blank lines added to it; and copies of
    lessons/unet.py (notebook 3's RecipeTrainer) built on the first two."""
    monkeypatch.setattr(checkpoints, "PROJECT_ROOT", tmp_path)
    source = (PROJECT_ROOT / "lessons" / "mlp.py").read_text(encoding="utf-8")
    ema_line = next(line for line in source.splitlines(keepends=True) if line.startswith(EMA_CALL))
    assert source.count(ema_line) == 1
    commented = source.replace("        self.optimizer.zero_grad(set_to_none=True)\n",
                               "\n        # a fresh gradient for every step\n"
                               "        self.optimizer.zero_grad(set_to_none=True)  # (no accumulation)\n\n")
    assert commented != source
    recipe = (PROJECT_ROOT / "lessons" / "unet.py").read_text(encoding="utf-8")
    assert recipe.count("from lessons.mlp import EMA, Trainer, ") == 1
    modules = {}
    for name, text in (("loop_shipped", source), ("loop_no_ema", source.replace(ema_line, "")),
                       ("loop_commented", commented),
                       ("recipe_on_shipped", recipe.replace("from lessons.mlp import", "from loop_shipped import")),
                       ("recipe_on_no_ema", recipe.replace("from lessons.mlp import", "from loop_no_ema import")),
                       ("recipe_constant_lr", recipe.replace("from lessons.mlp import", "from loop_shipped import")
                        .replace("        if step < self.warmup_steps:\n", "        if False:\n"))):
        (tmp_path / f"{name}.py").write_text(text, encoding="utf-8")
        spec = importlib.util.spec_from_file_location(name, tmp_path / f"{name}.py")
        modules[name] = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, modules[name])
        spec.loader.exec_module(modules[name])
    return modules


def test_the_training_fingerprint_covers_the_loop_and_what_it_calls():
    code, bound = checkpoints.training_fingerprint(train)
    assert {"train", "Trainer.train_step", "Trainer.learning_rate", "Trainer.loss", "Trainer.run", "EMA.update",
            "diffusion_loss"} <= set(code["parts"])
    assert not any(name.startswith(("RecipeTrainer", "ConditionalTrainer")) for name in code["parts"])
    assert bound == {}
    assert checkpoints.training_fingerprint(functools.wraps(train)(lambda *a, **k: train(*a, **k)))[0] == code
    # the extended loops: their own methods and every method of the classes they extend
    recipe = checkpoints.training_fingerprint(train_recipe)[0]["parts"]
    assert {"train_recipe", "RecipeTrainer.learning_rate", "RecipeTrainer.loss", "Trainer.train_step",
            "Trainer.batch", "EMA.update", "diffusion_loss"} <= set(recipe)
    conditional = checkpoints.training_fingerprint(functools.partial(train_conditional, labels=TINY_LABELS))[0]["parts"]
    assert {"train_conditional", "ConditionalTrainer.model_inputs", "check_labels", "RecipeTrainer.loss",
            "Trainer.train_step"} <= set(conditional)
    assert all(recipe[name] == conditional[name] for name in recipe if name != "train_recipe")


def test_removing_the_ema_update_changes_the_key_and_comments_do_not(loop_copies, tmp_path, capsys):
    shipped_loop = loop_copies["loop_shipped"].train
    original = checkpoints.training_fingerprint(shipped_loop)[0]
    assert checkpoints.training_fingerprint(loop_copies["loop_commented"].train)[0] == original
    no_ema = checkpoints.training_fingerprint(loop_copies["loop_no_ema"].train)[0]
    assert checkpoints.architecture_changes(original, no_ema) == ["Trainer.train_step changed"]
    shipped = tmp_path / "mlp.pt"
    training.train_from_config(tiny_config(), MLPDenoiser, shipped_loop, tiny_data(), shipped, device="cpu",
                               progress=False)
    run(tiny_config(), MLPDenoiser, loop_copies["loop_commented"].train, tiny_data(), shipped, tmp_path / "cache")
    assert capsys.readouterr().out.startswith("loaded mlp.pt")
    _, payload = run(tiny_config(), MLPDenoiser, loop_copies["loop_no_ema"].train, tiny_data(), shipped,
                     tmp_path / "cache")
    assert f"training because {shipped} does not fit: training code: Trainer.train_step changed. 40 steps at " \
           in capsys.readouterr().out
    assert payload["training_code"] == no_ema


def test_a_change_in_the_loop_a_recipe_extends_changes_the_recipes_key(loop_copies):
    """train_recipe's key covers the methods of notebook 2's Trainer it inherits: the same
    RecipeTrainer on a Trainer without the EMA update has another key, naming the method; and a
    change in RecipeTrainer's own method is named too."""
    shipped = checkpoints.training_fingerprint(loop_copies["recipe_on_shipped"].train_recipe)[0]
    no_ema = checkpoints.training_fingerprint(loop_copies["recipe_on_no_ema"].train_recipe)[0]
    constant = checkpoints.training_fingerprint(loop_copies["recipe_constant_lr"].train_recipe)[0]
    assert checkpoints.architecture_changes(shipped, no_ema) == ["Trainer.train_step changed"]
    assert checkpoints.architecture_changes(shipped, constant) == ["RecipeTrainer.learning_rate changed"]


def test_a_checkpoint_without_the_new_fields_names_each_of_them(shipped, tmp_path):
    payload = torch.load(shipped, weights_only=True)
    for key in ("training_code", "bound_arguments", "data"):
        payload.pop(key)
    current = training.run_fingerprint(functools.partial(train_conditional, labels=TINY_LABELS), tiny_data())
    assert checkpoints.checkpoint_mismatch(payload, tiny_config(), None, current) == [
        "training code: the checkpoint records no training-code fingerprint",
        "bound arguments: the checkpoint records none, wanted ['labels']",
        "data: the checkpoint records no data fingerprint"]


# ---------------------------------------------------------------------------------------------
# 3. labels
# ---------------------------------------------------------------------------------------------


def small_conditional() -> ConditionalUNet:
    return ConditionalUNet(num_classes=10, **SMALL_UNET)


def digits(n: int = 32) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1   # (n, 1, 8, 8)


class CountingConditional(ConditionalUNet):
    """Counts the forward passes of training steps."""
    calls = 0

    def forward(self, x, t, y=None):
        CountingConditional.calls += 1
        return super().forward(x, t, y)


@pytest.mark.parametrize("labels, error, match", [
    (torch.arange(32) % 10 * 1.0, TypeError, "labels must hold integer class indices (torch.long), got dtype torch.float32"),
    (torch.zeros(32, 1, dtype=torch.long), ValueError, "labels must have shape (32,), one per image, got (32, 1)"),
    (torch.arange(33) % 10, ValueError, "labels must have shape (32,), one per image, got (33,)"),
    (torch.where(torch.arange(32) == 5, 10, torch.arange(32) % 10), ValueError,
     'labels must lie in 0..9 (10 means "no class"), got [10] in 1 of 32 labels'),
    (torch.where(torch.arange(32) < 3, -1, torch.arange(32) % 10), ValueError,
     'labels must lie in 0..9 (10 means "no class"), got [-1] in 3 of 32 labels'),
    ([3] * 32, TypeError, "labels must be a tensor of class indices, got list"),
])
def test_bad_labels_are_refused_before_the_first_step(labels, error, match, monkeypatch, tmp_path):
    monkeypatch.setattr(CountingConditional, "calls", 0)
    schedule = du.DiffusionSchedule(num_timesteps=20, schedule="cosine")
    with pytest.raises(error, match=re.escape(match)):
        train_conditional(CountingConditional(num_classes=10, **SMALL_UNET), schedule, digits(), num_steps=3,
                          batch_size=4, labels=labels, progress=False)
    assert CountingConditional.calls == 0
    with pytest.raises(error, match=re.escape(match)):       # and so through the runner, via functools.partial
        training.train_from_config(tiny_config(model="c", model_kwargs=SMALL_UNET, num_steps=3), CountingConditional,
                                   functools.partial(train_conditional, labels=labels), digits(), tmp_path / "m.pt",
                                   device="cpu", progress=False)
    assert CountingConditional.calls == 1                    # the validator's one-image memory probe, no step


def test_good_labels_of_any_integer_dtype_train():
    schedule = du.DiffusionSchedule(num_timesteps=20, schedule="cosine")
    _, losses = train_conditional(small_conditional(), schedule, digits(), num_steps=2, batch_size=4,
                                  labels=(torch.arange(32) % 10).to(torch.uint8), label_dropout=0.5, progress=False)
    assert len(losses) == 2


# ---------------------------------------------------------------------------------------------
# 7. configs the validator accepted but that cannot work
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, match", [
    ({"seed": 2**64}, "seed must lie in [0, 18446744073709551615], got 18446744073709551616"),
    ({"warmup_steps": 50}, "warmup_steps (50) must not exceed num_steps (40)"),
    ({"batch_size": 10**13}, "batch_size 10000000000000: one training step's activations need at least"),
    ({"num_timesteps": 10**13}, "num_timesteps 10000000000000: the schedule's tables alone need at least"),
    ({"model_kwargs": {**TINY_KWARGS, "hidden": 10**8}}, "model_kwargs {'depth': 1, 'hidden': 100000000, "
                                                          "'image_size': 4, 'time_dim': 8}: MLPDenoiser's weights"),
])
def test_configs_that_cannot_work_are_refused_up_front_naming_the_key(changes, match, tmp_path, capsys):
    with pytest.raises(ValueError, match=re.escape(match)):
        training.train_from_config(tiny_config(**changes), MLPDenoiser, train_recipe, tiny_data(), tmp_path / "m.pt",
                                   device="cpu", progress=False)
    with pytest.raises(ValueError, match=re.escape(match)):
        run(tiny_config(**changes), MLPDenoiser, train_recipe, tiny_data(), None, tmp_path / "cache")
    assert "training" not in capsys.readouterr().out and not (tmp_path / "cache").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("file", sorted(SHIPPED))
def test_the_notebook_configs_pass_on_a_4_gb_machine(file, monkeypatch):
    monkeypatch.setattr(checkpoints, "device_memory_bytes", lambda device: 4 * 10**9)
    _, _, model_class, train, _ = SHIPPED[file][:5]                  # each config with its notebook's loop
    config = shipped_config(file)
    checkpoints.validate_config(config, model_class, train, image_shape=(1, 28, 28), device="cpu")
    with pytest.raises(ValueError, match=r"batch_size 10000000: one training step's activations need at least [\d.]+ GB, "
                                         r"more than the 4 GB of memory of cpu here"):
        checkpoints.validate_config({**config, "batch_size": 10**7}, model_class, train, image_shape=(1, 28, 28),
                                    device="cpu")


# ---------------------------------------------------------------------------------------------
# 8. a *args, **kwargs wrapper
# ---------------------------------------------------------------------------------------------


def test_a_wrapper_without_functools_wraps_is_explained(tmp_path):
    def my_train(*args, **kwargs):
        return train(*args, **kwargs)

    with pytest.raises(ValueError, match=re.escape("the training keys ['batch_size', 'ema_decay', 'grad_clip', 'lr', "
                                                   "'num_steps', 'seed'] could not be read from my_train: it takes "
                                                   "**kwargs")) as info:
        run(tiny_config(), MLPDenoiser, my_train, tiny_data(), None, tmp_path / "cache")
    assert "@functools.wraps(train)" in str(info.value) and "unknown key" not in str(info.value)
    wrapped = functools.wraps(train)(my_train)                  # the fix the message names
    _, payload = run(tiny_config(), MLPDenoiser, wrapped, tiny_data(), None, tmp_path / "cache")
    assert payload["steps"] == 40


# ---------------------------------------------------------------------------------------------
# 14. bf16 only where native; the estimate timed after warm-up with the settings used
# ---------------------------------------------------------------------------------------------


def native_bf16(monkeypatch, native: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)


def test_bf16_is_chosen_only_where_the_cpu_has_it_natively(monkeypatch):
    assert training.choose_bf16("cpu")[0] == bool(torch.cpu._is_avx512_bf16_supported() or
                                                   torch.cpu._is_amx_tile_supported())
    native_bf16(monkeypatch, False)
    assert training.choose_bf16("cpu") == (False, f"this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native "
                                                  "bfloat16 (AVX512-BF16 or AMX), so bf16 autocast would be emulated, "
                                                  "slower than float32")
    native_bf16(monkeypatch, True)
    assert training.choose_bf16("cpu") == (True, "this CPU computes bfloat16 natively (AVX512-BF16)")


@pytest.mark.parametrize("native", [False, True])
def test_a_bf16_config_trains_in_bf16_only_where_native(native, monkeypatch, tmp_path, capsys):
    assert is_quick_mode()                                       # conftest.py: the tests run in quick mode
    native_bf16(monkeypatch, native)
    seen = []

    @functools.wraps(train_recipe)
    def recording(*args, **kwargs):
        seen.append(kwargs["bf16"])
        return train_recipe(*args, **kwargs)

    _, payload = run(tiny_config(bf16=True), MLPDenoiser, recording, tiny_data(), None, tmp_path / "cache")
    out = capsys.readouterr().out
    used = "bf16 autocast" if native else "float32"
    assert seen == [native] and payload["precision"] == used and payload["config"]["bf16"] is True
    assert re.search(rf"^training because no checkpoint is shipped for it\. 40 steps at \d+\.\d\d s/step take about "
                     rf"\d+ s on .+ \({used}, timed after 2 warm-up steps\); ", out, re.M), out
    line = ("precision: bf16 autocast, as the config asks: this CPU computes bfloat16 natively (AVX512-BF16)" if native
            else "precision: float32 instead of the config's bf16: this CPU (")
    assert f"\n{line}" in out
    assert training.cache_file(tiny_config(bf16=True), MLPDenoiser, train_recipe, tiny_data(),
                               tmp_path / "cache").is_file()


def test_the_estimate_times_the_loop_after_warm_up_with_the_settings_used():
    calls = []

    def slow_start_train(model, schedule, data, *, num_steps, bf16=False, labels=None, progress=True, resume=None):
        """A stand-in loop: 0.3 s for each of the first two steps (allocation, kernel choice), 0.02 s after."""
        calls.append({"num_steps": num_steps, "bf16": bf16, "labels": labels})
        for step in range(resume.restore({}), num_steps):
            time.sleep(0.3 if step < 2 else 0.02)
            resume.maybe_save({})
        return model, []

    labels = torch.arange(4)
    per_step = training.seconds_per_step(nn.Linear(1, 1), functools.partial(slow_start_train, labels=labels),
                                         tiny_data(), None, {"bf16": False, "num_steps": 2500})
    assert 0.015 < per_step < 0.1, per_step                      # the warm-up steps are not in the estimate
    assert len(calls) == 1 and calls[0]["num_steps"] == 5 and calls[0]["bf16"] is False
    assert calls[0]["labels"] is labels                          # bound arguments are passed on


def test_restamping_keeps_the_weights_and_every_other_entry(tmp_path):
    """scripts/restamp_checkpoints.py on a copy of a shipped file whose key parts were removed:
    it writes them back with a "restamped" record; weights and all other entries stay."""
    original = torch.load(PROJECT_ROOT / "checkpoints" / "unet_laptop.pt", weights_only=True)
    old = {k: v for k, v in original.items() if k not in ("training_code", "bound_arguments", "data", "restamped")}
    torch.save(old, tmp_path / "unet_laptop.pt")
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "restamp_checkpoints.py"), "--folder",
                             str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "unet_laptop.pt: re-stamped (training_code, bound_arguments, data); weights bit-identical" in result.stdout
    after = torch.load(tmp_path / "unet_laptop.pt", weights_only=True)
    assert after.keys() == old.keys() | {"training_code", "bound_arguments", "data", "restamped"}
    assert all(torch.equal(after["state_dict"][k], v) and after["state_dict"][k].dtype == v.dtype
               for k, v in old["state_dict"].items())
    assert all(after[k] == old[k] for k in old if k != "state_dict")
    assert "the weights were trained by earlier code" in after["restamped"]["note"]
    again = subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "restamp_checkpoints.py"), "--folder",
                            str(tmp_path), "--check"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "unet_laptop.pt: up to date" in again.stdout


# ---------------------------------------------------------------------------------------------
# The key reads code as tokens and covers the module-level values the code reads
# ---------------------------------------------------------------------------------------------

SCALED_MODULE = '''
import torch
from lessons.mlp import MLPDenoiser

SCALE = 1.0


class ScaledMLP(MLPDenoiser):
    """An MLP whose output is multiplied by SCALE."""

    def forward(self, x, t):
        out = super().forward(x, t)   # (B, 1, 4, 4)
        return out * SCALE + torch.zeros_like(out)
'''
SCALED_VARIANTS = {   # name -> (text substitutions, whether the key must stay the same)
    "re-wrapped": ([("        return out * SCALE + torch.zeros_like(out)\n",
                     "        return out * SCALE + \\\n            torch.zeros_like(\n                out )\n"),
                    ("    def forward(self, x, t):", "    def forward(self,\n                x,   t):")], True),
    "new docstring": ([('    """An MLP whose output is multiplied by SCALE."""',
                        '    """Another text,\n    on two lines."""\n'),
                       ("    def forward(self, x, t):\n", "    def forward(self, x, t):\n        'the forward pass'\n")],
                      True),
    "another constant": ([("SCALE = 1.0", "SCALE = 0.5")], False),
    "another operator": ([("out * SCALE +", "out / SCALE +")], False),
    "another string quote": ([("out * SCALE", "out * SCALE * len('a')")], False),
}


def _scaled_module(tmp_path, monkeypatch, name: str, changes=()):
    """SCALED_MODULE with `changes` applied, imported as the project module `name`."""
    monkeypatch.setattr(checkpoints, "PROJECT_ROOT", tmp_path)
    text = SCALED_MODULE
    for old, new in changes:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    (tmp_path / f"{name}.py").write_text(text, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, tmp_path / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("variant", sorted(SCALED_VARIANTS))
def test_wrapping_and_docstrings_keep_the_key_and_code_and_constants_change_it(variant, tmp_path, monkeypatch):
    original = _scaled_module(tmp_path, monkeypatch, "scaled_original").ScaledMLP
    changes, same = SCALED_VARIANTS[variant]
    edited = _scaled_module(tmp_path, monkeypatch, "scaled_" + variant.replace(" ", "_").replace("-", "_"),
                            changes).ScaledMLP
    before = checkpoints.architecture_fingerprint(original(**TINY_KWARGS))
    after = checkpoints.architecture_fingerprint(edited(**TINY_KWARGS))
    assert before["parts"]["SCALE"] == "= 1.0"
    if same:
        assert after == before
    elif variant == "another constant":
        assert checkpoints.architecture_changes(before, after) == ["SCALE changed from 1.0 to 0.5"]
    else:
        assert checkpoints.architecture_changes(before, after) == ["ScaledMLP.forward changed"]


def test_a_changed_constant_retrains_and_the_reason_names_it(tmp_path, monkeypatch, capsys):
    one = _scaled_module(tmp_path, monkeypatch, "scaled_one").ScaledMLP
    half = _scaled_module(tmp_path, monkeypatch, "scaled_half", [("SCALE = 1.0", "SCALE = 0.5")]).ScaledMLP
    shipped = tmp_path / "scaled.pt"
    training.train_from_config(tiny_config(), one, train, tiny_data(), shipped, device="cpu", progress=False)
    run(tiny_config(), one, train, tiny_data(), shipped, tmp_path / "cache")
    assert capsys.readouterr().out.startswith("loaded scaled.pt")
    run(tiny_config(), half, train, tiny_data(), shipped, tmp_path / "cache")
    out = capsys.readouterr().out
    assert f"training because {shipped} does not fit: model code: SCALE changed from 1.0 to 0.5. 40 steps at " in out, out


def test_notebook_5s_flow_time_scale_is_in_the_flows_training_key(monkeypatch):
    import lessons.prediction as prediction

    before = checkpoints.training_fingerprint(train_prediction)[0]
    assert before["parts"]["FLOW_TIME_SCALE"] == "= 1000.0"
    monkeypatch.setattr(prediction, "FLOW_TIME_SCALE", 500)
    after = checkpoints.training_fingerprint(train_prediction)[0]
    assert checkpoints.architecture_changes(before, after) == ["FLOW_TIME_SCALE changed from 1000.0 to 500"]


def test_only_plain_values_enter_and_their_text_is_canonical():
    import numpy as np

    assert checkpoints.constant_text(1000.0) == "1000.0" and checkpoints.constant_text(None) == "None"
    assert checkpoints.constant_text(("eps", 2)) == "('eps', 2)" and checkpoints.constant_text((1,)) == "(1,)"
    assert checkpoints.constant_text(frozenset({"b", "a", "c"})) == "frozenset({'a', 'b', 'c'})"
    assert checkpoints.constant_text({"b": [1, 2.5], "a": None}) == "{'a': None, 'b': [1, 2.5]}"
    for value in (np.float64(1.0), torch.tensor(1.0), torch.device("cpu"), [torch.zeros(1)], {"f": train}, int):
        assert checkpoints.constant_text(value) is None


def _other_pythons() -> list[str]:
    """Interpreters of Python 3.10 to 3.13 other than this one, where installed (python3.X on the
    PATH, or pyenv's)."""
    found = []
    for minor in range(10, 14):
        if minor == sys.version_info.minor:
            continue
        candidates = sorted(str(p) for p in (Path.home() / ".pyenv" / "versions").glob(f"3.{minor}.*/bin/python"))
        candidates += [shutil.which(f"python3.{minor}")]
        found += [c for c in candidates if c and subprocess.run([c, "-c", "pass"], capture_output=True).returncode == 0][:1]
    return found


NORMALIZE_SCRIPT = '''
import ast, hashlib, io, json, sys, textwrap, tokenize
source = open(sys.argv[1], encoding="utf-8").read()
tree = ast.parse(source)
function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_normalize_source")
exec(compile(ast.Module(body=[function], type_ignores=[]), "normalize", "exec"))
digests = {}
for path in sys.argv[2:]:
    text = open(path, encoding="utf-8").read()
    lines = text.splitlines(keepends=True)
    digests[path] = _normalize_source(text)
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            digests[f"{path}:{start}"] = _normalize_source("".join(lines[start - 1:node.end_lineno]))
print(json.dumps({k: hashlib.sha256(v.encode()).hexdigest() for k, v in digests.items()}))
'''


def test_the_code_key_is_the_same_on_python_3_10_to_3_13():
    """_normalize_source on every project file and on each function and class in them (f-strings
    nested, triple-quoted, with format specs: 3.12 tokenizes them differently) gives the same
    text on every installed Python 3.10 to 3.13 as here."""
    others = _other_pythons()
    if not others:
        pytest.skip("no other Python 3.10 to 3.13 is installed")
    files = sorted(str(p) for pattern in ("lessons/*.py", "notebook_support/*.py", "benchmarks/*.py", "scripts/*.py",
                                          "diffusion_utils.py") for p in PROJECT_ROOT.glob(pattern))
    command = [str(PROJECT_ROOT / "notebook_support" / "checkpoints.py"), *files]
    digests = {}
    for python in [sys.executable, *others]:
        result = subprocess.run([python, "-c", NORMALIZE_SCRIPT, *command], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        digests[python] = json.loads(result.stdout)
    mine = digests.pop(sys.executable)
    assert len(mine) > 100
    for python, theirs in digests.items():
        assert theirs == mine, (python, [k for k in mine if theirs.get(k) != mine[k]][:5])


def _global_loads(code) -> set:
    names = {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    return names.union(*(_global_loads(c) for c in code.co_consts if isinstance(c, types.CodeType)))


@pytest.mark.parametrize("notebook", ["2_custom_mlp.ipynb", "3_unet.ipynb", "4_guidance.ipynb",
                                      "5_what_to_predict.ipynb"])
def test_exported_code_reads_no_value_set_outside_the_export_cells(notebook):
    """A class or function of a notebook's export cells reads the notebook's globals, and the key
    holds the plain values it reads: a value set in another cell (a QUICK-dependent size, a
    config) would make the key differ between quick and full mode, or between the notebook and
    lessons/, and the shipped checkpoint would not load. So none is read."""
    cells = [c for c in json.loads((PROJECT_ROOT / notebook).read_text(encoding="utf-8"))["cells"]
             if c["cell_type"] == "code"]
    exported, elsewhere = set(), set()
    for cell in cells:
        source = "\n".join(line for line in "".join(cell["source"]).splitlines()
                           if not line.lstrip().startswith(("%", "!")))
        tree = ast.parse(source)
        if source.startswith("#| export"):
            for node in tree.body:
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    exported |= _global_loads(compile(ast.Module(body=[node], type_ignores=[]), notebook, "exec"))
        else:
            elsewhere |= {n.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign))
                          for target in getattr(node, "targets", [getattr(node, "target", None)])
                          for n in ast.walk(target) if isinstance(n, ast.Name)}
    assert exported, notebook
    assert exported & elsewhere == set()


def test_a_key_format_change_is_restamped_only_where_the_code_is_unchanged(tmp_path):
    """A copy of unet_laptop.pt stamped in the key's first format (source lines, no constants) is
    re-stamped into today's format with weights bit-identical; a copy whose first-format key was
    for other code (one method's digest differs) is refused."""
    spec = importlib.util.spec_from_file_location("restamp_checkpoints", PROJECT_ROOT / "scripts" / "restamp_checkpoints.py")
    restamp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(restamp)
    original = torch.load(PROJECT_ROOT / "checkpoints" / "unet_laptop.pt", weights_only=True)
    config = shipped_config("unet_laptop.pt")
    with restamp.legacy_key_format():
        legacy = {"architecture": checkpoints.architecture_fingerprint(UNet(**config["model_kwargs"])),
                  "training_code": checkpoints.training_fingerprint(train_recipe)[0]}
    assert legacy["architecture"] != original["architecture"]
    (tmp_path / "same").mkdir(), (tmp_path / "other").mkdir()
    torch.save({**original, **legacy}, tmp_path / "same" / "unet_laptop.pt")
    other = json.loads(json.dumps(legacy))
    other["architecture"]["parts"]["ResBlock.forward"] = "0" * 12
    torch.save({**original, **other}, tmp_path / "other" / "unet_laptop.pt")
    outputs = {}
    for folder in ("same", "other"):
        result = subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "restamp_checkpoints.py"), "--folder",
                                 str(tmp_path / folder)], capture_output=True, text=True, timeout=300)
        outputs[folder] = result.stdout + result.stderr
    assert "unet_laptop.pt: re-stamped (training_code, architecture); weights bit-identical" in outputs["same"]
    after = torch.load(tmp_path / "same" / "unet_laptop.pt", weights_only=True)
    assert after["architecture"] == original["architecture"] and after["training_code"] == original["training_code"]
    assert all(torch.equal(after["state_dict"][k], v) for k, v in original["state_dict"].items())
    assert "the key's format changed" in after["restamped"]["reason"]
    assert "unet_laptop.pt: not re-stamped, its config or model code does not fit its notebook: model code: " \
           in outputs["other"], outputs["other"]
