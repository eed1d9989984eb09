"""The experiment harness around the method of core/bhra.py (arrows run notebooks → lab → core).

    lab.config     one run-config dataclass (the base model included), its two presets (offline, paper), the names
    lab.cache      the cache folder, the path rule, cache keys, atomic publishing
    lab.pool       thread pinning and the process pool that runs single-threaded runs side by side
    lab.formats    the LLM-Adapters format: the task table, loaders, the Alpaca prompt, label masking, answer extraction
    lab.offline    the offline stand-in for the hub: a small Llama (committed, rebuilt by `make base`), synthetic tasks
    lab.finetune   fine-tuning through transformers.Trainer, merged evaluation, run folders
    lab.cli        `python -m lab train|evaluate|show --profile P --method M`
    lab.continual  the continual-learning protocol: stage 1 → merge → stage 2 sweep, frontiers, statistics
    lab.spectra    what an update looks like: per-layer singular values, stable rank, block energy
    lab.stats      means with 95 % intervals, paired differences, verdicts, the majority answer
    lab.data       fetch the paper profile's data once (hub access needed) in the LLM-Adapters layout
    lab.protocol   the paper profile's settings against their sources (notebook 04's table)
    lab.peft_bhra  BHRA as a PEFT method, for PEFT users (PEFT is never imported by the core)
    lab.machine    one numerical path on every x86 machine (set here, before torch computes), the machine record

The notebooks use the flat names below (`lab.train`, `lab.preset`, ...).
"""
from lab import machine  # first: the numerical pins must be in the environment before torch computes

from lab.cache import REPO, resolve
from lab.config import (ABLATIONS, BY_METHOD, LEARNING_RATES, METHODS, METHODS_ALL, OFFLINE, PROFILES, TARGETS_ALL,
                        RunConfig, configs, describe, for_method, preset)
from lab.finetune import (count_trainable, data_dir, device, evaluate, evaluate_run, evaluate_task,
                          generate, identity, load_base, load_model, load_trained, merged_equals_unmerged,
                          model_identity, prepare_model, run_dir, save_merged, stored_dtype, train, train_all,
                          train_many)
from lab.formats import (CHANCE, COMMONSENSE_TASKS, chance_of, extract_answer, extract_number, generate_prompt, is_correct,
                         load_commonsense, load_json_records, tokenize_example)
from lab.offline import BaseSpec, base_model_path, build_tokenizer, make_arithmetic, make_commonsense, offline_data, world_corpus
from lab.pool import in_parallel, quiet, threads
from lab.stats import majority

machine.check()
