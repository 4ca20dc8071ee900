"""The GPU acceptance check: one command, a few minutes on one GPU, ratios and facts.

    python -m repro.bench.gpu [--work DIR] [--json] [--cpu] [--steps-per-epoch N] [--epochs N]
                              [--compile | --no-compile]

What a Table 2 run will meet on this GPU, on a stand-in ImageNet (learnable JPEGs of ~400 px in
the real layout, converted by the real writer) read through the FFCV CUDA pipeline:

1. ResNet-50 training at the paper's per-GPU batch (256 / 8 = 32), 224 px, AMP (bf16 where the
   GPU computes it natively, else fp16 + GradScaler), channels_last: images/s of our trainer
   (``repro.train.run``, the rate it writes to metrics.jsonl) against a bare torchvision-style
   loop (same model, batch, precision, loader), median over epochs after the first.
   Goal: trainer / bare >= 0.95 (the engine costs under 5%). Beside it, the engine's overhead per
   step (in that ratio) and per epoch (checkpoint, hook, evaluation: outside it), the trainer's
   data-wait share, and the trainer compiled (``compile=inductor``) against eager.
2. The FFCV loader alone (images/s, on the GPU, normalised) against the training rate.
   Goal: loader / training >= 1.2 (the GPU never waits for data).
3. An nccl process group of world size 1 through ``repro.dist`` (detect, init, all-reduce).
4. A compact ResNet-50 at 40% (SFP masks, hard-pruned, compacted as a run delivers it): its
   logits against the hard-pruned dense model's in true float32 (no TF32), relative; and its
   latency speed-up at batch 64 in the trained precision against the theoretical (conv MACs)
   one, BN folded. Goal: measured / theoretical >= 0.85. The channel-aligned variant (multiples
   of 8, ``prune.compact.align_kept``) is shown beside it, and both latencies a run records
   (``engine.latency``): as delivered (BN not folded, odd widths), and aligned x8 + BN folded.

Without CUDA (or with --cpu) the same steps run at small sizes (ResNet-18 training at 32 px with
one torch thread, 40 steps per epoch as the GPU's 200 make per-epoch work small beside the steps,
gloo, CPU latency of the compact ResNet-50 at batch 4, 32 px; no compiled trainer unless
--compile: inductor's cold compile takes minutes on a CPU): the CPU variant, which CI runs as a
test at 4 steps per epoch. Its figures say nothing about a GPU.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from . import gpu_parts as P
from .gpu_report import report

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
    steps_per_epoch: int  # training images = steps x batch, spread evenly over the classes
    image_size: int       # stand-in JPEG side
    latency_batch: int
    latency_res: int
    latency_rounds: int
    latency_iters: int    # forwards per timed round
    torch_threads: int    # 0: torch's default (the task's CPUs)

    @property
    def train_per_class(self) -> int:
        return self.steps_per_epoch * self.batch // self.classes


def _paper_batch() -> int:
    from repro.papers.recipes import IMAGENET, IMAGENET_PAPER_GPUS
    return IMAGENET["data.batch_size"] // IMAGENET_PAPER_GPUS


GPU = Sizes("cuda", arch="resnet50", res=224, val_resize=256, batch=_paper_batch(), epochs=4, classes=100,
            steps_per_epoch=200, image_size=400, latency_batch=64, latency_res=224, latency_rounds=7,
            latency_iters=20, torch_threads=0)
# CPU: ResNet-18 at 32 px. 40 steps per epoch, so that what an epoch costs once (the loader's start)
# is as small beside its steps as in the GPU's 200-step epochs, and one torch thread, as on a GPU
# node (one thread drives the steps, the loader's threads decode on the other CPUs): on 2 shared
# cores two OpenMP threads spin-wait for each other (measured under load 7: ResNet-18 at 32 px,
# batch 8, 244 ms a step with one thread, 984-3100 ms with two).
CPU = Sizes("cpu", arch="resnet18", res=32, val_resize=36, batch=8, epochs=3, classes=4, steps_per_epoch=40,
            image_size=40, latency_batch=4, latency_res=32, latency_rounds=3, latency_iters=1, torch_threads=1)


def pin_to_launcher_cpus() -> dict:
    """Run on the CPUs a launched GPU task gets (``--cpus-per-task``'s default), no more: the
    first CPUS_PER_GPU_TASK of this process's affinity mask. Called before any thread starts
    (threads inherit the mask), so torch's and FFCV's threads stay inside it too."""
    import os

    from repro.data.cpus import CPUS_PER_GPU_TASK
    mask = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, mask[:CPUS_PER_GPU_TASK])
    return {"launcher_cpus_per_task": CPUS_PER_GPU_TASK, "cpus_before_pinning": len(mask)}


def facts(z: Sizes, device: torch.device, pinned: dict | None = None) -> dict:
    from repro.data.cpus import task_cpus
    from repro.engine.precision import amp_dtype_for, bf16_native
    out = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cpus_for_this_task": task_cpus(), **(pinned or {}), "torch_threads": torch.get_num_threads(),
           "sizes": {**asdict(z), "train_per_class": z.train_per_class}}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        native = bf16_native()
        out.update(gpu=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gib=round(p.total_memory / 2**30, 1),
                   cudnn=torch.backends.cudnn.version(), bf16_native=native,
                   amp=str(amp_dtype_for(native)).removeprefix("torch."))
    return out


def check(z: Sizes, work: Path, say=print, pinned: dict | None = None, compile_skip: str | None = None) -> dict:
    device = torch.device(z.device)
    if device.type == "cuda":
        torch.cuda.set_device(0)
    if z.torch_threads:
        torch.set_num_threads(z.torch_threads)
    r: dict = {"facts": facts(z, device, pinned)}
    amp = getattr(torch, r["facts"]["amp"]) if "amp" in r["facts"] else None
    say(f"[gpu check] stand-in ImageNet in {work}")
    cfg = P.train_config(z, P.stand_in(work, z))
    say("[gpu check] 1/4 our trainer (repro.train.run)")
    r["trainer"] = P.trainer(cfg, work / "trainer-run")
    from repro.data import build_loaders
    loaders = build_loaders(cfg.data, device=device, seed=cfg.seed)  # one FFCV compilation for both
    say("[gpu check] 1/4 the bare loop")
    r["bare"] = P.bare_loop(cfg, loaders, device, amp)
    r["overhead"] = P.overhead(r["trainer"], r["bare"], z.steps_per_epoch)
    say("[gpu check] 1/4 our trainer compiled (compile=inductor)" if not compile_skip else
        f"[gpu check] 1/4 compiled trainer skipped: {compile_skip}")
    r["compiled"] = P.compiled(cfg, work / "trainer-compiled-run", r["trainer"], compile_skip)
    say("[gpu check] 2/4 the loader alone")
    r["loader"] = P.loader_alone(cfg, loaders, device)
    say("[gpu check] 3/4 process group")
    r["process_group"] = P.process_group(z.device)
    say("[gpu check] 4/4 compact ResNet-50 at 40%")
    r["compact"] = P.compact(z, cfg, device, amp)
    train = r["trainer"]["images_per_s"]
    r["ratios"] = {"trainer_over_bare": train / r["bare"]["images_per_s"],
                   "loader_over_training": r["loader"]["images_per_s"] / train,
                   "compact_over_theoretical": r["compact"]["speedup"] / r["compact"]["theoretical_speedup"]}
    return r


def sizes_for(args) -> Sizes:
    z = GPU if torch.cuda.is_available() and not args.cpu else CPU
    z = replace(z, steps_per_epoch=args.steps_per_epoch or z.steps_per_epoch, epochs=args.epochs or z.epochs)
    if z.epochs < 2 or z.steps_per_epoch < 1 or z.train_per_class * z.classes != z.steps_per_epoch * z.batch:
        raise SystemExit(f"error: --epochs must be >= 2 (rates are medians after the first) and --steps-per-epoch "
                         f"x batch ({z.batch}) a multiple of the {z.classes} classes")
    return z


def compile_skip(z: Sizes, wanted: bool | None) -> str | None:
    """Why the compiled trainer is not run (None: it is): on a GPU by default, on a CPU on request."""
    if wanted is False:
        return "--no-compile"
    if wanted is None and z.device == "cpu":
        # ResNet-20's cold compile took about 115 s on 2 cores
        return "CPU variant: inductor's cold compile takes minutes on a CPU; --compile runs it"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.bench.gpu", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="the CPU variant even where CUDA is available")
    ap.add_argument("--work", default=None, help="folder for the stand-in data and the trainer's run folders; "
                    "kept (a second check reuses the data). Default: a temporary folder, removed")
    ap.add_argument("--steps-per-epoch", type=int, default=0, help="training steps per epoch (default: GPU 200, "
                    "CPU 40; CI's test runs 4)")
    ap.add_argument("--epochs", type=int, default=0, help="epochs of each loop, >= 2 (default: GPU 4, CPU 3)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="also time the trainer with compile=inductor (default: on a GPU yes, on a CPU no)")
    ap.add_argument("--json", action="store_true", help="also print every figure as one JSON object (last line)")
    args = ap.parse_args(argv)
    z = sizes_for(args)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="repro-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    pinned = pin_to_launcher_cpus()
    t0 = time.time()
    try:
        r = check(z, work, say=lambda m: print(m, file=sys.stderr, flush=True), pinned=pinned,
                  compile_skip=compile_skip(z, args.compile))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    r["wall_s"] = time.time() - t0
    print(report(r, GOALS))
    print(f"wall time {r['wall_s']:.0f} s")
    if args.json:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
