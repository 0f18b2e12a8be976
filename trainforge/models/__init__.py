"""Models: small built-in networks (and, as the roadmap lands, composed backbone/neck/head models)."""

from .small import SmallCNN

__all__ = ["SmallCNN"]
