"""TorchOk's (and MMCV/MMDetection's) names in an experiment file, read before the schema: what maps
exactly onto ours is rewritten and noted ("read as ..."); what does not is collected, so a stale config
stops with one error that lists every such key with its fix instead of one error per attempt."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, RegistryError

#: MMCV ``paramwise_cfg`` keys with no exact trainforge rule: key -> what to write instead.
PARAMWISE_UNSUPPORTED = {
    "dcn_offset_lr_mult": "trainforge's models have no deformable convolutions; delete it",
    "flat_decay_mult": "no equivalent; write param_groups rules by pattern, e.g. {pattern: '*.bias', "
    "weight_decay_mult: 0.0}",
}
PARAMWISE_KEYS = ("custom_keys", "bias_lr_mult", "bias_decay_mult", "norm_decay_mult", "dwconv_decay_mult",
                  "bypass_duplicate", *PARAMWISE_UNSUPPORTED)
#: MMDetection ``head_params`` keys (FCOS/RetinaNet heads built from mmdet configs).
MMDET_HEAD_KEYS = ("strides", "feat_channels", "stacked_convs", "train_cfg", "test_cfg", "transformer",
                   "positional_encoding", "bg_cls_weight", "sync_cls_avg_factor", "anchor_generator", "bbox_coder",
                   "loss_cls", "loss_bbox", "loss_centerness", "norm_on_bbox", "centerness_on_reg", "dcn_on_last_conv")
#: TorchOk metrics that are MMDetection's or pycocotools wrappers, with what our detection task logs instead.
DETECTION_METRICS = {
    "MMDetectionMAP": "MMDetection's VOC-style mAP at one iou_thr (not the COCO 101-point AP trainforge computes)",
    "CocoEvalMAP": "TorchOk's pycocotools wrapper",
}


def adapt(values: dict[str, Any], notes: list[str]) -> list[str]:
    """Rewrite TorchOk's exactly-mappable names in ``values`` (in place; each rewrite noted in ``notes``)
    and return the problems: ``"<key path>: <what>; <fix>"`` for each key or name with no exact mapping.

    >>> values = {"optimization": [{"optimizer": {"name": "SGD", "params": {"lr": 0.1},
    ...           "paramwise_cfg": {"bias_lr_mult": 2.0, "bias_decay_mult": 0.0}}}]}
    >>> notes = []
    >>> adapt(values, notes)
    []
    >>> values["optimization"][0]["param_groups"]  # doctest: +NORMALIZE_WHITESPACE
    [{'pattern': '*.bias', 'layers': 'depthwise', 'lr_mult': 2.0, 'weight_decay_mult': 1.0, 'required': False},
     {'pattern': '*.bias', 'layers': 'other', 'lr_mult': 2.0, 'weight_decay_mult': 0.0, 'required': False}]
    """
    problems: list[str] = []
    if not isinstance(values, dict):
        return problems
    for i, pair in enumerate(_list(values.get("optimization"))):
        if isinstance(pair, dict) and isinstance(pair.get("optimizer"), dict) and "paramwise_cfg" in pair["optimizer"]:
            _paramwise(pair, f"optimization[{i}]", notes, problems)
    data = values.get("data")
    if isinstance(data, dict):
        for phase, pairs in data.items():
            for j, pair in enumerate(_list(pairs)):
                if isinstance(pair, dict) and isinstance(pair.get("dataset"), dict):
                    _dataset(pair["dataset"], f"data.{phase}[{j}].dataset", phase, notes, problems)
    logger = values.get("logger")
    if isinstance(logger, dict) and logger.get("name") == "MLFlowLoggerX":
        logger["name"] = "MLflowLogger"
        notes.append("logger.name='MLFlowLoggerX' is read as 'MLflowLogger' (the metrics go to the same MLflow run)")
        params = logger.get("params")
        if isinstance(params, dict) and "artifact_location" in params:
            params.pop("artifact_location")
            notes.append("logger.params.artifact_location is ignored: checkpoints and the report stay in the run "
                         "folder (set the MLflow server's --default-artifact-root for its own artifacts)")
    if problems or _detection_shaped(values):
        _detection(values, problems)
    if problems:
        _unknown_names(values, problems)
    return problems


def read_experiment(values: dict[str, Any], source: str = "config", mode: str | None = None) -> tuple[Any, list[str]]:
    """``parse_experiment`` after ``adapt``: the typed config and the notes. When ``adapt`` found problems, the
    schema and the checks run too and the first problem they find joins the list, so the one error names
    everything there is to change."""
    from .schema import parse_experiment

    values = copy.deepcopy(values)
    notes: list[str] = []
    problems = adapt(values, notes)
    if not problems:
        return parse_experiment(values, source=source), notes
    try:
        cfg = parse_experiment(values, source=source)
        from .build import check_experiment

        mode = mode or cfg.mode
        if mode == "train" and not cfg.data.TRAIN and (cfg.data.TEST or cfg.data.PREDICT):
            mode = "test" if cfg.data.TEST else "predict"  # an inference config
        check_experiment(cfg, mode, [])
    except ConfigError as error:
        text = str(error).removeprefix(f"{source}: ")
        named = re.findall(r"'([^']+)'", text.split(" (")[0])
        if not any(f"{n}" in p for n in named for p in problems):  # not a key or name listed already
            problems.append(text)
    listed = "\n".join(f"  {n}. {p}" for n, p in enumerate(problems, 1))
    raise ConfigError(f"{source}: {len(problems)} key(s) of this TorchOk config have no trainforge equivalent "
                      f"as written; change them all:\n{listed}")


# -- the rules ------------------------------------------------------------------------------------------------
def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _multiplier(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _paramwise(pair: dict[str, Any], where: str, notes: list[str], problems: list[str]) -> None:
    """MMCV's ``DefaultOptimizerConstructor`` rules as ``param_groups`` (first match wins): custom_keys
    (substring of the parameter name, longest key first) override the rest; a bias outside norm layers gets
    ``bias_lr_mult``/``bias_decay_mult``; norm layers ``norm_decay_mult``; depth-wise convolutions
    ``dwconv_decay_mult`` (their bias still ``bias_lr_mult``: MMCV's order)."""
    cfg = pair["optimizer"].pop("paramwise_cfg")
    key = f"{where}.optimizer.paramwise_cfg"
    if cfg is None:
        return
    if not isinstance(cfg, dict):
        problems.append(f"{key}={cfg!r}: expected a mapping of MMCV's paramwise options")
        return
    if pair.get("param_groups"):
        problems.append(f"{key}: {where}.param_groups is given too; keep one (param_groups is trainforge's form)")
        return
    ok = True
    for sub in cfg:
        if sub in PARAMWISE_UNSUPPORTED:
            problems.append(f"{key}.{sub}: {PARAMWISE_UNSUPPORTED[sub]}")
            ok = False
        elif sub not in PARAMWISE_KEYS:
            problems.append(f"{key}.{sub} is not an MMCV paramwise option (options: {', '.join(PARAMWISE_KEYS)}); "
                            "trainforge's rules: param_groups: [{pattern, lr_mult, weight_decay_mult, layers}]")
            ok = False
    rules: list[dict[str, Any]] = []
    custom = cfg.get("custom_keys") or {}
    if not isinstance(custom, dict) or not all(isinstance(k, str) and k for k in custom):
        problems.append(f"{key}.custom_keys must map a part of a parameter name to {{lr_mult, decay_mult}}, got "
                        f"{custom!r}")
        return
    for name in sorted(sorted(custom), key=len, reverse=True):  # MMCV's order: the longest key first
        options = custom[name] if isinstance(custom[name], dict) else None
        extra = sorted(map(str, set(options or {"?": 0}) - {"lr_mult", "decay_mult"}))
        if extra:
            problems.append(f"{key}.custom_keys.{name}: only lr_mult and decay_mult map onto a trainforge rule, "
                            f"got {extra if options is not None else custom[name]!r}")
            ok = False
            continue
        bad = {k: v for k, v in options.items() if not _multiplier(v)}
        if bad:
            problems.append(f"{key}.custom_keys.{name}: {bad!r}: expected numbers >= 0")
            ok = False
            continue
        rules.append({"pattern": f"*{_glob_escape(str(name))}*", "lr_mult": float(options.get("lr_mult", 1.0)),
                      "weight_decay_mult": float(options.get("decay_mult", 1.0))})
    numbers = {}
    for sub in ("bias_lr_mult", "bias_decay_mult", "norm_decay_mult", "dwconv_decay_mult"):
        if sub in cfg:
            value = cfg[sub]
            if not _multiplier(value):
                problems.append(f"{key}.{sub}={value!r}: expected a number >= 0")
                ok = False
            else:
                numbers[sub] = float(value)
    bias_lr, bias_decay = numbers.get("bias_lr_mult", 1.0), numbers.get("bias_decay_mult", 1.0)
    if "norm_decay_mult" in numbers:
        rules.append({"pattern": "*", "layers": "norm", "weight_decay_mult": numbers["norm_decay_mult"]})
    if "dwconv_decay_mult" in numbers or "bias_lr_mult" in numbers or "bias_decay_mult" in numbers:
        dw_decay = numbers.get("dwconv_decay_mult", 1.0)
        rules.append({"pattern": "*.bias", "layers": "depthwise", "lr_mult": bias_lr, "weight_decay_mult": dw_decay})
        if "dwconv_decay_mult" in numbers:
            rules.append({"pattern": "*", "layers": "depthwise", "weight_decay_mult": dw_decay})
    if "bias_lr_mult" in numbers or "bias_decay_mult" in numbers:
        rules.append({"pattern": "*.bias", "layers": "other", "lr_mult": bias_lr, "weight_decay_mult": bias_decay})
    if not ok:
        return
    # a custom key that matches nothing is a typo (an error at build time); the generic rules may not apply
    rules = [{"pattern": r["pattern"], "layers": r.get("layers", "any"), "lr_mult": r.get("lr_mult", 1.0),
              "weight_decay_mult": r.get("weight_decay_mult", 1.0), "required": "layers" not in r} for r in rules]
    pair["param_groups"] = rules
    if cfg.get("bypass_duplicate") is not None:
        notes.append(f"{key}.bypass_duplicate is not needed: each parameter is in one group")
    shown = ", ".join(f"{{pattern: {r['pattern']!r}, layers: {r['layers']}, lr_mult: {r['lr_mult']:g}, "
                      f"weight_decay_mult: {r['weight_decay_mult']:g}}}" for r in rules)
    notes.append(f"{key} (MMCV's) is read as {where}.param_groups: [{shown}] (first match wins)")


_TRANSFORM_RENAMES = {"PadIfNeeded": {"value": "fill", "mask_value": "fill_mask"}}


def _dataset(dataset: dict[str, Any], where: str, phase: str, notes: list[str], problems: list[str]) -> None:
    for key in ("transform", "augment"):
        for j, item in enumerate(_list(dataset.get(key))):
            if isinstance(item, dict):
                _transform(item, f"{where}.{key}[{j}]", notes, problems)
    if dataset.get("name") != "COCODetection":
        return
    params = dataset.get("params") if isinstance(dataset.get("params"), dict) else {}
    folder = params.get("data_folder")
    if not isinstance(folder, str):
        problems.append(f"{where}: TorchOk's COCODetection needs data_folder (the COCO 2017 folder); trainforge's "
                        "CocoDetection reads {data_folder: <images>, annotation_path: <instances_*.json>}")
        return
    split = "train2017" if params.get("train", phase == "TRAIN") else "val2017"
    mapped = {"data_folder": f"{folder.rstrip('/')}/{split}",
              "annotation_path": f"{folder.rstrip('/')}/annotations/instances_{split}.json"}
    for key in ("image_format",):
        if key in params:
            mapped[key] = params[key]
    dropped = sorted(str(k) for k in params if k not in ("data_folder", "train", *mapped))
    dataset["name"], dataset["params"] = "CocoDetection", mapped
    notes.append(f"{where}: TorchOk's COCODetection is read as CocoDetection(data_folder={mapped['data_folder']!r}, "
                 f"annotation_path={mapped['annotation_path']!r}), the COCO 2017 layout (nothing downloads)"
                 + (f"; {', '.join(dropped)} ignored: images are float32, boxes float32, trainer.precision sets "
                    "mixed precision" if dropped else ""))


def _transform(item: dict[str, Any], where: str, notes: list[str], problems: list[str]) -> None:
    name, params = item.get("name"), item.get("params")
    if name == "FitResize":
        params = params if isinstance(params, dict) else {}
        height, width = params.get("max_height"), params.get("max_width")
        extra = sorted(map(str, set(params) - {"max_height", "max_width", "interpolation", "p"}))
        if not (isinstance(height, int) and isinstance(width, int)) or extra:
            problems.append(f"{where}: TorchOk's FitResize needs max_height and max_width (got {params!r}); write "
                            "name: LongestMaxSize, params: {max_size_hw: [H, W]}")
            return
        item["name"] = "LongestMaxSize"
        kept = {k: params[k] for k in ("interpolation", "p") if k in params}
        item["params"] = {"max_size_hw": [height, width], **kept}
        notes.append(f"{where}: TorchOk's FitResize(max_height={height}, max_width={width}) is read as albumentations' "
                     f"LongestMaxSize(max_size_hw=({height}, {width})): the same fit, aspect ratio kept")
    renames = _TRANSFORM_RENAMES.get(name) if isinstance(name, str) else None
    if renames and isinstance(params, dict):
        for old, new in renames.items():
            if old in params and new not in params:
                params[new] = params.pop(old)
                notes.append(f"{where}.params.{old} is read as {new} (albumentations 2's name)")


def _detection_shaped(values: dict[str, Any]) -> bool:
    task = values.get("task")
    params = task.get("params") if isinstance(task, dict) else None
    if not isinstance(params, dict):
        return False
    head = params.get("head_params")
    return params.get("head_name") == "DETRHead" or (
        isinstance(head, dict) and any(k in head for k in MMDET_HEAD_KEYS))


def _detection(values: dict[str, Any], problems: list[str]) -> None:
    """TorchOk's MMDetection-based detection (SingleStageDetectionTask with FCOSHead / DETRHead and
    MMDetection's losses and metrics): one problem per section, each with the trainforge form."""
    task = values.get("task")
    params = task.get("params") if isinstance(task, dict) else None
    if not isinstance(params, dict) or not _detection_shaped(values):
        return
    head_name = params.get("head_name")
    head = params.get("head_params") if isinstance(params.get("head_params"), dict) else {}
    mmdet = [k for k in head if k in MMDET_HEAD_KEYS]
    ours: dict[str, Any] = {}
    inputs = params.get("inputs")
    shape = inputs[0].get("shape") if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict) else None
    if isinstance(shape, list) and len(shape) == 3:
        ours["image_size"] = list(shape[1:])
    neck = params.get("neck_params") if isinstance(params.get("neck_params"), dict) else {}
    if "out_channels" in neck:
        ours["fpn_channels"] = neck["out_channels"]
    if isinstance(params.get("num_scales"), int):
        ours["levels"] = params["num_scales"]
    test_cfg = head.get("test_cfg") if isinstance(head.get("test_cfg"), dict) else {}
    nms = test_cfg.get("nms") if isinstance(test_cfg.get("nms"), dict) else {}
    for theirs, mine in (("score_thr", "score_thresh"), ("max_per_img", "detections_per_img"),
                         ("nms_pre", "topk_candidates")):
        if theirs in test_cfg:
            ours[mine] = test_cfg[theirs]
    if "iou_threshold" in nms:
        ours["nms_thresh"] = nms["iou_threshold"]
    kind = "FCOSHead" if head_name != "DETRHead" else "FCOSHead (or RetinaNetHead, FasterRCNNHead)"
    num = head.get("num_classes")
    classes = f"num_classes: {num + 1} (trainforge counts the background; MMDetection's {num} does not)" if isinstance(
        num, int) else "num_classes: <classes + 1> (the background counts)"
    what = ("MMDetection's DETR (a transformer head): neither trainforge nor torchvision has DETR"
            if head_name == "DETRHead" else f"head_params in MMDetection's form ({', '.join(mmdet)})")
    moved = ["num_scales -> head_params.levels" if "num_scales" in params else "",
             "neck_name/neck_params: the detector builds its own FPN (neck_params.out_channels -> "
             "head_params.fpn_channels)" if params.get("neck_name") else "",
             "train_cfg.assigner has no torchvision equivalent (FCOS assigns by centre sampling, "
             "center_sampling_radius; RetinaNet by IoU, fg_iou_thresh/bg_iou_thresh)" if "train_cfg" in head else ""]
    shown = ", ".join(f"{k}: {v}" for k, v in ours.items())
    problems.append(
        f"task.name={task.get('name')!r} with head_name={head_name!r}: TorchOk's MMDetection heads are not "
        f"available ({what}); trainforge's ObjectDetectionTask uses torchvision's detectors, which compute their "
        f"own losses: use task.name: ObjectDetectionTask, head_name: {kind}, head_params: {{{shown}}}, {classes}"
        + "".join(f"; {m}" for m in moved if m))
    loss = values.get("joint_loss")
    losses = [t for t in _list(loss.get("losses") if isinstance(loss, dict) else None) if isinstance(t, dict)]
    if losses:
        named = ", ".join(f"{t.get('name')} ({t.get('tag')})" for t in losses)
        mapping = losses[0].get("mapping") if isinstance(losses[0].get("mapping"), dict) else {}
        problems.append(f"joint_loss: {named} read MMDetection's internal tensors (e.g. "
                        f"{next(iter(mapping.values()), 'cls_scores')}): delete joint_loss; "
                        "the torchvision detector computes its own terms (logged as train/loss/<term>: "
                        "classification, bbox_regression, bbox_ctrness)")
    stale = [(i, m["name"]) for i, m in enumerate(_list(values.get("metrics")))
             if isinstance(m, dict) and isinstance(m.get("name"), str) and m["name"] in DETECTION_METRICS]
    if stale:
        named = ", ".join(f"metrics[{i}].name={name!r}" for i, name in stale)
        why = "; ".join(f"{name}: {DETECTION_METRICS[name]}" for name in dict.fromkeys(n for _, n in stale))
        problems.append(f"{named} ({why}): delete them; ObjectDetectionTask logs COCO mAP itself (torchmetrics' "
                        "MeanAveragePrecision): valid/detection/map, valid/detection/map_50, valid/detection/map_75, "
                        "valid/detection/map_small...")
    tags = {str(m.get("tag")) for m in _list(values.get("metrics")) if isinstance(m, dict)
            and isinstance(m.get("name"), str) and m["name"] in DETECTION_METRICS}
    for i, callback in enumerate(_list(values.get("callbacks"))):
        options = callback.get("params") if isinstance(callback, dict) else None
        monitor = options.get("monitor") if isinstance(options, dict) else None
        if isinstance(monitor, str) and monitor.split("/")[-1] in tags:
            suffix = "map_75" if "75" in monitor else "map_50" if "50" in monitor else "map"
            problems.append(f"callbacks[{i}].params.monitor={monitor!r} names a metric above: monitor "
                            f"valid/detection/{suffix}")
    # trainforge's detectors nest torchvision's model: the backbone is model.backbone.body, the FPN beside it
    for i, callback in enumerate(_list(values.get("callbacks"))):
        options = callback.get("params") if isinstance(callback, dict) else None
        entries = options.get("freeze_modules") if isinstance(options, dict) else None
        for j, entry in enumerate(_list(entries)):
            name = entry.get("module_name") if isinstance(entry, dict) else None
            if isinstance(name, str) and name.split(".")[0] in ("backbone", "neck"):
                ours = "model.backbone.body" if name.startswith("backbone") else "model.backbone.fpn"
                problems.append(f"callbacks[{i}].params.freeze_modules[{j}].module_name={name!r}: in trainforge's "
                                f"detectors (torchvision's model inside) that module is {ours!r}; write "
                                f"module_name: {ours}{name[len(name.split('.')[0]):]}")
    for i, pair in enumerate(_list(values.get("optimization"))):
        rules = pair.get("param_groups") if isinstance(pair, dict) else None
        for rule in _list(rules):
            pattern = rule.get("pattern") if isinstance(rule, dict) else None
            if pattern in ("*backbone*", "*neck*"):
                part = pattern.strip("*")
                ours = "model.backbone.body" if part == "backbone" else "model.backbone.fpn"
                problems.append(f"optimization[{i}].optimizer.paramwise_cfg.custom_keys.{part}: in trainforge's "
                                f"detectors the {part} is {ours} ('backbone' also matches the FPN there): write "
                                f"custom_keys: {{{ours[len('model.'):]}: ...}}")
    backbone = params.get("backbone_params") if isinstance(params.get("backbone_params"), dict) else {}
    if "load_relative_position_bias_table" in backbone:
        problems.append("task.params.backbone_params.load_relative_position_bias_table is TorchOk's own GCViT "
                        f"option; timm's {params.get('backbone_name')} has no such argument: delete it")


