"""The training engine: a generic loop that knows no pruning method, the method objects it calls
through a few hooks, and the parts around them (checkpoint, signals, initial weights, logs).

``repro.train.run(cfg, run_dir)`` is the one entry point; it makes the attempt's state
(``state.Attempt``, ``state.Position``) and calls ``loop.execute``; ``loop.run_epoch`` is one epoch,
top to bottom. docs/ARCHITECTURE.md, "Engine", has the contracts.
"""
