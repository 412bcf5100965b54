"""Code the notebooks write and teach, exported from their `#| export` cells (never edited here).

    lessons.mlp    from 2_custom_mlp.ipynb: PlainMLP, sinusoidal_embedding, MLPDenoiser, EMA, train_step,
                   learning_rate, check_labels, train
    lessons.unet   from 3_unet.ipynb: TimeMLP, ResBlock, SelfAttention, Downsample, Upsample, UNet
    lessons.guidance  from 4_guidance.ipynb: ConditionalUNet, guided_eps, Guided

Regenerate with `python -m notebook_support.export`; tests/test_lessons.py fails on drift.

Edits propagate or say so: importing `lessons.<module>` compares that module with what its
notebook's export cells render now (a few ms) and, when they differ, prints one line naming the
notebook and the export command: the import still uses the module as it is on disk.
"""

from notebook_support.export import install_drift_check

install_drift_check(__name__)
