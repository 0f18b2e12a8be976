"""The data tests' file builders (imagegen.py) importable from every test here, and the external files."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from helpers import EXTERNAL

TORCHOK = EXTERNAL / "torchok" / "test_data"
TOWHEE = EXTERNAL / "towhee" / "kaggle_dataset_small"
