"""Built-in editing methods, registered lazily: each is imported only when a run uses it."""

from harness.api import hookimpl

METHODS = {
    "ft-l": ("harness_plugins.methods.ft:FTL", "Fine-tune one layer's MLP output weights (FT-L)"),
    "ft-m": ("harness_plugins.methods.ft:FTM", "FT-L with the loss masked to the target tokens (FT-M)"),
    "rome": ("harness_plugins.methods.rome:ROME", "Rank-one model editing of one MLP layer (ROME)"),
    "memit": ("harness_plugins.methods.memit:MEMIT", "Mass-editing memory across MLP layers (MEMIT)"),
    "r-rome": ("harness_plugins.methods.rrome:RROME", "ROME keyed at the bare prompt (R-ROME)"),
    "emmet": ("harness_plugins.methods.emmet:EMMET", "MEMIT with the edits written exactly (EMMET)"),
    "alphaedit": ("harness_plugins.methods.alphaedit:AlphaEdit", "MEMIT kept off preserved keys (AlphaEdit)"),
    "pmet": ("harness_plugins.methods.pmet:PMET", "MEMIT with attention and MLP values optimised (PMET)"),
    "ike": ("harness_plugins.methods.ike:IKE", "In-context editing with retrieved demonstrations"),
    "ice": ("harness_plugins.methods.ike:ICE", "In-context editing with the new fact only"),
    "lora": ("harness_plugins.methods.lora:LoRA", "Low-rank adapters trained on the edit (peft)"),
    "adalora": ("harness_plugins.methods.lora:AdaLoRA", "Adaptive-rank LoRA trained on the edit"),
    "grace": ("harness_plugins.methods.grace:GRACE", "Codebook adapter with deferral radius (GRACE)"),
    "wise": ("harness_plugins.methods.wise:WISE", "Side memory of one MLP value matrix with a router (WISE)"),
    "t-patcher": ("harness_plugins.methods.tpatcher:TPatcher", "One trained neuron per edit in the last MLP"),
    "kn": ("harness_plugins.methods.kn:KN", "Knowledge neurons found by integrated gradients (KN)"),
    "ultraedit": ("harness_plugins.methods.ultraedit:UltraEdit", "Training-free lifelong edits (UltraEdit)"),
    "serac": (
        "harness_plugins.methods.serac:SERAC",
        "Edit memory, scope classifier, counterfactual model (SERAC)",
    ),
    "mend": (
        "harness_plugins.methods.mend:MEND",
        "Trained editors of the fine-tuning gradient's rank-one factors (MEND)",
    ),
}


@hookimpl
def harness_register_methods(register):
    for name, (target, description) in METHODS.items():
        register(name, target, description=description)
