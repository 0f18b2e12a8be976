"""``ONNXTask`` (TorchOk's name): test and predict with an ONNX file run by onnxruntime instead of a torch
model — the same data, metrics and run folder as any task; nothing is trained (no optimizer, no TRAIN data)."""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import registry
from ..trainer import Trainer

logger = logging.getLogger(__name__)

#: The execution providers a config gets when it names none: CUDA where onnxruntime has it, else the CPU.
DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
#: ONNX tensor types -> numpy dtypes (what a batch tensor is cast to before onnxruntime reads it).
_NUMPY_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64", "tensor(int8)": "int8",
    "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}  # fmt: skip
#: TorchOk's data sets name the image ``image``; trainforge's name it ``input``.
_BATCH_ALIASES = {"image": "input"}


def _is_placeholder(value: Any) -> bool:
    """TorchOk's configs mark values to fill in as ``<name>`` (``'<onnx_path>'``, ``<onnx_output>``)."""
    return isinstance(value, str) and value.startswith("<") and value.endswith(">")


def resolve_providers(providers: Any, where: str = "providers", warn: bool = True) -> list[Any]:
    """The providers onnxruntime gets: the requested ones it has, in order. A name onnxruntime does not
    know is an error (a typo); one it knows but this installation lacks (CUDA on a CPU machine) is dropped
    with a warning, and the CPU provider is used when none is left — so one config runs on a GPU server and
    on a laptop, and the log says which ran. ``None``: CUDA when available, else the CPU."""
    from ..export.onnx import require_onnx

    _, ort = require_onnx()
    defaulted = providers is None
    if defaulted:
        providers = list(DEFAULT_PROVIDERS)
    if isinstance(providers, (str, bytes)) or not isinstance(providers, Sequence):
        raise ConfigError(f"{where} must be a list such as ['CPUExecutionProvider'], got {providers!r}")
    known, available = ort.get_all_providers(), ort.get_available_providers()
    chosen: list[Any] = []
    for i, entry in enumerate(providers):
        name = entry[0] if isinstance(entry, (list, tuple)) and len(entry) == 2 else entry
        if not isinstance(name, str) or (isinstance(entry, (list, tuple)) and not isinstance(entry[1], Mapping)):
            raise ConfigError(f"{where}[{i}]={entry!r}: expected a provider name or [name, {{options}}]")
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(known)})"
            raise ConfigError(f"{where}[{i}]={name!r} is not an onnxruntime execution provider{hint}")
        if name in available:
            chosen.append(tuple(entry) if isinstance(entry, (list, tuple)) else name)
        elif warn and not defaulted:
            logger.warning("%s[%d]=%r is not available in this onnxruntime (available: %s); skipped", where, i, name,
                           ", ".join(available))
    if not chosen:
        if warn:
            logger.warning("%s: none of %s is available; running on CPUExecutionProvider", where, list(providers))
        chosen = ["CPUExecutionProvider"]
    return chosen


