"""``VisdomLogger``: live curves, figures and images in a visdom environment (optional: ``pip install
visdom``). It only adds and updates its own windows: it never deletes, clears or closes an environment."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import BaseLogger, flatten_params, float_metrics, is_main_process

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch import Tensor

INSTALL_HINT = "VisdomLogger needs visdom, an optional package: pip install visdom"


def import_visdom() -> Any:
    """``visdom``, or an ``ImportError`` that says how to install it."""
    try:
        import visdom
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return visdom


class VisdomLogger(BaseLogger):
    """One visdom window per metric (``win`` = the metric name), appended to at each call.

    The user's environment ``env`` is never wiped: unlike Torchélie's visdom logger, nothing here calls
    ``delete_env`` or ``close`` on the environment, so earlier windows (other runs, notes) stay. Use a
    fresh ``env`` name per run to separate runs. Only rank 0 logs (``enabled=None`` checks ``RANK``).
    """

    def __init__(
        self, env: str = "trainforge", server: str = "http://localhost", port: int = 8097, enabled: bool | None = None,
        log_every: int = 10, prefix: str = "",
    ) -> None:
        self.every(log_every, prefix)  # as a recipe callback (see BaseLogger)
        visdom = import_visdom()
        self.env = env
        self.enabled = is_main_process() if enabled is None else enabled
        self.viz: Any = visdom.Visdom(server=server, port=port, env=env) if self.enabled else None

    def log_metrics(
        self, metrics: Mapping[str, Any], step: int, phase: str | None = None, *, epoch: int | None = None
    ) -> None:
        if self.viz is None:
            return
        for name, value in float_metrics(metrics).items():
            # update="append" creates the window when it does not exist yet
            self.viz.line(Y=np.array([value]), X=np.array([int(step)]), win=name, env=self.env, update="append",
                          opts={"title": name})

    def log_hyperparams(self, params: Mapping[str, Any], final_metrics: Mapping[str, Any] | None = None) -> None:
        if self.viz is None:
            return
        rows = [*flatten_params(params).items(), *float_metrics(final_metrics or {}).items()]
        text = "<br>".join(f"<b>{key}</b>: {value}" for key, value in rows)
        self.viz.text(text, win="hyperparameters", env=self.env, opts={"title": "hyperparameters"})

    def log_figure(self, tag: str, figure: Figure, step: int) -> None:
        if self.viz is not None:
            self.viz.matplot(figure, win=tag, env=self.env, opts={"title": f"{tag} (step {step})"})

    def log_images(self, tag: str, images: Tensor, step: int) -> None:
        if self.viz is not None:
            batch = images.detach().float().clamp(0, 1).cpu()
            self.viz.images(batch, nrow=8, win=tag, env=self.env, opts={"title": f"{tag} (step {step})"})

    def close(self) -> None:
        self.viz = None  # leave every window in place
