"""Checks a sampler makes before its first network call: a clear error naming the argument,
instead of NaN digits or a request that reaches the memory allocator.

    from notebook_support.checks import check_sampler_inputs
    check_sampler_inputs(x_T=x_T, num_steps=num_steps)      # first line of a sampler
    check_finite("tau", tau)                                 # a step function's time argument
"""

from __future__ import annotations

import math
import numbers

import torch

# The most steps any sampler of the series takes: DDPM takes T = 1,000, the best measured runs 10 to
# 50; 10,000 is ten times the longest meaningful run, and a (B, 1, 28, 28) chain of it still ends.
MAX_SAMPLER_STEPS = 10_000


def check_finite(name: str, value) -> None:
    """Refuse a number or tensor that holds NaN or an infinity (ValueError naming `name`); None passes."""
    if value is None:
        return
    if isinstance(value, torch.Tensor):
        if value.is_meta:   # shapes only, no values to check (e.g. a model built on the meta device)
            return
        if value.dtype.is_floating_point or value.dtype.is_complex:
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise ValueError(f"{name} holds {bad} NaN or infinite value(s) of {value.numel()}: every sample "
                                 "computed from it would be NaN")
        return
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}: every sample computed from it would be NaN")


def check_num_steps(num_steps, name: str = "num_steps", maximum: int = MAX_SAMPLER_STEPS) -> int:
    """`num_steps` as an int in [1, maximum]: a TypeError for floats and bools, a ValueError outside."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(num_steps).__name__} {num_steps!r}")
    if not 1 <= num_steps <= maximum:
        raise ValueError(f"{name} must lie in [1, {maximum:,}] (MAX_SAMPLER_STEPS in notebook_support.checks), "
                         f"got {num_steps:,}")
    return int(num_steps)


def check_sampler_inputs(x_T: torch.Tensor | None = None, num_steps=None, *, tau=None,
                         maximum: int = MAX_SAMPLER_STEPS) -> None:
    """The checks every sampler makes up front: x_T (if given) finite, num_steps (if given) an int in
    [1, maximum], tau (if given) finite. Raises ValueError/TypeError naming the argument."""
    check_finite("x_T", x_T)
    check_finite("tau", tau)
    if num_steps is not None:
        check_num_steps(num_steps, maximum=maximum)


def int_at_least(low: int, why: str = ""):
    """An argparse `type` that accepts an int >= low and refuses anything else before any work starts,
    e.g. parser.add_argument("--steps", type=int_at_least(1))."""
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}{why}, got {value}")
        return value

    parse.__name__ = f"int >= {low}"   # argparse names the type in its messages
    return parse


# Below this n a bootstrap resample is likely to draw one digit n times, and KID's interval is then
# undefined (its unbiased estimate pairs only different digits): evaluate_samples refuses such an n.
MIN_INTERVAL_N = 5
# The argparse type of every benchmark's --n (digits drawn and measured).
DIGIT_COUNT = int_at_least(MIN_INTERVAL_N, " (fewer digits have no interval)")
