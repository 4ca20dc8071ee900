"""Rank 0 of a torchrun or srun run starts PRUNEREPRO_TEST_LATE_RANK0 seconds late, as it may on a
loaded machine, so that the other ranks reach a start-up check first (tests/test_run_failures.py).
Loaded at process start by tests/plugins/site/sitecustomize.py; torchrun's agent has no RANK."""
import os
import time

if os.environ.get("RANK", os.environ.get("SLURM_PROCID")) == "0":
    time.sleep(float(os.environ["PRUNEREPRO_TEST_LATE_RANK0"]))
