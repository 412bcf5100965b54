"""Every shipped checkpoint is what its notebook would load, not retrain.

load_or_train loads a shipped file only when config, model code, training code, bound arguments and
data all match (notebook_support.training). In quick mode an unmatched file is not an error: the
notebook trains a few-step stand-in and runs on, so nbval alone would not notice a shipped file
that full mode would retrain for hours. This test compares each file's stored key with the key
that the exported code, the notebooks' config cells and the MNIST training split give today.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from lessons.guidance import ConditionalUNet, train_conditional
from lessons.mlp import MLPDenoiser, PlainMLP, train
from lessons.prediction import PREDICTIONS, train_prediction, variant_config
from lessons.unet import UNet, train_recipe
from notebook_support.checkpoints import architecture_fingerprint, checkpoint_mismatch, normalize_config
from notebook_support.data import mnist_tensor
from notebook_support.export import notebook_config
from notebook_support.files import load_torch_file
from notebook_support.training import run_fingerprint

ROOT = Path(__file__).resolve().parent.parent

# file -> (notebook, config cell name, model class, the notebook's training function, needs labels)
SHIPPED = {
    "mlp_default.pt": ("2_custom_mlp.ipynb", "CONFIG", MLPDenoiser, train, False),
    "mlp_plain.pt": ("2_custom_mlp.ipynb", "PLAIN_CONFIG", PlainMLP, train, False),
    "unet_default.pt": ("3_unet.ipynb", "DEFAULT_CONFIG", UNet, train, False),
    "unet_laptop.pt": ("3_unet.ipynb", "LAPTOP_CONFIG", UNet, train_recipe, False),
    "unet_guidance.pt": ("4_guidance.ipynb", "CONFIG", ConditionalUNet, train_conditional, True),
}


@pytest.fixture(scope="module")
def mnist_train():
    return mnist_tensor(train=True)   # (60000, 1, 28, 28) in [-1, 1], (60000,)


def _reasons(file: str, config: dict, model_class: type, train_fn, images) -> list[str]:
    config = normalize_config(config)
    architecture = architecture_fingerprint(model_class(**config["model_kwargs"]))
    payload = load_torch_file(ROOT / "checkpoints" / file)
    return checkpoint_mismatch(payload, config, architecture, run_fingerprint(train_fn, images))


@pytest.mark.parametrize("file", sorted(SHIPPED))
def test_the_notebook_loads_its_shipped_checkpoint(file, mnist_train):
    notebook, config_name, model_class, train_fn, needs_labels = SHIPPED[file]
    images, labels = mnist_train
    if needs_labels:   # notebook 4 binds the labels the way this does
        train_fn = functools.partial(train_fn, labels=labels)
    config = notebook_config(ROOT / notebook, config_name)
    reasons = _reasons(file, config, model_class, train_fn, images)
    assert not reasons, (f"{notebook} would retrain instead of loading checkpoints/{file}: "
                         + "; ".join(reasons) + " (re-stamp with scripts/restamp_checkpoints.py if "
                         "the weights are unaffected, else retrain)")


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_notebook_5_loads_its_shipped_bake_off_checkpoints(prediction, mnist_train):
    config = variant_config(notebook_config(ROOT / "5_what_to_predict.ipynb", "BAKE_OFF_CONFIG"),
                            prediction)
    reasons = _reasons(f"predict_{prediction}.pt", config, UNet, train_prediction, mnist_train[0])
    assert not reasons, f"notebook 5 would retrain predict_{prediction}.pt: " + "; ".join(reasons)


def test_a_changed_key_is_noticed(mnist_train):
    """The check above can fail: another config for the same file is a mismatch."""
    config = notebook_config(ROOT / "3_unet.ipynb", "LAPTOP_CONFIG")
    config["lr"] = config["lr"] * 2
    assert _reasons("unet_laptop.pt", config, UNet, train_recipe, mnist_train[0])
