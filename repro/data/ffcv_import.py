"""Import FFCV once, without its process-wide side effect on torch.

`ffcv.pipeline.compiler` calls `torch.set_num_threads(1)` when it is imported, which would
silently make every CPU matmul of the importing process single-threaded. Every module of this
package imports FFCV through here; the caller's torch thread count is put back.
"""
from __future__ import annotations

import torch

_threads = torch.get_num_threads()
try:
    import ffcv  # noqa: F401
    import ffcv.fields  # noqa: F401
    import ffcv.loader  # noqa: F401
    import ffcv.writer  # noqa: F401
finally:
    torch.set_num_threads(_threads)
