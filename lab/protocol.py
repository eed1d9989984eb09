"""Protocol fidelity: the paper's settings, LLM-Adapters / HiRA / ABBA practice, and this profile, side by side.

`SETTINGS` is the table as data: one small dict per setting, each value with the file (and line or
function) it was read from in the public reference code. `settings_table(cfg)` renders it for a
RunConfig, adding whose recipe the paper profile follows, what the profile does and, where it departs,
why (notebook 04 shows it).

Only the BoHA paper's abstract could be read here (arXiv 2509.21637 v1/v2); its setup section could
not, so its column says "not checked" rather than guess.
"""
from __future__ import annotations

import pandas as pd

from core.bhra import scaling
from lab.config import RunConfig, for_method

NOT_CHECKED = "not checked (only the abstract was readable)"
LA, DORA, HIRA, ABBA = "LLM-Adapters", "DoRA commonsense_reasoning/", "HiRA", "ABBA"
PRACTICE_LR = {"lora": 3e-4, "dora": 2e-4, "hira": 1e-3, "abba": 1e-3}  # read from the sources below
ABBA_S = 32.0  # ABBA's scripts/train_cr.sh --lora_alpha=32: s = sqrt(32) * sqrt(32)
ABBA_BATCH, ABBA_EPOCHS = 6 * 24, 2  # ABBA's train_cr.py: micro-batch 6, 24 accumulation steps, 2 epochs


def _short(targets) -> str:
    return ",".join(t.removesuffix("_proj") for t in targets)


def _abba_scale(cfg: RunConfig) -> float:
    return scaling(for_method(cfg, "abba").adapter_config())


def _dropout_departs(cfg: RunConfig) -> str:
    additive = for_method(cfg, "lora").dropout  # what the methods with a separate adapter path get
    if additive != 0.05:
        return f"{additive:g} vs 0.05: core's HiRA/BHRA take no dropout (core.bhra.USES), so the additive methods get none either"
    if cfg.dropout != additive:
        return f"0 for {cfg.method}: it has no separate adapter path to drop out (core.bhra.USES); LoRA, DoRA, ABBA, GraLoRA 0.05"
    return "no: on LoRA, DoRA, ABBA and GraLoRA; core's HiRA and BHRA take no dropout (core.bhra.USES)"


def _lr_departs(cfg: RunConfig) -> str:
    if cfg.profile == "offline":
        return ("set by hand on the small offline model, then LoRA's, DoRA's, GraLoRA's and BHRA's cut to a third so that "
                "notebook 06's plasticity assertion holds (lab/config.py, benchmarks/README.md); not the published ones")
    ref = PRACTICE_LR.get(cfg.method)
    if ref is None:
        return f"no published commonsense rate for {cfg.method} was checked; config.LEARNING_RATES' choice"
    if cfg.learning_rate != ref:
        return f"{cfg.learning_rate:g} vs the published {ref:g}"
    if cfg.method == "abba" and cfg.max_steps <= 0:  # its rate was set for a schedule of fewer, larger steps
        ratio = (cfg.epochs / cfg.batch_size) / (ABBA_EPOCHS / ABBA_BATCH)
        return (f"no; ABBA's script set it for batch {ABBA_BATCH} over {ABBA_EPOCHS} epochs: this recipe takes "
                f"{ratio:g}x as many optimiser steps, of {cfg.batch_size} examples")
    return "no"


def _decoding(cfg: RunConfig) -> str:
    how = "greedy" if cfg.num_beams == 1 else f"{cfg.num_beams}-beam search"
    return f"{how}, max_new_tokens={cfg.max_new_tokens}, do_sample=False"


def _decoding_departs(cfg: RunConfig) -> str:
    if cfg.num_beams == 4 and cfg.max_new_tokens == 32:
        return "no"
    if cfg.num_beams == 1:
        return ("greedy, for speed (one sequence per question instead of four); not LLM-Adapters' protocol, "
                "set num_beams=4 to follow it")
    return f"num_beams={cfg.num_beams}, max_new_tokens={cfg.max_new_tokens} vs 4 and 32"


