"""What a run folder records about where a run happened: package versions, git commit, hardware,
command line (``env.json``), and a cheap fingerprint of the training data (checked on resume)."""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from typing import Any

import torch
from torch.utils.data import Subset


def environment_info() -> dict[str, Any]:
    """Package versions, git commit, hardware and command line, for ``env.json`` in the run folder."""
    import importlib.metadata as metadata
    import subprocess

    versions = {}
    for package in ("trainforge", "torch", "torchvision", "numpy", "torchmetrics", "timm"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip() or None
    except OSError:
        sha = None
    return {
        "versions": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cuda": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "git_sha": sha,
        "command": sys.argv,
    }


def dataset_fingerprint(data: Any) -> str | None:
    """A cheap identity of a data set: its own ``fingerprint()`` when it has one; for in-memory tensor
    data a SHA-256 of the tensors; otherwise None (only the length is compared)."""
    if data is None:
        return None
    own = getattr(data, "fingerprint", None)
    if callable(own):
        return str(own())
    if isinstance(data, Subset):  # the base data set's identity and the chosen indices, in order
        inner = dataset_fingerprint(data.dataset)
        return None if inner is None else hashlib.sha256(f"{inner}:{list(data.indices)}".encode()).hexdigest()[:16]
    tensors = getattr(data, "tensors", None)
    if isinstance(tensors, tuple) and all(isinstance(t, torch.Tensor) for t in tensors):
        digest = hashlib.sha256()
        for tensor in tensors:
            digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]
    return None
