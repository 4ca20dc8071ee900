"""``compile``: torch.compile around the training step, nothing else.

What is compiled is the module the steps call (``Training.ddp``: the model, DDP-wrapped when
distributed), so the forward and, through AOTAutograd, the backward run as compiled graphs; the
loss, the optimizer step, evaluation, the method's hooks and the delivered model stay eager. The
weights and the optimizer state are the bare model's (``Training.model``), so a checkpoint does
not know whether the steps were compiled: compiled and eager attempts resume each other's
checkpoints (tests/test_compile.py), and the key is not part of a run's identity. Which backend
an attempt ran with is in env.json's attempt record.

``aot_eager`` runs the ATen kernels eager runs (bit-identical on the CPU); ``inductor`` generates
fused kernels (C++/OpenMP on a CPU, Triton on a GPU): equal up to float rounding, not bit for bit.
"""
from __future__ import annotations

import shutil

import torch
from torch import nn

from repro.config import Config, ConfigError


def cpp_compiler() -> str | None:
    """The C++ compiler inductor's CPU code would be built with (its own setting), or None."""
    from torch._inductor import config as inductor
    names = inductor.cpp.cxx if isinstance(inductor.cpp.cxx, tuple) else (inductor.cpp.cxx,)
    return next((found for n in names if n and (found := shutil.which(n))), None)


def check(cfg: Config) -> None:
    """Refuse, before anything runs, an inductor run on a CPU that has no C++ compiler to build its
    kernels with (a GPU run builds Triton kernels instead)."""
    on_cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
    if cfg.compile == "inductor" and on_cpu and cpp_compiler() is None:
        raise ConfigError("compile=inductor: no C++ compiler found for inductor's CPU kernels (install g++, "
                          "or use compile=aot_eager or compile=off)")


def wrap(step_module: nn.Module, backend: str) -> nn.Module:
    """What the training steps call: ``step_module`` itself (off), or compiled with ``backend``."""
    if backend == "off":
        return step_module
    return torch.compile(step_module, backend=backend)
