"""What ``trainforge.data`` puts into the registries: its data sets and samplers by name, albumentations'
transforms and kornia's augmentations as lazy sources (neither library is imported until asked)."""

from __future__ import annotations

from typing import Any

from ..registry import registry
from . import datasets, detection, retrieval, samplers, segmentation, standard, torchok_examples


def _is_kornia_augmentation(obj: Any) -> bool:
    import torch

    return isinstance(obj, type) and issubclass(obj, torch.nn.Module) and "Base" not in obj.__name__


def _kornia_names() -> list[str]:
    import kornia.augmentation as K

    return [n for n in dir(K) if not n.startswith("_") and _is_kornia_augmentation(getattr(K, n))]


def _kornia_get(name: str) -> Any:
    import kornia.augmentation as K

    found = getattr(K, name, None) if not name.startswith("_") else None
    if not _is_kornia_augmentation(found):
        raise KeyError(name)
    return found


def _batch_augment(augmentations: list[Any], targets: str | None = None, same_on_batch: bool = False) -> Any:
    """kornia augmentations applied to a batch on its device (with masks/boxes)."""
    from .augment import BatchAugment

    return BatchAugment(augmentations, targets=targets, same_on_batch=same_on_batch)


def register_all() -> None:
    """Fill the data registries (called once, by ``trainforge.data``'s import)."""
    from .transforms import get_albumentation, list_albumentations

    found = registry("datasets")
    if "ImageFolder" in found:  # imported a second time under another module name (doctest collection)
        return
    found.register(datasets.ImageFolder, help="image folder, one sub-folder per class (torchvision's layout)")
    found.register(datasets.ImageClassificationDataset,
                   help="images listed in a CSV with labels (TorchOk's data_folder + annotation_path)")
    found.register(segmentation.ImageSegmentationDataset,
                   help="image + mask pairs from a CSV or two folders (palette or gray masks)")
    found.register(detection.ImageDetectionDataset, help="boxes and labels per image from a CSV (COCO xywh boxes)")
    found.register(detection.CocoDetection, help="boxes and labels per image from a COCO JSON file")
    found.register(retrieval.RetrievalDataset, help="images with group labels, marked query and/or gallery")
    for dataset in (standard.CIFAR10, standard.CIFAR100, standard.MNIST, standard.Digits):
        found.register(dataset)
    found.register(torchok_examples.SOP, help="Stanford Online Products from its Ebay_train/test.txt lists "
                                              "(TorchOk's SOP; test split: query and gallery)")
    found.register(torchok_examples.TripletSOP, name="TRIPLET_SOP",
                   help="Stanford Online Products as anchor/positive/negative rows (TorchOk's TRIPLET_SOP)")
    found.register(torchok_examples.SweetPepper, help="Sweet Pepper segmentation: background, fruit, peduncle "
                                                      "from train/valid.csv (TorchOk's SweetPepper)")
    for sampler in (samplers.ClassBalancedSampler, samplers.WeightedSampler):
        registry("samplers").register(sampler)
    registry("augmentations").register(_batch_augment, name="BatchAugment",
                                       help="kornia augmentations applied to a batch on its device (with masks/boxes)")
    registry("transforms").add_source(list_albumentations, get_albumentation)
    registry("augmentations").add_source(_kornia_names, _kornia_get)
