"""The GPU acceptance check's printout: the facts, then every figure beside its goal
(``python -m repro.bench.gpu``; the figures are ``gpu.check``'s JSON)."""
from __future__ import annotations


def _met(value: float, goal: float, below: bool = False) -> str:
    return "ok" if (value <= goal if below else value >= goal) else "MISSED"


def _head(r: dict) -> list[str]:
    f, t, ld = r["facts"], r["trainer"], r["loader"]
    z = f["sizes"]
    where = (f"{f['gpu']} (compute capability {f['capability']}, {f['gpu_memory_gib']} GiB), CUDA {f['cuda']}, "
             f"cuDNN {f['cudnn']}; bf16 native: {'yes' if f['bf16_native'] else 'no'} -> AMP {f['amp']}"
             if "gpu" in f else "CPU VARIANT (no GPU): small sizes, figures say nothing about a GPU")
    booked = f.get("launcher_cpus_per_task")
    cpus = f"{f['cpus_for_this_task']} CPU(s) for this task" + (
        f" (pinned to the launcher's --cpus-per-task {booked}; the task had {f['cpus_before_pinning']}"
        + ("" if f["cpus_before_pinning"] >= booked else ": FEWER than a launched task gets, figures pessimistic")
        + ")" if booked else "")
    return [f"GPU check on {where}; torch {f['torch']} ({f['torch_threads']} thread(s)), {cpus}",
            f"{z['arch']}, batch {z['batch']} per process at {z['res']} px, FFCV loader with {ld['workers']} "
            f"worker thread(s), {z['epochs']} epochs of {z['steps_per_epoch']} steps (rates: median after the "
            f"first); trainer trained in {t['train_precision']}, evaluated the delivered model in {t['eval_precision']}"]


def _training_rows(r: dict, g: dict) -> list[list[str]]:
    t, b, ld, o, q, cp = (r[k] for k in ("trainer", "bare", "loader", "overhead", "ratios", "compiled"))
    compiled = (["trainer compiled (inductor) images/s / eager", f"{cp['images_per_s']:.1f} / "
                 f"{cp['over_eager']:.3f} (first epoch {cp['first_epoch_s']:.0f} s)", "", ""] if "skipped" not in cp
                else ["trainer compiled (inductor)", f"skipped: {cp['skipped']}", "", ""])
    return [["trainer images/s", f"{t['images_per_s']:.1f}", "", ""],
            ["bare-loop images/s", f"{b['images_per_s']:.1f}", "", ""],
            ["trainer / bare loop", f"{q['trainer_over_bare']:.3f}", f">= {g['trainer_over_bare']}",
             _met(q["trainer_over_bare"], g["trainer_over_bare"])],
            ["engine overhead per step (in the ratio)", f"{o['per_step_ms']:.2f} ms ({o['per_step_share']:+.1%} of a "
             f"bare step, {o['bare_step_ms']:.1f} ms)", "", ""],
            ["engine overhead per epoch (outside the rate)", f"{o['per_epoch_s']:.2f} s ({o['per_epoch_share']:.1%} of "
             f"a {o['steps_per_epoch']}-step epoch: checkpoint, hook, evaluation)", "", ""],
            ["trainer data-wait share", f"{t['data_wait_share']:.1%}", "", ""],
            compiled,
            ["FFCV loader alone images/s", f"{ld['images_per_s']:.1f}", "", ""],
            ["loader / training", f"{q['loader_over_training']:.3f}", f">= {g['loader_over_training']}",
             _met(q["loader_over_training"], g["loader_over_training"])]]


def _compact_rows(r: dict, g: dict) -> list[list[str]]:
    c, q, run = r["compact"], r["ratios"], r["compact"]["as_run_records"]
    recorded = (f"{run['speedup_as_delivered']:.3f} as delivered; " + (
        f"{run['speedup_aligned_folded']:.3f} aligned x8 + BN folded" if "speedup_aligned_folded" in run
        else f"aligned: {run.get('aligned_error', 'not measured')}")
        + f" (batch {run['batch']}, {run['resolution']} px, {run['precision']})")
    return [["compact R50@40% vs dense, fp32, max rel. diff", f"{c['rel_diff_fp32']:.2e}",
             f"<= {g['compact_rel_diff']:g}", _met(c["rel_diff_fp32"], g["compact_rel_diff"], below=True)],
            [f"latency dense / compact ms, BN folded (batch {c['batch']}, {c['resolution']} px, {c['precision']})",
             f"{c['dense_ms']:.2f} / {c['compact_ms']:.2f}", "", ""],
            ["compact speed-up, BN folded: measured / theoretical",
             f"{c['speedup']:.3f} / {c['theoretical_speedup']:.3f}", "", ""],
            ["compact measured / theoretical", f"{q['compact_over_theoretical']:.3f}",
             f">= {g['compact_over_theoretical']}", _met(q["compact_over_theoretical"], g["compact_over_theoretical"])],
            ["aligned compact (x8 filters) speed-up, BN folded", f"{c['speedup_aligned']:.3f} ({c['aligned_ms']:.2f} ms)",
             "", ""],
            ["compact speed-up as a run records it", recorded, "", ""]]


def report(r: dict, goals: dict) -> str:
    from tabulate import tabulate
    pg = r["process_group"]
    rows = _training_rows(r, goals) + [
        ["process group", f"{pg['backend']}, world size {pg['world_size']} ({pg['source']}), all-reduce "
         f"{'ok' if pg['all_reduce_ok'] else 'WRONG'}, 4 MB in {pg['all_reduce_4MB_ms']:.3f} ms", "", ""]
    ] + _compact_rows(r, goals)
    missed = sum(row[3] == "MISSED" for row in rows)
    return "\n".join(_head(r) + [tabulate(rows, headers=["figure", "value", "goal", ""]),
                                 f"goals missed: {missed} of 4" + (" (CPU variant: goals are for a GPU)"
                                                                  if "gpu" not in r["facts"] else "")])
