"""The papers' training recipes, written once: the config presets and the table declarations read
them from here (docs/papers.md, "Recipes", gives the sources).

Each recipe is a set of dotted config overrides. ``Config()`` is the CIFAR recipe (its field
defaults are read from ``CIFAR``); ``preset=imagenet`` (or any ImageNet arch with ``preset=auto``)
applies ``IMAGENET``. From a pre-trained model both papers train at one tenth of the learning
rate for the same number of epochs: that is ``PRETRAINED_LR_SCALE``, applied by the config
whenever ``prune.init_from`` is set.
"""
from __future__ import annotations

from types import MappingProxyType

# SFP CIFAR-10 (official script: lr 0.01 for epoch 0, then 0.1, x0.2 at 60/120/160; 200 epochs;
# SGD momentum 0.9 Nesterov; wd 5e-4; batch 128).
CIFAR = MappingProxyType({
    "data.batch_size": 128,
    "optim.lr": 0.1, "optim.momentum": 0.9, "optim.nesterov": True, "optim.weight_decay": 5e-4,
    "schedule.epochs": 200, "schedule.warmup_epochs": 1, "schedule.warmup_lr": 0.01,
    "schedule.milestones": (60, 120, 160), "schedule.gamma": 0.2,
})

# SFP ImageNet (100 epochs, batch 256 over 8 GPUs, lr 0.1 x0.1 every 30 epochs, wd 1e-4;
# random-resized crop 224 for training, resize 256 + centre crop 224 for evaluation).
IMAGENET = MappingProxyType({
    "data.name": "imagenet", "data.batch_size": 256,
    "data.train_res": 224, "data.val_res": 224, "data.val_resize": 256,
    "optim.lr": 0.1, "optim.weight_decay": 1e-4,
    "schedule.epochs": 100, "schedule.warmup_epochs": 0, "schedule.milestones": (30, 60, 90),
    "schedule.gamma": 0.1,
})
# The paper's layout for IMAGENET's batch: 8 GPUs, so 32 images per GPU's BatchNorm.
IMAGENET_PAPER_GPUS = 8

PRETRAINED_LR_SCALE = 0.1

PRESETS = MappingProxyType({"cifar": CIFAR, "imagenet": IMAGENET})
