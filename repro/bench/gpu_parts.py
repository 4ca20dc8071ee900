"""The steps of the GPU acceptance check (``python -m repro.bench.gpu``), each a function returning
a JSON-ready dict: the stand-in data, our trainer (eager and compiled), the bare loop, the loader
alone, a process group, the compact ResNet-50, and the engine's overhead worked out from the
trainer's and the bare loop's epochs."""
from __future__ import annotations

import os
import shutil
import socket
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def after_first(xs: list[float]) -> float:
    """The median over the epochs after the first (which builds the loader, compiles FFCV's
    pipeline and torch.compile's graphs, tunes cuDNN)."""
    return statistics.median(xs[1:])


def stand_in(work: Path, z) -> Path:
    """Stand-in ImageNet, generated and converted once per work folder and size; returns the
    .beton folder."""
    from repro.data import imagenet
    from repro.data.synth import make_imagenet
    name = f"imagenet-{z.device}-{z.classes}x{z.train_per_class}-{z.image_size}px"
    raw, ffcv = work / f"{name}-raw", work / name
    if not (ffcv / "val.beton").exists():
        if not raw.exists():
            make_imagenet(raw, classes=z.classes, train_per_class=z.train_per_class, val_per_class=2,
                          size=z.image_size)
        imagenet.write(raw, ffcv, max_res=512, quality=90)
    return ffcv


def train_config(z, ffcv: Path):
    from repro.config import Config
    from repro.papers.recipes import IMAGENET
    # One process at the per-GPU batch: the paper's lr scaled to it (linear rule), or the run's
    # divergence rule ends it (lr 0.1 at batch 8 explodes within an epoch).
    lr = IMAGENET["optim.lr"] * z.batch / IMAGENET["data.batch_size"]
    return Config.from_overrides([
        f"model.arch={z.arch}", f"data.ffcv_dir={ffcv}", f"data.batch_size={z.batch}", f"optim.lr={lr:g}",
        f"data.train_res={z.res}",
        f"data.val_res={z.res}", f"data.val_resize={z.val_resize}", f"schedule.epochs={z.epochs}",
        "schedule.milestones=", "schedule.warmup_epochs=0", "schedule.val_batches=1", "log.wandb=disabled",
        f"device={z.device}"])


def trainer(cfg, run_dir: Path) -> dict:
    """Our trainer end to end; its own figures per epoch (metrics.jsonl)."""
    from repro import rundir
    from repro.train import run
    shutil.rmtree(run_dir, ignore_errors=True)
    res = run(cfg, run_dir)
    rows = rundir.read_metrics(run_dir)
    rates = [m["imgs_per_s"] for m in rows]
    return {"images_per_s": after_first(rates), "epochs_images_per_s": rates,
            "data_wait_share": after_first([m["data_wait_share"] for m in rows]),
            "epochs_s": [m["epoch_s"] for m in rows], "recorded_at": [m["recorded_at"] for m in rows],
            "train_precision": res["train_precision"], "eval_precision": res["eval_precision"],
            "compile": cfg.compile}


def compiled(cfg, run_dir: Path, eager: dict, skip: str | None) -> dict:
    """Our trainer again with ``compile=inductor``: its rate after the first epoch (which
    compiles) against the eager one's. ``skip``: why not to, recorded instead."""
    if skip:
        return {"skipped": skip}
    try:
        r = trainer(cfg.replace({"compile": "inductor"}), run_dir)
    except Exception as e:  # noqa: BLE001 - a figure of the check, not the check: recorded
        return {"skipped": f"compile=inductor failed: {type(e).__name__}: {e}".splitlines()[0]}
    return {"backend": "inductor", "images_per_s": r["images_per_s"],
            "over_eager": r["images_per_s"] / eager["images_per_s"], "epochs_images_per_s": r["epochs_images_per_s"],
            "first_epoch_s": r["epochs_s"][0]}


def bare_loop(cfg, loaders, device: torch.device, amp) -> dict:
    """torchvision's reference loop, reduced: loader -> autocast forward -> loss -> (scaled)
    backward -> SGD step. Same model, batch, precision, loader (repro.data.build_loaders)."""
    from repro.models import build_model
    torch.backends.cudnn.benchmark = True  # as torchvision's reference (and our trainer) do
    cuda = device.type == "cuda"
    fmt = torch.channels_last if cuda and cfg.channels_last else torch.contiguous_format
    model = build_model(cfg.model.arch, num_classes=loaders.num_classes).to(device, memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                          nesterov=cfg.optim.nesterov, weight_decay=cfg.optim.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16) if cuda else None
    rates, seconds = [], []
    for epoch in range(cfg.schedule.epochs):
        loaders.train.set_epoch(epoch)
        n, t0 = 0, time.perf_counter()
        for x, y in loaders.train.iterate():
            with torch.autocast("cuda", dtype=amp) if amp is not None else nullcontext():
                loss = F.cross_entropy(model(x.contiguous(memory_format=fmt)).float(), y)
            opt.zero_grad(set_to_none=True)
            if scaler is not None and scaler.is_enabled():
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            n += y.shape[0]
        _sync(device)
        seconds.append(time.perf_counter() - t0)
        rates.append(n / seconds[-1])
    return {"images_per_s": after_first(rates), "epochs_images_per_s": rates, "epochs_s": seconds}


