"""The end of a fit on rank 0: hyper-parameters with the final metrics, the data the HTML report reads
(non-scalar metrics, classification samples captured by the final evaluation or collected by one more
pass), the report itself, and loading the best checkpoint's weights when asked."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from .data import ResumableLoader
from .engine import State
from .trainer_run import resolved_config
from .trainer_setup import check_class_names

if TYPE_CHECKING:
    from .trainer import Trainer


def finish_run(trainer: Trainer, state: State) -> None:
    """Hyper-parameters with final metrics, report data and the HTML report (rank 0). A report that
    fails only warns: the trained run is kept, and ``trainforge report RUN_DIR`` can retry."""
    if not trainer.runtime.is_main:
        return
    from .loggers import float_metrics

    final = float_metrics(state.metrics)  # host floats: the run is over, a sync costs nothing here
    for logger in trainer.loggers:
        logger.log_hyperparams(resolved_config(trainer), final)
    if not trainer.config.report:
        return
    from .report import build_report

    for logger in trainer.loggers:
        logger.close()  # flush metrics.jsonl before the report reads it
    trainer.loggers = []
    try:
        save_report_data(trainer)
        path = build_report(trainer.run_dir)
    except Exception as error:  # the report must never lose a finished run
        warnings.warn(
            f"the run report failed ({error!r}); the run folder {trainer.run_dir} is complete. "
            f"Retry with: trainforge report {trainer.run_dir}", stacklevel=2,
        )
        return
    print(f"report: {path}")


@torch.no_grad()
def save_report_data(trainer: Trainer) -> None:
    """Data for the report: the last non-scalar metric values of every loader and, for classification
    runs, the confusion matrix over the whole (first) validation set plus the images, targets and
    probabilities of its best, worst and some random samples, for the report's grids.

    One pass over the validation data, keeping only the samples that may be shown (memory does not
    grow with the data set). Under DDP rank 0 alone runs it, on the unwrapped model (no collective)
    and over the whole data set (not its shard).
    """
    from .report import save_metric_values

    if trainer.last_non_scalar_metrics:
        evaluated = "EMA weights" if trainer.ema is not None else "last weights"
        save_metric_values(trainer.run_dir, trainer.last_non_scalar_metrics, trainer.class_names, weights=evaluated)
    loader = report_loader(trainer)
    if loader is None:
        return
    model_fn, trainer._model_fn = trainer._model_fn, trainer.model  # rank 0 alone: no DDP wrapper, no collective
    was_training = trainer.model.training
    trainer.model.eval()
    try:
        with trainer._ema_weights():
            captured = valid_report_capture(trainer)
            if captured is not None:  # the final evaluation saw these weights: no second pass
                captured.save(trainer.run_dir, trainer.class_names, weights=trainer._report_weights())
            else:
                trainer.save_report_samples(loader)
    finally:
        trainer._model_fn = model_fn
        trainer.model.train(was_training)


def arm_report_capture(trainer: Trainer, default_samples: bool) -> None:
    """Before the evaluation at the end of a fit's last epoch: collect the report's classification
    samples from it (the main validation set), so ``save_report_data`` needs no second pass over
    the validation data. Only where that pass would see the same batches: rank 0 of one process,
    the default ``save_report_samples``, a report to build."""
    state = trainer.recipe.state
    if not (getattr(trainer, "_fitting", False) and state.epoch_complete and state.epoch + 1 >= state.max_epochs
            and trainer.config.report and trainer.runtime.world_size == 1
            and default_samples):
        return
    from .report import ClassificationSamples

    trainer._report_capture = ClassificationSamples(seed=trainer.config.seed)


def weights_fingerprint(trainer: Trainer) -> torch.Tensor:
    """The 2-norm of every floating tensor of the model's state (weights and buffers), on the CPU:
    any update between the final evaluation and the report (best weights loaded, a callback
    averaging weights at fit end) changes it."""
    tensors = [t.detach() for t in trainer.model.state_dict().values() if t.is_floating_point()]
    return torch.stack(torch._foreach_norm(tensors)).cpu() if tensors else torch.zeros(0)


def valid_report_capture(trainer: Trainer) -> Any:
    """The samples collected by the final evaluation, if it covered the validation data set with the
    weights the model holds now (EMA swapped in as there); else None (the report makes its pass)."""
    captured, trainer._report_captured = trainer._report_captured, None
    if captured is None:
        return None
    samples, step, fingerprint = captured
    if (step != trainer.recipe.state.global_step or not samples.classification or samples.batches == 0
            or not torch.equal(fingerprint, weights_fingerprint(trainer))):
        return None
    return samples


def report_loader(trainer: Trainer) -> Any:
    """The report's pass over the first validation set: its eval loader, or under DDP a loader over the
    whole data set (rank 0 alone, not its shard)."""
    data = trainer.valid_data
    if isinstance(data, Mapping):
        data = next(iter(data.values()), None)
    if data is None:
        return None
    if not isinstance(data, Dataset) or trainer.runtime.world_size == 1:
        return next(iter(trainer._eval_loaders.values()), None)
    cfg = trainer.config
    return ResumableLoader(data, batch_size=cfg.eval_batch_size or cfg.batch_size, shuffle=False, seed=cfg.seed,
                           num_workers=cfg.num_workers, timeout=cfg.data_timeout, pad_to_equal=False)


def report_batch(trainer: Trainer, batch: dict[str, Any]) -> tuple[Any, Any, Any] | None:
    """``(inputs, targets, probabilities)`` of a classification batch on the CPU; None otherwise."""
    return report_sample(trainer, batch, trainer.forward(batch, training=False).get("output"), strict=True)


def report_sample(
    trainer: Trainer, batch: dict[str, Any], output: Any, strict: bool = False
) -> tuple[Any, Any, Any] | None:
    """``(inputs, targets, probabilities)`` of a classification batch and its model output, on the CPU;
    None for other outputs. Class names that do not fit the output raise when ``strict``, else give
    None (the final evaluation's capture is dropped and the report's own pass says so)."""
    target = batch.get("target")
    if not (isinstance(output, torch.Tensor) and output.dim() == 2 and isinstance(target, torch.Tensor)
            and target.dim() == 1 and not target.is_floating_point()):
        return None
    if strict:
        check_class_names(trainer, int(output.shape[1]))
    elif trainer.class_names is not None and len(trainer.class_names) != output.shape[1]:
        return None
    x = batch["input"]
    images = x.detach().float().cpu() if isinstance(x, torch.Tensor) and x.dim() == 4 else None
    return images, target.cpu(), output.float().softmax(-1).cpu()


def load_best_model(trainer: Trainer) -> None:
    """``load_best_model_at_end``: the best checkpoint's weights (and EMA) into the model."""
    best = getattr(trainer, "checkpoint_callback", None)
    best = best.best_model_path if best is not None else None
    if best is None:
        warnings.warn("load_best_model_at_end: no best checkpoint saved; keeping the last weights", stacklevel=2)
        return
    from .checkpoint import load_checkpoint

    saved = load_checkpoint(best)["recipe"]
    trainer.model.load_state_dict(saved["registered"]["model"])
    trainer._best_loaded = True
    if trainer.ema is not None:
        trainer.ema.load_state_dict(saved["callbacks"]["EMA[0]"])
