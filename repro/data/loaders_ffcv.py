"""The FFCV path (ffcv 1.0.2), with seeded augmentation.

What FFCV 1.0.2 offers and what this module adds:
- `Loader(seed=...)` seeds only the traversal order (RANDOM: numpy permutation of seed + epoch;
  distributed: torch's DistributedSampler, which pads shards with duplicates). This module
  does not use FFCV's orders: it builds each epoch's iterator itself from the shard computed in
  `sharding.py`, so FFCV and the plain path read the same images in the same order.
- FFCV's random augmentations (RandomHorizontalFlip, RandomTranslate, the random-resized-crop
  decoder) draw from numba's per-thread generator, which is seeded from OS entropy and cannot
  be seeded through the API. So they are not used:
  * CIFAR pad-crop + flip run as a small torch stage after `ToTensor` that derives every
    decision from (seed, epoch, sample index) (`augment.py`), identical to the plain path;
  * the ImageNet random-resized crop and flip run inside a subclass of FFCV's decoder that
    re-seeds numba's generator per image from (seed, epoch, sample index) before drawing the
    crop. The seeds and the flip decisions (the plain path's) reach the compiled code through
    an extra per-batch buffer that the epoch iterator fills. Crops are then deterministic and
    resumable, but differ from the plain path's (a different generator), with the same
    distribution. On CPU the same decoder also writes the normalised float input.
- Compiled-op ordering trap: every numba op (the decoders) comes before `ToTensor`; only
  torch code runs after it.
- FFCV sets torch's global thread count (to 1 on import, to `num_workers` when a Loader is
  built and when an epoch starts); the caller's setting is restored each time.
"""
from __future__ import annotations

import sys
import threading
from dataclasses import replace
from typing import Callable, Optional

import numpy as np
import torch
from numba import njit

from . import ffcv_import  # noqa: F401  (first: keeps torch's thread count)
from ffcv.fields.basics import IntDecoder
from ffcv.fields.rgb_image import (CenterCropRGBImageDecoder, IMAGE_MODES,
                                   RandomResizedCropRGBImageDecoder, SimpleRGBImageDecoder,
                                   get_random_crop)
from ffcv.libffcv import imdecode, resize_crop
from ffcv.loader import Loader, OrderOption
from ffcv.loader.epoch_iterator import IS_CUDA, EpochIterator
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


