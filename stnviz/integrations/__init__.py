"""Recording and logging where users already train: Lightning, TensorBoard, MLflow, W&B.

Each integration imports its framework only when it is used, so none of them is needed by
``import stnviz``.
"""

__all__: list[str] = []
