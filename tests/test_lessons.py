"""The code the notebooks teach, exported to lessons/: one source, no drift, and it works."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

import diffusion_utils as du
from lessons.mlp import EMA, MLPDenoiser, PlainMLP, train
from lessons.guidance import ConditionalUNet
from lessons.prediction import PREDICTIONS, laptop_flow_config, variant_config
from lessons.unet import UNet
from notebook_support import export
from notebook_support.checkpoints import load_checkpoint
from notebook_support.files import load_torch_file

ROOT = Path(__file__).resolve().parent.parent


def test_lessons_match_the_notebooks():
    """lessons/*.py is generated from the notebooks' `#| export` cells; an edit on either side
    without re-running `python -m notebook_support.export` fails here."""
    assert export.stale_modules() == [], "run: python -m notebook_support.export"


def _top_level_definitions(source: str) -> set[str]:
    tree = ast.parse(source)
    return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


def _code_cells(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def _strip_magics(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))


def test_no_definition_is_written_twice():
    """Every top-level function or class of the project is defined in exactly one place: a module
    (diffusion_utils, notebook_support, scripts, benchmarks) or one notebook cell. An exported
    cell and its copy in lessons/ count once."""
    places: dict[str, list[str]] = {}
    modules = [ROOT / "diffusion_utils.py", *sorted((ROOT / "notebook_support").glob("*.py")),
               *sorted((ROOT / "scripts").glob("*.py")), *sorted((ROOT / "benchmarks").glob("*.py"))]
    for path in modules:
        for name in _top_level_definitions(path.read_text(encoding="utf-8")):
            places.setdefault(name, []).append(path.name)
    for notebook in sorted(ROOT.glob("*.ipynb")):
        for number, source in enumerate(_code_cells(notebook), start=1):
            for name in _top_level_definitions(_strip_magics(source)):
                places.setdefault(name, []).append(f"{notebook.name} cell {number}")
    twice = {name: where for name, where in places.items() if len(where) > 1 and not name.startswith("_") and name != "main"}
    assert twice == {}, f"defined more than once: {twice}"


def test_every_lessons_definition_comes_from_a_notebook_cell():
    exported = set()
    for notebook in export.EXPORTS:
        for is_exported, source in export.cell_sources(ROOT / notebook):
            if is_exported:
                exported |= _top_level_definitions(source)
    for module in (ROOT / "lessons").glob("*.py"):
        assert _top_level_definitions(module.read_text(encoding="utf-8")) <= exported, module.name


@pytest.mark.parametrize("file, model_class, notebook, config_name", [
    ("mlp_default.pt", MLPDenoiser, "2_custom_mlp.ipynb", "CONFIG"),
    ("mlp_plain.pt", PlainMLP, "2_custom_mlp.ipynb", "PLAIN_CONFIG"),
    ("unet_default.pt", UNet, "3_unet.ipynb", "DEFAULT_CONFIG"),
    ("unet_laptop.pt", UNet, "3_unet.ipynb", "LAPTOP_CONFIG"),
    ("unet_guidance.pt", ConditionalUNet, "4_guidance.ipynb", "CONFIG"),
])
def test_shipped_checkpoints_load_into_the_notebook_classes(file, model_class, notebook, config_name):
    """Each shipped checkpoint was trained with the config its notebook shows, for the code of the
    exported classes (its architecture fingerprint), so the notebook loads it instead of training."""
    config = export.notebook_config(ROOT / notebook, config_name)
    model = model_class(**config["model_kwargs"])
    load_checkpoint(ROOT / "checkpoints" / file, model, config)


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("seed", [0, 1])
def test_bake_off_checkpoints_load_into_the_notebook_unet(prediction, seed):
    """Notebook 5's checkpoints/predict_<target>[_seed<k>].pt, trained by benchmarks/what_to_predict.py
    with variant_config(BAKE_OFF_CONFIG, target, seed), load into notebook 3's UNet with that config."""
    file = f"predict_{prediction}.pt" if seed == 0 else f"predict_{prediction}_seed{seed}.pt"
    if not (ROOT / "checkpoints" / file).is_file():
        why = " (a second seed is trained for some targets only)" if seed else " yet"
        pytest.skip(f"checkpoints/{file} is not trained{why}: python benchmarks/what_to_predict.py run "
                    f"--variant {prediction} --seed {seed}")
    config = variant_config(export.notebook_config(ROOT / "5_what_to_predict.ipynb", "BAKE_OFF_CONFIG"), prediction, seed)
    load_checkpoint(ROOT / "checkpoints" / file, UNet(**config["model_kwargs"]), config)


def test_the_laptop_flow_loads_into_the_notebook_unet_at_its_own_width():
    """Notebook 5's checkpoints/laptop_flow.pt (benchmarks/what_to_predict.py laptop) was trained with the flow's
    bake-off config and LAPTOP_FLOW's changes, so the notebook loads it; it is narrower than the bake-off's
    U-Net at 28x28 and widest at 7x7, float32, and small."""
    notebook = ROOT / "5_what_to_predict.ipynb"
    bake_off = export.notebook_config(notebook, "BAKE_OFF_CONFIG")
    config = laptop_flow_config(bake_off, export.notebook_config(notebook, "LAPTOP_FLOW"))
    payload = load_checkpoint(ROOT / "checkpoints" / "laptop_flow.pt", UNet(**config["model_kwargs"]), config)
    assert config["prediction"] == "flow" and config["min_snr_gamma"] is None and not config["bf16"]
    assert config["model_kwargs"]["base_channels"] < bake_off["model_kwargs"]["base_channels"]
    assert config["model_kwargs"]["channel_mults"][-1] > config["model_kwargs"]["channel_mults"][0]
    assert payload["precision"] == "float32" and payload["steps"] == config["num_steps"]
    assert (ROOT / "checkpoints" / "laptop_flow.pt").stat().st_size <= 3 * 2**20


def test_the_laptop_models_of_notebooks_3_and_4_ship_in_float32():
    """Notebook 3's laptop preset and notebook 4's conditional model (its U-Net and recipe, plus a class table and
    label dropout) are trained in float32, which no CPU emulates (bf16 autocast is slower than float32 where it
    is not native), for their configs' steps, and stay small."""
    laptop = export.notebook_config(ROOT / "3_unet.ipynb", "LAPTOP_CONFIG")
    conditional = export.notebook_config(ROOT / "4_guidance.ipynb", "CONFIG")
    assert {**conditional["model_kwargs"], "num_classes": None} == {**laptop["model_kwargs"], "num_classes": None}
    assert {k: v for k, v in conditional.items() if k not in ("model", "model_kwargs", "label_dropout")} == \
        {k: v for k, v in laptop.items() if k not in ("model", "model_kwargs")}
    for file, config in (("unet_laptop.pt", laptop), ("unet_guidance.pt", conditional)):
        payload = load_torch_file(ROOT / "checkpoints" / file)
        assert not config["bf16"] and payload["precision"] == "float32", file
        assert payload["config"] == config and payload["steps"] == config["num_steps"], file
        assert (ROOT / "checkpoints" / file).stat().st_size <= 3 * 2**20, file


def _pattern_data(n: int = 256) -> torch.Tensor:
    torch.manual_seed(0)
    pattern = torch.tensor([-1.0, 1.0]).repeat(8).view(1, 1, 4, 4)  # one "digit", easy to learn
    return (pattern + 0.05 * torch.randn(n, 1, 4, 4)).clamp(-1, 1)


@pytest.mark.filterwarnings("ignore:alphabar_T")
def test_training_lowers_the_loss_and_the_ema_lags():
    schedule = du.DiffusionSchedule(num_timesteps=50)
    model = MLPDenoiser(image_size=4, hidden=64, depth=2, time_dim=16)
    ema_model, losses = train(model, schedule, _pattern_data(), num_steps=300, batch_size=32, lr=3e-3,
                              ema_decay=0.99, progress=False)
    first, last = sum(losses[:30]) / 30, sum(losses[-30:]) / 30
    assert last < 0.6 * first, (first, last)
    assert len(losses) == 300
    assert not torch.equal(ema_model.out.weight, model.out.weight)


@pytest.mark.filterwarnings("ignore:alphabar_T")
def test_training_stops_on_a_non_finite_loss():
    class Exploding(MLPDenoiser):
        def forward(self, x, t):
            return super().forward(x, t) * float("inf")

    with pytest.raises(FloatingPointError, match="loss became"):
        train(Exploding(image_size=4, hidden=8, depth=1, time_dim=4), du.DiffusionSchedule(num_timesteps=10),
              _pattern_data(32), num_steps=5, batch_size=8, progress=False)


@pytest.mark.filterwarnings("ignore:alphabar_T")
@pytest.mark.parametrize("scale, hint", [(255.0, "x / 127.5 - 1"), (1.0, "x \\* 2 - 1")])
def test_training_refuses_data_outside_minus_one_one(scale, hint):
    data = torch.rand(32, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * scale
    with pytest.raises(ValueError, match=hint):
        train(MLPDenoiser(image_size=4, hidden=8, depth=1, time_dim=4), du.DiffusionSchedule(num_timesteps=10),
              data, num_steps=5, batch_size=8, progress=False)


def test_ema_warmup_and_bad_decay():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.999)
    assert ema.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0): early weights are not frozen in
    with torch.no_grad():
        model.weight.add_(1.0)
    before = ema.model.weight.clone()
    ema.update(model)
    assert torch.allclose(ema.model.weight, 0.1 * before + 0.9 * model.weight)
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.0)


@pytest.mark.parametrize("batch", [1, 3])
def test_unet_keeps_the_shape_and_listens_to_t(batch):
    torch.manual_seed(0)
    unet = UNet().eval()
    x = torch.randn(batch, 1, 28, 28)
    with torch.no_grad():
        early, late = unet(x, torch.full((batch,), 10)), unet(x, torch.full((batch,), 900))
    assert early.shape == x.shape
    assert not torch.allclose(early, late)


@pytest.mark.parametrize("kwargs, match", [
    ({"channel_mults": ()}, "channel_mults"),
    ({"attention_resolutions": (5,)}, "attention_resolutions"),
    ({"base_channels": 12}, "base_channels"),
    ({"num_res_blocks": 0}, "num_res_blocks"),
    ({"dropout": 1.0}, "dropout"),
])
def test_unet_rejects_nonsense_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNet(**kwargs)


@pytest.mark.parametrize("kwargs, match", [({"hidden": 0}, "hidden=0"), ({"depth": -1}, "depth=-1"),
                                           ({"time_dim": 7}, "time_dim"), ({"time_mode": "scalar"}, "time_mode")])
def test_mlp_rejects_nonsense_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MLPDenoiser(**kwargs)
    with pytest.raises(ValueError, match="hidden"):
        PlainMLP(hidden=0)
