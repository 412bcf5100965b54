"""Re-stamp the shipped denoiser checkpoints with the current cache key, weights unchanged.

The key of a checkpoint (notebook_support.training.load_or_train) covers the config, the model's
code, the training function's code and the project functions it calls, the arguments bound into
it with functools.partial (notebook 4's labels) and the data. Files trained before a part of the
key existed, or before a change that does not alter what training does (a new input check, a
reworded message, a loop reorganised so that it trains bit-identically), record an old key, and the notebooks would retrain them for hours. This
script writes the current key into them and nothing else:

- it refuses a file whose stored config or model code does not fit its notebook's (those mean
  the weights are for another model: retrain it with scripts/train_checkpoints.py instead);
- it keeps every other entry (weights, config, steps, losses, train_seconds, hardware, versions)
  and adds "restamped": {date, reason, note}, which says that the weights were trained by
  earlier code and only the key was re-stamped (an earlier re-stamp's record moves to its
  "earlier" list);
- it reads the file back and checks that every state-dict tensor is bit-identical (dtype, shape
  and a SHA-256 of its bytes) and every other entry equal to what was there before.

Whether the training code's change leaves the weights' meaning intact is the reason's claim, for
the person who runs this to make; the checkpoints' loss curves and quality results stay those of
the original run. mnist_classifier.pt is keyed by its config and model code only (load_checkpoint):
its model code key is re-stamped only when the key's format changed (next paragraph).

A change of the key's format (how code enters it) changes every file's model code key: a file is
then re-stamped only if its stored model and training code keys equal those of today's code
computed in the format it was stamped in (legacy_key_format), i.e. the code is unchanged.

    python scripts/restamp_checkpoints.py --check       # which files need it (exit 1 if any)
    python scripts/restamp_checkpoints.py               # re-stamp them
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import io
import subprocess
import sys
import textwrap
import tokenize
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lessons.guidance import ConditionalUNet, train_conditional  # noqa: E402
from lessons.mlp import MLPDenoiser, PlainMLP, train  # noqa: E402
from lessons.prediction import PREDICTIONS, laptop_flow_config, train_prediction, variant_config  # noqa: E402
from lessons.unet import UNet, train_recipe  # noqa: E402
from notebook_support import checkpoints  # noqa: E402
from notebook_support.checkpoints import architecture_fingerprint, checkpoint_mismatch, value_fingerprint  # noqa: E402
from notebook_support.data import mnist_tensor  # noqa: E402
from notebook_support.environment import CHECKPOINT_DIR, PROJECT_ROOT  # noqa: E402
from notebook_support.evaluation import CLASSIFIER_CONFIG, _new_classifier  # noqa: E402
from notebook_support.export import notebook_config  # noqa: E402
from notebook_support.files import atomic_torch_save, load_torch_file  # noqa: E402
from notebook_support.training import run_fingerprint  # noqa: E402


def laptop_flow(bake_off: dict) -> dict:
    """Notebook 5's laptop recipe (laptop_flow.pt): the flow's bake-off config with LAPTOP_FLOW's changes."""
    return laptop_flow_config(bake_off, notebook_config(PROJECT_ROOT / "5_what_to_predict.ipynb", "LAPTOP_FLOW"))


