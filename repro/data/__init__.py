"""Data: FFCV writers and loaders for CIFAR-10, ImageNet and scikit-learn's digits, a plain
PyTorch path with the same semantics, and stand-in data sets in the real on-disk layouts.

Public API (see docs/ARCHITECTURE.md, "Data"): `build_loaders`, `check_data`, `Loaders`,
`data_classes`, `per_process_batch`, `check_batch_fits`, `DataError`. CLIs: `python -m repro.data.write`, `python -m repro.data.synth`.
FFCV is imported only when an FFCV loader or writer is used.
"""
from .build import Loaders, build_loaders, check_batch_fits, check_data, data_classes, per_process_batch
from .errors import DataError

__all__ = ["DataError", "Loaders", "build_loaders", "check_batch_fits", "check_data", "data_classes", "per_process_batch"]
