"""Speed and memory of one training step, per method, on a Llama-shaped model with random weights.

    python benchmarks/bench.py                      # --preset cpu: a small Llama, float32, 2 cores, ~5 min
    python benchmarks/bench.py --preset llama-3.2-1b [--batch 16]   # a GPU: what the paper profile trains
    python benchmarks/bench.py --preset smollm2-135m --methods lora,bhra   # the smol profile's base, CPU
    python benchmarks/bench.py --estimate                # the paper BHRA run: memory, fit per GPU (lab.budget)
    python benchmarks/bench.py --profile bhra,peft-lora   # torch.profiler on one step of each, no table

Precision. The llama-3.2-1b preset measures what the paper profile trains (lab.finetune.train with
bf16=True, i.e. the Trainer's mixed precision): float32 weights and factors, forward under
torch.autocast(bfloat16), backward and AdamW outside it. `--dtype bfloat16 --autocast none` measures
pure-bf16 weights instead; the cpu and tiny presets run float32 without autocast.

What one row measures:
  step time   median over the timed steps (after warm-up) of forward + backward + AdamW step
              + zero_grad on one micro-batch of random tokens, labels = inputs. Wall clock; the CPU
              time of the process (all threads) is kept too: on a shared machine it is the steadier
              of the two with one thread, while waiting threads inflate it with several. The frozen base has no
              trainable parameter: its embeddings' output requires grad, so backward runs through the
              activations only and there is no optimiser step.
  peak memory measured over the first two steps (untimed; the optimiser state appears in the first).
              CPU: the process's peak resident set (VmHWM), reset just before them
              (/proc/self/clear_refs), minus the resident set at that moment; glibc is told to give
              every buffer of 64 KiB or more its own mapping, returned on free, so the resident set
              follows the live tensors rather than the allocator's cache. CUDA:
              torch.cuda.max_memory_allocated, reset at the same moment, minus the memory allocated
              then. The delta (Δ) holds gradients, optimiser state, activations and transients; the
              absolute peak adds the weights (and, on CPU, the libraries, ~0.3 GiB).
              Then warm-up and timed steps follow, with the allocator back to normal.
  merged inf. after the steps, merge_and_unload (full fine-tuning: nothing to merge), then the median
              forward latency (no_grad) of the same micro-batch, against a freshly built base model in
              the same process, the two timed in turns. `merged_same_structure` records whether the
              merged model has the base's module types and tensor shapes, dtypes and strides: when it
              does, any latency gap is measurement noise.

Every method runs in its own child process, forked from a parent that has only imported the libraries
(no tensor has been allocated, no thread pool started, CUDA untouched), so one method's allocator state
and peak never leak into another's. All methods share the seed, hence the same base weights and tokens.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import multiprocessing as mp
import os
import platform
import re
import statistics
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lab import machine as numerics  # noqa: E402  first: the harness's numerical path (lab/machine.py)
import peft  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from core import bhra  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

# ---------------------------------------------------------------------------------------------
# Presets: model shapes and how many steps to time
# ---------------------------------------------------------------------------------------------

PRESETS = {
    # Llama-3.2-1B's shapes (random weights) as the paper profile trains them on one GPU: float32
    # weights under bf16 autocast (the Trainer's bf16=True), micro-batch 4 x cutoff 256.
    "llama-3.2-1b": dict(hidden=2048, intermediate=8192, layers=16, heads=32, kv_heads=8, vocab=128256,
                         seq=256, batch=4, warmup=3, steps=10, infer_runs=10,
                         device="cuda", dtype="float32", autocast="bfloat16"),
    # Small enough for 2 CPU cores in ~5 minutes: every width divisible by b = 8 (k/v: 4 heads × 64).
    # The vocabulary is cut to 8192 so the lm_head does not dominate a 4-layer model.
    "cpu": dict(hidden=1024, intermediate=2816, layers=4, heads=16, kv_heads=4, vocab=8192,
                seq=256, batch=1, warmup=1, steps=5, infer_runs=5,
                device="cpu", dtype="float32", autocast="none"),
    # SmolLM2-135M-Instruct's shapes (the smol profile's base, lab/smol.py) at the micro-batch the smol
    # profile trains on 2 CPU cores: 8 x 128 tokens.
    "smollm2-135m": dict(hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, vocab=49152,
                         seq=128, batch=8, warmup=1, steps=3, infer_runs=3,
                         device="cpu", dtype="float32", autocast="none"),
    # Smoke test only (tests/docs/test_bench.py): numbers mean nothing.
    "tiny": dict(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vocab=256,
                 seq=32, batch=1, warmup=0, steps=1, infer_runs=1,
                 device="cpu", dtype="float32", autocast="none", threads=1),
}

MEMORY_STEPS = 2  # untimed steps at the start that measure peak memory; the timed ones follow
R, B, K, ALPHA = 32, 8, 2, 64  # LoRA-equivalent rank, BHRA blocks per side, GraLoRA blocks per side
TARGETS = list(bhra.LLAMA_TARGETS)  # q, k, v, o, gate, up, down

# key -> label, in table order
METHODS = {
    "base": "frozen base (activations only)",
    "full": "full fine-tuning",
    "peft-lora": "PEFT LoRA",
    "peft-hira": "PEFT HiRA",
    "peft-gralora": "PEFT GraLoRA (k=2)",
    "lora": "ours LoRA",
    "dora": "ours DoRA",
    "hira": "ours HiRA (lean)",
    "abba": "ours ABBA",
    "gralora": "ours GraLoRA (k=2)",
    "bhra": "ours BHRA (lean, b=8)",
    "bhra-plain": "ours BHRA (plain autograd, b=8)",
}


# ---------------------------------------------------------------------------------------------
# Building the model and attaching each method
# ---------------------------------------------------------------------------------------------


def build_model(p: dict) -> LlamaForCausalLM:
    config = LlamaConfig(
        hidden_size=p["hidden"], intermediate_size=p["intermediate"], num_hidden_layers=p["layers"],
        num_attention_heads=p["heads"], num_key_value_heads=p["kv_heads"], vocab_size=p["vocab"],
        max_position_embeddings=max(2048, p["seq"]), rope_theta=500000.0, tie_word_embeddings=True,
    )
    with torch.device(p["device"]):
        model = LlamaForCausalLM(config)
    return model.to(getattr(torch, p["dtype"]))


def attach(model, method: str):
    """Return (model, trainable parameters) with `method` applied; the rest of the model frozen."""
    if method == "full":
        model.requires_grad_(True)
    elif method == "base":
        model.requires_grad_(False)
        # No trainable parameter: make the embeddings' output a leaf of the graph so backward runs.
        model.get_input_embeddings().register_forward_hook(lambda mod, inp, out: out.requires_grad_(True))
    elif method.startswith("peft-"):
        kind = method.removeprefix("peft-")
        cfg = {
            "lora": lambda: peft.LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGETS),
            "hira": lambda: peft.HiraConfig(r=R, target_modules=TARGETS),
            "gralora": lambda: peft.GraloraConfig(r=R, alpha=ALPHA, gralora_k=K, target_modules=TARGETS),
        }[kind]()
        # autocast_adapter_dtype=False: adapters in the model's dtype, as ours are (PEFT would upcast to fp32).
        model = peft.get_peft_model(model, cfg, autocast_adapter_dtype=False)
    else:
        kind = method.removesuffix("-plain")
        bhra.inject(model, bhra.AdapterConfig(method=kind, r=R, b=B, k=K, alpha=ALPHA), verbose=False)
        if method.endswith("-plain"):
            for _, layer in bhra.adapted_layers(model):
                layer.lean = False  # plain autograd: the (m, n) effective weight lives until backward
    return model, [q for q in model.parameters() if q.requires_grad]


def amp(p: dict):
    """The forward's precision context: torch.autocast as the Trainer's bf16=True/fp16=True applies it
    (forward only; backward and the optimiser step run outside), or nothing."""
    if p.get("autocast", "none") == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=p["device"], dtype=getattr(torch, p["autocast"]))


def merge(model, method: str):
    if method.startswith("peft-"):
        return model.merge_and_unload()
    if method in ("base", "full"):
        return model
    return bhra.merge_and_unload(model)


# ---------------------------------------------------------------------------------------------
# Clocks and memory
# ---------------------------------------------------------------------------------------------


def sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def rss_kib(field: str) -> int:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in KiB."""
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: RSS then also counts freed-but-cached heap pages
        return None


