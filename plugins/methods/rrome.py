"""R-ROME: ROME keyed at the bare prompt (Gupta et al., 2024, "Rebuilding ROME: Resolving Model
Collapse during Sequential Model Editing").

The original ROME code averages the key over context templates for the update's direction u but
reads the key of the update's denominator and residual at the bare prompt; that asymmetry makes
uᵀk* small for some facts and the update huge, and such edits collapse the model in sequential
editing. The fix is to use one key throughout. This method uses the bare prompt's key for both
(the paper's p-ROME, the reference toolkit's `enable_prompt_keys`); `rome` here already uses the
template-averaged key for both, which is the paper's r-ROME proper (docs/methods.md, "R-ROME").
The value δ is still optimized over every template, exactly as in ROME.
"""

from __future__ import annotations

from harness_plugins.methods.rome import ROME
from harness_plugins.rome_family.templates import SLOT


class RROME(ROME):
    name = "r-rome"

    def key_templates(self, templates: list[str]) -> list[str]:
        """Only the bare prompt: k* is the edit prompt's own key, in u and in the update."""
        return [SLOT]