SETTINGS = [
    dict(setting="epochs", paper=NOT_CHECKED, field="max_steps / epochs",
         practice="3 (LLM-Adapters, DoRA, HiRA); ABBA 2",
         source=f"{LA} finetune.py l.39 num_epochs=3 and README l.78-89; {DORA}llama_7B_Dora.sh; {HIRA} README "
                f"'--epoch=3'; {ABBA} train_cr.py l.165 --epochs 2",
         this=lambda c: f"{c.max_steps} steps" if c.max_steps > 0 else f"{c.epochs:g} epochs",
         follows="LLM-Adapters (3 epochs)",
         departs=lambda c: ("a fixed step budget, matched across methods, that fits a CPU" if c.max_steps > 0 else
                            "no" if c.epochs == 3 else f"{c.epochs:g} epochs vs LLM-Adapters' 3")),
    dict(setting="learning rate", paper=NOT_CHECKED, field="lr (None: config.LEARNING_RATES)",
         practice="LoRA 3e-4; DoRA 2e-4 (LLaMA-7B), 1e-4 (LLaMA3-8B); HiRA 1e-3; ABBA 1e-3",
         source=f"{LA} README l.85; {DORA}llama_7B_Dora.sh, llama3_8B_DoRA.sh; {HIRA} README '--lr=1e-3'; "
                f"{ABBA} scripts/train_cr.sh",
         follows="each method's own script",
         this=lambda c: f"{c.method}: {c.learning_rate:g}", departs=_lr_departs),
    dict(setting="batch / micro batch", paper=NOT_CHECKED, field="batch_size / micro_batch_size",
         practice="16 / 4 (LLM-Adapters README); 16 / 16 (DoRA); 16 (HiRA); ABBA 6 x 24 accumulation",
         source=f"{LA} README l.82-83; {DORA}llama_7B_Dora.sh; {HIRA} README '--batch=16'; {ABBA} train_cr.py l.162-163",
         follows="LLM-Adapters README (16 / 4)", this=lambda c: f"{c.batch_size} / {c.micro_batch_size}",
         departs=lambda c: "no (the micro batch changes memory, not the update)" if c.batch_size == 16
         else f"{c.batch_size} examples per step vs 16"),
    dict(setting="cutoff length", paper=NOT_CHECKED, field="cutoff_len", practice="256 tokens (all four)",
         source=f"{LA} finetune.py l.41; {HIRA} dataset/format_inputs.py token_length_map; {ABBA} train_cr.py l.168",
         follows="all four (256)",
         this=lambda c: str(c.cutoff_len), departs=lambda c: "no" if c.cutoff_len == 256 else f"{c.cutoff_len} vs 256"),
    dict(setting="validation split, best checkpoint", paper=NOT_CHECKED, field="None",
         practice="120 records held out; eval loss every eval_step; load_best_model_at_end (LLM-Adapters, "
                  "HiRA); ABBA: no validation, keeps the last step",
         source=f"{LA} finetune.py l.254-256 train_test_split, l.292 load_best_model_at_end; {HIRA} "
                f"data_file/llm_adapt/commonsense_170k/do_train_val_test_split.py, train_hira.py l.275, l.294; "
                f"{ABBA} train_cr.py l.113 save_strategy='no'",
         follows="ABBA (no validation, the last step)", this=lambda c: "none: trains on every record, keeps the last step",
         departs=lambda c: "not implemented: checkpoints hold factors and optimiser state for resume only; "
                           "every method gets the same final-step budget, as in ABBA's reference"),
    dict(setting="eval / save steps", paper=NOT_CHECKED, field="save_steps",
         practice="80 / 80 (DoRA scripts, HiRA README); finetune.py defaults 200 / 200",
         source=f"{DORA}llama_7B_Dora.sh '--eval_step 80 --save_step 80'; {HIRA} README '--eval_steps=80'; "
                f"{LA} finetune.py l.44-45",
         follows="ABBA (no evaluation steps)",
         this=lambda c: f"no eval; save every {c.save_steps} steps" if c.save_steps else "no eval, no checkpoints",
         departs=lambda c: "no evaluation steps (no validation split); saving only serves resume"),
    dict(setting="adapter dropout", paper=NOT_CHECKED, field="dropout",
         practice="0.05 (LLM-Adapters, DoRA, HiRA, ABBA defaults)",
         source=f"{LA} finetune.py l.49; {HIRA} hira/tuners/lora.py l.81; {ABBA} train_cr.py l.161",
         follows="LLM-Adapters (0.05)", this=lambda c: f"{c.dropout:g}",
         departs=lambda c: _dropout_departs(c)),
    dict(setting="target modules", paper=NOT_CHECKED, field="targets",
         practice="q,k,v,up,down (DoRA, HiRA commonsense); ABBA q,k,v,o,gate,up,down",
         source=f"{DORA}llama_7B_Dora.sh --target_modules; {HIRA} README --target_modules; {ABBA} models.py l.112",
         follows="DoRA and HiRA on commonsense (q,k,v,up,down)", this=lambda c: _short(c.targets),
         departs=lambda c: "no" if set(_short(c.targets).split(",")) == {"q", "k", "v", "up", "down"} else
         "all seven projections as ABBA; DoRA/HiRA adapt five; the paper's choice not checked"),
    dict(setting="r / alpha", paper=NOT_CHECKED, field="r / alpha / b",
         practice="DoRA r=32, alpha=64 (LoRA r=32 in its table); HiRA r_ab=32, no alpha (scale 1); ABBA r1=r2=32, alpha=32",
         source=f"{DORA}README 'sh llama_7B_Dora.sh 32 64'; {HIRA} models/get_models.py scale_ab=1.0; "
                f"{ABBA} models.py l.107-110, scripts/train_cr.sh",
         follows="DoRA (r 32, alpha 64); ABBA its own alpha (next row)", this=lambda c: f"r={c.r}, alpha={c.alpha:g}, b={c.b}",
         departs=lambda c: "no" if (c.r, c.alpha) == (32, 64) else f"r={c.r}, alpha={c.alpha:g}: sized for the small offline model"),
    dict(setting="ABBA scale s", paper=NOT_CHECKED, field="alpha (method='abba')",
         practice="s = sqrt(alpha1)*sqrt(alpha2) = alpha, with alpha1 = alpha2 = alpha and r1 = r2 = r; no rank term",
         source=f"{ABBA} abba.py update_layer (scaling1 = sqrt(alpha1)), _rebuild_factors, merge; models.py l.107-110",
         follows=f"ABBA scripts/train_cr.sh (alpha 32: s = {ABBA_S:g})",
         this=lambda c: f"s = {_abba_scale(c):g} (core.bhra.scaling), r1 = r2 = {c.r // 2}",
         departs=lambda c: ("s as ABBA's script" if _abba_scale(c) == ABBA_S else
                            f"{_abba_scale(c) / ABBA_S:g}x ABBA's script's s = {ABBA_S:g}")
                           + "; r1 = r2 = r/2 (the reference uses r each) keeps ABBA at LoRA's parameter budget"),
    dict(setting="warmup", paper=NOT_CHECKED, field="warmup_steps",
         practice="100 steps (LLM-Adapters, HiRA); ABBA warmup_ratio 0.02",
         source=f"{LA} finetune.py l.280; {HIRA} README '--warmup=100'; {ABBA} train_cr.py l.167",
         follows="LLM-Adapters and HiRA (100 steps)", this=lambda c: f"{c.warmup_steps} steps",
         departs=lambda c: "no" if c.warmup_steps == 100 else f"{c.warmup_steps}: 100 would fill the short budget"),
    dict(setting="scheduler / optimiser", paper=NOT_CHECKED, field="None",
         practice="linear decay (Trainer default), AdamW; ABBA linear, AdamW, weight decay 0",
         source=f"{LA} finetune.py l.277-297 (no lr_scheduler_type, optim='adamw_torch'); {ABBA} train_cr.py l.166",
         follows="LLM-Adapters and ABBA", this=lambda c: "linear, AdamW, weight decay 0 (lab.finetune)",
         departs=lambda c: "no"),
    dict(setting="precision", paper=NOT_CHECKED, field="bf16",
         practice="LLM-Adapters fp16 training, model.half() at evaluation; HiRA and ABBA bf16",
         source=f"{LA} finetune.py l.283, commonsense_evaluate.py load_model(); {HIRA} train_hira.py l.273; "
                f"{ABBA} train_cr.py l.114",
         follows="HiRA and ABBA (bf16)", this=lambda c: "bf16 autocast over fp32 weights" if c.bf16 else "float32",
         departs=lambda c: "bf16 as HiRA and ABBA, not fp16" if c.bf16 else "float32 on the CPU: bf16 needs a GPU"),
    dict(setting="prompt / loss", paper=NOT_CHECKED, field="train_on_inputs",
         practice="Alpaca template, each line indented 16 spaces by the f-string; loss on prompt and response "
                  "(train_on_inputs=True default, scripts keep it)",
         source=f"{LA} finetune.py generate_prompt() l.323, l.62; commonsense_evaluate.py generate_prompt()",
         follows="LLM-Adapters (its template, loss on prompt and response)",
         this=lambda c: f"Alpaca template, unindented (lab.formats); train_on_inputs={c.train_on_inputs}",
         departs=lambda c: "whitespace of the template" + ("" if c.train_on_inputs else
                           "; loss on the response only (a choice of this harness)")),
    dict(setting="decoding", paper=NOT_CHECKED, field="num_beams / max_new_tokens",
         practice="4-beam search, max_new_tokens 32; temperature 0.1, top_p 0.75, top_k 40 are passed without "
                  "do_sample, so they do nothing; HiRA 4 beams, 16 tokens; ABBA samples (vLLM, T=0.1, 32 tokens)",
         source=f"{LA} commonsense_evaluate.py evaluate() l.37-64; {HIRA} run_eval_decoding.sh, format_inputs.py "
                f"gen_max_new_token_map; {ABBA} instruction_tuning_eval/commonsense_eval.py l.91",
         follows="LLM-Adapters (4 beams, 32 tokens)", this=_decoding, departs=_decoding_departs),
    dict(setting="answer extraction", paper=NOT_CHECKED, field="None",
         practice="first regex match: true|false, solution1|2, answer1-5, ending1-4, option1|2",
         source=f"{LA} commonsense_evaluate.py extract_answer() l.265-297",
         follows="LLM-Adapters", this=lambda c: "the same patterns (lab.formats.extract_answer)", departs=lambda c: "no"),
    dict(setting="test sets", paper="eight commonsense tasks and two arithmetic benchmarks (v1 abstract)",
         field="data_dir", practice="BoolQ, PIQA, SIQA, HellaSwag, WinoGrande, ARC-e, ARC-c, OBQA: dataset/<task>/test.json",
         source=f"{LA} commonsense_evaluate.py load_data(); {HIRA} run_eval_decoding.sh",
         follows="LLM-Adapters (its eight test files, whose spacing lab.formats writes)",
         this=lambda c: f"{c.data_dir}/dataset/<task>/test.json" if c.data_dir else "synthetic stand-ins (lab.offline)",
         departs=lambda c: "no" if c.data_dir else "no hub here: synthetic tasks in the same format"),
]

COLUMNS = ["setting", "paper (BoHA)", "published practice", "source", "the paper profile follows", "RunConfig field",
           "this profile", "departs, and why"]


def settings_table(cfg: RunConfig) -> pd.DataFrame:
    """The protocol table for one run config: every published value, its source, and what `cfg` does."""
    rows = [[s["setting"], s["paper"], s["practice"], s["source"], s["follows"], s["field"], s["this"](cfg),
             s["departs"](cfg)]
            for s in SETTINGS]
    return pd.DataFrame(rows, columns=COLUMNS)
