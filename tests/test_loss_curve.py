"""plots.plot_loss_curve and training.describe_run: what notebooks 3 and 4 show of a checkpoint's
training (the same lines once), on payloads shaped like load_or_train's."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from notebook_support.plots import plot_loss_curve  # noqa: E402
from notebook_support.training import describe_run  # noqa: E402

PAYLOAD = {"steps": 200, "train_seconds": 792.0, "hardware": "x86_64 CPU, 2 threads", "final_loss": 0.01434,
           "loss_curve_every_50": [0.2, 0.05, 0.03, 0.02], "config": {"min_snr_gamma": 5.0}}


def test_the_curve_is_the_50_step_means_against_the_step():
    ax = plot_loss_curve(PAYLOAD, title="training loss")
    (line,) = ax.get_lines()
    assert np.array_equal(line.get_xdata(), [0, 50, 100, 150]) and np.array_equal(line.get_ydata(), [0.2, 0.05, 0.03, 0.02])
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "step" and ax.get_title() == "training loss"
    assert ax.get_ylabel() == "min-SNR-weighted loss (mean of 50 steps)" and ax.get_legend() is None
    plt.close("all")


def test_several_runs_share_an_axis_with_a_legend():
    _, ax = plt.subplots()
    plain = {**PAYLOAD, "config": {"min_snr_gamma": None}, "loss_curve_every_50": [0.3, 0.1]}
    assert plot_loss_curve(PAYLOAD, ax=ax, label="min-SNR") is ax
    plot_loss_curve(plain, ax=ax, label="plain")
    assert [line.get_label() for line in ax.get_lines()] == ["min-SNR", "plain"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["min-SNR", "plain"]
    assert plot_loss_curve(plain).get_ylabel() == "loss (mean of 50 steps)"
    plt.close("all")


def test_a_stand_in_shorter_than_50_steps_says_it_has_no_curve():
    ax = plot_loss_curve({**PAYLOAD, "steps": 8, "loss_curve_every_50": []})
    assert ax.get_lines() == [] and [t.get_text() for t in ax.texts] == ["8 steps: no 50-step means to plot"]
    plt.close("all")


def test_describe_run():
    assert describe_run(PAYLOAD) == ("trained for 200 steps in 13.2 min on x86_64 CPU, 2 threads, final loss 0.0143 "
                                     "(min-SNR-weighted)")
    stand_in = {**PAYLOAD, "config": {}, "quick_stand_in": True, "steps": 8, "train_seconds": None}
    assert describe_run(stand_in) == ("trained for 8 steps (time not recorded) on x86_64 CPU, 2 threads, "
                                      "a quick-mode stand-in, final loss 0.0143")
