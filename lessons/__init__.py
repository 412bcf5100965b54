"""Code the notebooks write and teach, exported from their `#| export` cells (never edited here).

    lessons.mlp    from 2_custom_mlp.ipynb: PlainMLP, sinusoidal_embedding, MLPDenoiser, EMA, train_step,
                   learning_rate, check_labels, train
    lessons.unet   from 3_unet.ipynb: TimeMLP, ResBlock, SelfAttention, Downsample, Upsample, UNet
    lessons.guidance  from 4_guidance.ipynb: ConditionalUNet, guided_eps, Guided

Regenerate with `python -m notebook_support.export`; tests/test_lessons.py fails on drift.
"""
