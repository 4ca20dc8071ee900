"""Pruning methods as objects the loop calls through a few hooks (``base.Method`` is the protocol)."""
from __future__ import annotations

from repro.config import Config

from .base import Context, Method, NoPruning
from .sfp import Sfp
from .snf import Snf

METHODS = {m.name: m for m in (NoPruning, Sfp, Snf)}


def for_config(cfg: Config) -> Method:
    """The method object of ``prune.method`` (the config validated the name)."""
    return METHODS[cfg.prune.method](cfg)


__all__ = ["Context", "Method", "NoPruning", "Sfp", "Snf", "METHODS", "for_config"]
