"""Mean average precision (macro over classes) for multi-label classification, as an `evaluate` module shipped with
elasticast (AudioSet-style mAP). Classes without a positive reference are left out of the mean.

Load it offline by path: `elasticast.metrics.load_metric("mean_average_precision")`
(`evaluate.load` of `elasticast.metrics.metric_path("mean_average_precision")`).
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import average_precision_score


_DESCRIPTION = "Average precision of each class's scores against its binary references, averaged over classes."

_INPUTS = """
Args:
    predictions (`list[list[float]]`): per example, one score per class (logits or probabilities).
    references (`list[list[int]]`): per example, a 0/1 indicator per class.
Returns:
    mean_average_precision (`float`): in [0, 1]; `num_classes_scored` (`int`): classes with ≥ 1 positive.
"""


class MeanAveragePrecision(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("int32")),
                }
            ),
        )

    def _compute(self, predictions, references):
        scores = np.asarray(predictions, dtype=np.float64)
        targets = np.asarray(references)
        if scores.shape != targets.shape or scores.ndim != 2:
            raise ValueError(f"predictions {scores.shape} and references {targets.shape} must both be [examples, classes].")
        scored = np.flatnonzero(targets.sum(axis=0) > 0)
        if scored.size == 0:
            raise ValueError("mean_average_precision needs at least one positive reference.")
        per_class = [average_precision_score(targets[:, c], scores[:, c]) for c in scored]
        return {"mean_average_precision": float(np.mean(per_class)), "num_classes_scored": int(scored.size)}