SHIPPED = {  # file -> (notebook, config name, model class, the notebook's training function, whether it gets the labels
    #                   via functools.partial[, what builds the file's config from the notebook's])
    "mlp_default.pt": ("2_custom_mlp.ipynb", "CONFIG", MLPDenoiser, train, False),
    "mlp_plain.pt": ("2_custom_mlp.ipynb", "PLAIN_CONFIG", PlainMLP, train, False),
    "unet_default.pt": ("3_unet.ipynb", "DEFAULT_CONFIG", UNet, train, False),
    "unet_laptop.pt": ("3_unet.ipynb", "LAPTOP_CONFIG", UNet, train_recipe, False),
    "unet_guidance.pt": ("4_guidance.ipynb", "CONFIG", ConditionalUNet, train_conditional, True),
    # notebook 5's bake-off (benchmarks/what_to_predict.py): one config per target and training seed, built from
    # BAKE_OFF_CONFIG by variant_config; seed 1 exists for some targets only (an absent file is skipped)
    **{f"predict_{p}.pt" if seed == 0 else f"predict_{p}_seed{seed}.pt":
       ("5_what_to_predict.ipynb", "BAKE_OFF_CONFIG", UNet, train_prediction, False,
        functools.partial(variant_config, prediction=p, seed=seed))
       for p in PREDICTIONS for seed in (0, 1)},
    # notebook 5's laptop recipe: the flow's bake-off config with LAPTOP_FLOW's changes
    "laptop_flow.pt": ("5_what_to_predict.ipynb", "BAKE_OFF_CONFIG", UNet, train_prediction, False, laptop_flow),
}
CLASSIFIER_FILE = "mnist_classifier.pt"   # keyed by its config and model code only (load_checkpoint)
KEY_PARTS = ("training_code", "bound_arguments", "data")   # what run_fingerprint adds to config and model code
FORMAT_REASON = ("the key's format changed: code enters as its tokens (line wrapping, spaces between tokens and "
                 "docstrings no longer count) and the module-level constants the code reads enter too "
                 "(FLOW_TIME_SCALE); the stored model and training code keys equal the keys of today's code in the "
                 "old format, so the weights are for this code")
REASON = ("the training loop was split into the notebooks that teach it: notebook 2's Trainer and train "
          "(Algorithm 1, Adam, clipping, EMA), notebook 3's RecipeTrainer and train_recipe (lr warm-up and cosine decay, "
          "min-SNR weights, bf16 autocast) and notebook 4's ConditionalTrainer and train_conditional (labels with "
          "dropout), each extending the one before; the new loops draw from the generator in the same order and do the "
          "same float operations, so training is bit-identical, verified by torch.equal on every weight tensor and "
          "equal losses against the old loop for 30 steps of tiny models: paper recipe, laptop recipe in float32 and "
          "in bf16, labels with dropout, an interrupted-then-resumed run and the runner")


def _code_version() -> str:
    """The commit the re-stamping code is at, and whether the work tree had uncommitted changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    return f"{commit}{' with uncommitted changes' if dirty else ''}"


def _legacy_normalize_source(source: str) -> str:
    """The key's first format: the source text without comments, blank lines, trailing spaces or
    common indentation (line wrapping and docstrings counted; module constants did not enter)."""
    source = textwrap.dedent(source)
    cut = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                cut[token.start[0]] = token.start[1]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    lines = (line[:cut.get(number, len(line))].rstrip()
             for number, line in enumerate(source.splitlines(), start=1))
    return "\n".join(line for line in lines if line.strip())


@contextlib.contextmanager
def legacy_key_format():
    """Fingerprints as the first format computed them, to check that a file stamped in it was
    stamped for today's code."""
    saved = checkpoints._normalize_source, checkpoints._constants_read
    checkpoints._normalize_source, checkpoints._constants_read = _legacy_normalize_source, lambda function: {}
    try:
        yield
    finally:
        checkpoints._normalize_source, checkpoints._constants_read = saved


def current_key(file: str, images, labels, folder: Path = CHECKPOINT_DIR) -> tuple[dict, dict, list[str]]:
    """(the file's payload, the key parts it should record now, why its config or code do not fit).

    A file whose model code key differs only because the key's format changed (its stored
    architecture and training code equal today's code's in the first format) fits: its key parts
    then include "architecture" too."""
    notebook, config_name, model_class, train_fn, with_labels, *build = SHIPPED[file]
    payload = load_torch_file(Path(folder) / file)
    config = notebook_config(PROJECT_ROOT / notebook, config_name)
    if build:   # notebook 5: the file's config is built from the notebook's (target, seed)
        config = build[0](config)
    model = model_class(**config["model_kwargs"])
    train_fn = functools.partial(train_fn, labels=labels) if with_labels else train_fn
    architecture, key = architecture_fingerprint(model), run_fingerprint(train_fn, images)
    unfit = checkpoint_mismatch(payload, config, architecture)
    if unfit and all(reason.startswith("model code: ") for reason in unfit):
        with legacy_key_format():
            legacy = architecture_fingerprint(model), run_fingerprint(train_fn, images)["training_code"]
        if (payload.get("architecture"), payload.get("training_code")) == legacy:
            unfit, key = [], {**key, "architecture": architecture}
    if not unfit:
        model.load_state_dict(payload["state_dict"])   # the weights fit the class, tensor by tensor
    return payload, key, unfit


