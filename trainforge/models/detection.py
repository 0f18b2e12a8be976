"""Detectors: torchvision's Faster R-CNN, RetinaNet and FCOS on any of our backbones (``features_only``
stages + torchvision's FPN), randomly initialised or from local weights. They are heads of the
``heads`` registry (``FasterRCNNHead``, ``RetinaNetHead``, ``FCOSHead``), so ``build_model`` builds them
from TorchOk-style ``task.params``; train mode returns the loss dict, eval mode the detections."""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import registry

DETECTORS = ("fasterrcnn", "retinanet", "fcos")


class _FeaturePyramid(nn.Module):
    """A ``features_only`` backbone's last ``levels`` stages through torchvision's FPN: an ordered dict
    of maps with one ``out_channels``, what torchvision's detectors take as a backbone."""

    def __init__(self, backbone: nn.Module, out_channels: int, levels: int) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork

        channels = list(backbone.out_channels_list)
        self.indices = list(range(len(channels)))[-levels:]
        self.body = backbone
        self.fpn = FeaturePyramidNetwork([channels[i] for i in self.indices], out_channels)
        self.out_channels = out_channels
        self.reductions = [backbone.reductions[i] for i in self.indices]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.body(x)
        return self.fpn(OrderedDict((str(n), features[i]) for n, i in enumerate(self.indices)))


class Detector(nn.Module):
    """A torchvision detector with the composed-model attributes (``num_classes``, ``kind``).

    ``forward(images, targets=None)``: in train mode the loss dict, in eval mode a list of
    ``{"boxes", "labels", "scores"}`` per image. ``num_classes`` counts the background (label 0).
    """

    output_kind = "detections"

    def __init__(self, model: nn.Module, kind: str, num_classes: int) -> None:
        super().__init__()
        self.model, self.kind, self.num_classes = model, kind, num_classes
        self.out_channels = num_classes
        self.takes_target = False

    def forward(self, images: Any, targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        return self.model(list(images), targets) if self.training else self.model(list(images))


def build_detector(
    kind: str, backbone: nn.Module, num_classes: int, image_size: int | tuple[int, int] = 64,
    fpn_channels: int = 64, levels: int = 2, anchor_sizes: tuple[int, ...] | None = None,
    weights: str | os.PathLike[str] | None = None, **detector_params: Any,
) -> Detector:
    """A ``kind`` detector (``fasterrcnn``, ``retinanet``, ``fcos``) on a ``features_only`` backbone.

    Images are not resized (``min_size``/``max_size`` = ``image_size``); anchors default to four times
    each level's stride. ``weights`` loads a local file into the whole detector (nothing downloads).
    """
    from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    if kind not in DETECTORS:
        raise ConfigError(f"detector {kind!r}; expected one of {', '.join(DETECTORS)}")
    if not getattr(backbone, "features_only", False):
        raise ConfigError("a detector needs a backbone that gives every stage (features_only=True)")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"a detector's num_classes counts the background (label 0): need >= 2, got {num_classes!r}")
    if kind != "fasterrcnn" and fpn_channels % 32:
        raise ConfigError(f"{kind}: fpn_channels must be a multiple of 32 (its head uses GroupNorm(32)), "
                          f"got {fpn_channels}")
    pyramid = _FeaturePyramid(backbone, fpn_channels, min(levels, len(backbone.out_channels_list)))
    sizes = anchor_sizes or tuple(4 * r for r in pyramid.reductions)
    if len(sizes) != len(pyramid.reductions):
        raise ConfigError(f"anchor_sizes needs one size per level ({len(pyramid.reductions)}), got {anchor_sizes!r}")
    low, high = (image_size, image_size) if isinstance(image_size, int) else (min(image_size), max(image_size))
    common = {"min_size": low, "max_size": high, **detector_params}
    if kind == "fcos":
        anchors = AnchorGenerator(tuple((s,) for s in sizes), ((1.0,),) * len(sizes))
        model = FCOS(pyramid, num_classes, anchor_generator=anchors, **common)
    else:
        anchors = AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * len(sizes))
        if kind == "retinanet":
            model = RetinaNet(pyramid, num_classes, anchor_generator=anchors, **common)
        else:
            from torchvision.ops import MultiScaleRoIAlign

            pool = MultiScaleRoIAlign([str(i) for i in range(len(sizes))], output_size=7, sampling_ratio=2)
            model = FasterRCNN(pyramid, num_classes, rpn_anchor_generator=anchors, box_roi_pool=pool, **common)
    detector = Detector(model, kind, num_classes)
    if weights is not None:
        from ..pretrained import load_pretrained

        load_pretrained(detector, weights)
    return detector


class _DetectorHead:
    """Registry entry: ``build_model(..., head_name="FCOSHead")`` builds the whole detector."""

    is_detector = True
    input_kind = "features"

    def __init__(self, kind: str, doc: str) -> None:
        self.kind, self.__doc__ = kind, doc
        self.__name__ = self.__qualname__ = {"fasterrcnn": "FasterRCNNHead", "retinanet": "RetinaNetHead",
                                             "fcos": "FCOSHead"}[kind]

    def __call__(self, backbone: nn.Module, num_classes: int, **params: Any) -> Detector:
        return build_detector(self.kind, backbone, num_classes, **params)


for _kind, _doc in (("fasterrcnn", "torchvision Faster R-CNN (two-stage) on the backbone's FPN"),
                    ("retinanet", "torchvision RetinaNet (one-stage, focal loss) on the backbone's FPN"),
                    ("fcos", "torchvision FCOS (anchor-free, one-stage) on the backbone's FPN")):
    _head = _DetectorHead(_kind, _doc)
    registry("heads").register(_head, name=_head.__name__, help=_doc)
