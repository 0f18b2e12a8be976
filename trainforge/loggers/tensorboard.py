"""``TensorBoardLogger``: scalars, hyper-parameters with final metrics, image grids and figures in one
TensorBoard run. ``torch.utils.tensorboard`` is imported when a logger is built, not at import."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import BaseLogger, flatten_params, float_metrics, is_main_process

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import Tensor


class TensorBoardLogger(BaseLogger):
    """Write to a TensorBoard event file in ``log_dir``; tags are the metric names (``train/loss``, ``lr``).

    ``log_hyperparams`` writes the hparams summaries into this same run (``SummaryWriter.add_hparams``
    would create a sub-run), so TensorBoard's HPARAMS tab links the parameters to this run's curves.
    Call it once, at the end of fit, with the final metrics. Only rank 0 writes (``enabled=None``).

    >>> import tempfile
    >>> with TensorBoardLogger(tempfile.mkdtemp()) as logger:
    ...     logger.log_metrics({"train/loss": 0.5}, step=1)
    """

    def __init__(
        self, log_dir: str | Path, flush_secs: int = 30, enabled: bool | None = None, log_every: int = 10,
        prefix: str = "",
    ) -> None:
        self.every(log_every, prefix)  # as a recipe callback (see BaseLogger)
        self.log_dir = Path(log_dir)
        self.enabled = is_main_process() if enabled is None else enabled
        self.writer: Any = None
        self._tags: set[str] = set()
        self._last_step = 0
        if self.enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise ImportError(
                    f"TensorBoardLogger needs the tensorboard package ({error}); install it with "
                    "`pip install tensorboard`, or log with 'jsonl' only"
                ) from error
            self.writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=flush_secs)

    def log_metrics(
        self, metrics: Mapping[str, Any], step: int, phase: str | None = None, *, epoch: int | None = None
    ) -> None:
        if self.writer is None:
            return
        for name, value in float_metrics(metrics).items():
            self.writer.add_scalar(name, value, global_step=step)
            self._tags.add(name)
        self._last_step = max(self._last_step, int(step))

    def log_hyperparams(self, params: Mapping[str, Any], final_metrics: Mapping[str, Any] | None = None) -> None:
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        metrics = float_metrics(final_metrics or {})
        experiment, session_start, session_end = hparams(flatten_params(params), metrics)
        file_writer = self.writer.file_writer
        for summary in (experiment, session_start, session_end):
            file_writer.add_summary(summary)
        for name, value in metrics.items():  # the HPARAMS tab reads metric values from scalars of this run
            if name not in self._tags:
                self.writer.add_scalar(name, value, global_step=self._last_step)
                self._tags.add(name)
        self.writer.flush()

    def log_images(self, tag: str, images: Tensor, step: int) -> None:
        """A grid of ``images`` (``N, C, H, W`` in [0, 1]), e.g. sample inputs after augmentation."""
        if self.writer is not None:
            grid = images.detach().float().clamp(0, 1).cpu()
            self.writer.add_images(tag, grid, global_step=step, dataformats="NCHW")

    def log_figure(self, tag: str, figure: Figure, step: int) -> None:
        if self.writer is not None:
            self.writer.add_figure(tag, figure, global_step=step, close=True)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
