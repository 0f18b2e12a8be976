"""Backbones: feature extractors that report their ``out_channels`` — trainforge's small CNNs, any timm
model by name (a lazy registry source) and torchvision classification models (``torchvision.<name>``).
Weights come from local files only: nothing here downloads."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, ModelLoadError
from ..registry import registry

#: What ``pretrained=True`` without a local file is told, so the fix is in the message.
PRETRAINED_HINT = (
    "nothing is downloaded: point at local weights with weights='path/to/file' (a state dict, a "
    ".safetensors file, a timm or trainforge checkpoint) or, for timm, "
    "pretrained=True with pretrained_cfg_overlay=dict(file='path/to/file')"
)


class Backbone(nn.Module):
    """A feature extractor. ``forward(x)`` returns the last feature map ``(B, C, H, W)``, or with
    ``features_only`` the list of every stage's map (finest first). ``out_channels`` is the channel
    count of the last map; ``out_channels_list`` and ``reductions`` (stride per stage) describe all."""

    out_channels: int
    out_channels_list: list[int]
    reductions: list[int]
    features_only: bool = False

    @property
    def output_kind(self) -> str:
        return "features" if self.features_only else "map"


def _conv_bn(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class _Residual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(in_channels, out_channels, stride),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.skip = (
            nn.Identity() if stride == 1 and in_channels == out_channels
            else nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                               nn.BatchNorm2d(out_channels))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class _StagedBackbone(Backbone):
    """Stages in sequence; stage i halves the resolution for i >= 1 (stage 0 keeps it)."""

    def __init__(self, stages: list[nn.Module], channels: list[int], features_only: bool) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.features_only = features_only
        self.out_channels_list = list(channels)
        self.out_channels = channels[-1]
        self.reductions = [2**i for i in range(len(channels))]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features if self.features_only else x


def _widths(width: int, depth: int) -> list[int]:
    if not isinstance(depth, int) or depth < 1:
        raise ConfigError(f"backbone depth must be a positive int, got {depth!r}")
    if not isinstance(width, int) or width < 1:
        raise ConfigError(f"backbone width must be a positive int, got {width!r}")
    return [width * 2**i for i in range(depth)]


def small_cnn(
    in_channels: int = 3, width: int = 32, depth: int = 3, features_only: bool = False,
    pretrained: bool = False, weights: str | None = None,
) -> Backbone:
    """trainforge's plain CNN: ``depth`` stages of two 3x3 conv-BN-ReLU, doubling width, halving size.

    >>> small_cnn(in_channels=1, width=8, depth=2)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 16, 4, 4])
    """
    channels = _widths(width, depth)
    stages, previous = [], in_channels
    for i, out in enumerate(channels):
        stages.append(nn.Sequential(_conv_bn(previous, out, 1 if i == 0 else 2), _conv_bn(out, out)))
        previous = out
    return _finish(_StagedBackbone(stages, channels, features_only), "small_cnn", pretrained, weights)


def small_resnet(
    in_channels: int = 3, width: int = 32, depth: int = 3, blocks: int = 1, features_only: bool = False,
    pretrained: bool = False, weights: str | None = None,
) -> Backbone:
    """trainforge's small ResNet: a stem, then ``depth`` stages of ``blocks`` residual blocks.

    >>> [f.shape[1] for f in small_resnet(width=8, depth=3, features_only=True)(torch.zeros(1, 3, 16, 16))]
    [8, 16, 32]
    """
    channels = _widths(width, depth)
    stages: list[nn.Module] = []
    previous = in_channels
    for i, out in enumerate(channels):
        layers: list[nn.Module] = [_conv_bn(previous, out)] if i == 0 else [_Residual(previous, out, 2)]
        layers += [_Residual(out, out, 1) for _ in range(blocks)]
        stages.append(nn.Sequential(*layers))
        previous = out
    return _finish(_StagedBackbone(stages, channels, features_only), "small_resnet", pretrained, weights)


def small_cnn_classifier(
    in_channels: int = 3, num_classes: int = 10, width: int = 64, dropout: float = 0.1, features_only: bool = False,
    pretrained: bool = False, weights: str | None = None,
) -> nn.Module:
    """trainforge's ``SmallCNN`` classifier whole (conv blocks, pooling and a linear layer): a backbone
    that needs no pooling or head and takes ``num_classes`` itself.

    >>> small_cnn_classifier(in_channels=1, num_classes=4)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 4])
    """
    from .small import SmallCNN

    if features_only:
        raise ConfigError("backbone 'SmallCNN' is a complete classifier and gives no stages for a neck; use "
                          "backbone 'small_cnn' or 'small_resnet' with a neck")
    model = SmallCNN(in_channels=in_channels, num_classes=num_classes, width=width, dropout=dropout)
    model.out_channels, model.output_kind = num_classes, "vector"
    model.out_channels_list, model.reductions, model.num_classes = [num_classes], [], num_classes
    return _finish(model, "SmallCNN", pretrained, weights)


small_cnn_classifier.takes_num_classes = True  # build_model passes num_classes to it
registry("backbones").register(small_cnn, help="trainforge's plain CNN (conv-BN-ReLU stages)")
registry("backbones").register(small_cnn_classifier, name="SmallCNN",
                               help="trainforge's SmallCNN classifier whole (needs no pooling or head)")
registry("backbones").register(small_resnet, help="trainforge's small ResNet (residual stages)")


# -- pretrained weights from local files --------------------------------------------------------------
def _finish(backbone: nn.Module, name: str, pretrained: bool, weights: str | os.PathLike[str] | None) -> Any:
    if weights is not None:
        load_backbone_weights(backbone, weights, name)
    elif pretrained:
        raise ConfigError(f"backbone {name!r}: pretrained=True but no local weights given; {PRETRAINED_HINT}")
    return backbone


def load_backbone_weights(module: nn.Module, path: str | os.PathLike[str], name: str) -> None:
    """Load a local weights file into a backbone, ignoring keys the backbone has no use for (a
    classifier's ``fc.*``); a missing backbone key or a shape mismatch is a ``ModelLoadError``."""
    from ..pretrained import read_weights

    saved = read_weights(path)
    expected = module.state_dict()
    for prefix in ("backbone.", "model.", "module."):  # a composed model's or a wrapper's checkpoint
        if not set(expected) & set(saved) and any(k.startswith(prefix) for k in saved):
            saved = {k[len(prefix):]: v for k, v in saved.items() if k.startswith(prefix)}
    missing = [k for k in expected if k not in saved]
    shapes = [f"{k}: file {tuple(saved[k].shape)}, model {tuple(v.shape)}"
              for k, v in expected.items() if k in saved and saved[k].shape != v.shape]
    if missing or shapes:
        detail = (f"{len(missing)} missing keys, e.g. {missing[:3]}" if missing else "") + (
            f"; shape mismatch: {shapes[:3]}" if shapes else "")
        raise ModelLoadError(
            f"backbone {name!r}: weights {os.fspath(path)} do not fit: {detail}. Use weights saved from the "
            "same backbone name and parameters (in_channels, width, depth...)"
        )
    module.load_state_dict({k: saved[k] for k in expected})


# -- timm -------------------------------------------------------------------------------------------
class TimmBackbone(Backbone):
    """A timm model as a backbone (``features_only`` feature maps); ``pretrained=True`` loads only from
    ``pretrained_cfg_overlay=dict(file=...)``, ``weights=`` loads any local weights file afterwards."""

    def __init__(
        self, model_name: str, in_channels: int = 3, features_only: bool = False, pretrained: bool = False,
        weights: str | None = None, out_indices: tuple[int, ...] | None = None, **timm_params: Any,
    ) -> None:
        super().__init__()
        import timm

        overlay = timm_params.get("pretrained_cfg_overlay") or {}
        if pretrained and not overlay.get("file") and weights is None:
            raise ConfigError(f"backbone {model_name!r}: pretrained=True but no local weights given; {PRETRAINED_HINT}")
        if pretrained and overlay.get("file") and not os.path.isfile(overlay["file"]):
            raise ConfigError(f"backbone {model_name!r}: pretrained_cfg_overlay file {overlay['file']!r} does not "
                              "exist; give the path of a local weights file")
        indices = out_indices if out_indices is not None else (None if features_only else (-1,))
        extra = {"out_indices": indices} if indices is not None else {}
        try:
            self.model = timm.create_model(
                model_name, pretrained=bool(pretrained and overlay.get("file")), features_only=True,
                in_chans=in_channels, **extra, **timm_params,
            )
        except TypeError as error:  # an unknown keyword reaches the model class's __init__
            raise ConfigError(f"backbone_params of timm model {model_name!r}: {error}") from None
        self.features_only = features_only
        self.out_channels_list = list(self.model.feature_info.channels())
        self.reductions = list(self.model.feature_info.reduction())
        self.out_channels = self.out_channels_list[-1]
        if weights is not None:
            load_backbone_weights(self.model, weights, model_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        features = self.model(x)
        return list(features) if self.features_only else features[-1]


def _timm_names() -> list[str]:
    try:
        import timm
    except ImportError:
        return []
    return timm.list_models()


def _timm_get(name: str) -> Callable[..., Backbone]:
    try:
        import timm
    except ImportError:
        raise KeyError(name) from None
    if not timm.is_model(name):
        raise KeyError(name)

    def build(**params: Any) -> Backbone:
        return TimmBackbone(name, **params)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"timm model {name} as a backbone (features_only feature maps)"
    return build


registry("backbones").add_source(_timm_names, _timm_get, help=lambda name: f"timm model {name}")


# -- torchvision ------------------------------------------------------------------------------------
TORCHVISION_PREFIX = "torchvision."


class TorchvisionBackbone(Backbone):
    """A torchvision classification model's feature layers as a backbone: ResNet-like models by their
    ``layer1..4``, others by their ``features`` sequence, split where the resolution halves."""

    def __init__(
        self, model_name: str, in_channels: int = 3, features_only: bool = False, pretrained: bool = False,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        import torchvision

        if pretrained and weights is None:
            raise ConfigError(f"backbone {TORCHVISION_PREFIX + model_name!r}: pretrained=True but no local "
                              f"weights given; {PRETRAINED_HINT}")
        full = torchvision.models.get_model(model_name, weights=None)
        if weights is not None:
            load_backbone_weights(full, weights, TORCHVISION_PREFIX + model_name)
        self.stages = nn.ModuleList(_torchvision_stages(full, model_name))
        if in_channels != 3:
            _replace_first_conv(self.stages, in_channels)
        self.features_only = features_only
        with torch.no_grad():
            probe = self._run(torch.zeros(1, in_channels, 64, 64), eval_mode=True)
        self.out_channels_list = [int(f.shape[1]) for f in probe]
        self.reductions = [64 // int(f.shape[-1]) for f in probe]
        self.out_channels = self.out_channels_list[-1]

    def _run(self, x: torch.Tensor, eval_mode: bool = False) -> list[torch.Tensor]:
        was = self.training
        if eval_mode:
            self.eval()
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        self.train(was)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        features = self._run(x)
        return features if self.features_only else features[-1]


def _torchvision_stages(model: nn.Module, name: str) -> list[nn.Module]:
    children = dict(model.named_children())
    if all(f"layer{i}" in children for i in range(1, 5)):  # resnet, resnext, wide_resnet, regnet-like
        stem = nn.Sequential(*(children[k] for k in ("conv1", "bn1", "relu", "maxpool") if k in children))
        return [nn.Sequential(stem, children["layer1"]), children["layer2"], children["layer3"], children["layer4"]]
    features = children.get("features")
    if not isinstance(features, nn.Sequential):
        raise ConfigError(
            f"backbone {TORCHVISION_PREFIX + name!r}: torchvision model has neither layer1..4 nor a features "
            "sequence; use a timm model of the same family instead"
        )
    stages, current, size = [], [], 64
    x = torch.zeros(1, 3, 64, 64)
    was = features.training
    features.eval()
    with torch.no_grad():
        for layer in features:
            y = layer(x)
            if y.shape[-1] < size and current:  # the resolution halves here: close the stage before it
                stages.append(nn.Sequential(*current))
                current = []
            current.append(layer)
            size, x = y.shape[-1], y
    features.train(was)
    stages.append(nn.Sequential(*current))
    return stages


def _replace_first_conv(stages: nn.ModuleList, in_channels: int) -> None:
    for parent in stages.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(parent, child_name, nn.Conv2d(
                    in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                    bias=child.bias is not None))
                return


def _torchvision_names() -> list[str]:
    try:
        import torchvision
    except ImportError:
        return []
    return [TORCHVISION_PREFIX + n for n in torchvision.models.list_models(module=torchvision.models)]


def _torchvision_get(name: str) -> Callable[..., Backbone]:
    if not name.startswith(TORCHVISION_PREFIX) or name not in _torchvision_names():
        raise KeyError(name)
    model_name = name[len(TORCHVISION_PREFIX):]

    def build(**params: Any) -> Backbone:
        return TorchvisionBackbone(model_name, **params)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"torchvision model {model_name} as a backbone"
    return build


registry("backbones").add_source(
    _torchvision_names, _torchvision_get, help=lambda name: f"torchvision model {name[len(TORCHVISION_PREFIX):]}"
)


def build_backbone(name: str, in_channels: int = 3, features_only: bool = False, **params: Any) -> Backbone:
    """The backbone registered (or provided by timm / torchvision) as ``name``.

    >>> build_backbone("small_cnn", in_channels=1, width=4, depth=2).out_channels
    8
    """
    from ..registry import check_params

    factory = registry("backbones").get(name)
    check_params(factory, params, f"backbone_params of {name!r}")
    backbone = factory(in_channels=in_channels, features_only=features_only, **params)
    if not isinstance(backbone, nn.Module) or not hasattr(backbone, "out_channels"):
        raise ConfigError(f"backbone {name!r} built {type(backbone).__name__}, which reports no out_channels")
    return backbone