def _flip_in_place(img):
    """Reverse an HWC image along its width."""
    h, w, c = img.shape
    for y in range(h):
        for x in range(w // 2):
            for k in range(c):
                t = img[y, x, k]
                img[y, x, k] = img[y, w - 1 - x, k]
                img[y, w - 1 - x, k] = t


def _store_normalized(src, dst, flip, scale, bias):
    """uint8 HWC `src` -> float32 CHW `dst` = src * scale + bias per channel, mirrored if `flip`.
    Compiled without fastmath (FFCV compiles its ops with it), so no multiply-add is fused and
    the result is bit-identical to `augment.to_model_input`'s numpy arithmetic."""
    h, w, c = src.shape
    for k in range(c):
        a, b = scale[k], bias[k]
        for y in range(h):
            for x in range(w):
                dst[k, y, x] = np.float32(src[y, w - 1 - x if flip else x, k]) * a + b


_flip_in_place_c = njit(nogil=True)(_flip_in_place)
_store_normalized_c = njit(nogil=True, fastmath=False)(_store_normalized)


class SeededRRCDecoder(RandomResizedCropRGBImageDecoder):
    """FFCV's random-resized-crop decoder, seeded, with the horizontal flip fused in, and (on
    CPU) the normalisation too.

    Per image, a third buffer filled by _SeededIterator before each batch holds the numba seed
    for the crop and the flip decision (`augment.flip_mask`, the plain path's). With
    `normalize=(scale, bias)` the output is the model's float32 CHW input, written by the
    decoder's parallel threads straight into a batch array that _SeededIterator takes from an
    _OutputPool (FFCV's own slot memory would have to be copied out: ~8% of the throughput on
    2 cores); otherwise (CUDA: normalised on the GPU from 4x fewer bytes) it is FFCV's uint8
    HWC image, flipped in place. Fusing matters on small machines: a separate flip stage runs
    serially on FFCV's producer thread while the decoding threads wait, and normalising in the
    training process takes a core from the decoder."""

    def __init__(self, output_size, normalize: Optional[tuple] = None):
        super().__init__(output_size)
        self.normalize = normalize

    def declare_state_and_memory(self, previous_state: State):
        state, (out, tmp) = super().declare_state_and_memory(previous_state)
        aug = AllocationQuery((2,), np.dtype("<u4"))  # (numba seed, flip)
        if self.normalize is None:
            return state, (out, tmp, aug)
        shape = (3, *self.output_size)
        f32 = np.dtype("<f4")
        # The output lives in _OutputPool arrays; FFCV's allocation is a placeholder.
        return replace(state, shape=shape, dtype=f32), (AllocationQuery((1,), f32), tmp, aug, out)

    def generate_code(self) -> Callable:
        jpg = IMAGE_MODES["jpg"]
        mem_read = self.memory_read
        my_range = Compiler.get_iterator()
        imdecode_c = Compiler.compile(imdecode)
        resize_crop_c = Compiler.compile(resize_crop)
        get_crop_c = Compiler.compile(get_random_crop)
        scale, ratio = np.array(self.scale), np.array(self.ratio)
        normalize = self.normalize is not None
        norm_scale, norm_bias = self.normalize if normalize else (np.ones(3, np.float32), np.zeros(3, np.float32))
        flip_c, store_c = _flip_in_place_c, _store_normalized_c

        def decode(batch_indices, my_storage, metadata, storage_state):
            if normalize:
                destination, temp_storage, aug, resized = my_storage
                if destination.ndim != 4 or destination.shape[0] < len(batch_indices):
                    raise RuntimeError("fused decoder: no output array (iterate through FfcvLoader)")
            else:
                destination, temp_storage, aug = my_storage
                resized = destination
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
                np.random.seed(aug[dst_ix, 0])  # numba's generator of this thread
                i, j, h, w = get_crop_c(height, width, scale, ratio)
                resize_crop_c(temp_buffer, i, i + h, j, j + w, resized[dst_ix])
                if normalize:
                    store_c(resized[dst_ix], destination[dst_ix], aug[dst_ix, 1] != 0, norm_scale, norm_bias)
                elif aug[dst_ix, 1] != 0:
                    flip_c(destination[dst_ix])
            return destination[:len(batch_indices)]

        decode.is_parallel = True
        return decode


def _refcounts(arrays) -> list:
    return [sys.getrefcount(a) for a in arrays]


class _OutputPool:
    """Whole-batch output arrays for the fused decoder, owned by the batches handed out.

    An array is reused only once nothing outside the pool references it: every tensor or view
    made from a batch keeps its numpy array alive, so a batch stays valid however long the
    caller holds it (unlike FFCV's slot memory, rewritten a few batches later). Reuse saves
    the page faults of a fresh ~80 MB array per batch. "Unreferenced" is the reference count
    of an array held by nothing but a list, measured by the same code at start-up, so the test
    does not depend on the interpreter's counting details."""

    _FREE = _refcounts([np.empty(1)])[0]

    def __init__(self, shape: tuple, dtype, keep: int):
        self.shape, self.dtype, self.keep = shape, np.dtype(dtype), keep
        self.arrays: list = []
        self.lock = threading.Lock()

    def take(self) -> np.ndarray:
        with self.lock:
            counts = _refcounts(self.arrays)
            for k, c in enumerate(counts):
                if c == self._FREE:
                    return self.arrays[k]
            a = np.empty(self.shape, self.dtype)
            if len(self.arrays) < self.keep:
                self.arrays.append(a)
            return a


class _EverySlot:
    """Stands in for an FFCV allocation (indexed [slot][:count]): the same array for every slot."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __getitem__(self, slot):
        return self.array


class _SeededIterator(EpochIterator):
    """FFCV's epoch iterator over an explicit order, carrying (seed, epoch) for the seeded ops,
    and handing the fused decoder its output array from `out_pool`.

    On CUDA, two guards FFCV 1.0.2 lacks:
    * its producer thread makes the rank's GPU its current device (a new thread starts on GPU 0,
      where any CUDA call would open a context of this process: ~0.5 GB on GPU 0 per rank);
    * a batch slot (pinned memory, read by the consumer's non-blocking copies) is decoded into
      again only after those copies have finished: FFCV's own event only makes its side stream
      wait, while the decoder writes the slot from the CPU. The consumer calls `mark_copied()`
      after queueing its copies; the producer waits for that event before reusing the slot."""

    def __init__(self, loader: Loader, order: np.ndarray, *, seed: int, epoch: int,
                 seed_node: Optional[int], out_pool: Optional[_OutputPool] = None,
                 device: Optional[torch.device] = None):
        self.aug_seed, self.aug_epoch, self.seed_node = seed, epoch, seed_node
        self.out_pool = out_pool
        self.device = device
        self.copied: dict = {}     # batch slot -> CUDA event recorded after the copies out of it
        self.last_slot = None      # slot of the batch handed out last
        super().__init__(loader, order)  # starts the thread

    def run(self):
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        super().run()

    def __next__(self):
        item = self.output_queue.get()
        if item is None:
            self.close()
            raise StopIteration()
        self.last_slot, result = item
        if IS_CUDA:  # as FFCV's own __next__
            self.current_stream.wait_stream(self.cuda_streams[self.last_slot])
        return result

    def mark_copied(self) -> None:
        """The consumer has queued every copy out of the last batch's slot (CUDA only)."""
        event = torch.cuda.Event()
        event.record()
        self.copied[self.last_slot] = event

    def run_pipeline(self, b_ix, batch_indices, batch_slot, cuda_event):
        copied = self.copied.pop(batch_slot, None)
        if copied is not None:
            copied.synchronize()  # the GPU has read this slot: the CPU may write it again
        out = None
        if self.seed_node is not None:
            buffers = self.memory_allocations["operation"][self.seed_node]
            aug = buffers[2][batch_slot]
            keys = augment.sample_keys(self.aug_seed, self.aug_epoch, batch_indices, augment.STREAM_DECODE)
            aug[:len(batch_indices), 0] = augment.seeds32(keys)
            aug[:len(batch_indices), 1] = augment.flip_mask(self.aug_seed, self.aug_epoch, batch_indices)
            if self.out_pool is not None:
                out = self.out_pool.take()
                self.memory_allocations["operation"][self.seed_node] = (_EverySlot(out), *buffers[1:])
        result = super().run_pipeline(b_ix, batch_indices, batch_slot, cuda_event)
        if out is None:
            return result
        # The image output is a view of `out` made inside numba; hand out one made from `out`
        # itself, so that the pool sees the batch as in use while the caller holds it.
        image = next(k for k, r in enumerate(result) if r.data_ptr() == out.ctypes.data)
        return tuple(torch.from_numpy(out[:len(batch_indices)]) if k == image else r
                     for k, r in enumerate(result))

    def close(self):
        # Stop the producer before FFCV releases the memory it reads from.
        self.terminate_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=60)
        if not self.closed:
            super().close()
            self.closed = True