def overhead(t: dict, b: dict, steps: int) -> dict:
    """What the engine costs beyond the bare loop, per step and per epoch.

    Per step: the difference of the two loops' epoch times (medians after the first) over the
    steps of an epoch; both spans hold the same per-epoch work (the loader's start), so what is
    left is the trainer's bookkeeping per step (metrics sums, stop checks, progress). Per epoch:
    what the trainer spends between two epochs' training loops - checkpoint, the method's hook,
    evaluation (``schedule.val_batches=1`` here), the metrics row - from its metrics rows
    (``recorded_at`` of one row to the next, less the next row's ``epoch_s``). The per-step part
    is in the trainer / bare ratio, the per-epoch part is not (the rate is the training loop's)."""
    trainer_step, bare_step = after_first(t["epochs_s"]) / steps, after_first(b["epochs_s"]) / steps
    between = [t1 - t0 - s for t0, t1, s in zip(t["recorded_at"], t["recorded_at"][1:], t["epochs_s"][1:])]
    per_epoch = statistics.median(between)
    return {"steps_per_epoch": steps, "trainer_step_ms": trainer_step * 1e3, "bare_step_ms": bare_step * 1e3,
            "per_step_ms": (trainer_step - bare_step) * 1e3, "per_step_share": trainer_step / bare_step - 1,
            "per_epoch_s": per_epoch, "per_epoch_share": per_epoch / (trainer_step * steps)}


def loader_alone(cfg, loaders, device: torch.device) -> dict:
    """The training loader by itself: batches on the device, normalised, nothing else."""
    rates = []
    for epoch in range(cfg.schedule.epochs):
        loaders.train.set_epoch(epoch)
        n, t0 = 0, time.perf_counter()
        for _x, y in loaders.train.iterate():
            n += y.shape[0]
        _sync(device)
        rates.append(n / (time.perf_counter() - t0))
    return {"images_per_s": after_first(rates), "epochs_images_per_s": rates, "workers": loaders.train.workers}


def process_group(device_kind: str) -> dict:
    """A one-process group through repro.dist, as torchrun would describe it: nccl on CUDA."""
    from repro import dist
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        d = dist.detect()
        device = dist.pick_device(device_kind, d)
        dist.init(d, device, timeout_s=120, single=True)
        try:
            t = torch.full((1 << 20,), 2.0, device=device)
            torch.distributed.all_reduce(t)
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(20):
                torch.distributed.all_reduce(t)
            _sync(device)
            ms = (time.perf_counter() - t0) / 20 * 1e3
            return {"backend": torch.distributed.get_backend(), "world_size": torch.distributed.get_world_size(),
                    "source": d.source, "all_reduce_ok": bool((t == 2.0).all()), "all_reduce_4MB_ms": ms}
        finally:
            dist.teardown()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def compact(z, cfg, device: torch.device, amp) -> dict:
    """The delivered compact ResNet-50 at 40%: fp32 exactness; latency speed-up BN folded (the
    goal's figure, as an inference deployment runs it) and, through ``engine.latency.measure``, as a
    run of this config records it: as delivered, and aligned x8 + BN folded."""
    from repro.demos.compact import demo, prepare
    from repro.engine import latency
    from repro.engine.precision import Precision, exact_float32
    from repro.flops import count
    from repro.prune.compact import align_kept, build_compact
    from repro.timing import time_interleaved
    d = demo("resnet50", 0.4)
    aligned = build_compact(d.hard, "resnet50", align_kept("resnet50", d.kept, 8)).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, z.latency_res, z.latency_res, generator=g).to(device)
    hard, comp, aligned = (m.to(device).eval() for m in (d.hard, d.compact, aligned))
    with torch.no_grad(), exact_float32():
        ref = hard(x)
        rel = float((comp(x) - ref).abs().max() / ref.abs().max())
        rel_aligned = float((aligned(x) - ref).abs().max() / ref.abs().max())
    torch.backends.cudnn.benchmark = True
    xl = torch.randn(z.latency_batch, 3, z.latency_res, z.latency_res, generator=g).to(device)
    runs = {name: prepare(m, xl, "eager") for name, m in (("dense", hard), ("compact", comp), ("aligned", aligned))}
    with torch.autocast("cuda", dtype=amp) if amp is not None else nullcontext():
        # round 0 warms up (cuDNN picks its kernels)
        times = time_interleaved(runs, z.latency_rounds, warmup=1, sync=lambda: _sync(device), iters=z.latency_iters)
    t = {name: statistics.median(v) for name, v in times.items()}
    theory = count(d.hard, z.latency_res).conv_macs / count(d.compact, z.latency_res).conv_macs
    run = latency.measure(d.compact, "resnet50", 1000, device, Precision(cfg, device), z.latency_res)
    run["speedup_as_delivered"] = run["dense_ms"] / run["delivered_ms"]
    if "aligned_folded_ms" in run:
        run["speedup_aligned_folded"] = run["folded_dense_ms"] / run["aligned_folded_ms"]
    return {"rel_diff_fp32": rel, "rel_diff_fp32_aligned": rel_aligned, "dense_ms": t["dense"] * 1e3,
            "compact_ms": t["compact"] * 1e3, "aligned_ms": t["aligned"] * 1e3,
            "speedup": t["dense"] / t["compact"], "speedup_aligned": t["dense"] / t["aligned"],
            "theoretical_speedup": theory, "batch": z.latency_batch, "resolution": z.latency_res,
            "precision": "float32" if amp is None else str(amp).removeprefix("torch."), "as_run_records": run}
