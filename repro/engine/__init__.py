"""The training engine: a generic loop that knows no pruning method, the method objects it calls
through a few hooks, and the parts around them (checkpoint, signals, initial weights, logs).

``repro.train.run(cfg, run_dir)`` is the one entry point; it builds a ``loop.Session`` and calls
``loop.execute``. docs/ARCHITECTURE.md, "Engine", has the contracts.
"""
