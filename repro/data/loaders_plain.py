"""The plain PyTorch path: a torch DataLoader over the raw layouts (no FFCV needed).

Same semantics as the FFCV path (same shards, same order, same seeded augmentation, same
normalisation). A whole batch is fetched by the Dataset's `__getitems__` (one call per batch
in a worker), so 32x32 sets are augmented vectorised, like FFCV's batch pipelines.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from . import augment
from .errors import DataError
from .sharding import EpochLoader
from .worker_signals import ignore_stop_signals, loader_context


def _identity(batch):
    return batch


class ArrayDataset(torch.utils.data.Dataset):
    """In-memory 32x32 uint8 NHWC images (CIFAR-10, digits). Keys are (epoch, indices)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, train: bool, seed: int):
        self.images, self.labels, self.train, self.seed = images, labels, train, seed

    def __len__(self):
        return len(self.images)

    def __getitems__(self, keys):
        epoch, idx = keys[0]
        x = torch.from_numpy(self.images[idx])
        if self.train:
            x = augment.cifar_augment(x, self.seed, epoch, idx)
        return x, torch.from_numpy(self.labels[idx])


class FolderDataset(torch.utils.data.Dataset):
    """JPEG files decoded with Pillow. Train: random-resized crop to `res` and flip; val: the
    centred square of side int(min(h, w) * res / resize), resized to `res` (FFCV's centre-crop
    decoder, i.e. "resize to `resize`, centre-crop `res`" in one step)."""

    def __init__(self, paths, labels, *, train: bool, seed: int, res: int, resize: int):
        self.paths, self.labels, self.train, self.seed = paths, labels, train, seed
        self.res, self.ratio = res, res / resize

    def __len__(self):
        return len(self.paths)

    def _one(self, i: int, u: np.ndarray | None) -> np.ndarray:
        from PIL import Image
        from .imagenet import decode
        img = Image.fromarray(decode(self.paths[i]))
        w, h = img.size
        if u is not None:
            top, left, ch, cw = augment.rrc_params(h, w, u)
        else:
            top, left, ch, cw = augment.center_crop_params(h, w, self.ratio)
        # Pillow's bilinear filter widens its support when shrinking (antialiased); of Pillow's
        # filters it comes closest to FFCV's cv2 INTER_AREA (about 1 grey level on average).
        out = img.resize((self.res, self.res), Image.BILINEAR, box=(left, top, left + cw, top + ch))
        return np.asarray(out)

    def __getitems__(self, keys):
        epoch, idx = keys[0]
        if self.train:
            u = augment.uniforms(augment.sample_keys(self.seed, epoch, idx, augment.STREAM_CROP),
                                 augment.RRC_UNIFORMS)
            x = torch.from_numpy(np.stack([self._one(i, u[k]) for k, i in enumerate(idx)]))
            x = augment.flip_batch(x, augment.flip_mask(self.seed, epoch, idx))
        else:
            x = torch.from_numpy(np.stack([self._one(i, None) for i in idx]))
        return x, torch.from_numpy(np.asarray(self.labels)[idx])


class _EpochBatches:
    """Batch sampler whose contents the loader replaces each epoch: one key per batch,
    [(epoch, indices)], consumed by the Dataset's __getitems__. Sampling runs in the main
    process, so persistent workers need no epoch state of their own."""

    def __init__(self):
        self.keys: list = []

    def __iter__(self):
        return iter(self.keys)

    def __len__(self):
        return len(self.keys)


class PlainLoader(EpochLoader):
    def __init__(self, dataset, *, mean, std, device: torch.device, workers: int, **kw):
        super().__init__(len(dataset), **kw)
        self.dataset, self.mean, self.std = dataset, mean, std
        self.device, self.workers = device, workers
        self._sampler = _EpochBatches()
        self._dl = None

    def iterate(self, start_batch: int = 0):
        self._sampler.keys = [[(self.epoch, b)] for b in self.batches(start_batch)]
        if not self._sampler.keys:
            return
        if self._dl is None:
            # Workers persist across epochs: forking them anew every epoch costs more than a
            # whole CIFAR epoch's loading on a small machine.
            self._dl = DataLoader(self.dataset, batch_sampler=self._sampler, collate_fn=_identity,
                                  num_workers=self.workers, pin_memory=self.device.type == "cuda",
                                  worker_init_fn=ignore_stop_signals if self.workers else None,
                                  multiprocessing_context=loader_context() if self.workers else None,
                                  persistent_workers=self.workers > 0,
                                  prefetch_factor=4 if self.workers else None)
        try:
            for images, labels in self._dl:
                yield (augment.to_model_input(images, self.device, self.mean, self.std),
                       labels.to(self.device, non_blocking=True))
        except DataError as e:
            # A worker's DataError comes back with its traceback folded into the message.
            last = str(e).strip().splitlines()[-1]
            raise DataError(last.split("DataError: ", 1)[-1]) from None
