"""Learning curves of a run: `learning_curves.png` in the run folder, redrawn from `metrics.json`'s per-epoch history at
every epoch end (beside the tensorboard / trackio logs, which hold the per-step values)."""

from pathlib import Path


FILENAME = "learning_curves.png"


def _millions(tokens: float) -> str:
    return f"{tokens / 1e6:.2f} M" if tokens >= 1e5 else f"{tokens / 1e3:.1f} k"


def write_learning_curves(history: list[dict], path: str | Path, title: str | None = None) -> Path:
    """Draws training loss (left axis) and, where the epochs were evaluated, the evaluation metric (right axis) against
    the optimiser step at each epoch end; each tick names the epoch, its step and the tokens seen so far.

    Args:
        history: per-epoch records as `metrics.json` holds them: `epoch`, `step`, `train_loss`, `tokens` (fed to the
            model in that epoch), `native_tokens` (the same clips at native resolution; absent in older runs) and
            optionally `eval` (a dict with `loss` and `accuracy` or `mean_average_precision`).
        path: the PNG to write (its folder must exist).
        title: a heading (e.g. the run's mode and model).

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    steps = [record["step"] for record in history]
    tokens, seen = [], 0
    for record in history:
        seen += record.get("tokens", 0)
        tokens.append(seen)
    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    axis.plot(steps, [record["train_loss"] for record in history], marker="o", color="tab:blue",
              label="training loss (epoch mean)")
    evaluated = [record for record in history if record.get("eval")]
    if evaluated:
        eval_steps = [record["step"] for record in evaluated]
        axis.plot(eval_steps, [record["eval"]["loss"] for record in evaluated], marker="s", linestyle="--",
                  color="tab:orange", label="evaluation loss")
        metric = "accuracy" if "accuracy" in evaluated[0]["eval"] else "mean_average_precision"
        right = axis.twinx()
        right.plot(eval_steps, [record["eval"][metric] for record in evaluated], marker="^", color="tab:green",
                   label=f"evaluation {metric.replace('_', ' ')}")
        right.set_ylabel(f"evaluation {metric.replace('_', ' ')}")
        right.set_ylim(0, 1)
        lines = axis.get_legend_handles_labels(), right.get_legend_handles_labels()
        handles, labels = lines[0][0] + lines[1][0], lines[0][1] + lines[1][1]
    else:
        handles, labels = axis.get_legend_handles_labels()
    # above the plot: the curves cross the whole area
    axis.legend(handles, labels, fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    axis.set_xticks(steps)
    axis.set_xticklabels([f"{s}\n{_millions(t)}" for s, t in zip(steps, tokens)], fontsize=6)
    axis.set_xlabel("optimiser steps / tokens fed to the model, at each epoch end")
    axis.set_ylabel("loss")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


__all__ = ["FILENAME", "write_learning_curves"]
