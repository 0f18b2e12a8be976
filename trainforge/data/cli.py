"""``trainforge data validate|cache|preview``: a data set named as on the command line (a folder, or a
registered data set with ``key=value`` parameters) checked in one pass, decoded into its cache, or shown as a
PNG grid of augmented samples with masks and boxes drawn on them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def add_parser(commands: Any) -> None:
    """The ``data`` subcommand and its three actions (``trainforge/cli.py`` calls this)."""
    data = commands.add_parser("data", help="check, cache or preview a data set",
                               description="Data set tools. DATASET is a folder (an ImageFolder) or a registered "
                                           "data set name followed by key=value parameters, e.g. "
                                           "ImageClassificationDataset data_folder=imgs annotation_path=labels.csv")
    actions = data.add_subparsers(dest="action", required=True)
    for name, help_text in (("validate", "list every missing, unreadable or mismatched file in one pass"),
                            ("cache", "decode and resize every image once into the memory-mapped cache"),
                            ("preview", "write a PNG grid of augmented samples (masks and boxes drawn)")):
        action = actions.add_parser(name, help=help_text, description=help_text)
        action.add_argument("dataset", help="a folder, or a data set name from `trainforge ls datasets`")
        action.add_argument("params", nargs="*", metavar="key=value", help="data set parameters (YAML values)")
        if name == "cache":
            action.add_argument("--cache-dir", help="where caches live (default $TRAINFORGE_CACHE or ~/.cache)")
            action.add_argument("--workers", type=int, default=2, help="decoding processes (default 2)")
        if name == "preview":
            action.add_argument("--augment", action="append", default=[], metavar="NAME[:k=v,...]",
                                help="an albumentations transform applied before drawing; repeat for several")
            action.add_argument("--count", type=int, default=16, help="samples in the grid (default 16)")
            action.add_argument("--seed", type=int, default=0, help="seed of the sample choice and augmentation")
            action.add_argument("--output", default="preview.png", help="PNG file to write (default preview.png)")
        action.set_defaults(func=run)


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["root=imgs", "image_size=64"]`` → ``{"root": "imgs", "image_size": 64}`` (values read as YAML).

    >>> parse_params(["image_size=[32, 48]", "on_bad_file=skip"])
    {'image_size': [32, 48], 'on_bad_file': 'skip'}
    """
    import yaml

    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"data set parameter {item!r} must be key=value, e.g. image_size=64")
        params[key] = yaml.safe_load(value) if value else ""
    return params


def build_dataset(name: str, params: dict[str, Any], **extra: Any) -> Any:
    """A folder becomes ``ImageFolder(root=folder)``; anything else is looked up in the datasets registry."""
    from ..registry import get_registry

    if Path(name).is_dir() and "root" not in params and name not in get_registry("datasets"):
        params = {"root": name, **params}
        name = "ImageFolder"
    return get_registry("datasets").build(name, f"data set {name}", **params, **extra)


def _augment(specs: list[str]) -> list[Any]:
    from ..registry import get_registry

    transforms = []
    for spec in specs:
        name, _, args = spec.partition(":")
        params = parse_params([a for a in args.split(",") if a]) if args else {}
        transforms.append(get_registry("transforms").build(name, f"--augment {spec}", **params))
    return transforms


def run(args: argparse.Namespace) -> int:
    params = parse_params(args.params)
    if args.action == "validate":
        return _validate(args, params)
    if args.action == "cache":
        dataset = build_dataset(args.dataset, params)
        if not hasattr(dataset, "enable_cache"):
            raise ConfigError(f"{type(dataset).__name__} has no cache (classification data sets do)")
        cache = dataset.enable_cache(args.cache_dir, num_workers=args.workers)
        print(f"cache: {cache.folder} ({len(cache)} images, {len(cache.bad)} unreadable)")
        return 0
    return _preview(args, params)


def _validate(args: argparse.Namespace, params: dict[str, Any]) -> int:
    from .validate import validate_dataset

    dataset = build_dataset(args.dataset, {"on_bad_file": "skip", **params})  # list missing files, don't stop
    report = validate_dataset(dataset)
    print(report.summary())
    return 0 if report.ok else 1


def _preview(args: argparse.Namespace, params: dict[str, Any]) -> int:
    import torch

    dataset = build_dataset(args.dataset, params, augment=_augment(args.augment) or None)
    generator = torch.Generator().manual_seed(args.seed)
    chosen = torch.randperm(len(dataset), generator=generator)[: args.count].tolist()
    torch.manual_seed(args.seed)
    samples = [s for s in (dataset[i] for i in chosen) if isinstance(s, dict)]
    path = write_grid(samples, args.output, getattr(dataset, "classes", None))
    print(f"preview: {path} ({len(samples)} samples)")
    return 0


def write_grid(samples: list[dict[str, Any]], output: str | Path, classes: list[str] | None = None,
               size: int = 128) -> Path:
    """A PNG grid of samples: masks blended over their image, boxes drawn with their class names."""
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks, make_grid

    tiles = []
    for sample in samples:
        image = sample["input"].float()
        image = image.expand(3, *image.shape[1:]) if image.shape[0] == 1 else image[:3]
        low, high = image.amin(), image.amax()
        pixels = ((image - low) / (high - low).clamp_min(1e-8) * 255).round().to(torch.uint8)
        target = sample.get("target")
        if isinstance(target, dict) and "boxes" in target:
            names = [classes[int(i)] if classes and int(i) < len(classes) else str(int(i)) for i in target["labels"]]
            pixels = draw_bounding_boxes(pixels, target["boxes"], labels=names, colors="yellow", width=2)
        elif isinstance(target, torch.Tensor) and target.dim() == 2:
            ids = [int(v) for v in target.unique() if 0 < int(v) < 255]
            if ids:
                masks = torch.stack([target == i for i in ids])
                pixels = draw_segmentation_masks(pixels, masks, alpha=0.45)
        tiles.append(F.interpolate(pixels[None].float(), size=(size, size), mode="bilinear")[0].to(torch.uint8))
    if not tiles:
        raise ConfigError("no readable samples to preview")
    grid = make_grid(tiles, nrow=max(1, int(len(tiles) ** 0.5 + 0.999)), padding=2)
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path, format="PNG")
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the ``data`` subcommand alone (``python -m trainforge.data.cli validate FOLDER``)."""
    parser = argparse.ArgumentParser(prog="trainforge")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)
