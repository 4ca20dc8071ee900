"""How a run ends when it does not end done: the exceptions and the CLI's exit codes."""
from __future__ import annotations

# 0 done, 1 failed (result.json says why), 2 bad input (nothing trained, nothing lost),
# 75 preempted after a checkpoint = "requeue me" (EX_TEMPFAIL), 130 interrupted (Ctrl-C).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REQUEUE, EXIT_INTERRUPTED = 0, 1, 2, 75, 130


class TrainingFailed(RuntimeError):
    """The run cannot go on (e.g. the loss became NaN); result.json is marked failed."""


class RunEnvironmentError(RuntimeError):
    """The machine failed the run (e.g. the disk is full): not recorded as a failed run, since
    the last good checkpoint is intact and the run resumes once the cause is fixed."""


class Preempted(RuntimeError):
    """A stop signal arrived; a checkpoint was written at a step boundary. Requeue the run."""

    exit_code = EXIT_REQUEUE


class Interrupted(Preempted):
    """Ctrl-C (SIGINT): handled like a stop signal (checkpoint at a step boundary), exit 130."""

    exit_code = EXIT_INTERRUPTED


def stopped(signum: int | None, message: str) -> Preempted:
    """The exception a stop signal ends the run with: Interrupted for SIGINT, else Preempted."""
    import signal
    return (Interrupted if signum == signal.SIGINT else Preempted)(message)
