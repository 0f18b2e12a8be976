"""Data sets and loaders: image folders and annotation files (classification, segmentation, detection,
retrieval), CIFAR/MNIST from local files, digits and shapes; CPU and device augmentation; loaders that
resume mid-epoch exactly; bad-file policy; samplers; the decode-once cache."""

from .cache import DecodedCache, build_cache
from .datasets import ImageClassificationDataset, ImageFolder, Skipped, VisionDataset
from .detection import CocoDetection, ImageDetectionDataset
from .digits import DIGITS_CLASSES, load_digits_split
from .loaders import ResumableLoader, SkippedFilesLog, collate_indexed, sample_seed
from .reading import read_image, read_mask
from .registration import register_all as _register_all
from .retrieval import RetrievalDataset
from .samplers import ClassBalancedSampler, EpochSampler, WeightedSampler
from .segmentation import ImageSegmentationDataset
from .shapes import SHAPE_CLASSES, make_shapes
from .standard import CIFAR10, CIFAR100, MNIST, Digits
from .torchok_examples import SOP, SweetPepper, TripletSOP
from .validate import ValidationReport, validate_dataset

_register_all()

__all__ = [
    "CIFAR10",
    "CIFAR100",
    "DIGITS_CLASSES",
    "MNIST",
    "SHAPE_CLASSES",
    "SOP",
    "ClassBalancedSampler",
    "CocoDetection",
    "DecodedCache",
    "Digits",
    "EpochSampler",
    "ImageClassificationDataset",
    "ImageDetectionDataset",
    "ImageFolder",
    "ImageSegmentationDataset",
    "ResumableLoader",
    "RetrievalDataset",
    "Skipped",
    "SkippedFilesLog",
    "SweetPepper",
    "TripletSOP",
    "ValidationReport",
    "VisionDataset",
    "WeightedSampler",
    "build_cache",
    "collate_indexed",
    "load_digits_split",
    "make_shapes",
    "read_image",
    "read_mask",
    "sample_seed",
    "validate_dataset",
]
