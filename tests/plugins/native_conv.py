"""Test plugin (PRUNEREPRO_PLUGINS): run every convolution with torch's native CPU kernels instead of
oneDNN's. The same arithmetic in float32 with another summation order: a run with it differs from
the default one by float rounding only (tests/test_train_ddp.py uses that spread as its yardstick)."""
import torch

torch.backends.mkldnn.enabled = False
