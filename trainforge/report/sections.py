"""The report's sections: a ``Section`` (title, HTML fragment, image files) and the registry of functions
that build them, in the order they appear. Built-in sections register themselves in ``builtin.py``;
later features (segmentation overlays, embedding projections) add theirs with ``register_section``."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RegistryError


@dataclass
class Section:
    """One block of the report.

    ``html`` is a trusted fragment (escape any text you put in it with ``html.escape``); ``images`` are
    the image files (SVG or PNG) the section wrote into the report folder, shown after the fragment;
    ``plotted`` maps each figure that draws metric curves to the metric names it draws (saved in
    ``data/curves.json``).
    """

    title: str
    html: str = ""
    images: list[str] = field(default_factory=list)
    plotted: dict[str, list[str]] = field(default_factory=dict)


#: ``fn(run_dir, out_dir) -> list[Section]``: reads what it needs from ``run_dir``, writes its figures into
#: ``out_dir`` (the report folder) and returns its sections, or ``[]`` when it has nothing to show.
SectionFn = Callable[[Path, Path], "list[Section]"]
SECTIONS: dict[str, SectionFn] = {}


def register_section(name: str, fn: SectionFn, replace: bool = False) -> None:
    """Add a section builder; sections appear in registration order. A taken name raises unless ``replace``.

    >>> register_section("hello", lambda run_dir, out_dir: [Section("Hello", "<p>hi</p>")])
    >>> "hello" in list_sections()
    True
    >>> unregister_section("hello")
    """
    if name in SECTIONS and not replace:
        raise ValueError(f"report section {name!r} is already registered; pass replace=True to replace it")
    SECTIONS[name] = fn


def unregister_section(name: str) -> None:
    """Remove a section builder; an unknown name lists the registered ones."""
    if name not in SECTIONS:
        close = difflib.get_close_matches(name, list(SECTIONS), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise RegistryError(f"no report section {name!r}.{hint} Registered: {', '.join(SECTIONS)}")
    del SECTIONS[name]


def list_sections() -> list[str]:
    """Registered section names, in report order."""
    return list(SECTIONS)
