"""Images per second of three ways to feed an image folder to training (one epoch each, after a warm-up):

(a) torchvision ``ImageFolder`` + ``Resize``/``RandomHorizontalFlip``/``ToTensor`` + ``DataLoader(num_workers=2)``
(b) trainforge ``ImageFolder(image_size=...)`` + albumentations flip + ``ResumableLoader(num_workers=2)``
(c) trainforge ``ImageFolder(cache=True)`` held as one tensor (``on_device``), batches sliced there and
    flipped with kornia's ``BatchAugment`` (no workers, no per-batch copy)

on a generated folder of JPEGs (default 5,000 at 256 px, 10 classes) resized to 64 px.
Run: ``PYTHONPATH=. python bench/data.py [--images 5000] [--size 256] [--target 64]``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_folder(root: Path, images: int, size: int, classes: int = 10) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
    for index in range(images):
        folder = root / f"class_{index % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        tile = np.roll(base, index, axis=0) ^ np.uint8(index % 251)
        picture = Image.fromarray(tile).resize((size, size), Image.Resampling.BILINEAR)  # smooth, JPEG-like content
        picture.save(folder / f"{index:05d}.jpg", quality=90)
    return root


def epoch_rate(batches, count: int) -> float:
    start = time.perf_counter()
    seen = 0
    for batch in batches():
        seen += int(batch.shape[0])
    elapsed = time.perf_counter() - start
    assert seen == count, (seen, count)
    return count / elapsed


def torchvision_way(root: Path, target: int, batch_size: int, workers: int):
    from torchvision import datasets, transforms

    pipeline = transforms.Compose([transforms.Resize((target, target)), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor()])
    data = datasets.ImageFolder(str(root), transform=pipeline)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         persistent_workers=True)
    return lambda: (x for x, _ in loader)


def trainforge_way(root: Path, target: int, batch_size: int, workers: int):
    import albumentations as A

    from trainforge.data import ImageFolder, ResumableLoader

    data = ImageFolder(root, image_size=target, augment=[A.HorizontalFlip()])
    loader = ResumableLoader(data, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=True)
    epochs = iter(range(10**9))
    return lambda: (b["input"] for b in loader.iter_epoch(next(epochs)))


def cached_device_way(root: Path, target: int, batch_size: int, cache_dir: Path, device: str):
    import kornia.augmentation as K

    from trainforge.data import ImageFolder, ResumableLoader
    from trainforge.data.augment import BatchAugment

    start = time.perf_counter()
    data = ImageFolder(root, image_size=target, cache=True, cache_dir=cache_dir)
    build = time.perf_counter() - start
    resident = data.on_device(device)
    loader = ResumableLoader(resident, batch_size=batch_size, shuffle=True)
    flip = BatchAugment([K.RandomHorizontalFlip()])
    epochs = iter(range(10**9))
    return (lambda: (flip(b["input"]) for b in loader.iter_epoch(next(epochs)))), build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--target", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="trainforge-bench-data-"))
    try:
        start = time.perf_counter()
        root = make_folder(work / "images", args.images, args.size)
        print(f"generated {args.images} JPEGs at {args.size} px in {time.perf_counter() - start:.1f} s "
              f"(resized to {args.target} px, batch {args.batch_size}, {args.workers} workers, device {args.device})")
        results = {}
        ways = {
            "(a) torchvision ImageFolder + DataLoader": torchvision_way(root, args.target, args.batch_size,
                                                                        args.workers),
            "(b) trainforge ImageFolder, uncached": trainforge_way(root, args.target, args.batch_size, args.workers),
        }
        cached, build = cached_device_way(root, args.target, args.batch_size, work / "cache", args.device)
        ways["(c) trainforge cached, device-side kornia"] = cached
        for name, batches in ways.items():
            epoch_rate(batches, args.images)  # warm-up: workers started, pages cached by the OS
            results[name] = max(epoch_rate(batches, args.images) for _ in range(2))
        base = results["(a) torchvision ImageFolder + DataLoader"]
        for name, rate in results.items():
            print(f"{name:<46} {rate:10.0f} images/s   {rate / base:6.2f}x (a)")
        print(f"cache build (decode + resize once, {args.images} images): {build:.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
