"""Fills ``registry("loggers")``: our logger classes under their class names and ``build_logger``'s short names."""

from __future__ import annotations

from ..registry import registry
from .build import LOGGERS

for _name, _cls in sorted(LOGGERS.items()):
    registry("loggers").register(_cls, name=_name)
    registry("loggers").register(_cls)
