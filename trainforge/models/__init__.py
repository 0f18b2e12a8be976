"""Models: small built-in networks and models composed from registered parts (backbones, necks,
poolings, heads) with ``build_model``. Importing this fills the parts' registries (timm and torchvision
join lazily: neither is imported until a name is looked up)."""

from . import backbones, detection, heads, necks, poolings  # noqa: F401  (registration)
from .backbones import PRETRAINED_HINT, Backbone, build_backbone, load_backbone_weights
from .compose import ComposedModel, build_model
from .detection import Detector, build_detector
from .heads import ArcFaceHead, ClassificationHead, CosFaceHead, LinearHead, MultiLabelHead, SegmentationHead
from .necks import FPN, HRNetSegmentationNeck, UNetDecoder
from .poolings import GeM, Pooling, PoolingLinear
from .small import SmallCNN

__all__ = [
    "FPN",
    "PRETRAINED_HINT",
    "ArcFaceHead",
    "Backbone",
    "ClassificationHead",
    "ComposedModel",
    "CosFaceHead",
    "Detector",
    "GeM",
    "HRNetSegmentationNeck",
    "LinearHead",
    "MultiLabelHead",
    "Pooling",
    "PoolingLinear",
    "SegmentationHead",
    "SmallCNN",
    "UNetDecoder",
    "build_backbone",
    "build_detector",
    "build_model",
    "load_backbone_weights",
]
