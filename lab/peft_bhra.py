"""BHRA for PEFT users: a `BhraConfig` registered with PEFT, so that BHRA runs through PEFT's own verbs.

    import lab.peft_bhra  # registers the method "bhra" with PEFT
    from lab.peft_bhra import BhraConfig
    model = get_peft_model(model, BhraConfig(r=32, b=8, target_modules=["q_proj", "v_proj"]))
    ...                                                  # train; model.save_pretrained(folder)
    model = PeftModel.from_pretrained(base, folder).merge_and_unload()

The maths is core.bhra's: each layer's factors have its shapes and its initialisation, the forward is
its lean one-GEMM `block_hadamard_linear`, the merged weight W0 + `bhra_delta`. This file adds only
what PEFT asks of a method: a config, a tuner layer holding one (B, A) pair per adapter name, and a
tuner model that swaps the targeted nn.Linear modules for it. core.bhra never imports PEFT.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Optional, Union

import torch
from peft.config import PeftConfig
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer, check_adapters_to_merge
from peft.utils import PeftType, register_peft_method
from peft.utils.constants import TRANSFORMERS_MODELS_TO_HIRA_TARGET_MODULES_MAPPING
from torch import nn

from core.bhra import AdapterConfig, BHRALinear, _check_shape, bhra_delta, block_hadamard_linear


def _peft_type(name: str) -> PeftType:
    """PEFT keys its registries by members of the PeftType enum, which lists only PEFT's own methods: add one."""
    if name not in PeftType.__members__:
        member = str.__new__(PeftType, name)
        member._name_ = member._value_ = name
        PeftType._member_map_[name] = PeftType._value2member_map_[name] = member
        PeftType._member_names_.append(name)
        type.__setattr__(PeftType, name, member)
    return PeftType[name]


BHRA = _peft_type("BHRA")


@dataclass
class BhraConfig(PeftConfig):
    """PEFT's configuration of BHRA: `r` and `b` mean what they mean in core.bhra.AdapterConfig."""

    r: int = field(default=32, metadata={"help": "LoRA-equivalent rank: r·(out + in) parameters per layer"})
    b: int = field(default=8, metadata={"help": "blocks per side of the grid; each block has rank r_b = r / b"})
    target_modules: Optional[Union[list[str], str]] = field(
        default=None, metadata={"help": "nn.Linear names or a regex, as in LoraConfig; None: HiRA's defaults"}
    )
    exclude_modules: Optional[Union[list[str], str]] = field(default=None, metadata={"help": "names not to adapt"})

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = BHRA
        self.core()  # the core's checks of r and b, with its messages
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)

    def core(self) -> AdapterConfig:
        """The same adapter as a core.bhra config (PEFT, not `targets`, picks the layers)."""
        return AdapterConfig(method="bhra", r=self.r, b=self.b, targets=("chosen by PEFT",))


class BhraLayer(nn.Module, BaseTunerLayer):
    """A frozen nn.Linear plus one BHRA adapter (B, A) per adapter name; core.bhra computes."""

    adapter_layer_names = ("bhra_A", "bhra_B")  # PEFT trains, saves and moves these
    other_param_names = ("bhra_s",)

    def __init__(self, base_layer: nn.Linear, adapter_name: str, config: BhraConfig, name: str):
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.bhra_A, self.bhra_B, self.bhra_s = nn.ParameterDict(), nn.ParameterDict(), {}
        self.register_buffer("W0_unmerged", None, persistent=False)  # W0 while merged: a buffer, so .to() moves it
        self._active_adapter, self.merged_adapters, self._disable_adapters = adapter_name, [], False
        self.update_layer(adapter_name, config, name)

    def update_layer(self, adapter_name: str, config: BhraConfig, name: str):
        cfg = config.core()
        _check_shape(name, self.out_features, self.in_features, cfg)
        init = BHRALinear(self.get_base_layer(), cfg)  # the core's factors: shapes, dtype, device, initialisation
        self.bhra_A[adapter_name] = init.A  # (b, b, r_b, in/b)
        self.bhra_B[adapter_name] = init.B  # (b, b, out/b, r_b), zero: ΔW starts at 0
        self.bhra_s[adapter_name] = init.s
        self.set_adapter(self.active_adapters)

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        W0 = self.get_base_layer().weight
        return bhra_delta(W0, self.bhra_B[adapter], self.bhra_A[adapter], self.bhra_s[adapter])

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.disable_adapters and self.merged:
            self.unmerge()
        active = [a for a in self.active_adapters if a in self.bhra_A]
        if self.disable_adapters or self.merged or not active:
            return self.base_layer(x, *args, **kwargs)
        if len(active) > 1:
            raise ValueError(f"BHRA runs one adapter at a time, but {active} are active: call model.set_adapter(name)")
        a, base = active[0], self.get_base_layer()
        return block_hadamard_linear(x, base.weight, base.bias, self.bhra_B[a], self.bhra_A[a], self.bhra_s[a])

    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        adapter_names = check_adapters_to_merge(self, adapter_names)
        if not adapter_names:
            return
        base = self.get_base_layer()
        W0 = base.weight.data
        with torch.no_grad():  # as core's merged_weight: the sum in float32, rounded once to W0's dtype
            W = (W0.float() + sum(self.get_delta_weight(a).float() for a in adapter_names)).to(W0.dtype)
        if safe_merge and not torch.isfinite(W).all():
            raise ValueError(f"merging {adapter_names} gives non-finite weights: the adapter diverged (lower the "
                             "learning rate or train in float32); nothing was merged")
        if self.W0_unmerged is None:
            self.W0_unmerged = W0
        base.weight.data = W
        self.merged_adapters.extend(adapter_names)

    def unmerge(self) -> None:
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.")
            return
        self.get_base_layer().weight.data = self.W0_unmerged  # W0 bit-exactly, wherever .to() moved it
        self.W0_unmerged = None
        self.merged_adapters.clear()

    def __repr__(self) -> str:
        return "bhra." + super().__repr__()


class BhraModel(BaseTuner):
    """Swaps every targeted nn.Linear for a BhraLayer."""

    prefix = "bhra_"
    tuner_layer_cls = BhraLayer
    target_module_mapping = TRANSFORMERS_MODELS_TO_HIRA_TARGET_MODULES_MAPPING  # by default, adapt what HiRA adapts

    def _create_and_replace(self, config, adapter_name, target, target_name, parent, current_key, **kwargs):
        if isinstance(target, BhraLayer):
            target.update_layer(adapter_name, config, current_key)
            return
        if not isinstance(target, nn.Linear):
            raise TypeError(f"{current_key} is a {type(target).__name__}: BHRA adapts nn.Linear layers only, "
                            "leave it out of target_modules")
        layer = BhraLayer(target, adapter_name, config, current_key)
        if adapter_name not in self.active_adapters:
            layer.requires_grad_(False)  # an added adapter trains only once made active
        self._replace_module(parent, target_name, layer, target)


if BHRA not in PEFT_TYPE_TO_CONFIG_MAPPING:  # a second import (a reload) must not register twice
    register_peft_method(name="bhra", config_cls=BhraConfig, model_cls=BhraModel)
