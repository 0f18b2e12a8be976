"""Models: small built-in networks and models composed from registered parts (backbones, necks,
poolings, heads) with ``build_model``. Importing this fills the parts' registries (timm and torchvision
join lazily: neither is imported until a name is looked up)."""

from . import backbones, heads, necks, poolings  # noqa: F401  (registration)
from .backbones import PRETRAINED_HINT, Backbone, build_backbone, load_backbone_weights
from .compose import ComposedModel, build_model
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
    "build_model",
    "load_backbone_weights",
]
