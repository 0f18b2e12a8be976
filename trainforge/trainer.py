"""``Trainer``: a train recipe plus an eval recipe whose step functions are the trainer's own stage
methods. Override a stage by subclassing or by passing ``callbacks={"stage": fn}`` (bound to this
instance only); observe and steer with callback objects."""

from __future__ import annotations

import contextlib
import inspect
import os
import platform
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ._version import __version__
from .config_check import check_trainer_setup, require_training_data
from .engine import Recipe, State, hook_methods
from .errors import ConfigError, EmptyLoaderError, ResumeMismatchError
from .runtime import Runtime, backward, rng_state, seed_everything, set_rng_state
from .trainer_export import export_metadata, onnx_example_input
from .trainer_hooks import _is_logger, _sigterm_flag
from .trainer_report import (
    arm_report_capture,
    finish_run,
    load_best_model,
    report_batch,
    report_sample,
    weights_fingerprint,
)
from .trainer_resume import (
    CHECKPOINT_FORMAT,
    auto_resume_checkpoint,
    check_compatible,
    data_fingerprint,
    find_checkpoint,
)
from .trainer_run import claim_run_folder, close_loggers, make_run_dir, open_loggers, release_run_folder
from .trainer_setup import build_metrics, build_recipes, make_eval_loaders, make_loader, prepare_model
from .trainer_utils import ActiveStages, OnDevice, batch_size_of, bind_stage, resolve_class_names
from .training_config import TrainingConfig

#: Stages a user may replace through ``callbacks={name: fn}``; ``fit`` replaces the loop after setup.
STAGES: tuple[str, ...] = (
    "preprocess",
    "augmentations",
    "on_before_model",
    "train_step",
    "compute_loss",
    "evaluate",
    "evaluate_step",
    "compute_metrics",
    "on_checkpoint",
    "on_epoch_end",
    "fit",
)