def malloc_mmap_threshold(nbytes: int):
    """glibc: serve allocations of at least `nbytes` with their own mmap, handed back on free.

    With a small threshold every tensor buffer is mapped on allocation and unmapped on free, so the
    resident set follows the live tensors, as torch.cuda.max_memory_allocated does on a GPU. Setting it
    also freezes glibc's adaptive threshold, so the timed steps run with 32 MiB, the adaptive ceiling.
    """
    if (libc := _libc()) is not None:
        libc.mallopt(ctypes.c_int(-3), ctypes.c_int(nbytes))  # M_MMAP_THRESHOLD


def memory_mark(device: str) -> int:
    """Start a peak-memory window; return the bytes in use now."""
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    if (libc := _libc()) is not None:
        libc.malloc_trim(0)  # hand freed heap pages back to the OS, so the window starts from live memory
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current VmRSS (Linux ≥ 4.0)
    return rss_kib("VmRSS") * 1024


def memory_peak(device: str) -> int:
    if device == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    return rss_kib("VmHWM") * 1024


def time_forwards(models, ids, runs: int, device: str, ctx=contextlib.nullcontext) -> tuple[list[float], list[float]]:
    """Median wall and CPU seconds of a no_grad forward of each model, after one warm-up each; the
    models take turns run by run, so a slow spell on a shared machine hits them all alike."""
    wall, cpu = [[] for _ in models], [[] for _ in models]
    with torch.no_grad(), ctx():
        for i in range(runs + 1):
            for k, model in enumerate(models):
                sync(device)
                t, c = time.perf_counter(), time.process_time()
                model(input_ids=ids)
                sync(device)
                if i:
                    wall[k].append(time.perf_counter() - t)
                    cpu[k].append(time.process_time() - c)
    return [statistics.median(ts) for ts in wall], [statistics.median(ts) for ts in cpu]


