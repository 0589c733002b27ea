"""Built-in editing methods, registered lazily: each is imported only when a run uses it."""

from harness.api import hookimpl

METHODS = {
    "ft-l": ("harness_plugins.methods.ft:FTL", "Fine-tune one layer's MLP output weights (FT-L)"),
    "ft-m": ("harness_plugins.methods.ft:FTM", "FT-L with the loss masked to the target tokens (FT-M)"),
    "rome": ("harness_plugins.methods.rome:ROME", "Rank-one model editing of one MLP layer (ROME)"),
    "memit": ("harness_plugins.methods.memit:MEMIT", "Mass-editing memory across MLP layers (MEMIT)"),
    "ike": ("harness_plugins.methods.ike:IKE", "In-context editing with retrieved demonstrations"),
    "ice": ("harness_plugins.methods.ike:ICE", "In-context editing with the new fact only"),
    "lora": ("harness_plugins.methods.lora:LoRA", "Low-rank adapters trained on the edit (peft)"),
    "adalora": ("harness_plugins.methods.lora:AdaLoRA", "Adaptive-rank LoRA trained on the edit"),
    "grace": ("harness_plugins.methods.grace:GRACE", "Codebook adapter with deferral radius (GRACE)"),
}


@hookimpl
def harness_register_methods(register):
    for name, (target, description) in METHODS.items():
        register(name, target, description=description)
