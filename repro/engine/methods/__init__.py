"""Pruning methods as objects the loop calls through a few hooks (``base`` has the protocol)."""
from __future__ import annotations

from repro.config import Config

from .base import Context, Dense
from .sfp import Sfp
from .snf import Snf

METHODS = {m.name: m for m in (Dense, Sfp, Snf)}


def for_config(cfg: Config) -> Dense:
    """The method object of ``prune.method`` (the config validated the name)."""
    return METHODS[cfg.prune.method](cfg)


__all__ = ["Context", "Dense", "Sfp", "Snf", "METHODS", "for_config"]