# ---------------------------------------------------------------------------------------------
# One method, in its own process
# ---------------------------------------------------------------------------------------------


def run_method(method: str, p: dict) -> dict:
    device = p["device"]
    torch.manual_seed(0)
    model = build_model(p)
    ids = torch.randint(0, p["vocab"], (p["batch"], p["seq"]), device=device)
    model, params = attach(model, method)
    model.train()
    opt = torch.optim.AdamW(params, lr=1e-5) if params else None

    def step():
        with amp(p):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)
        return loss

    # Memory: the first MEMORY_STEPS steps (the optimiser state appears in the first), from the state
    # just before them; on CPU with every buffer of 64 KiB or more on its own mapping (see above).
    if device == "cpu":
        malloc_mmap_threshold(64 * 1024)
    before = memory_mark(device)
    for _ in range(MEMORY_STEPS):
        loss = step()
    peak = memory_peak(device)
    if device == "cpu":
        malloc_mmap_threshold(32 * 2**20)

    times, cpu_times = [], []
    for i in range(p["warmup"] + p["steps"]):
        sync(device)
        t, c = time.perf_counter(), time.process_time()
        loss = step()
        sync(device)
        if i >= p["warmup"]:
            times.append(time.perf_counter() - t)
            cpu_times.append(time.process_time() - c)
    if not torch.isfinite(loss.detach()):
        raise FloatingPointError(f"{method}: non-finite loss {loss.item()}")

    del opt, loss
    model.zero_grad(set_to_none=True)
    model = merge(model, method)
    model.eval()
    torch.manual_seed(0)
    base = build_model(p).eval()  # the untouched base model, same seed: same weights

    def layout(mod):  # module types, then every tensor's shape, dtype and strides
        return ([type(x).__name__ for x in mod.modules()],
                [(k, tuple(v.shape), v.dtype, v.stride()) for k, v in mod.state_dict().items()])

    same_structure = layout(model) == layout(base)
    (infer_merged, infer_base), (infer_merged_cpu, infer_base_cpu) = time_forwards(
        [model, base], ids, p["infer_runs"], device, lambda: amp(p))
    return dict(
        method=method, label=METHODS[method], trainable_params=sum(q.numel() for q in params),
        step_s=statistics.median(times), step_s_all=times, step_cpu_s=statistics.median(cpu_times),
        step_cpu_s_all=cpu_times,
        peak_bytes=peak, peak_delta_bytes=peak - before,
        infer_base_s=infer_base, infer_merged_s=infer_merged,
        infer_base_cpu_s=infer_base_cpu, infer_merged_cpu_s=infer_merged_cpu,
        merged_same_structure=same_structure,
    )


