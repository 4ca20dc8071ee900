"""A warm Python for tests that start many short commands (tests/test_reliability.py,
tests/test_bad_input.py): it imports torch, the trainer, the launcher, the table builder and the
digits data once, then forks one `python -m MODULE ...` or `python SCRIPT ...` per request, so each
command starts in milliseconds instead of paying the imports again (seconds of CPU on 2 cores,
mostly torch, scikit-learn and torch's deterministic-mode set-up). The forked command runs as
`python -m` would run it (runpy, __main__, its own sys.argv and environment, the test plugins its
environment names loaded as Python's start-up would load them: tests/plugins/site).

Protocol (one JSON object per line): stdin {"argv": ["-m", MODULE, ...] | [SCRIPT, ...], "env":
{...}, "log": PATH[, "err": PATH]} starts a command with exactly that environment, its stdout and
stderr in PATH (its stderr in the second PATH when given);
stdout {"pid": N} when it started, {"pid": N, "rc": R} when it ended (R as subprocess reports it:
-SIG when killed by a signal). The zygote never runs torch ops itself (a fork after OpenMP started
would hang), and uses no threads (a fork copies only the forking thread, with whatever locks
others held).
"""
from __future__ import annotations

import json
import os
import runpy
import select
import sys

import torch

# The checkout this file belongs to comes first, as for `python -m` started from the repository
# root (how the tests start every other command), whatever other copy of repro is installed.
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
torch.use_deterministic_algorithms(False)  # its first call imports most of torch's compiler stack
import repro.launch  # noqa: E402,F401
import repro.tables  # noqa: E402,F401
import repro.train  # noqa: E402,F401
from repro.data import digits  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugins", "site"))
import sitecustomize as _site  # noqa: E402  (tests/plugins/site: the test plugins' loader)

sys.path.pop(0)
digits.read_split("train"), digits.read_split("val")  # rendered once (cached per process)


def _run(argv: list[str]) -> int:
    try:
        _site.load_plugins()  # what Python's start-up does with tests/plugins/site on PYTHONPATH
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            sys.modules.pop(argv[1], None)  # preloaded: runpy runs a fresh copy as __main__, like `python -m`
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
            runpy.run_path(argv[0], run_name="__main__")
        return 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - shown in the log, as python would show it
        import traceback
        traceback.print_exc()
        return 1


def _child(req: dict) -> None:
    os.environ.clear()
    os.environ.update(req["env"])
    fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    if req.get("err"):  # a file of its own; else one open file for both, as 2>&1 makes it
        os.close(fd)
        fd = os.open(req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    code = _run(req["argv"])
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
