"""Weights & Biases as a view of the run folder: global rank 0 only, offline unless proven online.

The local ``metrics.jsonl`` is the source of truth; nothing here may stop or slow a run:
* mode: ``log.wandb`` if it is not ``auto``, else ``WANDB_MODE``, else ``offline``;
* ``online`` only with an API key (``WANDB_API_KEY`` or ~/.netrc) and a server that answers a
  3-second probe; otherwise, or when ``wandb.init`` raises ``CommError``/``UsageError``, offline;
* the run id lives in ``run_dir/wandb_id.txt`` and is reused with ``resume="allow"``, so an
  interrupted and resumed run is one W&B run;
* W&B's own step restarts on resume, so rows carry our ``step`` and every metric is plotted
  against it (``define_metric("*", step_metric="step")``).
Offline runs land in ``run_dir/wandb/offline-run-*/``; sync them with ``wandb sync``.

W&B's work happens in a separate service process (``wandb-core``). On SLURM a preemption or a
time-out signal reaches every process of the job step, so that service can die while the trainer
is still checkpointing; then every call raises (ConnectionResetError, BrokenPipeError, ...). Such
failures are logged once and W&B is dropped for the rest of the process: the run goes on, and a
preemption stays a preemption (exit 75, requeue), not a failure.
"""
from __future__ import annotations

import logging
import netrc
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

from repro.io import atomic_write_bytes
from repro.rundir import WANDB_ID

log = logging.getLogger(__name__)
MODES = ("offline", "online", "disabled")


def resolve_mode(setting: str, environ: Mapping[str, str] = os.environ) -> str:
    """offline | online | disabled from the config setting, then WANDB_MODE, then offline."""
    if setting != "auto":
        return setting
    env = environ.get("WANDB_MODE", "").strip().lower()
    if env in ("dryrun",):
        return "offline"
    if env in MODES:
        return env
    if env:
        log.warning("WANDB_MODE=%r is not one of %s; using offline", env, "|".join(MODES))
    return "offline"


def base_url(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get("WANDB_BASE_URL", "https://api.wandb.ai").rstrip("/")


def has_api_key(environ: Mapping[str, str] = os.environ) -> bool:
    if environ.get("WANDB_API_KEY"):
        return True
    try:
        host = urlparse(base_url(environ)).hostname or ""
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def server_reachable(url: str, timeout: float = 3.0) -> bool:
    """Any HTTP answer counts (even 401/404): we only need to know the network path works."""
    try:
        urllib.request.urlopen(url, timeout=timeout)
        return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def choose_mode(setting: str, environ: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """(mode, why): the mode we will really use and a short reason for the log."""
    mode = resolve_mode(setting, environ)
    if mode != "online":
        return mode, f"log.wandb={setting}" + (f", WANDB_MODE={environ.get('WANDB_MODE')}" if setting == "auto" else "")
    if not has_api_key(environ):
        return "offline", "online asked for but no W&B API key (WANDB_API_KEY or ~/.netrc)"
    url = base_url(environ)
    if not server_reachable(url):
        return "offline", f"online asked for but {url} does not answer"
    return "online", "API key present and server reachable"


class WandbLog:
    """Rank-0 W&B run bound to a run folder; every method is a no-op when disabled."""

    def __init__(self, run_dir: Path, *, setting: str, project: str, group: str, name: str,
                 config: dict, is_main: bool):
        self.run = None
        self.mode = "disabled"
        if not is_main:
            return
        mode, why = choose_mode(setting)
        if mode == "disabled":
            log.info("W&B disabled (%s)", why)
            return
        import wandb
        if mode == "offline":
            # Keeps wandb's exit-time telemetry from reaching for the network (stack.md).
            os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        id_file = Path(run_dir) / WANDB_ID
        if id_file.exists():
            run_id = id_file.read_text().strip()
        else:
            import secrets
            run_id = secrets.token_hex(4)  # W&B ids: 8 lowercase alphanumerics is what wandb makes too
            atomic_write_bytes(id_file, (run_id + "\n").encode())
        kwargs = dict(project=project, group=group or None, name=name, id=run_id, resume="allow",
                      dir=str(run_dir), config=config, job_type="train")
        try:
            self.run = wandb.init(mode=mode, **kwargs)
        except (wandb.errors.CommError, wandb.errors.UsageError) as e:
            if mode != "online":
                raise
            log.warning("W&B online init failed (%s); logging offline instead", str(e).splitlines()[0])
            mode, why = "offline", "online init failed"
            self.run = wandb.init(mode="offline", **kwargs)
        self.mode = mode
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        log.info("W&B %s run %s (%s)", mode, run_id, why)

    def _drop(self, what: str, e: BaseException) -> None:
        log.warning("W&B %s failed (%s: %s); W&B dropped for this attempt, metrics.jsonl is complete",
                    what, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        self.run = None

    def log(self, row: Mapping[str, Any]) -> None:
        if self.run is not None:
            try:
                self.run.log(dict(row))
            except Exception as e:  # noqa: BLE001 - W&B is a view; it must not stop the run
                self._drop("log", e)

    def summary(self, values: Mapping[str, Any]) -> None:
        if self.run is not None:
            try:
                for k, v in values.items():
                    if isinstance(v, (int, float, str, bool)) or v is None:
                        self.run.summary[k] = v
            except Exception as e:  # noqa: BLE001
                self._drop("summary", e)

    def mark_preempting(self) -> None:
        """Tell W&B the run is being preempted (it is resumed later, not crashed); never raises."""
        if self.run is not None:
            try:
                self.run.mark_preempting()
            except Exception as e:  # noqa: BLE001
                self._drop("mark_preempting", e)

    def finish(self, exit_code: int = 0) -> None:
        """Close the W&B run; never raises (see the module docstring)."""
        if self.run is not None:
            run, self.run = self.run, None
            try:
                run.finish(exit_code=exit_code)
            except Exception as e:  # noqa: BLE001
                self._drop("finish", e)

    @property
    def run_path(self) -> str | None:
        """The offline run folder (run_dir/wandb/offline-run-*), for ``wandb sync``."""
        return None if self.run is None else str(Path(self.run.dir).parent)
