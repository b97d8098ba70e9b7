"""Top-1 accuracy for single-label classification, as an `evaluate` module shipped with elasticast.

Load it offline: `elasticast.metrics.load_metric("accuracy")`, i.e. `evaluate.load` of the folder
`elasticast.metrics.metric_path("accuracy")` gives.
"""

import datasets
import evaluate
import numpy as np


_DESCRIPTION = "Fraction of examples whose predicted class index equals the reference class index."

_INPUTS = """
Args:
    predictions (`list[int]`): predicted class indices.
    references (`list[int]`): reference class indices.
Returns:
    accuracy (`float`): in [0, 1].
"""


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        if predictions.size == 0:
            raise ValueError("accuracy needs at least one prediction.")
        return {"accuracy": float(np.mean(predictions == references))}
