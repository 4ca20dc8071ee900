"""The FFCV path (ffcv 1.0.2), with seeded augmentation.

What FFCV 1.0.2 offers and what this module adds:
- `Loader(seed=...)` seeds only the traversal order (RANDOM: numpy permutation of seed + epoch;
  distributed: torch's DistributedSampler, which pads shards with duplicates). This module
  does not use FFCV's orders: it builds each epoch's iterator itself from the shard computed in
  `sharding.py`, so FFCV and the plain path read the same images in the same order.
- FFCV's random augmentations (RandomHorizontalFlip, RandomTranslate, the random-resized-crop
  decoder) draw from numba's per-thread generator, which is seeded from OS entropy and cannot
  be seeded through the API. So they are not used:
  * CIFAR pad-crop + flip and the ImageNet flip run as a small torch stage after `ToTensor`
    that derives every decision from (seed, epoch, sample index) (`augment.py`), identical to
    the plain path;
  * the ImageNet random-resized crop runs inside a subclass of FFCV's decoder that re-seeds
    numba's generator per image from (seed, epoch, sample index) before drawing the crop. The
    seeds reach the compiled code through an extra per-batch buffer that the epoch iterator
    fills. Crops are then deterministic and resumable, but differ from the plain path's (a
    different generator), with the same distribution.
- Compiled-op ordering trap: every numba op (the decoders) comes before `ToTensor`; only
  torch code runs after it.
- FFCV sets torch's global thread count (to 1 on import, to `num_workers` when a Loader is
  built and when an epoch starts); the caller's setting is restored each time.
"""
from __future__ import annotations

import threading
from dataclasses import replace
from typing import Callable, Optional

import numpy as np
import torch

from . import ffcv_import  # noqa: F401  (first: keeps torch's thread count)
from ffcv.fields.basics import IntDecoder
from ffcv.fields.rgb_image import (CenterCropRGBImageDecoder, IMAGE_MODES,
                                   RandomResizedCropRGBImageDecoder, SimpleRGBImageDecoder,
                                   get_random_crop)
from ffcv.libffcv import imdecode, resize_crop
from ffcv.loader import Loader, OrderOption
from ffcv.loader.epoch_iterator import EpochIterator
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State
from ffcv.transforms import ToTensor

from . import augment
from .sharding import EpochLoader


def _aug_context():
    """(seed, epoch) of the epoch being produced; set by _SeededIterator on its own thread."""
    t = threading.current_thread()
    if not isinstance(t, _SeededIterator):
        raise RuntimeError("repro.data FFCV pipelines must be iterated through FfcvLoader.iterate()")
    return t.aug_seed, t.aug_epoch


class SeededCifarAugment(Operation):
    """Pad-4 random crop + flip on the uint8 NHWC torch batch (after ToTensor)."""

    def generate_code(self) -> Callable:
        def cifar_aug(images, _dst, indices):
            seed, epoch = _aug_context()
            return augment.cifar_augment(images, seed, epoch, indices)
        cifar_aug.with_indices = True
        return cifar_aug

    def declare_state_and_memory(self, previous_state: State):
        return replace(previous_state, jit_mode=False), None


class SeededFlip(Operation):
    """Horizontal flip with p = 0.5 on the uint8 NHWC torch batch (after ToTensor)."""

    def generate_code(self) -> Callable:
        def flip(images, _dst, indices):
            seed, epoch = _aug_context()
            return augment.flip_batch(images, augment.flip_mask(seed, epoch, indices))
        flip.with_indices = True
        return flip

    def declare_state_and_memory(self, previous_state: State):
        return replace(previous_state, jit_mode=False), None


class SeededRRCDecoder(RandomResizedCropRGBImageDecoder):
    """FFCV's random-resized-crop decoder with one numba seed per image, read from a third
    buffer that _SeededIterator fills before each batch."""

    def declare_state_and_memory(self, previous_state: State):
        state, (out, tmp) = super().declare_state_and_memory(previous_state)
        return state, (out, tmp, AllocationQuery((1,), np.dtype("<u4")))

    def generate_code(self) -> Callable:
        jpg = IMAGE_MODES["jpg"]
        mem_read = self.memory_read
        my_range = Compiler.get_iterator()
        imdecode_c = Compiler.compile(imdecode)
        resize_crop_c = Compiler.compile(resize_crop)
        get_crop_c = Compiler.compile(get_random_crop)
        scale, ratio = np.array(self.scale), np.array(self.ratio)

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, temp_storage, seeds = my_storage
            for dst_ix in my_range(len(batch_indices)):
                source_ix = batch_indices[dst_ix]
                field = metadata[source_ix]
                image_data = mem_read(field["data_ptr"], storage_state)
                height = np.uint32(field["height"])
                width = np.uint32(field["width"])
                if field["mode"] == jpg:
                    temp_buffer = temp_storage[dst_ix]
                    imdecode_c(image_data, temp_buffer, height, width, height, width, 0, 0, 1, 1,
                               False, False)
                    temp_buffer = temp_buffer.reshape(-1)[:3 * height * width].reshape(height, width, 3)
                else:
                    temp_buffer = image_data.reshape(height, width, 3)
                np.random.seed(seeds[dst_ix, 0])  # numba's generator of this thread
                i, j, h, w = get_crop_c(height, width, scale, ratio)
                resize_crop_c(temp_buffer, i, i + h, j, j + w, destination[dst_ix])
            return destination[:len(batch_indices)]

        decode.is_parallel = True
        return decode


