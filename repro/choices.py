"""The names of the config's choice lists, each written once.

The schema (``repro.config.schema``) offers and validates exactly these; the implementations read
them (``repro.data``) or register their objects under the same names (``repro.engine.methods``,
``repro.prune.criteria``, ``repro.prune.snf_variants``; tests/test_choices.py keeps those equal).
A module of plain names, importing nothing, so the schema stays cheap to import (no torch).
"""
from __future__ import annotations

DATASETS = ("cifar10", "imagenet", "digits")
LOADERS = ("ffcv", "plain")        # FFCV, or a torch DataLoader over the raw layout
PRUNE_METHODS = ("none", "sfp", "snf")
CRITERIA = ("l2", "l1", "random")  # filter importance
# SNF's searches, the default first. rise-bn, not rise: on digits rise-bn beats the uniform rate at
# ~70% FLOPs on ResNet-20 and -56 and loses nowhere, while the original curves lose to it on
# ResNet-20 (docs/snf_search.md); rise-bn is the abstract's search with one correction.
SNF_VARIANTS = ("rise-bn", "rise", "stage", "weights")
# torch.compile around the training step (repro/engine/compiling.py): off, or a torch.compile
# backend. aot_eager runs the same ATen kernels as eager through the compiler's graphs (no code
# generation: bit-identical on the CPU, tests/test_compile.py); inductor generates fused kernels.
COMPILE_BACKENDS = ("off", "inductor", "aot_eager")
