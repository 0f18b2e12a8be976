"""Every registered part builds and runs forward and backward in every combination that connects; the
ones that do not connect are errors naming both parts."""

from __future__ import annotations

import functools
import itertools

import pytest
import torch

from trainforge.errors import ConfigError, ModelLoadError, RegistryError
from trainforge.models import build_model
from trainforge.registry import get_registry

NECKS = [None, *get_registry("necks").list()]
POOLINGS = [None, *get_registry("poolings").list()]
DETECTORS = ["FCOSHead", "FasterRCNNHead", "RetinaNetHead"]
HEADS = [None, *(h for h in get_registry("heads").list() if h not in DETECTORS)]
OURS = ["small_cnn", "small_resnet"]
#: one representative per library family (the whole library is a lazy source)
LIBRARY = ["resnet18", "mobilenetv3_small_050", "torchvision.resnet18", "torchvision.mobilenet_v3_small"]


def _connects(neck: str | None, pooling: str | None, head: str | None) -> bool:
    gives = {"FPN": "features", "UNetDecoder": "map", "HRNetSegmentationNeck": "map", None: "map"}[neck]
    if pooling is not None:
        if gives != "map":
            return False
        gives = "vector"
    if head is None:
        return True
    if head == "SegmentationHead":
        return gives in ("map", "features")
    return gives == "vector"


def _run(model: torch.nn.Module, head: str | None, size: int = 32) -> torch.Tensor:
    x = torch.rand(2, 3, size, size)
    model.train()
    target = torch.tensor([0, 1]) if getattr(model, "takes_target", False) else None
    y = model(x, target)
    if isinstance(y, list):
        loss = sum(f.square().mean() for f in y)
    else:
        loss = y.square().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), "every parameter gets a gradient"
    return y


def test_registries_hold_the_parts():
    assert {"small_cnn", "small_resnet", "resnet18", "torchvision.resnet18"} <= set(get_registry("backbones").list())
    assert set(NECKS[1:]) == {"FPN", "UNetDecoder", "HRNetSegmentationNeck"}
    assert set(POOLINGS[1:]) == {"Pooling", "GeM", "PoolingLinear"}
    assert {"ClassificationHead", "MultiLabelHead", "LinearHead", "SegmentationHead", "ArcFaceHead",
            "CosFaceHead"} == set(HEADS[1:])
    assert set(DETECTORS) <= set(get_registry("heads").list())


@pytest.mark.parametrize("backbone", OURS)
def test_every_combination_of_our_backbones(backbone):
    built = 0
    for neck, pooling, head in itertools.product(NECKS, POOLINGS, HEADS):
        head_params = {"hidden_channels": 4} if head == "SegmentationHead" else None
        parts = dict(neck_name=neck, pooling_name=pooling, head_name=head, head_params=head_params, num_classes=3)
        build = functools.partial(build_model, backbone, {"width": 2, "depth": 3}, **parts)
        if not _connects(neck, pooling, head):
            with pytest.raises(ConfigError, match="cannot follow") as error:
                build()
            follower = pooling if neck == "FPN" and pooling is not None else head
            assert follower in str(error.value)
            continue
        model = build()
        y = _run(model, head, size=16)
        if head in ("ClassificationHead", "MultiLabelHead", "ArcFaceHead", "CosFaceHead"):
            assert y.shape == (2, 3)
        elif head == "SegmentationHead":
            assert y.shape == (2, 3, 16, 16)
        elif head == "LinearHead":
            assert y.shape == (2, 128) and torch.allclose(y.norm(dim=1), torch.ones(2), atol=1e-5)
        if not isinstance(y, list):
            assert y.shape[1] == model.out_channels
        built += 1
    assert built > 40


@pytest.mark.parametrize("backbone", LIBRARY)
def test_library_backbones_with_every_part(backbone):
    for pooling in POOLINGS[1:]:
        assert _run(build_model(backbone, pooling_name=pooling, head_name="ClassificationHead", num_classes=3),
                    "ClassificationHead").shape == (2, 3)
    for neck in NECKS[1:]:
        model = build_model(backbone, neck_name=neck, head_name="SegmentationHead", num_classes=2)
        assert _run(model, "SegmentationHead").shape == (2, 2, 32, 32)


def test_backbone_in_channels_and_features():
    model = build_model("torchvision.resnet18", {"in_channels": 1}, pooling_name="GeM")
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 512)
    bb = build_model("small_resnet", {"width": 4, "depth": 3, "features_only": True}).backbone
    assert bb.out_channels_list == [4, 8, 16] and bb.reductions == [1, 2, 4]


