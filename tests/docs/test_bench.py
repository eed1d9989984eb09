"""Smoke test of benchmarks/bench.py: the tiny preset runs end to end and writes a complete table.

No timing is asserted here: performance targets live in the benchmark's own output, never in unit tests.
"""
import json
import math
import subprocess

import pytest
import sys

from tests.helpers import REPO
METHODS = ["base", "full", "peft-lora", "peft-hira", "peft-gralora",
           "lora", "dora", "hira", "abba", "gralora", "bhra", "bhra-plain"]  # every method and BHRA on plain autograd, in table order


@pytest.mark.slow
def test_bench_tiny_writes_every_method(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--preset", "tiny", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    result = json.loads((tmp_path / "tiny.json").read_text())
    table = (tmp_path / "tiny.md").read_text()
    assert [r["method"] for r in result["rows"]] == METHODS
    for r in result["rows"]:
        assert "error" not in r, r.get("error")
        assert r["merged_same_structure"], r["method"]
        assert r["label"] in table
        for key in ("step_s", "peak_bytes", "infer_base_s", "infer_merged_s", "infer_vs_base"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["method"], key, r[key])
        assert r["peak_delta_bytes"] >= 0
        assert r["step_s_vs_peft_lora"] > 0 and r["step_s_vs_full"] > 0
    rows = {r["method"]: r for r in result["rows"]}
    # every adapter trains r (m + n) per layer (DoRA adds its magnitudes); the base trains nothing
    assert rows["base"]["trainable_params"] == 0
    for m in ("lora", "hira", "abba", "gralora", "bhra", "bhra-plain", "peft-lora", "peft-hira", "peft-gralora"):
        assert rows[m]["trainable_params"] == rows["lora"]["trainable_params"], m
    assert rows["peft-lora"]["step_s_vs_peft_lora"] == 1.0 and rows["full"]["step_s_vs_full"] == 1.0
    assert {t["target"] for t in result["targets"]} >= {"BHRA lean step time / PEFT LoRA", "merged inference / base, worst method (within 3% either way)"}
    assert result["machine"]["torch"] and result["machine"]["cores"] >= 1
