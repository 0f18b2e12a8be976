"""``build_model``: a model from registered parts (backbone, neck, pooling, head) — each part reports
``out_channels`` so the next is sized for it, and a part that cannot follow another is an error naming
both. ``ComposedModel`` runs them in order (TorchOk's task.params layout)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import check_params, registry
from .backbones import build_backbone

#: What each output kind is, in words, for the errors that say why two parts do not connect.
KINDS = {
    "features": "a list of feature maps (one per stage)",
    "map": "one feature map (B, C, H, W)",
    "vector": "vectors (B, C)",
}
_FIX = {
    ("features", "vector"): "add a neck that merges stages (UNetDecoder, HRNetSegmentationNeck) and a pooling",
    ("features", "map"): "use a neck that gives one map (UNetDecoder, HRNetSegmentationNeck) or no neck",
    ("map", "vector"): "add a pooling between them (pooling_name='Pooling', 'GeM' or 'PoolingLinear')",
    ("vector", "map"): "drop the pooling: this part needs the spatial map",
    ("vector", "features"): "drop the pooling: this part needs the spatial maps",
    ("map", "features"): "let the backbone give every stage: backbone_params={'features_only': True}",
}


class ComposedModel(nn.Module):
    """``head(pooling(neck(backbone(x))))`` with the parts that are present.

    ``forward(x, target=None, return_embeddings=False)``: a head that takes the target (ArcFace,
    CosFace) gets it while training; a segmentation head's logits are resized to the input's size.
    With ``return_embeddings`` the result is ``{"embeddings": what the head gets, "prediction": the
    head's output}`` (TorchOk's keys).

    >>> model = build_model("small_cnn", {"width": 4, "depth": 2}, pooling_name="Pooling",
    ...                     head_name="ClassificationHead", num_classes=3, in_channels=1)
    >>> model(torch.zeros(2, 1, 8, 8)).shape, model.out_channels
    (torch.Size([2, 3]), 3)
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module | None = None, pooling: nn.Module | None = None,
                 head: nn.Module | None = None, names: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.backbone, self.neck, self.pooling, self.head = backbone, neck, pooling, head
        self.names = dict(names or {})
        last = next(part for part in (head, pooling, neck, backbone) if part is not None)
        self.out_channels: int = int(last.out_channels)
        self.output_kind: str = getattr(last, "output_kind", "map")
        self.takes_target: bool = bool(getattr(head, "takes_target", False))
        self.multilabel: bool = bool(getattr(head, "multilabel", False))
        self.num_classes: int | None = getattr(head if head is not None else last, "num_classes", None)

    def forward_features(self, x: torch.Tensor) -> Any:
        """What the head gets: pooled vectors (embeddings), a map or a list of maps."""
        features = self.backbone(x)
        if self.neck is not None:
            features = self.neck(features)
        if self.pooling is not None:
            features = self.pooling(features)
        return features

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None,
                return_embeddings: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
        features = self.forward_features(x)
        if self.head is None:
            prediction = features
        elif self.takes_target and target is not None and self.training:
            prediction = self.head(features, target)
        else:
            prediction = self.head(features)
        if self.head is not None and self.output_kind == "map" and prediction.shape[-2:] != x.shape[-2:]:
            prediction = F.interpolate(prediction, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if return_embeddings:
            return {"embeddings": features, "prediction": prediction}
        return prediction


def _kind(part: nn.Module, attribute: str, default: str) -> str:
    return getattr(part, attribute, default)


def _connect(previous: nn.Module, previous_name: str, part_class: Any, part_name: str) -> None:
    """Raise when ``part_class`` cannot take what ``previous`` gives."""
    gives = _kind(previous, "output_kind", "map")
    takes = getattr(part_class, "input_kind", "map")
    if gives == takes or (takes == "map" and gives == "features" and part_name in _ACCEPTS_FEATURES):
        return
    raise ConfigError(
        f"{part_name} cannot follow {previous_name}: {previous_name} gives {KINDS[gives]}, {part_name} takes "
        f"{KINDS[takes]}; {_FIX.get((gives, takes), 'choose parts that connect')}"
    )


_ACCEPTS_FEATURES = {"SegmentationHead"}  # sums an FPN's levels itself


def _build_part(kind: str, name: str, params: Mapping[str, Any] | None, in_channels: Any) -> nn.Module:
    if params is not None and not isinstance(params, Mapping):
        raise ConfigError(f"{kind[:-1]}_params of {name!r} must be a dict, got {type(params).__name__}")
    params = dict(params or {})
    if "in_channels" in params:
        raise ConfigError(f"{kind[:-1]}_params of {name!r}: in_channels is set from the part before it "
                          f"({in_channels}); remove it")
    target = registry(kind).get(name)
    check_params(target, params, f"{kind[:-1]}_params of {name!r}")
    import inspect

    required = [p.name for p in inspect.signature(target).parameters.values()
                if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and p.name not in params and p.name not in ("self", "in_channels")]
    if required:
        extra = " or build_model(num_classes=N)" if required == ["num_classes"] else ""
        raise ConfigError(f"{kind[:-1]} {name!r} needs {', '.join(required)}: set {kind[:-1]}_params="
                          f"{{{', '.join(repr(r) + ': ...' for r in required)}}}{extra}")
    return target(in_channels=in_channels, **params)


def build_model(
    backbone_name: str,
    backbone_params: Mapping[str, Any] | None = None,
    neck_name: str | None = None,
    neck_params: Mapping[str, Any] | None = None,
    pooling_name: str | None = None,
    pooling_params: Mapping[str, Any] | None = None,
    head_name: str | None = None,
    head_params: Mapping[str, Any] | None = None,
    num_classes: int | None = None,
    in_channels: int = 3,
) -> ComposedModel:
    """A model from registered parts, each sized from the one before it (TorchOk's ``task.params``).

    ``backbone_name`` is a registered backbone, any timm model or ``torchvision.<model>``; a neck makes
    the backbone give every stage. ``num_classes`` goes to a head that takes it unless ``head_params``
    sets it. ``pretrained=True`` needs local weights (``backbone_params={"weights": path}``, or timm's
    ``pretrained_cfg_overlay=dict(file=path)``): nothing downloads.

    >>> model = build_model("small_resnet", {"width": 4}, neck_name="UNetDecoder",
    ...                     head_name="SegmentationHead", num_classes=2)
    >>> model(torch.zeros(1, 3, 16, 16)).shape
    torch.Size([1, 2, 16, 16])
    >>> build_model("small_cnn", head_name="ClassificationHead", num_classes=2)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    trainforge.errors.ConfigError: ClassificationHead cannot follow small_cnn: ... add a pooling between them ...
    """
    if backbone_params is not None and not isinstance(backbone_params, Mapping):
        raise ConfigError(f"backbone_params must be a dict, got {type(backbone_params).__name__}")
    params = dict(backbone_params or {})
    channels = params.pop("in_channels", in_channels)
    if channels != in_channels and in_channels != 3:
        raise ConfigError(f"in_channels={in_channels} but backbone_params.in_channels={channels}; set it once")
    head_entry = registry("heads").get(head_name) if head_name is not None else None
    if getattr(head_entry, "is_detector", False):
        return _build_detector(head_entry, backbone_name, params, channels, neck_name, neck_params, pooling_name,
                               head_params, num_classes)
    neck_class = registry("necks").get(neck_name) if neck_name is not None else None
    if neck_class is not None and getattr(neck_class, "input_kind", "map") == "features":
        params.setdefault("features_only", True)
    if getattr(registry("backbones").get(backbone_name), "takes_num_classes", False) and num_classes is not None:
        params.setdefault("num_classes", num_classes)  # a whole classifier as the backbone (SmallCNN)
    backbone = build_backbone(backbone_name, in_channels=channels, **params)
    previous, previous_name = backbone, backbone_name
    parts: dict[str, nn.Module | None] = {"neck": None, "pooling": None, "head": None}
    for kind, name, part_params in (("necks", neck_name, neck_params), ("poolings", pooling_name, pooling_params)):
        if name is None:
            continue
        _connect(previous, previous_name, registry(kind).get(name), name)
        size = previous.out_channels_list if kind == "necks" else previous.out_channels
        previous = parts[kind[:-1]] = _build_part(kind, name, part_params, size)
        previous_name = name
    if head_name is not None:
        head_class = registry("heads").get(head_name)
        _connect(previous, previous_name, head_class, head_name)
        head_params = dict(head_params or {})
        if num_classes is not None and "num_classes" in _accepted(head_class):
            if head_params.setdefault("num_classes", num_classes) != num_classes:
                raise ConfigError(f"num_classes={num_classes} but head_params.num_classes="
                                  f"{head_params['num_classes']}; set it once")
        parts["head"] = _build_part("heads", head_name, head_params, previous.out_channels)
    names = {"backbone": backbone_name, "neck": neck_name, "pooling": pooling_name, "head": head_name}
    return ComposedModel(backbone, parts["neck"], parts["pooling"], parts["head"],
                         names={k: v for k, v in names.items() if v is not None})


def _accepted(target: Any) -> set[str]:
    import inspect

    return set(inspect.signature(target).parameters)


def _build_detector(head: Any, backbone_name: str, params: dict[str, Any], in_channels: int, neck_name: str | None,
                    neck_params: Mapping[str, Any] | None, pooling_name: str | None,
                    head_params: Mapping[str, Any] | None, num_classes: int | None) -> nn.Module:
    """A torchvision detector on the backbone: its FPN is torchvision's (``neck_name`` None or "FPN",
    whose ``out_channels`` sets the pyramid's width); no pooling."""
    if pooling_name is not None:
        raise ConfigError(f"{pooling_name} cannot follow {backbone_name} in a detector ({head.__name__}): "
                          "detectors take feature maps; remove pooling_name")
    if neck_name not in (None, "FPN"):
        raise ConfigError(f"{head.__name__} builds its own FPN; neck_name must be None or 'FPN', got {neck_name!r}")
    head_params = dict(head_params or {})
    if neck_params:
        head_params.setdefault("fpn_channels", dict(neck_params).get("out_channels", 64))
    if num_classes is not None:
        head_params.setdefault("num_classes", num_classes)
    if "num_classes" not in head_params:
        raise ConfigError(f"head {head.__name__!r} needs num_classes (background included)")
    params["features_only"] = True
    backbone = build_backbone(backbone_name, in_channels=in_channels, **params)
    return head(backbone, **head_params)