def test_errors_name_what_is_wrong():
    with pytest.raises(ConfigError, match=r"no local weights.*pretrained_cfg_overlay"):
        build_model("resnet18", {"pretrained": True})
    with pytest.raises(ConfigError, match="no local weights"):
        build_model("torchvision.resnet18", {"pretrained": True})
    with pytest.raises(ConfigError, match="no local weights"):
        build_model("small_cnn", {"pretrained": True})
    with pytest.raises(ConfigError, match="'widht'; did you mean 'width'"):
        build_model("small_cnn", {"widht": 4})
    with pytest.raises(RegistryError, match="did you mean 'resnet18'"):
        build_model("resnet_18")
    with pytest.raises(RegistryError, match="heads has no 'Classifier'"):
        build_model("small_cnn", pooling_name="Pooling", head_name="Classifier")
    with pytest.raises(ConfigError, match="head 'ClassificationHead' needs num_classes"):
        build_model("small_cnn", pooling_name="Pooling", head_name="ClassificationHead")
    with pytest.raises(ConfigError, match="in_channels is set from the part before it"):
        build_model("small_cnn", pooling_name="PoolingLinear", pooling_params={"in_channels": 3})
    with pytest.raises(ConfigError, match=r"num_classes=3 but head_params\.num_classes=4"):
        build_model("small_cnn", pooling_name="Pooling", head_name="ClassificationHead", head_params={"num_classes": 4},
                    num_classes=3)
    with pytest.raises(ConfigError, match="pooling_type='mean'"):
        build_model("small_cnn", pooling_name="Pooling", pooling_params={"pooling_type": "mean"})
    with pytest.raises(ConfigError, match="decoder_channels needs 2 entries"):
        build_model("small_cnn", {"width": 4}, neck_name="UNetDecoder", neck_params={"decoder_channels": [4]})


def test_weights_from_local_files(tmp_path):
    from safetensors.torch import save_file

    source = build_model("small_cnn", {"width": 4, "depth": 2})
    torch.save(source.backbone.state_dict(), tmp_path / "backbone.pt")
    save_file(source.state_dict(), str(tmp_path / "model.safetensors"))  # a composed model's keys: backbone.*
    for file in ("backbone.pt", "model.safetensors"):
        model = build_model("small_cnn", {"width": 4, "depth": 2, "weights": str(tmp_path / file)},
                            pooling_name="Pooling", head_name="ClassificationHead", num_classes=2)
        for key, value in source.backbone.state_dict().items():
            assert torch.equal(model.backbone.state_dict()[key], value), key
    with pytest.raises(ModelLoadError, match=r"do not fit.*missing keys"):
        build_model("small_cnn", {"width": 8, "depth": 3, "weights": str(tmp_path / "backbone.pt")})
    with pytest.raises(ModelLoadError, match="no weights file"):
        build_model("small_cnn", {"weights": str(tmp_path / "nothing.pt")})


def test_timm_pretrained_from_a_local_file(tmp_path):
    import timm

    reference = timm.create_model("resnet18", pretrained=False, num_classes=0)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    overlay = {"file": str(tmp_path / "resnet18.pth")}
    model = build_model("resnet18", {"pretrained": True, "pretrained_cfg_overlay": overlay}, pooling_name="Pooling")
    assert torch.equal(model.backbone.model.conv1.weight, reference.conv1.weight)
    model = build_model("resnet18", {"weights": str(tmp_path / "resnet18.pth")})
    assert torch.equal(model.backbone.model.conv1.weight, reference.conv1.weight)
    with pytest.raises(ConfigError, match="does not exist"):
        build_model("resnet18", {"pretrained": True, "pretrained_cfg_overlay": {"file": str(tmp_path / "none.pth")}})


def test_margin_heads_use_the_target_only_while_training():
    model = build_model("small_cnn", {"width": 4, "depth": 2}, pooling_name="Pooling", head_name="ArcFaceHead",
                        num_classes=3)
    x, target = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    model.train()
    trained = model(x, target)
    plain = model(x)
    picked = trained.gather(1, target[:, None]) < plain.gather(1, target[:, None])
    assert picked.all(), "the margin lowers the target logit"
    model.eval()
    assert torch.allclose(model(x, target), model(x))
    parts = model(x, return_embeddings=True)
    assert parts["embeddings"].shape == (4, 8) and parts["prediction"].shape == (4, 3)


def test_smallcnn_is_a_whole_classifier_backbone():
    model = build_model("SmallCNN", num_classes=4, in_channels=1)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 4) and model.num_classes == 4
    with pytest.raises(ConfigError, match="Pooling cannot follow SmallCNN"):
        build_model("SmallCNN", pooling_name="Pooling", num_classes=4)
    with pytest.raises(ConfigError, match="complete classifier"):
        build_model("SmallCNN", neck_name="FPN")


@pytest.mark.parametrize("head", DETECTORS)
@pytest.mark.parametrize("backbone", ["small_resnet", "resnet18"])
def test_detectors_on_our_and_timm_backbones(head, backbone):
    params = {"width": 4, "depth": 3} if backbone == "small_resnet" else {}
    model = build_model(backbone, params, neck_name="FPN", neck_params={"out_channels": 32}, head_name=head,
                        head_params={"image_size": 32}, num_classes=3)
    images = torch.rand(2, 3, 32, 32)
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 20.0, 20.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]  # an image with no object
    model.train()
    losses = model(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    detections = model(images)
    assert len(detections) == 2 and set(detections[0]) == {"boxes", "labels", "scores"}
    with pytest.raises(ConfigError, match="Pooling cannot follow"):
        build_model(backbone, params, pooling_name="Pooling", head_name=head, num_classes=3)
    with pytest.raises(ConfigError, match="needs num_classes"):
        build_model(backbone, params, head_name=head)