class OnnxModel(nn.Module):
    """An ONNX file run by onnxruntime, callable like a module: ``model(x)`` feeds its single input,
    ``model(feeds={name: tensor})`` several; returns ``{output name: tensor}`` on the inputs' device, plus
    ``"output"`` (the first output) when no output has that name. Tensors go through host memory
    (onnxruntime reads numpy arrays): one copy each way per batch.

    >>> import tempfile
    >>> from trainforge.export import export_onnx
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = export_onnx(torch.nn.Linear(3, 2), f"{tmp}/m.onnx", input_shape=(1, 1, 3)).path
    ...     model = OnnxModel(path, ["CPUExecutionProvider"])
    ...     model.input_names, model.output_names, model(torch.ones(4, 1, 1, 3))["output"].shape
    (['input'], ['output'], torch.Size([4, 1, 1, 2]))
    """

    def __init__(self, path: Any, providers: Any = None) -> None:
        super().__init__()
        from ..export.onnx import load_onnx_model, require_onnx

        _, ort = require_onnx()
        load_onnx_model(path)  # a missing or broken file fails here, naming it
        self.path = str(path)
        self.providers = resolve_providers(providers)
        self.session = ort.InferenceSession(self.path, providers=self.providers)
        inputs = self.session.get_inputs()
        self.input_names = [i.name for i in inputs]
        self.input_dtypes = {i.name: _NUMPY_TYPES.get(i.type) for i in inputs}
        self.output_names = [o.name for o in self.session.get_outputs()]
        logger.info("ONNX model %s: inputs %s, outputs %s, providers %s", self.path, self.input_names,
                    self.output_names, self.session.get_providers())

    def forward(self, x: torch.Tensor | None = None, feeds: Mapping[str, torch.Tensor] | None = None) -> dict:
        if feeds is None:
            if len(self.input_names) != 1:
                raise ConfigError(f"{self.path} takes {len(self.input_names)} inputs {self.input_names}: map each to "
                                  "a batch key with keys_mapping_onnx2dataset")
            feeds = {self.input_names[0]: x}
        device = next(iter(feeds.values())).device
        arrays = {name: self._array(name, value) for name, value in feeds.items()}
        try:
            values = self.session.run(None, arrays)
        except Exception as error:  # onnxruntime's own InvalidArgument / Fail: shapes, types, a broken graph
            given = ", ".join(f"{n} {tuple(a.shape)} {a.dtype}" for n, a in arrays.items())
            wanted = ", ".join(f"{i.name} {i.shape} {i.type}" for i in self.session.get_inputs())
            raise ConfigError(f"onnxruntime could not run {self.path} on {given} (the model takes {wanted}): "
                              f"{str(error).strip()[:300]}. Check the data's transform (size, channels) and "
                              "batch size against the model's inputs") from None
        outputs = {name: torch.from_numpy(value).to(device) for name, value in zip(self.output_names, values)}
        outputs.setdefault("output", outputs[self.output_names[0]])
        return outputs

    def _array(self, name: str, value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            raise ConfigError(f"ONNX input {name!r} of {self.path} gets {type(value).__name__}; expected a tensor")
        array = value.detach().cpu().numpy()  # host copy: onnxruntime reads host memory
        dtype = self.input_dtypes.get(name)
        return array.astype(dtype, copy=False) if dtype is not None else array


class ONNXTask(Trainer):
    """Evaluate (``trainforge test``) or predict with an ONNX file: TorchOk's ``ONNXTask``.

    - ``path_to_onnx``: the file (``trainforge export RUN --onnx FILE`` writes one).
    - ``providers``: onnxruntime execution providers in order of preference (TorchOk:
      ``['CUDAExecutionProvider']``); one this installation lacks is skipped with a warning and the CPU
      is used when none is left (see ``resolve_providers``).
    - ``keys_mapping_onnx2dataset``: ONNX input name -> batch key (TorchOk's ``image`` is read as
      trainforge's ``input``). Without it, a single-input model gets ``batch["input"]``. A single-entry
      mapping naming an input the model does not have (TorchOk's ``input.1``) feeds the model's one
      input, with a warning.

    Step outputs are the model's outputs by name, so metrics map ``preds`` to an output name (TorchOk's
    ``preds: <onnx_output>``); ``"output"`` is the first output. No loss is computed unless a criterion
    (``joint_loss``) is given, so results hold only the metrics.

    >>> import tempfile
    >>> from trainforge.data import load_digits_split
    >>> from trainforge.export import export_onnx
    >>> _, valid = load_digits_split()
    >>> tmp = tempfile.mkdtemp()
    >>> path = export_onnx(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), f"{tmp}/m.onnx",
    ...                    input_shape=(1, 8, 8)).path
    >>> task = ONNXTask(path_to_onnx=path, providers=["CPUExecutionProvider"],
    ...                 config={"output_dir": f"{tmp}/run", "tensorboard": False, "checkpoint": None})
    >>> sorted(task.evaluate(valid, phase="TEST"))
    ['test/accuracy']
    """

    def __init__(self, model: nn.Module | None = None, *args: Any, path_to_onnx: Any = None, providers: Any = None,
                 keys_mapping_onnx2dataset: Mapping[str, str] | None = None, **trainer_args: Any) -> None:
        if model is None:
            if path_to_onnx is None:
                raise ConfigError("ONNXTask needs path_to_onnx: the ONNX file to run")
            model = OnnxModel(path_to_onnx, providers)
        if not isinstance(model, OnnxModel):
            raise TypeError(f"ONNXTask runs an OnnxModel (built from path_to_onnx), got {type(model).__name__}")
        self._loss_given = trainer_args.get("criterion") is not None
        super().__init__(model, *args, **trainer_args)
        self.feeds = feed_keys(model.input_names, keys_mapping_onnx2dataset)

    # -- config hooks (trainforge.config.build) ---------------------------------------------------------
    @classmethod
    def model_from_params(cls, params: Mapping[str, Any]) -> OnnxModel:
        """The model of ``task.params``: the ONNX file run by onnxruntime."""
        return OnnxModel(params.get("path_to_onnx"), params.get("providers"))

    @classmethod
    def num_classes_from_params(cls, params: Mapping[str, Any]) -> int | None:
        """The class count of the file's first output, ``(N, C)`` or ``(N, C, H, W)`` with a fixed ``C``,
        so metrics such as Accuracy need no ``num_classes`` (TorchOk's onnx_infer gives none)."""
        from ..export.onnx import load_onnx_model

        try:
            proto = load_onnx_model(params.get("path_to_onnx"))
        except (ConfigError, TypeError):
            return None
        dims = proto.graph.output[0].type.tensor_type.shape.dim if proto.graph.output else []
        if len(dims) in (2, 4) and dims[1].HasField("dim_value") and dims[1].dim_value > 1:
            return int(dims[1].dim_value)
        return None

    @classmethod
    def config_problems(cls, cfg: Any) -> list[str]:
        """Every problem of an ONNX inference config, each naming its key and the fix (checked before any
        data is read): the file, model keys that do not apply, placeholders left in metric mappings."""
        from ..config.build import MODEL_KEYS

        params = cfg.task.params
        problems = [f"task.params.{key} does not apply: ONNXTask runs the model in path_to_onnx; remove it"
                    for key in MODEL_KEYS if key in params]
        inputs: list[str] | None = None
        outputs: list[str] | None = None
        path = params.get("path_to_onnx")
        if path is None or _is_placeholder(path):
            shown = " is required" if path is None else f"={path!r} is a placeholder"
            problems.append(f"task.params.path_to_onnx{shown}: override it with your ONNX file, e.g. "
                            "task.params.path_to_onnx=model.onnx (trainforge export RUN_DIR --onnx model.onnx "
                            "writes one)")
        else:
            from ..export.onnx import onnx_io_names

            try:
                inputs, outputs = onnx_io_names(path)
            except ConfigError as error:
                problems.append(f"task.params.path_to_onnx: {error}")
        try:
            resolve_providers(params.get("providers"), "task.params.providers", warn=False)
        except ConfigError as error:
            problems.append(str(error))
        mapping = params.get("keys_mapping_onnx2dataset")
        if inputs is not None:
            try:
                feed_keys(inputs, mapping, warn=False)
            except ConfigError as error:
                problems.append(str(error))
        named = f" (this model's outputs: {', '.join(outputs)})" if outputs else ""
        for i, metric in enumerate(cfg.metrics):
            for arg, key in (metric.mapping or {}).items():
                if _is_placeholder(key):
                    problems.append(f"metrics[{i}].mapping.{arg}={key!r} is a placeholder: set it to the ONNX output "
                                    f"name{named}, e.g. metrics.{i}.mapping.{arg}={(outputs or ['output'])[0]}")
        return problems

    def fit(self, resume_from: Any = None) -> Any:
        """Refused: an ONNX file is not trained."""
        raise ConfigError("ONNXTask only tests and predicts (trainforge test|predict): train the torch model "
                          "(e.g. ClassificationTask) and export it with trainforge export RUN_DIR --onnx FILE")

    # -- stages ---------------------------------------------------------------------------------------
    def run_model(self, x: Any, batch: dict[str, Any]) -> Any:
        """The ONNX model on the batch keys ``keys_mapping_onnx2dataset`` names."""
        return self.model(feeds={name: _batch_value(batch, key) for name, key in self.feeds.items()})

    def compute_loss(self, outputs: dict[str, Any], batch: dict[str, Any]) -> torch.Tensor:
        if self._loss_given:
            return super().compute_loss(outputs, batch)
        return torch.full((), math.nan)  # no loss for an ONNX model; evaluate() leaves it out of the results

    def evaluate(self, data: Any = None, phase: str = "VALID") -> dict[str, float]:
        results = super().evaluate(data, phase)
        if self._loss_given:
            return results
        return {k: v for k, v in results.items() if not (k.split("/", 1)[-1] == "loss" and math.isnan(v))}


def feed_keys(inputs: Sequence[str], mapping: Mapping[str, str] | None, warn: bool = True) -> dict[str, str]:
    """ONNX input name -> batch key, from TorchOk's ``keys_mapping_onnx2dataset``; ``ConfigError`` naming the
    key when the mapping and the model's inputs disagree."""
    where = "task.params.keys_mapping_onnx2dataset"
    if mapping is None:
        if len(inputs) != 1:
            raise ConfigError(f"{where} is required: the model takes {len(inputs)} inputs {list(inputs)}; map each "
                              "to a batch key, e.g. {" + ", ".join(f"{n}: input" for n in inputs) + "}")
        return {inputs[0]: "input"}
    if not isinstance(mapping, Mapping) or not all(isinstance(v, str) for v in mapping.values()):
        raise ConfigError(f"{where} must map ONNX input names to batch keys, got {mapping!r}")
    unknown = [name for name in mapping if name not in inputs]
    if unknown and len(inputs) == 1 and len(mapping) == 1:
        if warn:
            logger.warning("%s names ONNX input %r, but the model's only input is %r: feeding it batch[%r]", where,
                           unknown[0], inputs[0], next(iter(mapping.values())))
        return {inputs[0]: next(iter(mapping.values()))}
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: the model has no input {unknown[0]!r}; its inputs: {list(inputs)}")
    missing = [name for name in inputs if name not in mapping]
    if missing:
        raise ConfigError(f"{where} does not map the model's input {missing[0]!r}; add {missing[0]}: <batch key>")
    return dict(mapping)


def _batch_value(batch: Mapping[str, Any], key: str) -> Any:
    if key in batch:
        return batch[key]
    alias = _BATCH_ALIASES.get(key)
    if alias is not None and alias in batch:
        return batch[alias]
    raise ConfigError(f"keys_mapping_onnx2dataset reads batch[{key!r}], but batches have {sorted(batch)}; map the "
                      "ONNX input to one of them (the image is 'input')")


registry("tasks").register(ONNXTask, help="test / predict with an ONNX file run by onnxruntime (TorchOk's ONNXTask)")
