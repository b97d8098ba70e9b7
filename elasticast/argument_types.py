"""argparse types shared by the commands (`classify`, `listen`, the event options): a bad value is refused by the
parser, before any model loads, with a message that names the fix (exit status 2)."""

import argparse
import math


def number(kind, name: str, low: float | None = None, high: float | None = None, low_open: bool = False,
           fix: str = ""):
    """An argparse type: a finite number of `kind` (int or float) within [low, high] (low excluded when `low_open`);
    `fix` says what is expected, e.g. `"> 0 seconds"`."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if not math.isfinite(value) or (low is not None and (value <= low if low_open else value < low)) or (
                high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{name} must be {fix}, got {text}")
        return value

    return parse


def seconds(name: str):
    """A positive, finite number of seconds (window, hop)."""
    return number(float, name, 0, low_open=True, fix="> 0 seconds")


def compression(name: str = "--compression"):
    """A temporal compression C ≥ 1."""
    return number(float, name, 1, fix="a finite number ≥ 1 (C = 1: full resolution)")


def score(name: str):
    """A score threshold in [0, 1]."""
    return number(float, name, 0, 1, fix="a score in [0, 1]")


def count(name: str):
    """An integer ≥ 1 (top-k, tokens, threads)."""
    return number(int, name, 1, fix="an integer ≥ 1")


def non_negative(name: str):
    """A duration ≥ 0 seconds (merge gap, minimum duration)."""
    return number(float, name, 0, fix="≥ 0 seconds")
