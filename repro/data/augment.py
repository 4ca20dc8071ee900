"""Seeded, order-independent augmentation shared by the FFCV and the plain loaders.

Every random decision for a training image is a pure function of (seed, epoch, sample index):
a counter-based hash (splitmix64) turns that triple into a 64-bit key and the key into as many
uniform numbers as the augmentation needs. Nothing depends on worker count, thread scheduling
or on which batches were drawn before, so a resumed epoch that skips `start_batch` batches sees
exactly the tensors an uninterrupted epoch would, and the FFCV and plain paths make identical
CIFAR crops and flips.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)

# Independent streams drawn from one sample key.
STREAM_CROP = 1     # CIFAR pad-crop offsets + flip, ImageNet RRC on the plain path
STREAM_DECODE = 2   # numba seed for FFCV's random-resized-crop decoder
STREAM_FLIP = 3     # ImageNet flip (both paths)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrap-around arithmetic is intended)."""
    z = z.astype(np.uint64, copy=True)
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def sample_keys(seed: int, epoch: int, indices, stream: int) -> np.ndarray:
    """One 64-bit key per sample index for (seed, epoch, stream)."""
    idx = np.asarray(indices, dtype=np.uint64).reshape(-1)
    base = _mix(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64) + _GOLDEN)
    ep = np.array([epoch & 0xFFFFFFFF], dtype=np.uint64)
    base = _mix(base ^ (ep * _GOLDEN + np.uint64(stream)))
    return _mix(base ^ _mix(idx + _GOLDEN))


def uniforms(keys: np.ndarray, n: int) -> np.ndarray:
    """`n` independent U[0, 1) floats per key, shape (len(keys), n), float64."""
    ctr = np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN
    bits = _mix(keys[:, None] + ctr[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def seeds32(keys: np.ndarray) -> np.ndarray:
    """Keys folded to uint32 (numba's np.random.seed takes 32 bits)."""
    return (keys >> np.uint64(32)).astype(np.uint32) ^ (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32)


# ----------------------------------------------------------------------------------- CIFAR
def cifar_augment(images: torch.Tensor, seed: int, epoch: int, indices, pad: int = 4) -> torch.Tensor:
    """Pad-`pad` (zeros) random crop back to the input size, then a horizontal flip with p=0.5,
    on a uint8 NHWC batch; returns a new uint8 NHWC tensor."""
    x = images.numpy()
    b, h, w, c = x.shape
    u = uniforms(sample_keys(seed, epoch, indices, STREAM_CROP), 3)
    dy = (u[:, 0] * (2 * pad + 1)).astype(np.int64)
    dx = (u[:, 1] * (2 * pad + 1)).astype(np.int64)
    flip = u[:, 2] < 0.5
    padded = np.zeros((b, h + 2 * pad, w + 2 * pad, c), np.uint8)
    padded[:, pad:pad + h, pad:pad + w] = x
    out = np.empty_like(x)
    # A per-image slice copy: ~10x faster here than one batched advanced-indexing gather.
    for k in range(b):
        win = padded[k, dy[k]:dy[k] + h, dx[k]:dx[k] + w]
        out[k] = win[:, ::-1] if flip[k] else win
    return torch.from_numpy(out)


# -------------------------------------------------------------------------------- ImageNet
def rrc_params(height: int, width: int, u: np.ndarray, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop.get_params, drawing from the 40 numbers in `u`.
    Returns (top, left, crop_h, crop_w)."""
    area = height * width
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    for t in range(10):
        target = area * (scale[0] + u[4 * t] * (scale[1] - scale[0]))
        aspect = math.exp(lo + u[4 * t + 1] * (hi - lo))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= width and 0 < ch <= height:
            return int(u[4 * t + 2] * (height - ch + 1)), int(u[4 * t + 3] * (width - cw + 1)), ch, cw
    in_ratio = width / height
    if in_ratio < ratio[0]:
        cw, ch = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = height, int(round(height * ratio[1]))
    else:
        cw, ch = width, height
    return (height - ch) // 2, (width - cw) // 2, ch, cw


RRC_UNIFORMS = 40


def center_crop_params(height: int, width: int, ratio: float):
    """FFCV's CenterCropRGBImageDecoder convention: a centred square of side
    int(ratio * min(h, w)) (ratio = val_res / val_resize), later resized to val_res."""
    c = int(ratio * min(height, width))
    return (height - c) // 2, (width - c) // 2, c, c


def flip_mask(seed: int, epoch: int, indices) -> np.ndarray:
    """Per-sample horizontal-flip decisions (p = 0.5) for ImageNet-style pipelines."""
    return uniforms(sample_keys(seed, epoch, indices, STREAM_FLIP), 1)[:, 0] < 0.5


def flip_batch(images: torch.Tensor, mask: np.ndarray) -> torch.Tensor:
    """Flip the NHWC images selected by `mask` along the width, in place; returns `images`.
    numpy, not torch: see to_model_input on torch's OpenMP threads beside FFCV's."""
    x = images.numpy()
    for k in np.flatnonzero(mask):
        x[k] = x[k, :, ::-1].copy()
    return images


# ------------------------------------------------------------------------------ normalise
def normalize_affine(mean, std) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (scale, bias), float32, such that x * scale + bias == (x / 255 - mean) / std
    for grey levels x; both loader paths (and FFCV's fused decoder) normalise with these."""
    inv = np.float32(1) / (np.asarray(std, np.float32).reshape(-1) * np.float32(255))
    bias = -(np.asarray(mean, np.float32).reshape(-1) * np.float32(255)) * inv
    return inv, bias


@functools.lru_cache(maxsize=32)
def _device_affine(device: torch.device, mean: tuple, std: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """normalize_affine's (scale, bias) as (1, C, 1, 1) tensors on `device`, copied there once:
    a per-batch copy from pageable memory would be a blocking copy, which waits for every kernel
    queued before it and so stops the CPU from running ahead of the GPU."""
    return tuple(torch.from_numpy(a.reshape(1, -1, 1, 1)).to(device) for a in normalize_affine(mean, std))


def to_model_input(images: torch.Tensor, device: torch.device, mean, std) -> torch.Tensor:
    """uint8 NHWC (CPU) -> normalised float32 NCHW on `device`. On CUDA the copy is
    non-blocking (pinned source: the caller keeps the source unchanged until the copy is done),
    the arithmetic runs on the GPU with constants kept there, and the result stays
    channels_last; on CPU it is contiguous NCHW. Both loader paths call this, so their outputs
    compare exactly."""
    if device.type == "cuda":
        inv, bias = _device_affine(torch.device(device), tuple(np.ravel(mean)), tuple(np.ravel(std)))
        x = images.to(device, non_blocking=True).permute(0, 3, 1, 2)
        y = torch.empty_like(x, dtype=torch.float32)  # keeps x's channels_last strides
        torch.mul(x, inv, out=y)
        return y.add_(bias)
    inv, bias = (a.reshape(1, -1, 1, 1) for a in normalize_affine(mean, std))
    # numpy on CPU, on purpose: a torch op here opens an OpenMP parallel region whose spinning
    # threads starve FFCV's numba threads (measured: 10x slower FFCV CIFAR loading on 2 cores
    # with 2 torch threads), and one pass each is all this needs.
    x = images.numpy().transpose(0, 3, 1, 2)
    y = np.empty(x.shape, np.float32)
    np.multiply(x, inv, out=y)
    y += bias
    return torch.from_numpy(y)