def _unknown_names(values: dict[str, Any], problems: list[str]) -> None:
    """Every other unregistered component name, so the list is complete (the rest of the config is checked
    by the schema once these are fixed)."""
    from ..registry import get_registry
    from .build import CALLBACK_ALIASES, task_class

    listed = " ".join(problems)

    def check(where: str, name: Any, fetch: Callable[[str], Any]) -> None:
        section = where.split(".")[0]
        if not isinstance(name, str) or f"{where}=" in listed or (section == "joint_loss" and "joint_loss:" in listed):
            return
        try:
            fetch(name)
        except RegistryError as error:
            problems.append(f"{where}={name!r}: {error}")

    task = values.get("task")
    if isinstance(task, dict):
        check("task.name", task.get("name"), task_class)
    loss = values.get("joint_loss")
    if isinstance(loss, dict):
        for i, term in enumerate(_list(loss.get("losses"))):
            if isinstance(term, dict):
                check(f"joint_loss.losses[{i}].name", term.get("name"), get_registry("losses").get)
    for i, metric in enumerate(_list(values.get("metrics"))):
        if isinstance(metric, dict):
            check(f"metrics[{i}].name", metric.get("name"), get_registry("metrics").get)
    for i, callback in enumerate(_list(values.get("callbacks"))):
        if isinstance(callback, dict) and isinstance(callback.get("name"), str) and (
                callback["name"] not in CALLBACK_ALIASES):
            check(f"callbacks[{i}].name", callback.get("name"), get_registry("callbacks").get)
    data = values.get("data")
    for phase, pairs in (data.items() if isinstance(data, dict) else []):
        for j, pair in enumerate(_list(pairs)):
            dataset = pair.get("dataset") if isinstance(pair, dict) else None
            if not isinstance(dataset, dict):
                continue
            check(f"data.{phase}[{j}].dataset.name", dataset.get("name"), get_registry("datasets").get)
            for key in ("transform", "augment"):
                for k, item in enumerate(_list(dataset.get(key))):
                    if isinstance(item, dict):
                        check(f"data.{phase}[{j}].dataset.{key}[{k}].name", item.get("name"),
                              get_registry("transforms").get)
