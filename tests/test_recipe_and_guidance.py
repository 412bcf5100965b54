"""The laptop recipe's training loop (notebook 3's RecipeTrainer: lr schedule, min-SNR weights,
bf16), chunked sampling, and notebook 4's conditional U-Net, its loop (labels with dropout) and
guidance."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

import diffusion_utils as du
from lessons.guidance import ConditionalUNet, Guided, guided_eps, train_conditional
from lessons.mlp import EMA, MLPDenoiser, Trainer, train
from lessons.unet import PowerEMA, RecipeTrainer, UNet, train_recipe
from notebook_support import training
from notebook_support.checkpoints import validate_config
from notebook_support.sampling import sample_in_chunks

SMALL_UNET = dict(base_channels=8, channel_mults=[1, 2], num_res_blocks=1, attention_resolutions=[], dropout=0.0)


class ZeroModel(torch.nn.Module):
    def forward(self, x, t):
        return torch.zeros_like(x)


# --- min-SNR loss weights ------------------------------------------------------------------


def test_min_snr_weights_match_the_formula():
    schedule = du.DiffusionSchedule()
    x0 = torch.rand(4, 1, 28, 28) * 2 - 1
    t = torch.tensor([0, 200, 600, 999])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    loss = du.diffusion_loss(ZeroModel(), schedule, x0, t=t, noise=noise, min_snr_gamma=5.0)
    ab = schedule.alphas_cumprod.double()[t]
    snr = ab / (1 - ab)
    weights = torch.minimum(snr, torch.tensor(5.0, dtype=torch.float64)) / snr
    expected = (weights * noise.double().pow(2).flatten(1).mean(1)).mean()
    assert math.isclose(loss.item(), expected.item(), rel_tol=1e-5)
    assert weights[0] < 1e-3 and weights[-1] == 1.0                      # low noise damped, high noise untouched


def test_min_snr_with_a_huge_gamma_is_plain_mse():
    schedule = du.DiffusionSchedule()
    x0 = torch.rand(3, 1, 8, 8) * 2 - 1
    t, noise = torch.tensor([0, 10, 900]), torch.randn(3, 1, 8, 8)
    weighted = du.diffusion_loss(ZeroModel(), schedule, x0, t=t, noise=noise, min_snr_gamma=1e12)
    assert math.isclose(weighted.item(), F.mse_loss(torch.zeros_like(noise), noise).item(), rel_tol=1e-6)


@pytest.mark.parametrize("gamma", [0, -1.0, "5"])
def test_min_snr_gamma_must_be_positive(gamma):
    with pytest.raises(ValueError, match="min_snr_gamma"):
        du.diffusion_loss(ZeroModel(), du.DiffusionSchedule(), torch.zeros(2, 1, 4, 4), min_snr_gamma=gamma)


# --- lr schedule, bf16, labels: the loops of notebooks 3 and 4 ---------------------------------


def tiny_mlp() -> MLPDenoiser:
    return MLPDenoiser(image_size=4, hidden=16, depth=1, time_dim=8)


def test_learning_rate_warms_up_then_decays_to_zero():
    data, schedule = torch.rand(8, 1, 4, 4) * 2 - 1, du.DiffusionSchedule()
    recipe = RecipeTrainer(tiny_mlp(), schedule, data, num_steps=100, lr=1e-3, warmup_steps=10, lr_decay="cosine")
    lrs = [recipe.learning_rate(step) for step in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))                 # never rises after the warm-up
    assert lrs[-1] < 1e-6
    assert recipe.learning_rate(55) == pytest.approx(5e-4)                 # half-way through the decay
    for trainer in (Trainer, RecipeTrainer):                               # the paper's constant lr
        assert {trainer(tiny_mlp(), schedule, data, num_steps=100, lr=2e-4).learning_rate(s) for s in range(100)} == {2e-4}


def test_train_applies_the_schedule_and_refuses_unknown_decays():
    data = torch.rand(64, 1, 4, 4) * 2 - 1
    schedule = du.DiffusionSchedule(num_timesteps=1000)
    with pytest.raises(ValueError, match="lr_decay"):
        train_recipe(tiny_mlp(), schedule, data, num_steps=2, lr_decay="linear", progress=False)
    model = MLPDenoiser(image_size=4, hidden=16, depth=1, time_dim=8)
    seen = []
    original_step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original_step(self, *args, **kwargs)

    torch.optim.Adam.step = spy
    try:
        train_recipe(model, schedule, data, num_steps=6, lr=1e-3, warmup_steps=2, lr_decay="cosine", progress=False)
    finally:
        torch.optim.Adam.step = original_step
    recipe = RecipeTrainer(tiny_mlp(), schedule, data, num_steps=6, lr=1e-3, warmup_steps=2, lr_decay="cosine")
    assert seen == pytest.approx([recipe.learning_rate(s) for s in range(6)])


def test_bf16_training_runs_and_learns():
    torch.manual_seed(0)
    data = torch.rand(128, 1, 8, 8) * 2 - 1
    model = UNet(image_size=8, **SMALL_UNET)
    _, losses = train_recipe(model, du.DiffusionSchedule(), data, num_steps=40, batch_size=32, lr=2e-3, bf16=True,
                             progress=False)
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-10:]) < sum(losses[:10])
    assert all(p.dtype == torch.float32 for p in model.parameters())     # autocast leaves the weights in fp32


def test_train_passes_labels_and_drops_them_at_the_given_rate():
    torch.manual_seed(0)
    model = ConditionalUNet(num_classes=10, image_size=8, **SMALL_UNET)
    seen = []
    model.class_embed.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].clone()))
    data, labels = torch.rand(500, 1, 8, 8) * 2 - 1, torch.randint(0, 10, (500,))
    train_conditional(model, du.DiffusionSchedule(), data, labels=labels, label_dropout=0.5, num_steps=10,
                      batch_size=100, progress=False)
    seen = torch.cat(seen)
    assert len(seen) == 1000
    assert abs((seen == 10).double().mean().item() - 0.5) < 5 * (0.25 / 1000) ** 0.5
    with pytest.raises(ValueError, match="labels"):
        train_conditional(model, du.DiffusionSchedule(), data, labels=labels[:10], num_steps=1, progress=False)
    with pytest.raises(ValueError, match="num_classes"):
        train_conditional(UNet(image_size=8, **SMALL_UNET), du.DiffusionSchedule(), data, labels=labels, num_steps=1,
                          progress=False)
    with pytest.raises(ValueError, match="label_dropout"):
        train_conditional(model, du.DiffusionSchedule(), data, labels=labels, label_dropout=1.5, num_steps=1,
                          progress=False)


def test_config_validation_knows_the_new_keys():
    config = {"model": "conditional_unet", "schedule": "linear", "num_timesteps": 1000, "num_steps": 10,
              "model_kwargs": {"num_classes": 10, **SMALL_UNET}, "lr_decay": "cosine", "bf16": True,
              "min_snr_gamma": 5.0, "warmup_steps": 5, "label_dropout": 0.1, "ema_sigma_rel": 0.05}
    validate_config(config, ConditionalUNet, train_conditional)          # UNet's kwargs pass through **unet_kwargs
    bad = {**config, "lr_decay": "linear", "bf16": "yes", "min_snr_gamma": 0, "warmup_steps": -1, "label_dropout": 2,
           "ema_sigma_rel": 0.5,
           "model_kwargs": {"num_classes": 10, "base_channel": 8}}
    with pytest.raises(ValueError) as info:
        validate_config(bad, ConditionalUNet, train_conditional)
    for word in ("lr_decay", "bf16", "min_snr_gamma", "warmup_steps", "label_dropout", "ema_sigma_rel", "base_channel"):
        assert word in str(info.value), word


def test_each_loop_takes_only_the_keys_of_what_it_teaches():
    config = {"model": "m", "model_kwargs": {"num_classes": 10, **SMALL_UNET}, "schedule": "linear",
              "num_timesteps": 1000, "num_steps": 10, "bf16": True, "label_dropout": 0.1}
    with pytest.raises(ValueError) as info:
        validate_config(config, ConditionalUNet, train)                  # notebook 2: the paper's recipe only
    assert "unknown key 'bf16'" in str(info.value) and "unknown key 'label_dropout'" in str(info.value)
    with pytest.raises(ValueError) as info:
        validate_config(config, ConditionalUNet, train_recipe)           # notebook 3: + lr schedule, min-SNR, bf16
    assert "unknown key 'label_dropout'" in str(info.value) and "unknown key 'bf16'" not in str(info.value)
    validate_config(config, ConditionalUNet, train_conditional)          # notebook 4: + labels with dropout


# --- the extended loops are notebook 2's loop: same draws, same arithmetic, same resuming -------


def test_the_recipe_loop_with_its_defaults_is_notebook_2s_loop():
    data = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1   # (64, 1, 8, 8)
    runs = []
    for loop in (train, train_recipe):
        torch.manual_seed(0)
        model = UNet(image_size=8, **{**SMALL_UNET, "dropout": 0.1})      # dropout draws from torch's global RNG
        runs.append(loop(model, du.DiffusionSchedule(), data, num_steps=5, batch_size=8, lr=1e-3, progress=False))
    (ema_a, losses_a), (ema_b, losses_b) = runs
    assert losses_a == losses_b
    assert all(torch.equal(a, b) for a, b in zip(ema_a.state_dict().values(), ema_b.state_dict().values()))


def test_ema_sigma_rel_swaps_the_average_and_leaves_training_alone():
    """The laptop presets' power-function EMA: the same steps and losses as the fixed decay (the average never feeds
    back into training), a different average, and a width outside (0, 0.289) refused before the first step."""
    data = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1   # (64, 1, 8, 8)
    runs = {}
    for sigma_rel in (None, 0.05):
        torch.manual_seed(0)
        trainer = RecipeTrainer(UNet(image_size=8, **SMALL_UNET), du.DiffusionSchedule(), data, num_steps=6,
                                batch_size=8, lr=1e-3, ema_decay=0.999, ema_sigma_rel=sigma_rel)
        assert type(trainer.ema) is (EMA if sigma_rel is None else PowerEMA)
        runs[sigma_rel] = trainer.run(progress=False)
    (fixed, fixed_losses), (power, power_losses) = runs[None], runs[0.05]
    assert fixed_losses == power_losses
    assert not all(torch.equal(a, b) for a, b in zip(fixed.parameters(), power.parameters()))
    with pytest.raises(ValueError, match="sigma_rel must lie in"):
        train_recipe(UNet(image_size=8, **SMALL_UNET), du.DiffusionSchedule(), data, num_steps=1, ema_sigma_rel=0.5,
                     progress=False)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("loop", ["recipe", "conditional"])
def test_an_interrupted_run_of_the_extended_loops_resumes_bit_exactly(loop, tmp_path, capsys):
    """As test_support checks for notebook 2's train: a run of train_recipe or train_conditional
    stopped after 5 of 12 steps and resumed from its saved state ends with the weights and losses
    of an uninterrupted run (lr schedule, min-SNR, power-function EMA, dropout and label dropout included)."""
    data = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1   # (64, 1, 8, 8)
    kwargs = dict(num_steps=12, batch_size=8, lr=2e-3, warmup_steps=3, lr_decay="cosine", min_snr_gamma=5.0, seed=1,
                  ema_sigma_rel=0.05, progress=False)
    unet = {**SMALL_UNET, "dropout": 0.1}
    if loop == "recipe":
        train_fn, build = train_recipe, lambda: UNet(image_size=8, **unet)
    else:
        train_fn = functools.partial(train_conditional, labels=torch.arange(64) % 10, label_dropout=0.3)
        build = lambda: ConditionalUNet(num_classes=10, image_size=8, **unet)
    torch.manual_seed(0)
    reference_ema, reference_losses = train_fn(build(), du.DiffusionSchedule(), data, **kwargs)

    calls = 0

    def stop_in_step_6(module, inputs):
        nonlocal calls
        calls += 1
        if module.training and calls == 6:
            raise Interrupt

    path = tmp_path / "run.resume.pt"
    torch.manual_seed(0)                                     # the same initial weights and dropout draws
    interrupted = build()
    interrupted.register_forward_pre_hook(stop_in_step_6)
    with pytest.raises(Interrupt):
        train_fn(interrupted, du.DiffusionSchedule(), data, resume=training.Resumer(path, {"run": loop}, 0), **kwargs)
    torch.manual_seed(123)                                   # the restore brings back every RNG state
    ema, losses = train_fn(build(), du.DiffusionSchedule(), data, resume=training.Resumer(path, {"run": loop}, 0),
                           **kwargs)
    assert "resumed from run.resume.pt at step 5" in capsys.readouterr().out
    assert losses == reference_losses
    assert all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(), reference_ema.state_dict().values()))


# --- chunked sampling -------------------------------------------------------------------------


@pytest.fixture
def small_unet():
    torch.manual_seed(0)
    return UNet(image_size=8, **SMALL_UNET).eval()


@pytest.mark.filterwarnings("ignore:alphabar_T")
def test_chunks_give_the_one_batch_samples(small_unet):
    schedule = du.DiffusionSchedule(num_timesteps=20)
    x_T = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    whole, whole_frames, whole_labels = du.ddim_sample(small_unet, schedule, (5, 1, 8, 8), x_T=x_T, num_steps=4,
                                                       return_trajectory=True, progress=False)
    chunked, frames, labels = sample_in_chunks(du.ddim_sample, small_unet, schedule, 5, chunk_size=2, x_T=x_T,
                                               image_shape=(1, 8, 8), num_steps=4, return_trajectory=True,
                                               progress=False)
    assert torch.allclose(whole, chunked, atol=1e-5)
    assert frames.shape == whole_frames.shape == (5, 5, 1, 8, 8) and labels == whole_labels
    assert torch.allclose(frames, whole_frames, atol=1e-5)
    ddpm = sample_in_chunks(du.p_sample_loop, small_unet, schedule, 5, chunk_size=3, image_shape=(1, 8, 8),
                            generator=torch.Generator().manual_seed(2), progress=False)
    assert ddpm.shape == (5, 1, 8, 8) and torch.isfinite(ddpm).all()


@pytest.mark.parametrize("kwargs, match", [({"num_samples": 0}, "num_samples"), ({"chunk_size": 0}, "chunk_size"),
                                           ({"x_T": torch.zeros(3, 1, 8, 8)}, "x_T")])
def test_chunked_sampling_rejects_bad_sizes(small_unet, kwargs, match):
    arguments = {"num_samples": 4, "image_shape": (1, 8, 8), **kwargs}
    with pytest.raises(ValueError, match=match):
        sample_in_chunks(du.ddim_sample, small_unet, du.DiffusionSchedule(), num_steps=2, progress=False, **arguments)


# --- notebook 4: the conditional U-Net and guidance -------------------------------------------


@pytest.fixture
def conditional():
    torch.manual_seed(0)
    model = ConditionalUNet(num_classes=10, image_size=8, **SMALL_UNET).eval()
    torch.nn.init.normal_(model.class_embed.weight)
    return model


def test_conditional_unet_checks_its_labels(conditional):
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([1, 2, 3])
    with torch.no_grad():
        assert torch.equal(conditional(x, t), conditional(x, t, torch.full((3,), 10)))
        assert not torch.allclose(conditional(x, t, torch.full((3,), 1)), conditional(x, t, torch.full((3,), 2)))
    for y in (torch.tensor([0, 1, 11]), torch.tensor([0, 1, -1]), torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0, 1])):
        with pytest.raises(ValueError, match="labels"):
            conditional(x, t, y)
    with pytest.raises(ValueError, match="num_classes"):
        ConditionalUNet(num_classes=0, **SMALL_UNET)


def test_guidance_conventions_and_the_sampler_wrapper(conditional):
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([5, 50, 500, 999]), torch.tensor([0, 3, 3, 9])
    with torch.no_grad():
        eps_c, eps_u = conditional(x, t, y), conditional(x, t)
        assert torch.equal(guided_eps(conditional, x, t, y, 0), eps_u)
        assert torch.equal(guided_eps(conditional, x, t, y, 1), eps_c)
        for w_prime in (0.5, 2.0):
            assert torch.allclose(guided_eps(conditional, x, t, y, 1 + w_prime),
                                  (1 + w_prime) * eps_c - w_prime * eps_u, atol=1e-5)
        wrapped = Guided(conditional, 3, 2.0)
        assert torch.allclose(wrapped(x, t), guided_eps(conditional, x, t, torch.full((4,), 3), 2.0))
    samples = du.ddim_sample(Guided(conditional, y, 3.0), du.DiffusionSchedule(), (4, 1, 8, 8), num_steps=3,
                             generator=torch.Generator().manual_seed(0), progress=False)
    assert samples.shape == (4, 1, 8, 8) and torch.isfinite(samples).all()


# --- inpainting on a respaced chain (notebook 4, section 5) ----------------------------------


class TimeRecorder(torch.nn.Module):
    """Predicts zero noise and records the times it is called with."""

    def __init__(self):
        super().__init__()
        self.times: list[list[int]] = []

    def forward(self, x, t):
        self.times.append(t.tolist())
        return torch.zeros_like(x)


def test_respacing_keeps_the_kept_times_alphabar_and_shows_the_model_those_times():
    from lessons.guidance import respaced
    schedule = du.DiffusionSchedule()
    recorder = TimeRecorder()
    model, coarse = respaced(recorder, schedule, 10)
    kept = du.ddim_timesteps(1000, 10)[::-1]                             # ascending, 0 .. 999
    assert coarse.num_timesteps == 10 and kept[0] == 0 and kept[-1] == 999
    assert torch.allclose(coarse.alphas_cumprod, schedule.alphas_cumprod[kept], rtol=1e-5)
    model(torch.zeros(2, 1, 8, 8), torch.tensor([0, 9]))
    assert recorder.times == [[0, 999]]
    _, every_step = respaced(recorder, schedule, 1000)                   # all the steps: the original chain
    assert torch.allclose(every_step.betas, schedule.betas, rtol=1e-3)


@pytest.mark.filterwarnings("ignore:alphabar_T")
def test_inpainting_on_a_respaced_chain(conditional):
    from lessons.guidance import inpaint
    schedule = du.DiffusionSchedule(num_timesteps=20)
    x0 = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1   # (2, 1, 8, 8)
    known = torch.zeros(1, 8, 8)
    known[..., :4] = 1
    recorder = TimeRecorder()
    out = inpaint(recorder, schedule, x0, known, torch.Generator().manual_seed(0), num_steps=5)
    assert torch.equal(out[..., :4], x0[..., :4])
    assert [t[0] for t in recorder.times] == du.ddim_timesteps(20, 5)   # 5 calls, at the kept times, T-1 first
    # all the steps respaced is the plain loop, up to the float32 round-off of the rebuilt betas
    denoiser = Guided(conditional, torch.tensor([1, 2]), 2.0)
    plain = inpaint(denoiser, schedule, x0, known, torch.Generator().manual_seed(0))
    every_step = inpaint(denoiser, schedule, x0, known, torch.Generator().manual_seed(0), num_steps=20)
    assert torch.allclose(plain, every_step, atol=1e-4)
