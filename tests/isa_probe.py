"""Print which kernels this process runs: ATen's CPU capability and oneDNN's instruction set, as JSON.

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python -m tests.isa_probe

Both libraries read their variable once, at first use, and fall back silently to what the CPU
supports: tests/test_isa_matrix.py asks this probe what a child process really got.
"""
import contextlib
import io
import json
import os

import torch


def onednn_isa() -> str:
    """oneDNN names its ISA in its verbose header, printed at the first primitive it creates."""
    buf = io.StringIO()
    fd = os.dup(1)
    r, w = os.pipe()
    os.dup2(w, 1)  # oneDNN writes to the C stdout
    try:
        with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON), contextlib.redirect_stdout(buf):
            torch.nn.functional.conv2d(torch.randn(8, 16, 32, 32), torch.randn(16, 16, 3, 3))
    finally:
        os.dup2(fd, 1)
        os.close(w)
    text = os.read(r, 1 << 20).decode()
    os.close(r)
    return next((line.split("isa:", 1)[1].strip() for line in text.splitlines() if ",isa:" in line), "")


if __name__ == "__main__":
    print(json.dumps({"aten": torch.backends.cpu.get_cpu_capability(), "onednn": onednn_isa()}))