class Trainer:
    """Fit, evaluate and predict a model, with every stage overridable.

    A training step, stage by stage (``train_step``)::

        x = on_before_model(augmentations(preprocess(batch["input"])))
        outputs = {"output": model(x)}            # under autocast; a dict output is used as is
        loss = compute_loss(outputs, batch)       # criterion(outputs["output"], batch["target"])
        backward(loss)                            # scaled for fp16; no DDP sync while accumulating
        compute_metrics("TRAIN", outputs, batch)  # on the device, no host sync

    The ``Optimizer`` callback steps at accumulation boundaries (clip, step, zero, schedule). At each
    epoch end (or every ``eval_steps``) ``evaluate()`` runs the model in eval mode without gradients,
    with EMA weights when enabled; its loss and metrics are kept apart from training ones
    (``valid/...`` vs ``train/...``).

    >>> import tempfile
    >>> from torch import nn
    >>> from trainforge.data import load_digits_split
    >>> train, valid = load_digits_split()
    >>> cfg = TrainingConfig(max_epochs=1, batch_size=64, lr=0.01, scheduler="constant",
    ...                      output_dir=tempfile.mkdtemp(), print_steps=1000, tensorboard=False, report=False)
    >>> _ = torch.manual_seed(0)  # the model's initial weights: independent of what ran before
    >>> trainer = Trainer(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), cfg, train_data=train, valid_data=valid)
    >>> metrics = trainer.fit().metrics  # doctest: +ELLIPSIS
    epoch 1/1 done | ...
    >>> metrics["valid/accuracy"] > 0.8
    True
    """

    def __init__(
        self,
        model: nn.Module,
        *args: Any,
        config: TrainingConfig | Mapping[str, Any] | None = None,
        train_data: Dataset | DataLoader | None = None,
        valid_data: Dataset | DataLoader | Mapping[str, Dataset | DataLoader] | None = None,
        criterion: Callable[..., torch.Tensor] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        callbacks: Mapping[str, Any] | Iterable[Any] | None = None,
        class_names: Sequence[str] | None = None,
        **seed_names: Any,
    ) -> None:
        """Three call styles, told apart by what follows the model (see ``trainforge.trainer_args``):
        ``Trainer(model, config, train_data=..., valid_data=...)`` (ours; Towhee's with
        ``train_dataset=``/``eval_dataset=``), and Kornia's ``Trainer(model, train_dataloader,
        valid_dataloader, criterion, optimizer, scheduler, config)`` (positional or by keyword)."""
        from .trainer_args import check_model, resolve_trainer_args

        check_model(model)
        given = {"config": config, "train_data": train_data, "valid_data": valid_data, "criterion": criterion,
                 "optimizer": optimizer, "scheduler": scheduler}
        args_ = resolve_trainer_args(args, given, seed_names)
        config = args_["config"]
        if config is None:
            config = TrainingConfig()
        elif isinstance(config, Mapping):
            config = TrainingConfig.from_dict(dict(config))
        elif not isinstance(config, TrainingConfig):
            raise TypeError(f"config must be a TrainingConfig or a dict, got {type(config).__name__}")
        self.config = config
        self.model = model
        self.train_data = args_["train_data"]
        self.valid_data = args_["valid_data"]
        self.criterion = args_["criterion"]
        self.optimizer = args_["optimizer"]
        self.scheduler = args_["scheduler"]
        self.callbacks: list[Any] = []
        self._custom_fit: Callable[[], Any] | None = None
        self._setup_done = False
        self.runtime: Runtime | None = None
        self.recipe: Recipe | None = None
        self.metrics_manager: Any = None
        self.ema: Any = None
        self.run_dir: Path | None = None
        self.loggers: list[Any] = []
        self.class_names, self._class_names_source = resolve_class_names(class_names, self.train_data, self.valid_data)
        self._in_custom_evaluate = False  # see _posting_evaluate
        self._report_capture: Any = None  # armed for a fit's final evaluation (trainer_report.arm_report_capture)
        self._report_captured: Any = None
        self._apply_callbacks(callbacks)
        if "evaluate" not in self.__dict__ and type(self).evaluate is not Trainer.evaluate:
            self.evaluate = self._posting_evaluate(self.evaluate)  # a subclass's evaluate: post what it returns
        self._resolve_stages()

    # -- construction helpers -----------------------------------------------------------------------
    def _resolve_stages(self) -> None:
        """Decide which optional stages the hot path calls: one left as the default identity (not
        overridden by a subclass or on this instance, no channels_last, no metrics) is skipped."""

        def replaced(name: str) -> bool:
            return name in self.__dict__ or getattr(type(self), name) is not getattr(Trainer, name)

        stages = ActiveStages()
        stages.preprocess = replaced("preprocess")
        stages.augmentations = replaced("augmentations")
        stages.on_before_model = replaced("on_before_model") or self.config.channels_last
        stages.run_model = replaced("run_model")
        stages.compute_metrics = (
            replaced("compute_metrics") or bool(self.config.metrics) or self.metrics_manager is not None
        )
        self._stages = stages

    def _apply_callbacks(self, callbacks: Mapping[str, Any] | Iterable[Any] | None) -> None:
        if callbacks is None:
            return
        if isinstance(callbacks, (set, frozenset)):
            shown = ", ".join(sorted(repr(c) if isinstance(c, str) else type(c).__name__ for c in callbacks))
            raise ConfigError(
                f"callbacks is a set ({{{shown}}}), not a dict: write {{\"evaluate\": my_evaluate}} with a colon "
                "to replace a stage, or a list [cb1, cb2] of callback objects"
            )
        if not isinstance(callbacks, Mapping):
            for callback in callbacks:
                self.add_callback(callback)
            return
        for name, value in callbacks.items():
            if name not in STAGES:
                raise ConfigError(
                    f"callbacks has no stage {name!r}; stages that can be replaced: {', '.join(STAGES)}"
                )
            if not callable(value) or (not inspect.isroutine(value) and hook_methods(value)):
                self.add_callback(value)  # Kornia style: {"on_checkpoint": ModelCheckpoint(...)}
            elif name == "fit":
                self._custom_fit = bind_stage(self, value)
            elif name == "evaluate":
                self.evaluate = self._posting_evaluate(bind_stage(self, value))
            else:
                setattr(self, name, bind_stage(self, value))  # this instance only, never the class

    def add_callback(self, callback: Any) -> None:
        """Add a callback object (any object with ``on_<event>(state)`` methods, e.g. a ``Callback``), or a
        ``Logger`` (MLflow, visdom, your own), which receives the run's metrics like the built-in ones.

        A misspelled or foreign hook name (Towhee's ``on_batch_begin``), a list, and an object with no
        hook at all are errors here, not silently never run."""
        if isinstance(callback, (list, tuple, set, frozenset)):
            raise ConfigError(
                f"add_callback() takes one callback, got a {type(callback).__name__}; pass callbacks=[...] to "
                "Trainer(...) or call add_callback once per callback"
            )
        hooks = hook_methods(callback)
        if not hooks and not _is_logger(callback):
            raise ConfigError(
                f"{type(callback).__name__} {callback!r:.60} is not a callback: it has no on_<event>(state) method "
                "and is not a Logger, so it would never run. To replace a stage, pass callbacks={name: fn} "
                f"with one of: {', '.join(STAGES)}"
            )
        self.callbacks.append(callback)
        if self.recipe is not None and not _is_logger(callback):
            self.recipe.callbacks.add(callback)

    def set_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Use this optimizer instead of the one the config names (before ``fit``)."""
        self.optimizer = optimizer

    def set_loss(self, loss: Callable[..., torch.Tensor]) -> None:
        """Use this loss instead of the one the config names."""
        self.criterion = loss

    @property
    def loss(self) -> Callable[..., torch.Tensor] | None:
        return self.criterion

    # -- Kornia's names, for a custom ``fit``/``evaluate`` -------------------------------------------------
    @property
    def num_epochs(self) -> int:
        """``config.max_epochs`` (Kornia's name)."""
        return self.config.max_epochs

    @property
    def train_dataloader(self) -> Any:
        """The training batches as the data set yields them (``source, target = sample``), on the
        trainer's device: the user's own loader when one was given, else a loader over the data set with
        ``config.batch_size`` (shuffled with ``config.seed``). For a custom ``fit`` (Kornia's ``my_fit``)."""
        return self._seed_loader(self.train_data, train=True)

    @property
    def valid_dataloader(self) -> Any:
        """The validation batches as the data set yields them, on the trainer's device (the first
        validation set when there are several). For a custom ``evaluate`` (Kornia's ``my_evaluate``)."""
        data = self.valid_data
        if isinstance(data, Mapping):
            data = next(iter(data.values()), None)
        return self._seed_loader(data, train=False)

    def _seed_loader(self, data: Any, train: bool) -> Any:
        if data is None:
            return None
        self.setup()
        if not isinstance(data, DataLoader) and isinstance(data, Dataset):
            cfg = self.config
            generator = torch.Generator().manual_seed(cfg.seed)
            data = DataLoader(data, batch_size=cfg.batch_size if train else (cfg.eval_batch_size or cfg.batch_size),
                              shuffle=train, generator=generator, num_workers=cfg.num_workers)
        return OnDevice(data, self.runtime)

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate ``loss`` (scaled under fp16): Kornia's ``self.backward(loss)`` in a custom ``fit``."""
        self.setup()
        self.runtime.backward(loss)

    def _posting_evaluate(self, evaluate: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a user's ``evaluate`` (a subclass's, or ``callbacks={"evaluate": fn}``) so the dict it returns
        becomes the validation metrics that checkpoints, early stopping and the loggers see, with
        ``eval_start``/``eval_end`` fired around it, as for the built-in evaluation."""

        def posting(*args: Any, **kwargs: Any) -> Any:
            self.setup()
            state = self.recipe.state
            if self._in_custom_evaluate:  # a custom evaluate calling another: the outer one posts
                return evaluate(*args, **kwargs)
            self.recipe.callbacks.fire("eval_start", state)
            state.extra["eval_metrics"], state.extra["non_scalar_metrics"] = {}, {}
            self._in_custom_evaluate = True  # Trainer.evaluate called inside posts but leaves the events to us
            try:
                results = evaluate(*args, **kwargs)
            finally:
                self._in_custom_evaluate = False
            if results is None:
                results = {}
            if not isinstance(results, Mapping):
                raise ConfigError(
                    f"a custom evaluate must return a dict of metrics (or None), got {type(results).__name__}"
                )
            from .loggers import float_metrics

            floats = float_metrics(results)  # host floats: evaluation ends here, a sync costs little
            state.metrics.update(floats)
            state.extra["eval_metrics"] = {**state.extra["eval_metrics"], **floats}
            self.recipe.callbacks.fire("eval_end", state)
            return results

        posting.__wrapped__ = evaluate  # type: ignore[attr-defined]
        return posting

    @property
    def epoch(self) -> int:
        return self.recipe.state.epoch if self.recipe is not None else 0

    @property
    def global_step(self) -> int:
        return self.recipe.state.global_step if self.recipe is not None else 0

    @property
    def device(self) -> torch.device:
        return self.runtime.device if self.runtime is not None else torch.device("cpu")

    # -- stages ---------------------------------------------------------------------------------------
    def preprocess(self, x: Any) -> Any:
        """Turn a batch's input into model input (e.g. ``x.float() / 255``); identity by default."""
        return x

    def augmentations(self, x: Any) -> Any:
        """Batched, on-device augmentation applied during training only; identity by default."""
        return x

    def on_before_model(self, x: Any) -> Any:
        """Last change to the input before the forward pass (channels_last when configured)."""
        if self.config.channels_last and isinstance(x, torch.Tensor) and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, batch: dict[str, Any], training: bool) -> dict[str, Any]:
        """Run preprocess, augmentations (training only), on_before_model and the model.

        Stages left as the identity (not overridden, no channels_last) are not called; which ones is
        decided when ``fit``, ``evaluate`` or ``predict`` starts.
        """
        stages = self._stages
        x = batch["input"]
        if stages.preprocess:
            x = self.preprocess(x)
        if training and stages.augmentations:
            x = self.augmentations(x)
        if stages.on_before_model:
            x = self.on_before_model(x)
        if self.runtime.autocast_dtype is None:
            output = self.run_model(x, batch) if stages.run_model else self._model_fn(x)
        else:
            with self.runtime.autocast():
                output = self.run_model(x, batch) if stages.run_model else self._model_fn(x)
        if isinstance(output, torch.Tensor):  # the common case first: an ABC isinstance costs a microsecond
            return {"output": output}
        return dict(output) if isinstance(output, Mapping) else {"output": output}

    def run_model(self, x: Any, batch: dict[str, Any]) -> Any:
        """The model call itself, ``model(x)``; a task whose model needs more of the batch (a margin head
        reads the target, a detector the boxes) overrides it. Called under autocast."""
        return self._model_fn(x)

    def compute_loss(self, outputs: dict[str, Any], batch: dict[str, Any]) -> torch.Tensor:
        """The loss of a batch; ``criterion(outputs["output"], batch["target"])`` by default.

        A criterion whose class sets ``takes_dicts = True`` (``JointLoss``) is called with the
        ``(outputs, batch)`` dicts and may return ``(total, terms)``; the terms are logged as ``loss/<tag>``.
        """
        # a class attribute: on an nn.Module instance a missing attribute costs an exception per call
        if getattr(type(self.criterion), "takes_dicts", False):
            return self.criterion(outputs, batch)
        output = outputs["output"]
        return self.criterion(output if output.dtype is torch.float32 else output.float(), batch["target"])

    def train_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        """One training step: forward, loss, backward, training metrics. Returns the step outputs."""
        outputs = self.forward(batch, training=True)
        loss, terms = self.compute_loss(outputs, batch), None
        if isinstance(loss, tuple):
            loss, terms = loss
            outputs.update({f"loss/{k}": v.detach() for k, v in terms.items()})
        guard = self._guard
        if guard.check(loss, batch, terms):  # a non-finite loss under the "skip" policy
            outputs["loss"] = torch.zeros((), device=loss.device)
            outputs["num_samples"] = 0
            if terms is not None:  # weighted by 0 in the epoch means, but a NaN times 0 is still NaN
                outputs.update({f"loss/{k}": torch.zeros((), device=loss.device) for k in terms})
            return outputs
        runtime = self.runtime
        accumulating = self.config.accumulate_grad_batches > 1 and self._accumulating()
        if runtime.distributed:
            with runtime.no_sync(self._model_fn, accumulating):
                runtime.backward(loss)
        elif runtime.scaler is None:
            backward(loss)
        else:
            runtime.backward(loss)
        if not accumulating:
            guard.check_grads(self._optimizer_cb.optimizer, batch)
        outputs["loss"] = loss.detach()
        outputs["num_samples"] = batch_size_of(batch)
        if self._stages.compute_metrics:
            self.compute_metrics("TRAIN", outputs, batch)
        return outputs

    @torch.no_grad()
    def evaluate_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        """One evaluation step: forward in eval mode, loss, metrics."""
        outputs = self.forward(batch, training=False)
        if "target" in batch:
            loss = self.compute_loss(outputs, batch)
            if isinstance(loss, tuple):
                loss, terms = loss
                outputs.update({f"loss/{k}": v.detach() for k, v in terms.items()})
            outputs["loss"] = loss.detach()
        outputs["num_samples"] = batch_size_of(batch)
        self.compute_metrics(self._eval_phase, outputs, batch, loader=self._eval_loader_name)
        if self._report_capture is not None and self._eval_loader_name is None:
            self._report_capture.add(report_sample(self, batch, outputs.get("output")))
        return outputs

    def compute_metrics(
        self, phase: str, outputs: dict[str, Any], batch: dict[str, Any], loader: str | None = None
    ) -> None:
        """Update the phase's metrics on the device (no host sync); computed at epoch end."""
        if self.metrics_manager is None:
            if not self.config.metrics or "target" not in batch:
                return
            self.metrics_manager = build_metrics(self, outputs)
        self.metrics_manager.update(phase, outputs, batch, loader=loader)

    def on_checkpoint(self, state: State) -> None:
        """Called after each committed checkpoint; ``state.extra["checkpoint_path"]`` is its folder."""

    def on_epoch_end(self, state: State) -> None:
        """Called at the end of each training epoch, after evaluation and before checkpoints."""

    # -- fit --------------------------------------------------------------------------------------------
    def fit(self, resume_from: str | os.PathLike[str] | None = None) -> State:
        """Train for ``config.max_epochs`` epochs in total; resume from a checkpoint or run folder first.

        ``resume_from`` is a checkpoint folder, a run folder (its newest intact checkpoint written by
        that folder's run), or ``"auto"``: the newest intact checkpoint of this run's folder if there
        is one, else a fresh start. SIGTERM (a preemption) or SIGINT (Ctrl-C) finishes the current step,
        writes ``checkpoints/last``, prints the call that resumes and exits with code 143 or 130 (a
        second Ctrl-C stops at once). Returns the final ``State``; ``state.metrics`` holds the last
        metrics.

        The run folder is locked for the whole fit (a second Trainer on it is refused). A fresh run
        into a folder that holds another run is refused unless ``resume_from`` is given or
        ``config.overwrite`` is set (see ``trainforge.run_folder``). A later ``fit`` with a larger
        ``max_epochs`` continues the run and logs the new epochs.
        """
        if self._custom_fit is None:
            require_training_data(self)
        if resume_from not in (None, "auto") and self.config.output_dir is None and self.run_dir is None:
            folder = Path(resume_from)
            if (folder / "checkpoints").is_dir():
                self.run_dir = folder  # resuming a run folder keeps writing into it
        self._asked_resume = resume_from is not None  # "auto" too: this folder's own run may continue
        if resume_from == "auto":
            resume_from = auto_resume_checkpoint(self)
        # known before setup(): a resumed run restores its own weights, so load_checkpoint is not applied
        self._resume_pending = resume_from is not None
        self._fitting = True
        try:
            self.setup()  # claims and locks the run folder
            claim_run_folder(self)  # a later fit: setup is done, the lock was released by the last one
            if resume_from is not None:
                self.resume(resume_from)
            self._resolve_stages()
            if self._custom_fit is not None:
                return self._custom_fit()
            if not self.loggers:  # closed by an earlier fit: this one's epochs are logged too
                open_loggers(self)
            try:
                with _sigterm_flag(self._preemption):
                    state = self.recipe.run(self.config.max_epochs)
                    self._preemption.finish(state)  # stopped for SIGTERM/SIGINT: checkpoint and exit 143/130
                if self.config.load_best_model_at_end:
                    load_best_model(self)
                finish_run(self, state)
            finally:
                close_loggers(self)
        finally:
            self._fitting = False
            release_run_folder(self)
        return state

    def save_report_samples(self, loader: Any) -> None:
        """Write this task's sample data for the report from the validation ``loader`` (batches not yet on
        the device). Called at the end of ``fit`` on rank 0 only, in eval mode, on the unwrapped model
        with the EMA weights swapped in, under ``torch.no_grad``. The default keeps classification
        samples (nothing for other outputs); a task trainer overrides it to save its own (bounded) data.
        """
        from .report import save_classification_samples

        batches = (report_batch(self, self.runtime.to_device(batch)) for batch in loader)
        save_classification_samples(self.run_dir, batches, self.class_names, seed=self.config.seed,
                                    weights=self._report_weights())

    def _report_weights(self) -> str:
        """Which weights the report's validation pass uses: the best checkpoint's (when loaded at the end)
        or the last ones, their EMA when enabled."""
        which = "best checkpoint" if getattr(self, "_best_loaded", False) else "last"
        return f"EMA of the {which} weights" if self.ema is not None else f"{which} weights"

    def train(self, resume_checkpoint_path: str | os.PathLike[str] | None = None) -> State:
        """Alias of ``fit`` with Towhee's argument name."""
        return self.fit(resume_from=resume_checkpoint_path)

    # -- evaluation and prediction ---------------------------------------------------------------------
    def evaluate(
        self, data: Dataset | DataLoader | Mapping[str, Dataset | DataLoader] | None = None, phase: str = "VALID"
    ) -> dict[str, float]:
        """Evaluate on ``data`` (default: the validation data), every loader of it when it is a dict.

        Runs in eval mode without gradients and with the EMA weights when enabled; the model returns
        to training mode afterwards. Returns host floats named ``<prefix>/<metric>``: the prefix is the
        phase (``valid``, ``test``...) for a single data set and for the first entry of a dict, and
        ``<phase>_<key>`` for the other entries, so ``valid_data={"main": a, "noisy": b}`` gives
        ``valid/accuracy`` and ``valid_noisy/accuracy``. Non-scalar metric values (confusion matrix,
        per-class values, curves) are in ``last_non_scalar_metrics``. At ``eval_end`` callbacks find
        this call's results in ``state.extra["eval_metrics"]`` and ``state.extra["non_scalar_metrics"]``.

        >>> import tempfile
        >>> from torch.utils.data import TensorDataset
        >>> from trainforge.data import load_digits_split
        >>> _, valid = load_digits_split()
        >>> noisy = TensorDataset(valid.tensors[0] + 0.5 * torch.rand_like(valid.tensors[0]), valid.tensors[1])
        >>> cfg = TrainingConfig(output_dir=tempfile.mkdtemp(), metrics=["Accuracy", "ConfusionMatrix"],
        ...                      tensorboard=False, checkpoint=None)
        >>> trainer = Trainer(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), cfg)
        >>> sorted(trainer.evaluate({"clean": valid, "noisy": noisy}))
        ['valid/accuracy', 'valid/loss', 'valid_noisy/accuracy', 'valid_noisy/loss']
        >>> int(trainer.last_non_scalar_metrics["valid_noisy/confusion_matrix"].sum())
        360
        """
        from .metrics.manager import normalize_phase, phase_prefix

        self.setup()
        self._resolve_stages()
        phase = normalize_phase(phase)
        loaders = self._eval_loaders if data is None else make_eval_loaders(self, data)
        if not loaders:
            raise ConfigError("evaluate() needs data: pass valid_data to Trainer(...) or data to evaluate()")
        prefixes = {name: phase_prefix(phase, name) for name in loaders}  # a bad loader name fails before any work
        results: dict[str, float] = {}
        non_scalars: dict[str, Any] = {}
        state = self.recipe.state
        nested = self._in_custom_evaluate  # called by a custom evaluate, which fires the events
        if not nested:
            self.recipe.callbacks.fire("eval_start", state)
        was_training = self.model.training
        self.model.eval()
        if data is None and phase == "VALID":
            arm_report_capture(self, type(self).save_report_samples is Trainer.save_report_samples)
        try:
            with self._ema_weights():
                for name, loader in loaders.items():
                    results.update(self._evaluate_loader(name, loader, phase))
                    non_scalars.update(self._last_non_scalars.get(prefixes[name], {}))
                if self._report_capture is not None:  # kept with the weights it saw, checked at the report
                    self._report_captured = (self._report_capture, state.global_step, weights_fingerprint(self))
        finally:
            self._report_capture = None
            self.model.train(was_training)
        state.metrics.update(results)
        if nested:
            state.extra["eval_metrics"] = {**state.extra.get("eval_metrics", {}), **results}
            state.extra["non_scalar_metrics"] = {**state.extra.get("non_scalar_metrics", {}), **non_scalars}
            return results
        state.extra["eval_metrics"], state.extra["non_scalar_metrics"] = results, non_scalars
        self.recipe.callbacks.fire("eval_end", state)
        return results

    def _evaluate_loader(self, name: str | None, loader: Any, phase: str) -> dict[str, float]:
        from .metrics.manager import phase_prefix, to_host

        prefix = phase_prefix(phase, name)
        self._eval_phase, self._eval_loader_name = phase, name
        self._last_non_scalars.pop(prefix, None)
        if self.metrics_manager is not None:
            self.metrics_manager.reset(phase, loader=name)
        recipe = self._eval_recipe
        recipe.loader = loader
        recipe.reset()
        self._eval_loss_avg.alias = f"{prefix}/loss"
        for tag, average in self._eval_term_avgs.items():
            average.alias = f"{prefix}/loss/{tag}"
        try:
            metrics = dict(recipe.run(1).metrics)
        except EmptyLoaderError:
            shown = f"{phase} data {name!r}" if name else f"{phase} data"
            raise EmptyLoaderError(f"evaluate: the {shown} gave no batches, so there is nothing to evaluate (an "
                                   "empty data set, or an iterator used up by an earlier pass: pass a Dataset, a "
                                   "DataLoader or a list)") from None
        if self.metrics_manager is not None and self.metrics_manager.names(phase, loader=name):
            computed = self.metrics_manager.compute(phase, loader=name)
            metrics.update(self.metrics_manager.scalars(computed))
            self._last_non_scalars[prefix] = to_host(self.metrics_manager.non_scalars(computed))
        return metrics

    @property
    def last_non_scalar_metrics(self) -> dict[str, Any]:
        """The latest non-scalar metric values by full name, on the CPU: ``valid/confusion_matrix``,
        ``valid_noisy/confusion_matrix``, per-class tensors, ``(fpr, tpr, thresholds)`` curves. Each
        evaluated loader keeps its last evaluation's values; ``train/...`` ones are from the last
        logging step or epoch end. Scalars are in ``state.metrics`` (and ``evaluate()``'s result)."""
        from .metrics.manager import to_host

        flat: dict[str, Any] = {}
        for values in getattr(self, "_last_non_scalars", {}).values():
            flat.update(to_host(values))
        return flat

    @torch.no_grad()
    def predict(self, data: Dataset | DataLoader) -> list[dict[str, Any]]:
        """Run the model on ``data`` in eval mode; returns each batch's outputs on the CPU (with indices)."""
        self.setup()
        self._resolve_stages()
        loader = make_loader(self, data, train=False)
        was_training = self.model.training
        self.model.eval()
        predictions = []
        try:
            with self._ema_weights():
                for batch in loader:
                    batch = self.runtime.to_device(batch)
                    outputs = self.forward(batch, training=False)
                    outputs["index"] = batch["index"]
                    predictions.append({k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in outputs.items()})
        finally:
            self.model.train(was_training)
        return predictions

    # -- setup ----------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Build everything ``fit`` needs: runtime, loaders, optimizer, schedule, callbacks. Idempotent.

        ``config.load_checkpoint`` (pretrained weights, see ``trainforge.pretrained.load_pretrained``) is
        applied here, before the EMA copies the weights and before the optimizer exists; not when
        ``fit`` is about to resume a run, whose checkpoint holds the weights to continue from.
        """
        if self._setup_done:
            return
        cfg = self.config
        # the objects passed in (not built from the config), for config.yaml and the hyper-parameters
        self._given_objects = {"optimizer": self.optimizer, "criterion": self.criterion, "scheduler": self.scheduler}
        self.runtime = Runtime(cfg.device, cfg.precision)
        check_trainer_setup(self)  # names, nested keys, monitors, data sizes: before anything is written
        seed_everything(cfg.seed)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        if self.run_dir is None:
            self.run_dir = make_run_dir(self)
        claim_run_folder(self)
        if cfg.load_checkpoint is not None and not getattr(self, "_resume_pending", False):
            from .pretrained import load_pretrained

            load_pretrained(self.model, **cfg.load_checkpoint)
        prepare_model(self)
        self.train_loader = None if self.train_data is None else make_loader(self, self.train_data, train=True)
        self._eval_loaders = make_eval_loaders(self, self.valid_data)
        if self.criterion is None:
            from .losses import build_loss

            self.criterion = build_loss(cfg.loss, **cfg.loss_params)
        build_recipes(self)
        self.recipe.state.extra["run_id"] = getattr(self, "run_id", None)  # stamped into checkpoint manifests
        self._setup_done = True

    def _checkpoint_state(self) -> dict[str, Any]:
        self._guard.assert_finite_weights(self.model)
        for logger in self.loggers:  # what was logged up to this checkpoint survives a crash after it
            flush = getattr(logger, "flush", None)
            if flush is not None:
                flush()
        return self.state_dict()


    def _accumulating(self) -> bool:
        """True when this micro-batch's gradients are only summed (no optimizer step follows it); asked
        only when accumulating over more than one batch."""
        state = self.recipe.state
        ends_epoch = state.epoch_step + 1 >= self._batches_per_epoch
        return self._optimizer_cb.pending + 1 < self.config.accumulate_grad_batches and not ends_epoch

    @contextlib.contextmanager
    def _ema_weights(self) -> Iterator[None]:
        if self.ema is None:
            yield
            return
        with self.ema.swap(self.model):
            yield

    # -- state, save, load, resume ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a bit-exact resume needs: recipe (model, EMA, optimizer, schedule, scaler, stateful
        callbacks, progress), RNG states; plus the resolved config, a fingerprint of the training data
        (batch size, sample count, content hash, sampler seed, class names) and package versions."""
        import numpy

        self.setup()
        return {
            "format_version": CHECKPOINT_FORMAT,
            "trainforge_version": __version__,
            "versions": {"trainforge": __version__, "torch": str(torch.__version__), "numpy": numpy.__version__,
                         "python": platform.python_version()},
            "recipe": self.recipe.state_dict(),
            "rng": rng_state(),
            "config": self.config.to_dict(),
            "data": data_fingerprint(self),
        }

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Restore ``state_dict()``. A changed batch size, data set, model, precision or set of stateful
        callbacks raises ``ResumeMismatchError`` naming what changed, before anything is restored.
        ``config.load_checkpoint`` is not applied on top of a restored run (a warning says so)."""
        self._resume_pending = True  # when setup() has not run yet: skip the pretrained weights
        self.setup()
        check_compatible(self, state, strict=strict)
        try:
            self.recipe.load_state_dict(state["recipe"], strict=strict)
        except (KeyError, RuntimeError, ValueError) as error:
            reason = error.args[0] if isinstance(error, KeyError) and error.args else error  # KeyError quotes
            raise ResumeMismatchError(f"cannot restore the saved run into this trainer: {reason}") from None
        set_rng_state(state["rng"])
        if self.class_names is None:
            self.class_names = state.get("data", {}).get("class_names")
            self._class_names_source = "the resumed checkpoint"
        if self.config.load_checkpoint is not None:
            warnings.warn(
                "config.load_checkpoint was not applied: a resumed run continues from its checkpoint's weights "
                "(pretrained weights are for starting a new run)",
                UserWarning,
                stacklevel=2,
            )

    def _data_fingerprint(self) -> dict[str, Any]:
        return data_fingerprint(self)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a full checkpoint folder at ``path`` (atomic, verified; see ``trainforge.checkpoint``),
        creating missing parent folders. An existing ``path`` is replaced only when it is a trainforge
        checkpoint (or an empty folder); anything else is refused with ``CheckpointError`` naming it.
        Refuses (``NonFiniteLossError``) to save non-finite weights."""
        from .checkpoint import save_checkpoint

        self.setup()
        self._guard.assert_finite_weights(self.model)
        state = self.state_dict()
        metadata = {"global_step": self.global_step, "epoch": self.epoch, "run_id": getattr(self, "run_id", None)}
        return save_checkpoint(Path(path).expanduser(), state, metadata=metadata)

    def load(self, path: str | os.PathLike[str]) -> None:
        """Load a checkpoint folder written by ``save`` or by ``ModelCheckpoint`` (verified, code-free)."""
        from .checkpoint import load_checkpoint

        self.load_state_dict(load_checkpoint(Path(path)))

    def resume(self, path: str | os.PathLike[str]) -> Path:
        """Resume from a checkpoint folder, or from the newest intact checkpoint of a run folder (a corrupt
        newer one is skipped with a warning). Returns the checkpoint used."""
        candidate = find_checkpoint(Path(path))
        self.load(candidate)
        return candidate

    def export_weights(self, path: str | os.PathLike[str], preprocessing: Mapping[str, Any] | None = None) -> Path:
        """Write the model's weights (the EMA weights when enabled) to a safetensors file for sharing and
        deployment, atomically; returns its path. Loading needs only ``safetensors``.

        The metadata (``trainforge.export.load_safetensors`` decodes it; each value is JSON text) holds
        ``class_names``, ``preprocessing`` (``image_size`` from the config, updated with
        ``preprocessing``, e.g. ``{"mean": [...], "std": [...]}``), ``trainforge_version``,
        ``config_hash`` (of the resolved config), ``dataset_hash`` and ``ema``. Non-finite weights are
        refused (``NonFiniteLossError``).

        >>> import tempfile
        >>> from trainforge.export import load_safetensors
        >>> trainer = Trainer(nn.Linear(4, 2), TrainingConfig(output_dir=tempfile.mkdtemp(), tensorboard=False))
        >>> path = trainer.export_weights(f"{trainer.config.output_dir}/model.safetensors", {"mean": [0.5]})
        >>> tensors, metadata = load_safetensors(path)
        >>> sorted(tensors), metadata["preprocessing"], metadata["ema"]
        (['bias', 'weight'], {'mean': [0.5]}, False)
        """
        from .export import export_safetensors

        self.setup()
        metadata = export_metadata(self, preprocessing)
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)  # like save(): missing parent folders are created
        with self._ema_weights():
            self._guard.assert_finite_weights(self.model)
            return export_safetensors(self.model, path, metadata)

    def export_onnx(self, path: str | os.PathLike[str], example_input: torch.Tensor | None = None,
                    **options: Any) -> Any:
        """Export the model (the EMA weights when enabled) to ONNX at ``path``, verified with onnxruntime;
        returns ``trainforge.export.OnnxExport`` (path, input/output names, max difference). The example
        input is ``example_input`` or two samples of the training (else validation) data, after
        ``preprocess``; ``options`` are ``trainforge.export.export_onnx``'s (``opset_version``, ``atol``,
        ``overwrite``...).

        >>> import tempfile
        >>> from trainforge.data import load_digits_split
        >>> train, _ = load_digits_split()
        >>> cfg = TrainingConfig(output_dir=tempfile.mkdtemp(), tensorboard=False, checkpoint=None)
        >>> trainer = Trainer(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), cfg, train_data=train)
        >>> trainer.export_onnx(f"{cfg.output_dir}/model.onnx").output_names
        ['output']
        """
        from .export import export_onnx

        self.setup()
        if example_input is None and "input_shape" not in options:
            example_input = onnx_example_input(self)
        with self._ema_weights():
            self._guard.assert_finite_weights(self.model)
            return export_onnx(self.model, path, example_input, **options)
