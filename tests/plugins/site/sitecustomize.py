"""Test-suite fault injection, outside the product: Python imports this module at the start of
every process whose PYTHONPATH holds this folder (the standard ``site`` hook), and it imports the
plugins named in PRUNEREPRO_TEST_PLUGINS (Python files, separated by os.pathsep). A plugin wraps
public functions of the code it instruments (tests/plugins/pause.py, signals.py, ...).

``tests/conftest.py:with_plugins`` makes that environment, so the plugins reach every process a
test starts with it: the trainer under ``python -m``, torchrun's workers, the launcher and the
local or SLURM jobs it starts. ``tests/zygote.py`` forks its commands instead of starting Python
afresh, so it calls ``load_plugins`` itself."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

PLUGINS_ENV = "PRUNEREPRO_TEST_PLUGINS"


def load_plugins(environ=os.environ) -> None:
    for path in filter(None, environ.get(PLUGINS_ENV, "").split(os.pathsep)):
        name = f"prunerepro_test_plugin_{Path(path).stem}"
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or not Path(path).is_file():
            raise FileNotFoundError(f"{PLUGINS_ENV}: {path} is not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


try:
    load_plugins()
except BaseException as e:  # site would only print a warning and go on without the fault injection
    print(f"tests/plugins/site/sitecustomize.py: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    os._exit(3)
