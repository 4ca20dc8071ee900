"""The GPU acceptance check: one command, a few minutes on one GPU, ratios and facts.

    python -m repro.bench.gpu [--work DIR] [--json] [--cpu]

What a Table 2 run will meet on this GPU, on a stand-in ImageNet (learnable JPEGs of ~400 px in
the real layout, converted by the real writer) read through the FFCV CUDA pipeline:

1. ResNet-50 training at the paper's per-GPU batch (256 / 8 = 32), 224 px, AMP (bf16 where the
   GPU computes it natively, else fp16 + GradScaler), channels_last: images/s of our trainer
   (``repro.train.run``, the rate it writes to metrics.jsonl) against a bare torchvision-style
   loop (same model, batch, precision, loader), median over epochs after the first.
   Goal: trainer / bare >= 0.95 (the engine costs under 5%).
2. The FFCV loader alone (images/s, on the GPU, normalised) against the training rate.
   Goal: loader / training >= 1.2 (the GPU never waits for data).
3. An nccl process group of world size 1 through ``repro.dist`` (detect, init, all-reduce).
4. A compact ResNet-50 at 40% (SFP masks, hard-pruned, compacted as a run delivers it): its
   logits against the hard-pruned dense model's in true float32 (no TF32), relative; and its
   latency speed-up at batch 64 in the trained precision against the theoretical (conv MACs)
   one. Goal: measured / theoretical >= 0.85. The channel-aligned variant (multiples of 8,
   ``prune.compact.align_kept``) is shown beside it.

Without CUDA (or with --cpu) the same steps run at small sizes (ResNet-18 training at 32 px,
gloo, CPU latency of the compact ResNet-50 at batch 4, 32 px): the CPU variant, which CI runs as
a test. Its figures say nothing about a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

GOALS = {"trainer_over_bare": 0.95, "loader_over_training": 1.2, "compact_over_theoretical": 0.85,
         "compact_rel_diff": 1e-4}


@dataclass(frozen=True)
class Sizes:
    device: str
    arch: str             # trained model (the compact one is always ResNet-50 at 40%)
    res: int              # training and evaluation resolution
    val_resize: int
    batch: int            # per process (world size 1)
    epochs: int           # rates: median over epochs 1.. (epoch 0 compiles FFCV, tunes cuDNN)
    classes: int
    train_per_class: int
    image_size: int       # stand-in JPEG side
    latency_batch: int
    latency_res: int
    latency_rounds: int
    latency_iters: int    # forwards per timed round


def _paper_batch() -> int:
    from repro.papers.recipes import IMAGENET, IMAGENET_PAPER_GPUS
    return IMAGENET["data.batch_size"] // IMAGENET_PAPER_GPUS


GPU = Sizes("cuda", arch="resnet50", res=224, val_resize=256, batch=_paper_batch(), epochs=4, classes=100,
            train_per_class=64, image_size=400, latency_batch=64, latency_res=224, latency_rounds=7, latency_iters=20)
# CPU: what CI can afford on 2 shared cores; ResNet-18 trains, the compact model is still ResNet-50.
CPU = Sizes("cpu", arch="resnet18", res=32, val_resize=36, batch=8, epochs=3, classes=4, train_per_class=8,
            image_size=40, latency_batch=4, latency_res=32, latency_rounds=3, latency_iters=1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stand_in(work: Path, z: Sizes) -> Path:
    """Stand-in ImageNet, generated and converted once per work folder; returns the .beton folder."""
    from repro.data import imagenet
    from repro.data.synth import make_imagenet
    raw, ffcv = work / f"imagenet-{z.device}-raw", work / f"imagenet-{z.device}"
    if not (ffcv / "val.beton").exists():
        if not raw.exists():
            make_imagenet(raw, classes=z.classes, train_per_class=z.train_per_class, val_per_class=2,
                          size=z.image_size)
        imagenet.write(raw, ffcv, max_res=512, quality=90)
    return ffcv


def train_config(z: Sizes, ffcv: Path):
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
    """Our trainer end to end; its own images/s per epoch (metrics.jsonl)."""
    from repro import rundir
    from repro.train import run
    shutil.rmtree(run_dir, ignore_errors=True)
    res = run(cfg, run_dir)
    rates = [m["imgs_per_s"] for m in rundir.read_metrics(run_dir)]
    return {"images_per_s": statistics.median(rates[1:]), "epochs_images_per_s": rates,
            "train_precision": res["train_precision"], "eval_precision": res["eval_precision"]}


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
    rates = []
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
        rates.append(n / (time.perf_counter() - t0))
    return {"images_per_s": statistics.median(rates[1:]), "epochs_images_per_s": rates}


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
    return {"images_per_s": statistics.median(rates[1:]), "epochs_images_per_s": rates,
            "workers": loaders.train.workers}


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


def compact(z: Sizes, device: torch.device, amp) -> dict:
    """The delivered compact ResNet-50 at 40%: fp32 exactness and latency speed-up."""
    from repro.demos.compact import demo, prepare
    from repro.engine.precision import exact_float32
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
    return {"rel_diff_fp32": rel, "rel_diff_fp32_aligned": rel_aligned, "dense_ms": t["dense"] * 1e3,
            "compact_ms": t["compact"] * 1e3, "aligned_ms": t["aligned"] * 1e3,
            "speedup": t["dense"] / t["compact"], "speedup_aligned": t["dense"] / t["aligned"],
            "theoretical_speedup": theory, "batch": z.latency_batch, "resolution": z.latency_res,
            "precision": "float32" if amp is None else str(amp).removeprefix("torch.")}


def pin_to_launcher_cpus() -> dict:
    """Run on the CPUs a launched GPU task gets (``--cpus-per-task``'s default), no more: the
    first CPUS_PER_GPU_TASK of this process's affinity mask. Called before any thread starts
    (threads inherit the mask), so torch's and FFCV's threads stay inside it too."""
    from repro.data.cpus import CPUS_PER_GPU_TASK
    mask = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, mask[:CPUS_PER_GPU_TASK])
    return {"launcher_cpus_per_task": CPUS_PER_GPU_TASK, "cpus_before_pinning": len(mask)}


def facts(z: Sizes, device: torch.device, pinned: dict | None = None) -> dict:
    from repro.data.cpus import task_cpus
    from repro.engine.precision import amp_dtype_for, bf16_native
    out = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cpus_for_this_task": task_cpus(), **(pinned or {}), "sizes": asdict(z)}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        native = bf16_native()
        out.update(gpu=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gib=round(p.total_memory / 2**30, 1),
                   cudnn=torch.backends.cudnn.version(), bf16_native=native,
                   amp=str(amp_dtype_for(native)).removeprefix("torch."))
    return out


def check(z: Sizes, work: Path, say=print, pinned: dict | None = None) -> dict:
    device = torch.device(z.device)
    if device.type == "cuda":
        torch.cuda.set_device(0)
    r: dict = {"facts": facts(z, device, pinned)}
    amp = getattr(torch, r["facts"]["amp"]) if "amp" in r["facts"] else None
    say(f"[gpu check] stand-in ImageNet in {work}")
    cfg = train_config(z, stand_in(work, z))
    say("[gpu check] 1/4 our trainer (repro.train.run)")
    r["trainer"] = trainer(cfg, work / "trainer-run")
    from repro.data import build_loaders
    loaders = build_loaders(cfg.data, device=device, seed=cfg.seed)  # one FFCV compilation for both
    say("[gpu check] 1/4 the bare loop")
    r["bare"] = bare_loop(cfg, loaders, device, amp)
    say("[gpu check] 2/4 the loader alone")
    r["loader"] = loader_alone(cfg, loaders, device)
    say("[gpu check] 3/4 process group")
    r["process_group"] = process_group(z.device)
    say("[gpu check] 4/4 compact ResNet-50 at 40%")
    r["compact"] = compact(z, device, amp)
    train = r["trainer"]["images_per_s"]
    r["ratios"] = {"trainer_over_bare": train / r["bare"]["images_per_s"],
                   "loader_over_training": r["loader"]["images_per_s"] / train,
                   "compact_over_theoretical": r["compact"]["speedup"] / r["compact"]["theoretical_speedup"]}
    return r


def _met(value: float, goal: float, below: bool = False) -> str:
    return "ok" if (value <= goal if below else value >= goal) else "MISSED"


def report(r: dict) -> str:
    from tabulate import tabulate
    f, t, b, ld, pg, c, q = (r[k] for k in ("facts", "trainer", "bare", "loader", "process_group", "compact", "ratios"))
    z = f["sizes"]
    where = (f"{f['gpu']} (compute capability {f['capability']}, {f['gpu_memory_gib']} GiB), CUDA {f['cuda']}, "
             f"cuDNN {f['cudnn']}; bf16 native: {'yes' if f['bf16_native'] else 'no'} -> AMP {f['amp']}"
             if "gpu" in f else "CPU VARIANT (no GPU): small sizes, figures say nothing about a GPU")
    booked = f.get("launcher_cpus_per_task")
    cpus = f"{f['cpus_for_this_task']} CPU(s) for this task" + (
        f" (pinned to the launcher's --cpus-per-task {booked}; the task had {f['cpus_before_pinning']}"
        + ("" if f["cpus_before_pinning"] >= booked else ": FEWER than a launched task gets, figures pessimistic")
        + ")" if booked else "")
    head = [f"GPU check on {where}; torch {f['torch']}, {cpus}",
            f"{z['arch']}, batch {z['batch']} per process at {z['res']} px, FFCV loader with {ld['workers']} "
            f"worker thread(s), {z['epochs']} epochs (rates: median after the first); trainer trained in "
            f"{t['train_precision']}, evaluated the delivered model in {t['eval_precision']}"]
    g = GOALS
    rows = [["trainer images/s", f"{t['images_per_s']:.1f}", "", ""],
            ["bare-loop images/s", f"{b['images_per_s']:.1f}", "", ""],
            ["trainer / bare loop", f"{q['trainer_over_bare']:.3f}", f">= {g['trainer_over_bare']}",
             _met(q["trainer_over_bare"], g["trainer_over_bare"])],
            ["FFCV loader alone images/s", f"{ld['images_per_s']:.1f}", "", ""],
            ["loader / training", f"{q['loader_over_training']:.3f}", f">= {g['loader_over_training']}",
             _met(q["loader_over_training"], g["loader_over_training"])],
            ["process group", f"{pg['backend']}, world size {pg['world_size']} ({pg['source']}), all-reduce "
             f"{'ok' if pg['all_reduce_ok'] else 'WRONG'}, 4 MB in {pg['all_reduce_4MB_ms']:.3f} ms", "", ""],
            ["compact R50@40% vs dense, fp32, max rel. diff", f"{c['rel_diff_fp32']:.2e}",
             f"<= {g['compact_rel_diff']:g}", _met(c["rel_diff_fp32"], g["compact_rel_diff"], below=True)],
            [f"latency dense / compact ms (batch {c['batch']}, {c['resolution']} px, {c['precision']})",
             f"{c['dense_ms']:.2f} / {c['compact_ms']:.2f}", "", ""],
            ["compact speed-up measured / theoretical", f"{c['speedup']:.3f} / {c['theoretical_speedup']:.3f}", "", ""],
            ["compact measured / theoretical", f"{q['compact_over_theoretical']:.3f}",
             f">= {g['compact_over_theoretical']}", _met(q["compact_over_theoretical"], g["compact_over_theoretical"])],
            ["aligned compact (x8 filters) speed-up", f"{c['speedup_aligned']:.3f} ({c['aligned_ms']:.2f} ms)", "", ""]]
    missed = sum(row[3] == "MISSED" for row in rows)
    return "\n".join(head + [tabulate(rows, headers=["figure", "value", "goal", ""]),
                             f"goals missed: {missed} of 4" + (" (CPU variant: goals are for a GPU)"
                                                              if "gpu" not in f else "")])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.bench.gpu", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="the CPU variant even where CUDA is available")
    ap.add_argument("--work", default=None, help="folder for the stand-in data and the trainer's run folder; "
                    "kept (a second check reuses the data). Default: a temporary folder, removed")
    ap.add_argument("--json", action="store_true", help="also print every figure as one JSON object (last line)")
    args = ap.parse_args(argv)
    z = GPU if torch.cuda.is_available() and not args.cpu else CPU
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="repro-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    pinned = pin_to_launcher_cpus()
    t0 = time.time()
    try:
        r = check(z, work, say=lambda m: print(m, file=sys.stderr, flush=True), pinned=pinned)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    r["wall_s"] = time.time() - t0
    print(report(r))
    print(f"wall time {r['wall_s']:.0f} s")
    if args.json:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
