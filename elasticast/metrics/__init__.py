"""The `evaluate` metric modules shipped with elasticast, one folder each (`accuracy/`, `mean_average_precision/`),
loaded by local path so that evaluation works offline: `load_metric("accuracy")`.
"""

import functools
from pathlib import Path


METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("accuracy", "mean_average_precision")


def metric_path(name: str) -> str:
    """Folder of the shipped `evaluate` module `name` ("accuracy" or "mean_average_precision")."""
    path = METRICS_DIR / name
    if name not in METRIC_NAMES or not (path / f"{name}.py").is_file():
        raise ValueError(f"No shipped metric {name!r}; available: {list(METRIC_NAMES)}.")
    return str(path)


def task_metric(multi_label: bool) -> str:
    """The task's metric: mAP for multi-label classification, accuracy otherwise."""
    return "mean_average_precision" if multi_label else "accuracy"


@functools.cache
def load_metric(name: str):
    """The shipped `evaluate` module `name`, loaded by local path (works offline)."""
    import evaluate

    return evaluate.load(metric_path(name))


__all__ = ["METRIC_NAMES", "load_metric", "metric_path", "task_metric"]
