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
# SNF's searches, the default first. rise, the abstract's search: the sweep's finding that rise-bn
# beats the uniform rate (docs/snf_search.md) was not confirmed by the pre-registered test on fresh
# seeds, and the rule that plan fixed before its runs makes rise the default (docs/snf_confirm.md).
SNF_VARIANTS = ("rise", "rise-bn", "stage", "weights")
# What prune.snf_variant holds for the other methods, on which it has no effect: rise-bn, its
# default when the key was added, so that the default's change renamed no SFP or baseline run.
SNF_VARIANT_INERT = "rise-bn"
# torch.compile around the training step (repro/engine/compiling.py): off, or a torch.compile
# backend. aot_eager runs the same ATen kernels as eager through the compiler's graphs (no code
# generation: bit-identical on the CPU, tests/test_compile.py); inductor generates fused kernels.
COMPILE_BACKENDS = ("off", "inductor", "aot_eager")