def _pipelines(kind: str, train: bool, res: int, resize: int, normalize: Optional[tuple]):
    """Image pipeline: numba decoder first, then ToTensor, then torch-only seeded ops."""
    if kind == "imagenet":
        if train:
            return [SeededRRCDecoder((res, res), normalize), ToTensor()]
        return [CenterCropRGBImageDecoder((res, res), ratio=res / resize), ToTensor()]
    if train:
        return [SimpleRGBImageDecoder(), ToTensor(), SeededCifarAugment()]
    return [SimpleRGBImageDecoder(), ToTensor()]


class FfcvLoader(EpochLoader):
    """One .beton, one rank's shard. The FFCV Loader (≈ 6 s of numba compilation) is built on
    the first `iterate()`. `fuse_normalize` (default: on CPU) makes the ImageNet training
    decoder write the normalised input itself; the tensors are the same either way."""

    def __init__(self, fname: str, n: int, *, kind: str, res: int, resize: int, mean, std,
                 device: torch.device, workers: int, in_memory: bool,
                 fuse_normalize: Optional[bool] = None, **kw):
        super().__init__(n, **kw)
        self.fuse_normalize = (device.type == "cpu" if fuse_normalize is None else fuse_normalize) \
            and kind == "imagenet" and self.train
        self.fname, self.kind, self.res, self.resize = fname, kind, res, resize
        self.mean, self.std, self.device = mean, std, device
        self.workers, self.in_memory = max(1, workers), in_memory
        self._loader: Optional[Loader] = None
        self._seed_node: Optional[int] = None
        self._out_pool: Optional[_OutputPool] = None

    def _build(self) -> Loader:
        threads = torch.get_num_threads()
        image = _pipelines(self.kind, self.train, self.res, self.resize,
                           augment.normalize_affine(self.mean, self.std) if self.fuse_normalize else None)
        decoder = image[0]  # FFCV pops the decoder off the list it is given
        loader = Loader(self.fname, batch_size=self.batch_size, num_workers=self.workers,
                        os_cache=self.in_memory, order=OrderOption.SEQUENTIAL, seed=self.seed,
                        drop_last=self.train,
                        pipelines={"image": image, "label": [IntDecoder(), ToTensor()]})
        torch.set_num_threads(threads)
        if isinstance(decoder, SeededRRCDecoder):
            self._seed_node = next(nid for nid, node in loader.graph.id_to_node.items()
                                   if getattr(node, "decoder", None) is decoder)
        if self.fuse_normalize:  # FFCV keeps batches_ahead queued, the caller holds one or two
            self._out_pool = _OutputPool((self.batch_size, 3, self.res, self.res), np.float32,
                                         keep=loader.batches_ahead + 4)
        return loader

    def iterate(self, start_batch: int = 0):
        if self._loader is None:
            self._loader = self._build()
        order = self.indices(start_batch).astype(np.uint64)
        if len(order) == 0:
            return
        threads = torch.get_num_threads()
        it = _SeededIterator(self._loader, order, seed=self.seed, epoch=self.epoch,
                             seed_node=self._seed_node, out_pool=self._out_pool, device=self.device)
        cuda = self.device.type == "cuda"
        try:
            for k, (images, labels) in enumerate(it):
                if k == 0:
                    torch.set_num_threads(threads)  # FFCV's thread changed it on start
                # Fused output: the batch owns its pool array. Otherwise images/labels are views
                # of FFCV's reusable slot memory: copied out now.
                if self._out_pool is None:
                    x = augment.to_model_input(images, self.device, self.mean, self.std)
                elif self.device.type == "cpu":
                    x = images
                else:  # fused on request for an accelerator: same layout as to_model_input's
                    x = images.to(self.device).contiguous(memory_format=torch.channels_last)
                # non_blocking: the int64 conversion then runs on the GPU after an asynchronous
                # copy (a blocking one would wait for the queued training step)
                y = labels.reshape(-1).to(self.device, torch.int64, non_blocking=cuda, copy=True)
                if cuda:
                    it.mark_copied()
                yield x, y
        finally:
            it.close()
