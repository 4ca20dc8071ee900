"""What names a run: the hash of its identity keys, its readable run name, and ``--help``.

``config_hash(cfg)`` hashes the keys that change what a run computes (``identity``); log
destinations, data paths and worker counts are left out so the same run hashes the same on every
machine. ``run_name(cfg)`` = readable key fields + that hash; it names the run folder.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from . import keys
from .keys import _type_name, flatten
from .schema import PRESETS, Config


def iter_keys(cls=Config, prefix: str = ""):
    """Yield (dotted name, type, dataclass field) for every leaf key of the config, in order."""
    return keys.iter_keys(cls, prefix)


def config_hash(cfg: Config, length: int = 8) -> str:
    """Stable hash of the keys that change what a run computes (sorted JSON, sha256)."""
    values = flatten(cfg, identity_only=True)
    for name, _tp, f in iter_keys(type(cfg)):
        if not f.metadata.get("hashed_at_default", True) and values.get(name) == f.default:
            del values[name]  # a key added later: absent from the hash at its default (keys.key)
    blob = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def identity_diff(a: Config, b: Config) -> dict[str, tuple[Any, Any]]:
    """{key: (a value, b value)} for the identity keys on which two configs differ."""
    fa, fb = flatten(a, True), flatten(b, True)
    return {k: (fa[k], fb[k]) for k in fa if fa[k] != fb[k]}


def _num(x: float) -> str:
    return f"{x:g}"


def run_name(cfg: Config) -> str:
    """Readable key fields + the hash, e.g. ``resnet56-cifar10-sfp0.3-e200-s0-1a2b3c4d``."""
    p = cfg.prune
    if p.method == "sfp":
        method = f"sfp{_num(p.rate)}" + ("-ft" if p.init_from else "")
    elif p.method == "snf":
        method = f"{'unif' if p.uniform else 'snf'}{_num(p.flops_reduction)}"
    else:
        method = "base" + ("-ft" if p.init_from else "")
    return f"{cfg.model.arch}-{cfg.data.name}-{method}-e{cfg.train_epochs}-s{cfg.seed}-{config_hash(cfg)}"


def help_text() -> str:
    """Every key with its type, default and help: what ``--help`` prints."""
    lines = ["configuration keys (key=value; presets: " + ", ".join(["auto"] + list(PRESETS)) +
             "; preset=auto picks by the arch's family):"]
    for name, tp, f in iter_keys():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if isinstance(default, tuple):
            default = ",".join(map(str, default)) or "(empty)"
        tname = _type_name(tp).split(" (")[0]
        lines.append(f"  {name:<24} {tname:<14} default {default!s:<12} {f.metadata['help']}")
    lines.append("presets:")
    for pname, vals in PRESETS.items():
        desc = ", ".join(f"{k}={v}" for k, v in vals.items()) or "the dataclass defaults (CIFAR recipe)"
        lines.append(f"  {pname:<10} {desc}")
    return "\n".join(lines)
