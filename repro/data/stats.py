"""Per-channel normalisation constants (RGB order, fractions of 255)."""
from __future__ import annotations

# CIFAR-10, as used by both papers' code: (125.3, 123.0, 113.9)/255, (63.0, 62.1, 66.7)/255.
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)

# ImageNet: the standard torchvision/ffcv-imagenet values.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# scikit-learn digits as this package renders them (8x8 -> 32x32 grey, replicated to RGB),
# measured over the 1,437-image training split (tests/test_data_formats.py re-measures them).
# The CIFAR values would leave the digits badly off-centre (mean 0.31 vs 0.48, std 0.32 vs 0.25).
DIGITS_MEAN = (0.3057, 0.3057, 0.3057)
DIGITS_STD = (0.3235, 0.3235, 0.3235)

STATS = {
    "cifar10": (CIFAR_MEAN, CIFAR_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "digits": (DIGITS_MEAN, DIGITS_STD),
}