def _child(method: str, p: dict, conn):
    try:
        torch.set_num_threads(p["threads"])
        conn.send(run_method(method, p))
    except BaseException:  # noqa: BLE001 - report any failure to the parent, keep the table going
        conn.send(dict(method=method, label=METHODS[method], error=traceback.format_exc()))
    finally:
        conn.close()


def run_isolated(method: str, p: dict) -> dict:
    ctx = mp.get_context("fork")
    here, there = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(method, p, there))
    proc.start()
    there.close()
    try:
        result = here.recv()
    except EOFError:
        result = dict(method=method, label=METHODS[method], error="child process died without a result")
    proc.join()
    if proc.exitcode and "error" not in result:
        result["error"] = f"child exited with code {proc.exitcode}"
    return result


# ---------------------------------------------------------------------------------------------
# Profile of one step (for the README: where the time goes)
# ---------------------------------------------------------------------------------------------


def profile_method(method: str, p: dict, rows: int = 12) -> str:
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model, params = attach(build_model(p), method)
    model.train()
    opt = torch.optim.AdamW(params, lr=1e-5) if params else None
    ids = torch.randint(0, p["vocab"], (p["batch"], p["seq"]), device=p["device"])

    def step():
        with amp(p):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)

    for _ in range(p["warmup"]):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if p["device"] == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        sync(p["device"])
    key = "self_cuda_time_total" if p["device"] == "cuda" else "self_cpu_time_total"
    return f"## {METHODS[method]}\n" + prof.key_averages().table(sort_by=key, row_limit=rows)


def _profile_child(method, p, conn):
    try:
        torch.set_num_threads(p["threads"])
        conn.send(profile_method(method, p))
    except BaseException:  # noqa: BLE001
        conn.send(traceback.format_exc())
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


def machine(p: dict) -> dict:
    info = dict(numerics.machine(), threads=p["threads"], python=platform.python_version(),
                transformers=transformers.__version__, peft=peft.__version__, platform=platform.platform())
    if p["device"] == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)  # the parent's only CUDA call, after the children ran
    return info


def ratio(a, b):
    return a / b if a is not None and b else None


def analyse(rows: list[dict]) -> list[dict]:
    """Add the ratios against PEFT LoRA, full fine-tuning and the base model."""
    ok = {r["method"]: r for r in rows if "error" not in r}
    ref_lora, ref_full = ok.get("peft-lora"), ok.get("full")
    for r in rows:
        if "error" in r:
            continue
        for q in ("step_s", "step_cpu_s", "peak_bytes", "peak_delta_bytes"):
            r[f"{q}_vs_peft_lora"] = ratio(r[q], ref_lora and ref_lora[q])
            r[f"{q}_vs_full"] = ratio(r[q], ref_full and ref_full[q])
        r["infer_vs_base"] = ratio(r["infer_merged_s"], r["infer_base_s"])
        r["infer_cpu_vs_base"] = ratio(r["infer_merged_cpu_s"], r["infer_base_cpu_s"])
    return rows


def check_targets(rows: list[dict]) -> list[dict]:
    """The benchmark's targets, each with the measured ratio (wall clock, and process CPU time)."""
    ok = {r["method"]: r for r in rows if "error" not in r}
    out = []

    def add(name, limit, wall, cpu=None):
        out.append(dict(target=name, limit=limit, measured=wall, measured_cpu_time=cpu,
                        met=None if wall is None else bool(wall <= limit)))

    b, hira = ok.get("bhra"), ok.get("peft-hira")
    if b:
        add("BHRA lean step time / full fine-tuning", 1.0, b.get("step_s_vs_full"), b.get("step_cpu_s_vs_full"))
        add("BHRA lean step time / PEFT LoRA", 1.45, b.get("step_s_vs_peft_lora"), b.get("step_cpu_s_vs_peft_lora"))
        add("BHRA lean step time / PEFT HiRA", 0.6, ratio(b["step_s"], hira and hira["step_s"]),
            ratio(b["step_cpu_s"], hira and hira["step_cpu_s"]))
        add("BHRA lean peak memory / PEFT LoRA", 1.1, b.get("peak_bytes_vs_peft_lora"))
        add("BHRA lean peak memory Δ / PEFT LoRA (stricter)", 1.1, b.get("peak_delta_bytes_vs_peft_lora"))
    if ok:  # within 3% either way: the worst method is the one farthest from 1
        worst = lambda key: max((r[key] for r in ok.values()), key=lambda v: abs(v - 1))  # noqa: E731
        add("merged inference / base, worst method (within 3% either way)", 0.03,
            worst("infer_vs_base"), worst("infer_cpu_vs_base"))
        out[-1]["met"] = bool(abs(out[-1]["measured"] - 1) <= 0.03)
        add("merged models identical in structure to the base (all methods)", 0,
            sum(not r["merged_same_structure"] for r in ok.values()))
    return out


