"""``TrainAndTest`` and ``TrainAndCall``: Torchélie's prebuilt recipes, composed from the engine's ``Recipe``,
``CallRecipe``, loggers and ``ModelCheckpoint`` — not a second loop."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..callbacks import CallRecipe, Counter, ModelCheckpoint, StdoutLogger
from ..engine import Recipe, State
from ..errors import ConfigError

StepFn = Callable[[Any], "dict[str, Any] | None"]
FORMAT = "trainforge.recipe/1"


class EvalMode:
    """For a test recipe: the model in eval mode and gradients off for the whole run, then both restored
    (set once per test pass, not per batch)."""

    group = "prologue"

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._restore: tuple[bool, bool] | None = None

    def on_fit_start(self, state: State) -> None:
        self._restore = (self.model.training, torch.is_grad_enabled())
        self.model.eval()
        torch.set_grad_enabled(False)

    def on_fit_end(self, state: State) -> None:
        if self._restore is not None:
            training, grad = self._restore
            self.model.train(training)
            torch.set_grad_enabled(grad)
            self._restore = None


class _RunFolder:
    """What a recipe writes into its folder: checkpoints (atomic, full state with RNG) and ``resume``."""

    def _init_folder(self, folder: str | os.PathLike[str] | None, every_n_steps: int | None,
                     key_best: str | None, best_mode: str) -> None:
        self.run_dir = None if folder is None else Path(folder)
        self.checkpoint_callback: ModelCheckpoint | None = None
        if key_best is not None and folder is None:
            raise ConfigError(f"key_best={key_best!r} keeps a best checkpoint: give checkpoint=<run folder> too")
        if self.run_dir is None:
            return
        from ..loggers import JsonlLogger

        self.callbacks.add(JsonlLogger(self.run_dir / "metrics.jsonl", log_every=self._log_every()))
        self.checkpoint_callback = ModelCheckpoint(
            self.run_dir / "checkpoints", monitor=key_best, mode=best_mode, save_top_k=1, save_last=True,
            every_n_epochs=1, every_n_steps=every_n_steps,
        )
        self.callbacks.add(self.checkpoint_callback, "epilogue")
        self.state.extra["save_state"] = self.checkpoint_state

    def _log_every(self) -> int:
        return 10

    def checkpoint_state(self) -> dict[str, Any]:
        """What a checkpoint holds: the recipe's state (registered objects, callbacks, progress) and RNG."""
        from ..runtime import rng_state

        return {"format": FORMAT, "recipe": self.state_dict(), "rng": rng_state()}

    def resume(self, path: str | os.PathLike[str] = "auto") -> Path | None:
        """Continue from a checkpoint folder, or (``"auto"``) from the newest intact checkpoint of this run
        folder; returns the checkpoint used, or None when ``"auto"`` finds none (a fresh start). Then
        ``run(n)`` trains up to ``n`` epochs in total."""
        from ..checkpoint import find_resume_checkpoint, load_checkpoint
        from ..runtime import set_rng_state

        if path == "auto":
            folder = None if self.run_dir is None else self.run_dir / "checkpoints"
            if folder is None:
                raise ConfigError("resume('auto') needs the recipe's checkpoint=<run folder>")
            found = find_resume_checkpoint(folder) if folder.is_dir() else None
            if found is None:
                return None
            path = found
        saved = load_checkpoint(Path(path))
        if saved.get("format") != FORMAT:
            raise ConfigError(f"{path} is not a recipe checkpoint (format {saved.get('format')!r}, expected {FORMAT})")
        self.load_state_dict(saved["recipe"])
        set_rng_state(saved["rng"])
        return Path(path)


class TrainAndTest(_RunFolder, Recipe):
    """Train with ``train_fn`` on ``train_loader``; every ``test_every`` steps (None: each epoch end) run
    ``test_fn`` over ``test_loader`` in eval mode without gradients (train mode restored after).

    ``recipe.test_loop`` is the test recipe: add its callbacks there (``EpochMetricAvg("loss",
    post_each_batch=False)``). Its metrics reach the training state as ``test/<name>``. Both loops print
    with a ``StdoutLogger`` (``log_every`` steps; the test loop at its end). With ``checkpoint`` (a run
    folder), metrics go to ``<checkpoint>/metrics.jsonl`` and checkpoints to ``<checkpoint>/checkpoints``
    (atomic, the whole state with RNG: ``resume("auto")`` continues bit-exactly) at each epoch end and each
    test; ``key_best`` (a metric such as ``"test/accuracy"``, higher better unless ``best_mode="min"``)
    keeps the best one as well.

    >>> from trainforge.callbacks import EpochMetricAvg, Optimizer
    >>> model = nn.Linear(2, 1)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> data = [(torch.ones(4, 2), torch.zeros(4, 1))] * 3
    >>> def forward_pass(batch):
    ...     x, y = batch
    ...     loss = nn.functional.mse_loss(model(x), y)
    ...     loss.backward()
    ...     return {"loss": loss}
    >>> def test_pass(batch):
    ...     x, y = batch
    ...     return {"loss": nn.functional.mse_loss(model(x), y)}
    >>> recipe = TrainAndTest(model, forward_pass, test_pass, data, data, log_every=1000)
    >>> recipe.callbacks.add_callbacks([Optimizer(opt), EpochMetricAvg("loss")])
    >>> recipe.test_loop.callbacks.add_callbacks([EpochMetricAvg("loss", post_each_batch=False)])
    >>> state = recipe.run(2)  # doctest: +ELLIPSIS
    Test | epoch 1/1 | loss=...
    >>> state.metrics["test/loss"] < 0.1
    True
    """

    def __init__(
        self,
        model: nn.Module,
        train_fn: StepFn,
        test_fn: StepFn,
        train_loader: Iterable[Any],
        test_loader: Iterable[Any],
        test_every: int | None = None,
        log_every: int = 10,
        checkpoint: str | os.PathLike[str] | None = None,
        key_best: str | None = None,
        best_mode: str = "max",
    ) -> None:
        _check_step_fns(model, train_fn=train_fn, test_fn=test_fn)
        super().__init__(train_fn, train_loader)
        self.log_every = log_every
        self.register("model", model)
        self.test_loop = Recipe(test_fn, test_loader)
        self.register("test_loop", self.test_loop)
        self.test_loop.callbacks.add_callbacks([EvalMode(model), Counter()], "prologue")
        self.test_loop.callbacks.add(StdoutLogger(log_every=-1, prefix="Test"), "epilogue")
        self.callbacks.add(Counter(), "prologue")
        self.callbacks.add(CallRecipe(self.test_loop, every=test_every, prefix="test"))
        self.callbacks.add(StdoutLogger(log_every=log_every), "epilogue")
        self._init_folder(checkpoint, test_every, key_best, best_mode)

    def _log_every(self) -> int:
        return self.log_every


