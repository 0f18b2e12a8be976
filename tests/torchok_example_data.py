"""Tiny stand-ins for the archives TorchOk's example configs download, in their real on-disk layouts:
Stanford Online Products (Ebay lists, triplet CSVs, JPEGs in super-class folders) and Sweet Pepper
(train/valid CSVs naming JPEG images and gray PNG masks of classes 0, 1, 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SUPER_CLASSES = ("bicycle_final", "chair_final")


def _class_image(rng: np.random.Generator, class_id: int, size: int) -> Image.Image:
    """Noise plus a colour and a bar position that depend on the class: a small CNN can tell them apart."""
    pixels = rng.integers(0, 50, (size, size, 3)).astype(np.uint8)
    pixels[..., class_id % 3] += np.uint8(60 + 25 * (class_id % 5))
    bar = (class_id * 5) % (size - 4)
    pixels[bar:bar + 4, :, (class_id + 1) % 3] = 230
    return Image.fromarray(pixels)


def fake_sop(root: Path, train_classes: int = 4, test_classes: int = 3, per_class: int = 4, size: int = 24) -> Path:
    """``root/Stanford_Online_Products`` with ``Ebay_train.txt`` (class ids 1..train_classes), ``Ebay_test.txt``
    (the next ids, as the official test classes follow the training ones) and ``sop_triplet_{train,test}.csv``."""
    rng = np.random.default_rng(0)
    folder = root / "Stanford_Online_Products"
    image_id = 0
    splits = {"train": range(1, train_classes + 1),
              "test": range(train_classes + 1, train_classes + test_classes + 1)}
    for split, class_ids in splits.items():
        lines, by_class = ["image_id class_id super_class_id path"], {}
        for class_id in class_ids:
            super_class = class_id % len(SUPER_CLASSES)
            for k in range(per_class):
                image_id += 1
                name = f"{SUPER_CLASSES[super_class]}/{100000 + class_id}_{k}.JPG"
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                _class_image(rng, class_id, size).save(folder / name, format="JPEG", quality=95)
                lines.append(f"{image_id} {class_id} {super_class + 1} {name}")
                by_class.setdefault(class_id, []).append(name)
        (folder / f"Ebay_{split}.txt").write_text("\n".join(lines) + "\n")
        rows, ids = ["anchor,positive,negative"], sorted(by_class)
        for i, class_id in enumerate(ids):
            names, other = by_class[class_id], by_class[ids[(i + 1) % len(ids)]]
            rows += [f"{names[k]},{names[(k + 1) % len(names)]},{other[k % len(other)]}" for k in range(len(names))]
        (folder / f"sop_triplet_{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def fake_sweet_pepper(root: Path, train: int = 4, valid: int = 2, size: int = 32) -> Path:
    """``root/sweet_pepper`` with ``train.csv`` / ``valid.csv`` (``image_path,mask``), JPEG images of a red
    'fruit' disc with a green 'peduncle' bar, and gray PNG masks 0 background, 1 fruit, 2 peduncle."""
    rng = np.random.default_rng(1)
    folder = root / "sweet_pepper"
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for split, count in (("train", train), ("valid", valid)):
        rows = ["image_path,mask"]
        for i in range(count):
            cy, cx = (int(v) for v in rng.integers(size // 3, 2 * size // 3, 2))
            r = size // 5
            mask = np.zeros((size, size), np.uint8)
            mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
            mask[max(cy - r - 3, 0):max(cy - r, 1), cx - 1:cx + 2] = 2
            image = rng.integers(0, 40, (size, size, 3)).astype(np.uint8)
            image[mask == 1] = (200, 30, 30)
            image[mask == 2] = (30, 180, 30)
            name = f"{split}_{i}"
            Image.fromarray(image).save(folder / "images" / f"{name}.jpg", quality=95)
            Image.fromarray(mask, "L").save(folder / "masks" / f"{name}.png")
            rows.append(f"images/{name}.jpg,masks/{name}.png")
        (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root