class _SeededIterator(EpochIterator):
    """FFCV's epoch iterator over an explicit order, carrying (seed, epoch) for the seeded ops."""

    def __init__(self, loader: Loader, order: np.ndarray, *, seed: int, epoch: int,
                 seed_node: Optional[int]):
        self.aug_seed, self.aug_epoch, self.seed_node = seed, epoch, seed_node
        super().__init__(loader, order)  # starts the thread

    def run_pipeline(self, b_ix, batch_indices, batch_slot, cuda_event):
        if self.seed_node is not None:
            seeds = self.memory_allocations["operation"][self.seed_node][2]
            keys = augment.sample_keys(self.aug_seed, self.aug_epoch, batch_indices, augment.STREAM_DECODE)
            seeds[batch_slot, :len(batch_indices), 0] = augment.seeds32(keys)
        return super().run_pipeline(b_ix, batch_indices, batch_slot, cuda_event)

    def close(self):
        # Stop the producer before FFCV releases the memory it reads from.
        self.terminate_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=60)
        if not self.closed:
            super().close()
            self.closed = True


def _pipelines(kind: str, train: bool, res: int, resize: int):
    """Image pipeline: numba decoder first, then ToTensor, then torch-only seeded ops."""
    if kind == "imagenet":
        if train:
            return [SeededRRCDecoder((res, res)), ToTensor(), SeededFlip()]
        return [CenterCropRGBImageDecoder((res, res), ratio=res / resize), ToTensor()]
    if train:
        return [SimpleRGBImageDecoder(), ToTensor(), SeededCifarAugment()]
    return [SimpleRGBImageDecoder(), ToTensor()]


class FfcvLoader(EpochLoader):
    """One .beton, one rank's shard. The FFCV Loader (≈ 6 s of numba compilation) is built on
    the first `iterate()`."""

    def __init__(self, fname: str, n: int, *, kind: str, res: int, resize: int, mean, std,
                 device: torch.device, workers: int, in_memory: bool, **kw):
        super().__init__(n, **kw)
        self.fname, self.kind, self.res, self.resize = fname, kind, res, resize
        self.mean, self.std, self.device = mean, std, device
        self.workers, self.in_memory = max(1, workers), in_memory
        self._loader: Optional[Loader] = None
        self._seed_node: Optional[int] = None

    def _build(self) -> Loader:
        threads = torch.get_num_threads()
        image = _pipelines(self.kind, self.train, self.res, self.resize)
        decoder = image[0]  # FFCV pops the decoder off the list it is given
        loader = Loader(self.fname, batch_size=self.batch_size, num_workers=self.workers,
                        os_cache=self.in_memory, order=OrderOption.SEQUENTIAL, seed=self.seed,
                        drop_last=self.train,
                        pipelines={"image": image, "label": [IntDecoder(), ToTensor()]})
        torch.set_num_threads(threads)
        if isinstance(decoder, SeededRRCDecoder):
            self._seed_node = next(nid for nid, node in loader.graph.id_to_node.items()
                                   if getattr(node, "decoder", None) is decoder)
        return loader

    def iterate(self, start_batch: int = 0):
        if self._loader is None:
            self._loader = self._build()
        order = self.indices(start_batch).astype(np.uint64)
        if len(order) == 0:
            return
        threads = torch.get_num_threads()
        it = _SeededIterator(self._loader, order, seed=self.seed, epoch=self.epoch,
                             seed_node=self._seed_node)
        try:
            for k, (images, labels) in enumerate(it):
                if k == 0:
                    torch.set_num_threads(threads)  # FFCV's thread changed it on start
                # images/labels are views of FFCV's reusable slot memory: copy out now.
                yield (augment.to_model_input(images, self.device, self.mean, self.std),
                       labels.reshape(-1).to(self.device, torch.int64, copy=True))
        finally:
            it.close()