class CallFunction:
    """Call ``fn()`` every ``every`` steps (None: each epoch end) and post what it returns to ``state.metrics``
    (a tensor as ``<prefix>``, a dict as ``<prefix>/<key>``), where loggers find it: numbers are logged,
    image tensors go to ``log_images``. Runs in eval mode without gradients; train mode restored."""

    def __init__(self, fn: Callable[[], Any], model: nn.Module, every: int | None, prefix: str,
                 run_dir: Path | None) -> None:
        if every is not None and every < 1:
            raise ValueError(f"call_every must be a positive number of steps or None, got {every}")
        self.fn, self.model, self.every, self.prefix, self.run_dir = fn, model, every, prefix, run_dir
        self.calls = 0

    def on_batch_end(self, state: State) -> None:
        if self.every is not None and state.global_step % self.every == 0:
            self.call(state)

    def on_epoch_end(self, state: State) -> None:
        if self.every is None:
            self.call(state)

    def call(self, state: State) -> Any:
        training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                result = self.fn()
        finally:
            self.model.train(training)
        items = result.items() if isinstance(result, dict) else [(None, result)]
        for key, value in items:
            name = self.prefix if key is None else f"{self.prefix}/{key}"
            if isinstance(value, torch.Tensor):
                value = value.detach()
                if self.run_dir is not None and value.dim() in (3, 4) and value.is_floating_point():
                    self._save_grid(name, value, state.global_step)
            state.metrics[name] = value
        self.calls += 1
        return result

    def _save_grid(self, name: str, images: torch.Tensor, step: int) -> None:
        """``<run>/samples/<name>-step<step>.png``, written atomically (a crash leaves no half image)."""
        import io

        from torchvision.utils import save_image

        from ..checkpoint import atomic_write_bytes
        from ..loggers.base import is_main_process

        if not is_main_process():
            return
        buffer = io.BytesIO()
        save_image(images.float().clamp(0, 1).cpu(), buffer, format="png", nrow=8)
        safe = name.replace("/", "_")
        folder = self.run_dir / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / f"{safe}-step{step:06d}.png", buffer.getvalue())

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls = int(state["calls"])


class TrainAndCall(_RunFolder, Recipe):
    """Train with ``train_fn`` and call ``call_fn()`` every ``call_every`` steps (None: each epoch end), for
    models with no test set (a VAE decoder, a GAN): what it returns — an image grid, or a dict of
    images and numbers — goes to the loggers, and with ``checkpoint`` (a run folder) image grids are
    also written to ``<checkpoint>/samples/`` and checkpoints to ``<checkpoint>/checkpoints``.

    >>> model = nn.Linear(2, 2)
    >>> recipe = TrainAndCall(model, lambda batch: None, lambda: {"norm": model.weight.norm()}, [0, 1],
    ...                       call_every=1, log_every=1000)
    >>> "samples/norm" in recipe.run(1).metrics  # doctest: +ELLIPSIS
    epoch 1/1 | samples/norm=...
    True
    """

    def __init__(
        self,
        model: nn.Module,
        train_fn: StepFn,
        call_fn: Callable[[], Any],
        train_loader: Iterable[Any],
        call_every: int | None = 100,
        prefix: str = "samples",
        log_every: int = 10,
        checkpoint: str | os.PathLike[str] | None = None,
    ) -> None:
        _check_step_fns(model, train_fn=train_fn, call_fn=call_fn)
        super().__init__(train_fn, train_loader)
        self.log_every = log_every
        self.register("model", model)
        run_dir = None if checkpoint is None else Path(checkpoint)
        self.caller = CallFunction(call_fn, model, call_every, prefix, run_dir)
        self.callbacks.add(Counter(), "prologue")
        self.callbacks.add(self.caller)
        self.callbacks.add(StdoutLogger(log_every=log_every), "epilogue")
        self._init_folder(checkpoint, call_every, None, "max")

    def _log_every(self) -> int:
        return self.log_every


def _check_step_fns(model: Any, **fns: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, fn in fns.items():
        if not callable(fn):
            raise TypeError(f"{name} must be a function, got {type(fn).__name__}")
