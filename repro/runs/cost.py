"""What a run costs: a rough GPU-hours estimate before it runs (the dry-run's column).

One training epoch on one A100-class GPU, in GPU-hours (training only, +-50%):
    images x 3 (forward + backward) x dense conv MACs / effective MAC rate.
Effective rates: ImageNet ResNets with bf16 + channels_last + FFCV reach ~25 TMAC/s (matches the
ffcv-imagenet anchor of ResNet-50 at ~0.17 GPU-h per 224-px epoch); CIFAR ResNets are
launch-bound at batch 128, ~2 TMAC/s. Pruned runs are priced as dense (SFP trains the dense
shape; SNF fine-tuning is cheaper, so this is an upper bound). The MACs are
``repro.flops.arch_counts`` (the one conv geometry).
"""
from __future__ import annotations

from functools import lru_cache

from repro.config import Config
from repro.flops import arch_counts
from repro.models import arch_info

TRAIN_IMAGES = {"cifar10": 50_000, "imagenet": 1_281_167, "digits": 1_437}
EFFECTIVE_MACS_PER_S = {"cifar": 2e12, "imagenet": 25e12}


@lru_cache(maxsize=None)  # a model forward per call; a 60-run table asks 60 times
def gpu_hours_per_epoch(arch: str, dataset: str) -> float:
    rate = EFFECTIVE_MACS_PER_S[arch_info(arch).family]
    return TRAIN_IMAGES[dataset] * 3 * arch_counts(arch).conv_macs / rate / 3600


def estimate(cfg: Config) -> float:
    """GPU-hours of a whole run (every epoch it trains)."""
    return cfg.train_epochs * gpu_hours_per_epoch(cfg.model.arch, cfg.data.name)
