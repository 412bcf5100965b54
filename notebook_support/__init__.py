"""Support code for the MNIST diffusion notebooks: what they use but do not teach.

One module per concern; notebooks import from the module, so a reader sees where each thing
comes from:

    environment   project paths, device choice, seeding, quick mode
    files         atomic writes, safe loading that names the file, leftover temp files
    data          verified MNIST with an offline mirror
    checkpoints   config validation, architecture fingerprints, checkpoint files
    training      the resumable, config-keyed training runner (load_or_train)
    evaluation    the MNIST classifier; sample quality with intervals beside the real-data floor
    metrics       the feature-space maths: FID, KID, k-NN precision/realism/recall, bootstrap
    results       result files under benchmarks/results/ (write, find the newest, cite)
    report        a notebook's results cell: show_table("name") shows a table of README.md / RESULTS.md
    sampling      many digits in chunks of 128 on a CPU
    plots         image grids, denoising strips and GIFs, a checkpoint's loss curve
    export        writes the notebooks' `#| export` cells to the `lessons` package

What the notebooks *teach* (the MLP, the training loop, the U-Net) is written in the notebooks
and exported to `lessons/`; the schedule, forward process and samplers are `diffusion_utils`.
"""
