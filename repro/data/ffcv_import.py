"""Import FFCV once, without its process-wide side effect on torch, and without recompiling
numba's typed dict in every process.

`ffcv.pipeline.compiler` calls `torch.set_num_threads(1)` when it is imported, which would
silently make every CPU matmul of the importing process single-threaded. Every module of this
package imports FFCV through here; the caller's torch thread count is put back.

`ffcv.fields.rgb_image` fills a `numba.typed.Dict` when it is imported, and numba compiles the
dict's methods for it: 6-7 s of CPU in every process that imports FFCV (each trainer rank, each
loader), the same machine code each time. numba's own on-disk cache (what `@njit(cache=True)`
uses: beside numba's sources, or its user cache folder when those are read-only) is switched on
for those functions, so only the first process compiles them: ~1 s after that, measured.
"""
from __future__ import annotations

import torch


def _cache_typed_dict_compiles() -> None:
    try:
        import numba.typed.typeddict as typeddict
        from numba.core.dispatcher import Dispatcher
        for f in vars(typeddict).values():
            if isinstance(f, Dispatcher):
                f.enable_caching()
    except Exception:  # noqa: BLE001 - another numba's internals: then it compiles, as without this
        pass


_cache_typed_dict_compiles()
_threads = torch.get_num_threads()
try:
    import ffcv  # noqa: F401
    import ffcv.fields  # noqa: F401
    import ffcv.loader  # noqa: F401
    import ffcv.writer  # noqa: F401
finally:
    torch.set_num_threads(_threads)
