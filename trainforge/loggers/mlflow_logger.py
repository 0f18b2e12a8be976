"""``MLflowLogger``: metrics, parameters and figures to an MLflow tracking store (an optional extra:
``pip install 'trainforge[mlflow]'``); mlflow is imported only when a logger is built."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .base import BaseLogger, flatten_params, float_metrics, is_main_process

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import Tensor

INSTALL_HINT = "MLflowLogger needs mlflow, an optional extra: pip install 'trainforge[mlflow]'"
_MAX_BATCH = 1000  # MLflow accepts at most 1000 metrics per log_batch request
_MAX_PARAMS = 100


def import_mlflow() -> Any:
    """``mlflow``, or an ``ImportError`` that says how to install it."""
    try:
        import mlflow
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return mlflow


class MLflowLogger(BaseLogger):
    """Log to MLflow through an explicit ``MlflowClient`` (no global active run is started or changed).

    ``tracking_uri`` such as ``"file:./mlruns"`` or ``"http://host:5000"``; the run is created in
    ``experiment_name`` (made if missing), or ``run_id`` continues an existing run (resume).
    Only rank 0 logs (``enabled=None`` checks ``RANK``).
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str = "trainforge",
        run_name: str | None = None,
        run_id: str | None = None,
        enabled: bool | None = None,
    ) -> None:
        mlflow = import_mlflow()
        self.enabled = is_main_process() if enabled is None else enabled
        self.client: Any = None
        self.run_id = run_id
        if not self.enabled:
            return
        self.client = mlflow.tracking.MlflowClient(tracking_uri=tracking_uri)
        if run_id is None:
            experiment = self.client.get_experiment_by_name(experiment_name)
            experiment_id = (
                experiment.experiment_id if experiment is not None else self.client.create_experiment(experiment_name)
            )
            self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id

    def log_metrics(
        self, metrics: Mapping[str, Any], step: int, phase: str | None = None, *, epoch: int | None = None
    ) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(name, value, now, int(step)) for name, value in float_metrics(metrics).items()]
        for start in range(0, len(entries), _MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=entries[start : start + _MAX_BATCH])

    def log_hyperparams(self, params: Mapping[str, Any], final_metrics: Mapping[str, Any] | None = None) -> None:
        if self.client is None:
            return
        from mlflow.entities import Param

        entries = [Param(name, str(value)) for name, value in flatten_params(params).items()]
        for start in range(0, len(entries), _MAX_PARAMS):
            self.client.log_batch(self.run_id, params=entries[start : start + _MAX_PARAMS])
        for name, value in float_metrics(final_metrics or {}).items():
            self.client.log_metric(self.run_id, f"final/{name}", value)

    def log_figure(self, tag: str, figure: Figure, step: int) -> None:
        if self.client is not None:
            self.client.log_figure(self.run_id, figure, f"figures/{tag}_step{step}.png")

    def log_images(self, tag: str, images: Tensor, step: int) -> None:
        if self.client is not None:
            from .figures import image_grid

            self.client.log_image(self.run_id, image_grid(images), f"images/{tag}_step{step}.png")

    def close(self) -> None:
        if self.client is not None:
            self.client.set_terminated(self.run_id)
            self.client = None