def classifier_key(folder: Path = CHECKPOINT_DIR) -> tuple[dict, dict, list[str]]:
    """current_key for mnist_classifier.pt, whose key is its config and model code only."""
    payload = load_torch_file(Path(folder) / CLASSIFIER_FILE)
    model = _new_classifier()
    architecture = architecture_fingerprint(model)
    unfit = checkpoint_mismatch(payload, CLASSIFIER_CONFIG, architecture)
    if unfit and all(reason.startswith("model code: ") for reason in unfit):
        with legacy_key_format():
            if payload.get("architecture") == architecture_fingerprint(model):
                unfit = []
    if not unfit:
        model.load_state_dict(payload["state_dict"])
    return payload, {"architecture": architecture}, unfit


def _tensor_bytes(state_dict: dict) -> dict:
    return {name: value_fingerprint(tensor) for name, tensor in state_dict.items()}   # dtype, shape, SHA-256 of bytes


def restamp(file: str, payload: dict, key: dict, reason: str, folder: Path = CHECKPOINT_DIR) -> None:
    """Write `key` and a "restamped" record into <folder>/<file>; verify the rest is unchanged."""
    path = Path(folder) / file
    note = (f"the weights were trained by earlier code (see train_seconds, hardware and the versions entries) and "
            f"are unchanged; only {', '.join(key)} were re-stamped by scripts/restamp_checkpoints.py, from "
            f"the code at {_code_version()}")
    record = {"date": datetime.date.today().isoformat(), "reason": reason, "note": note}
    previous = payload.get("restamped")
    if previous:   # keep the earlier re-stamps' reasons, oldest first
        record["earlier"] = [*previous.get("earlier", []), {k: v for k, v in previous.items() if k != "earlier"}]
    stamped = {**payload, **key, "restamped": record}
    atomic_torch_save(stamped, path)
    after = load_torch_file(path)
    if _tensor_bytes(after["state_dict"]) != _tensor_bytes(payload["state_dict"]):
        raise SystemExit(f"{path}: the weights changed while re-stamping")
    kept = [k for k in payload if k not in (*key, "restamped", "state_dict")]
    if {k: after.get(k) for k in kept} != {k: payload[k] for k in kept} or any(after[k] != key[k] for k in key):
        raise SystemExit(f"{path}: the metadata did not read back as written")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report which files need re-stamping")
    parser.add_argument("--reason", default=REASON, help="why the key changed, recorded in each file")
    parser.add_argument("--folder", type=Path, default=CHECKPOINT_DIR, help="where the files are (default: checkpoints/)")
    args = parser.parse_args()
    images, labels = mnist_tensor(train=True)              # (60000, 1, 28, 28), (60000,): what the notebooks train on
    stale, refused = [], []
    for file in [*SHIPPED, CLASSIFIER_FILE]:
        if not (args.folder / file).is_file():
            print(f"{file}: not in {args.folder}, skipped")
            continue
        payload, key, unfit = classifier_key(args.folder) if file == CLASSIFIER_FILE else \
            current_key(file, images, labels, args.folder)
        if unfit:
            refused.append(file)
            print(f"{file}: not re-stamped, its config or model code does not fit its notebook: {'; '.join(unfit)}")
        elif all(payload.get(k) == key[k] for k in key):
            print(f"{file}: up to date")
        else:
            stale.append(file)
            differs = [k for k in key if payload.get(k) != key[k]]
            if args.check:
                print(f"{file}: needs re-stamping ({', '.join(differs)})")
            else:
                reason = FORMAT_REASON if "architecture" in key and args.reason == REASON else args.reason
                restamp(file, payload, key, reason, args.folder)
                print(f"{file}: re-stamped ({', '.join(differs)}); weights bit-identical, other entries unchanged")
    return 1 if refused or (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
