"""A warm Python for tests that start many short trainers (tests/test_reliability.py): it imports
torch, the trainer and the digits data once, then forks one `python -m repro.train` per request, so
each trainer starts in milliseconds instead of paying the imports again (several seconds of CPU
on 2 cores, mostly torch, scikit-learn and torch's deterministic-mode set-up).

Protocol (one JSON object per line): stdin {"argv": [...], "env": {...}, "log": PATH} starts a
trainer with exactly that environment, its stdout and stderr in PATH; stdout {"pid": N} when it
started, {"pid": N, "rc": R} when it ended (R as subprocess reports it: -SIG when killed by a
signal). The zygote never runs torch ops itself (a fork after OpenMP started would hang), and
uses no threads (a fork copies only the forking thread, with whatever locks others held).
"""
from __future__ import annotations

import json
import os
import select
import sys

import torch

torch.use_deterministic_algorithms(False)  # its first call imports most of torch's compiler stack
from repro.data import digits  # noqa: E402
from repro.train import main  # noqa: E402

digits.read_split("train"), digits.read_split("val")  # rendered once (cached per process)


def _child(req: dict) -> None:
    os.environ.clear()
    os.environ.update(req["env"])
    fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    sys.argv = ["repro.train", *req["argv"]]
    try:
        code = main(req["argv"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - shown in the log, like an uncaught error of the CLI
        import traceback
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _reap(out) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        out.write(json.dumps({"pid": pid, "rc": rc}) + "\n")
        out.flush()


def serve() -> None:
    out, fd, buf = sys.stdout, sys.stdin.fileno(), b""
    while True:
        if select.select([fd], [], [], 0.05)[0]:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                pid = os.fork()
                if pid == 0:
                    _child(json.loads(line))
                out.write(json.dumps({"pid": pid}) + "\n")
                out.flush()
        _reap(out)


if __name__ == "__main__":
    serve()