def fmt(x, spec):
    return "–" if x is None else format(x, spec)


def markdown(result: dict) -> str:
    p, m = result["preset"], result["machine"]
    MB = 2**20
    where = m.get("gpu") or f"{m['cpu']}, {m['cores']} cores, {m['threads']} threads"
    mem = ("torch.cuda.max_memory_allocated" if p["device"] == "cuda" else
           "peak RSS (VmHWM) of a forked child per method, buffers ≥ 64 KiB mmapped so RSS tracks live tensors")
    lines = [
        f"### `{result['name']}`: hidden {p['hidden']}, intermediate {p['intermediate']}, {p['layers']} layers, "
        f"{p['heads']}/{p['kv_heads']} heads, vocab {p['vocab']}, seq {p['seq']}, micro-batch {p['batch']}, "
        f"{p['dtype']} weights{' under ' + p['autocast'] + ' autocast' if p.get('autocast', 'none') != 'none' else ''} on {p['device']}",
        "",
        f"{where}; torch {m['torch']}, transformers {m['transformers']}, peft {m['peft']}. "
        f"r = {R}, b = {B}, GraLoRA k = {K}, targets q,k,v,o,gate,up,down; AdamW. "
        "Step: wall clock, and CPU time of the process (all threads). "
        f"Step = forward + backward + optimiser step, median of {p['steps']} after {p['warmup'] + MEMORY_STEPS} warm-up. "
        f"Memory: {mem}, over the first {MEMORY_STEPS} steps; Δ = that peak minus the memory in use just before. "
        f"Inference: merged model vs a fresh base model, same process, timed in turns, median of {p['infer_runs']} "
        "forwards each. "
        f"Whole run: {result['wall_s']:.0f} s; 1-min load average {result['loadavg_1min']['start']:.1f} at the "
        f"start, {result['loadavg_1min']['end']:.1f} at the end (above the thread count: another process shared the cores).",
        "",
        "| method | trainable | step ms | × PEFT LoRA | × full FT | CPU ms | × PEFT LoRA | × full FT "
        "| peak Δ MiB | × PEFT LoRA | × full FT | peak MiB | × PEFT LoRA | merged inf. ms | × base | CPU × base |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['label']} | failed: {r['error'].strip().splitlines()[-1]} |" + " |" * 14)
            continue
        lines.append(
            f"| {r['label']} | {r['trainable_params'] / 1e6:.2f} M | {r['step_s'] * 1e3:.0f} "
            f"| {fmt(r['step_s_vs_peft_lora'], '.2f')} | {fmt(r['step_s_vs_full'], '.2f')} "
            f"| {r['step_cpu_s'] * 1e3:.0f} | {fmt(r['step_cpu_s_vs_peft_lora'], '.2f')} "
            f"| {fmt(r['step_cpu_s_vs_full'], '.2f')} "
            f"| {r['peak_delta_bytes'] / MB:.0f} | {fmt(r['peak_delta_bytes_vs_peft_lora'], '.2f')} "
            f"| {fmt(r['peak_delta_bytes_vs_full'], '.2f')} "
            f"| {r['peak_bytes'] / MB:.0f} | {fmt(r['peak_bytes_vs_peft_lora'], '.2f')} "
            f"| {r['infer_merged_s'] * 1e3:.1f} | {fmt(r['infer_vs_base'], '.3f')} "
            f"| {fmt(r['infer_cpu_vs_base'], '.3f')} |"
        )
    lines += ["", "| target | limit | measured (wall) | met | measured (CPU time) |", "|---|---:|---:|---|---:|"]
    for t in result["targets"]:
        met = "–" if t["met"] is None else ("yes" if t["met"] else "**no**")
        limit = {0.03: "± 0.03", 0: "0 differ"}.get(t["limit"], f"≤ {t['limit']:g}")
        measured = f"{t['measured']} differ" if t["limit"] == 0 else fmt(t["measured"], ".3f")
        lines.append(f"| {t['target']} | {limit} | {measured} | {met} | {fmt(t['measured_cpu_time'], '.3f')} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="cpu", choices=PRESETS)
    ap.add_argument("--device", choices=("cpu", "cuda"), help="override the preset's device")
    ap.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="override the preset's weight dtype")
    ap.add_argument("--autocast", choices=("none", "bfloat16", "float16"),
                    help="forward under torch.autocast of this dtype (default: the preset's; llama-3.2-1b: bfloat16)")
    ap.add_argument("--estimate", action="store_true",
                    help="print lab.budget's memory estimate and fit of the paper BHRA run, and exit")
    ap.add_argument("--batch", type=int, help="micro-batch size (default: the preset's)")
    ap.add_argument("--seq", type=int, help="sequence length (default: the preset's)")
    ap.add_argument("--steps", type=int, help="timed steps (default: the preset's)")
    ap.add_argument("--warmup", type=int, help="warm-up steps (default: the preset's)")
    ap.add_argument("--threads", type=int, help="torch intra-op threads per child (default: all cores)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for <name>.md and <name>.json")
    ap.add_argument("--profile", metavar="METHODS", help="profile one step of each given method and exit")
    args = ap.parse_args(argv)

    p = dict(PRESETS[args.preset])
    if args.estimate:  # the arithmetic lab.finetune's fit decision uses (lab/budget.py)
        from lab.budget import report
        from lab.config import preset

        given = {"micro_batch_size": args.batch, "cutoff_len": args.seq}
        print(report(preset("paper", method="bhra", **{k: v for k, v in given.items() if v})))
        return None
    for key in ("device", "dtype", "autocast", "batch", "seq", "steps", "warmup", "threads"):
        if getattr(args, key) is not None:
            p[key] = getattr(args, key)
    p.setdefault("threads", os.cpu_count())  # not torch.get_num_threads(): no thread pool before the fork
    if p["device"] == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda, but torch sees no GPU here")
    methods = [x.strip() for x in (args.profile or args.methods).split(",") if x.strip()]
    unknown = [x for x in methods if x not in METHODS]
    if unknown:
        ap.error(f"unknown methods {unknown}; choose from {list(METHODS)}")

    ctx = mp.get_context("fork")
    if args.profile:
        for method in methods:
            here, there = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_profile_child, args=(method, p, there))
            proc.start()
            there.close()
            print(here.recv())
            proc.join()
        return None

    default = {"threads": os.cpu_count(), **PRESETS[args.preset]}
    name = "-".join([args.preset] + [f"{k}{v}" for k, v in p.items() if v != default[k]])  # e.g. cpu-threads1
    t0, load0 = time.perf_counter(), os.getloadavg()
    rows = []
    for method in methods:
        r = run_isolated(method, p)
        rows.append(r)
        msg = r["error"].strip().splitlines()[-1] if "error" in r else (
            f"step {r['step_s'] * 1e3:8.1f} ms   peak Δ {r['peak_delta_bytes'] / 2**20:8.0f} MiB   "
            f"merged inference ×{r['infer_merged_s'] / r['infer_base_s']:.3f}")
        print(f"{METHODS[method]:34s} {msg}", file=sys.stderr, flush=True)
    result = dict(name=name, preset=p, machine=machine(p), wall_s=time.perf_counter() - t0,
                  loadavg_1min=dict(start=load0[0], end=os.getloadavg()[0]),
                  r=R, b=B, k=K, targets_modules=TARGETS)
    result["rows"] = analyse(rows)
    result["targets"] = check_targets(rows)
    if p["device"] == "cuda" and "bhra" in methods and "error" not in rows[methods.index("bhra")]:
        result["bhra_peak_fits_24GB"] = rows[methods.index("bhra")]["peak_bytes"] <= 24e9
    table = markdown(result)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.md").write_text(table)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))
    failed = [r["method"] for r in rows if "error" in r]
    if failed:
        for r in rows:
            if "error" in r:
                print(f"--- {r['method']} failed:\n{r['error']}", file=sys.stderr)
        raise SystemExit(f"methods failed: {failed}")
    return result


if __name__ == "__main__":
    main()
