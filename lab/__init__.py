"""The experiment harness around the method of core/bhra.py (arrows run notebooks → lab → core).

    lab.config     one run-config dataclass, its two presets (offline, paper), the path rule, the names
    lab.formats    the LLM-Adapters format: loaders, the Alpaca prompt, label masking, answer extraction
    lab.offline    the offline stand-in for the hub: a small Llama pre-trained on the spot, synthetic tasks
    lab.finetune   fine-tuning through transformers.Trainer, merged evaluation, run folders
    lab.cli        `python -m lab train|evaluate|show --profile P --method M`
    lab.continual  the continual-learning protocol: stage 1 → merge → stage 2 sweep, frontiers, statistics
    lab.spectra    what an update looks like: per-layer singular values, stable rank, block energy
    lab.data       fetch the paper profile's data once (hub access needed) in the LLM-Adapters layout
    lab.peft_bhra  BHRA as a PEFT method, for PEFT users (PEFT is never imported by the core)
    lab.machine    one numerical path on every x86 machine (set here, before torch computes), the machine record

The notebooks use the flat names below (`lab.train`, `lab.preset`, ...).
"""
from lab import machine  # first: the numerical pins must be in the environment before torch computes

from lab.config import (ABLATIONS, LEARNING_RATES, METHODS, METHODS_ALL, OFFLINE, PROFILES, REPO, TARGETS_ALL,
                        RunConfig, configs, in_parallel, preset, quiet, resolve, threads)
from lab.finetune import (count_trainable, data_dir, device, evaluate, evaluate_all, evaluate_cfg, evaluate_run,
                          generate, load_model, load_trained, merged_equals_unmerged, model_identity, prepare_model,
                          run_dir, save_merged, train, train_all, train_many)
from lab.formats import (CHANCE, COMMONSENSE_TASKS, extract_answer, extract_number, generate_prompt, is_correct,
                         load_commonsense, load_json_records, load_math, tokenize_example)
from lab.offline import BaseSpec, base_model_path, build_tokenizer, make_arithmetic, make_commonsense, offline_data, world_corpus

machine.check()
