"""Execute notebooks top to bottom in fresh kernels and record each one's wall time.

    python notebooks/execute.py --output-dir build/notebooks notebooks/0*.ipynb   # what `make notebooks` runs
    python notebooks/execute.py --inplace notebooks/04_finetune_llama.ipynb       # rewrite committed outputs

The times go to `<output dir>/timings.json` (with --inplace: build/notebooks/timings.json), with the
machine they were measured on (its CPU, the ISA torch used, the numerical pins of lab/machine.py); `notebooks/results/timings.json` is a copy of one such file from a
fresh clone, and the README quotes its totals (a test checks the quote).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import nbformat
from nbconvert.preprocessors import ExecutePreprocessor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lab import machine  # noqa: E402  the pins, set here too, so every kernel starts on the one numerical path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--output-dir", type=Path)
    where.add_argument("--inplace", action="store_true")
    p.add_argument("notebooks", nargs="+", type=Path)
    a = p.parse_args(argv)
    out_dir = ROOT / "build" / "notebooks" if a.inplace else a.output_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds = {}
    for path in a.notebooks:
        nb = nbformat.read(path, as_version=4)
        t0 = time.time()
        ExecutePreprocessor(timeout=None, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(path.parent)}})
        seconds[path.stem] = round(time.time() - t0, 1)
        nbformat.write(nb, path if a.inplace else out_dir / path.name)
        print(f"{path.name}: {seconds[path.stem]:.0f} s", flush=True)
    record = {"seconds": seconds, "total_seconds": round(sum(seconds.values()), 1), "cpu": machine.cpu_name(),
              "cores": os.cpu_count(), "grid": os.environ.get("BHRA_GRID", "full"), "machine": machine.machine()}
    (out_dir / "timings.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"all: {record['total_seconds'] / 60:.1f} min -> {out_dir / 'timings.json'}")


if __name__ == "__main__":
    main()
