"""The examples in examples/ run end to end on real data and reach their targets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_recipe_digits_example_reaches_95_percent(load_example):
    final = load_example("recipe_digits").main(epochs=10)
    assert final["test/accuracy"] >= 0.95, final


def test_console_script_version_and_help():
    exe = Path(sys.executable).with_name("trainforge")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip().startswith("trainforge ")
    helptext = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True)
    assert "usage: trainforge" in helptext.stdout


def test_import_is_light():
    heavy = "torchmetrics timm kornia albumentations tensorboard onnx onnxruntime matplotlib sklearn accelerate hydra"
    code = f"import sys, trainforge; print([m for m in {heavy.split()!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
