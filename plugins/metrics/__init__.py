"""Built-in metrics (definitions in docs/metrics.md), registered lazily so that listing them
never imports torch."""

from harness.api import hookimpl

_MODULE = "harness_plugins.metrics"

METRICS: dict[str, tuple[str, str]] = {
    "edit_succ": ("knowedit:EditSucc", "token accuracy of target_new after the edit prompt"),
    "generalization": ("knowedit:Generalization", "token accuracy of target_new after rephrased prompts"),
    "portability": ("knowedit:Portability", "token accuracy on portability probes, per group"),
    "locality": ("knowedit:Locality", "agreement of post- with pre-edit argmax tokens, per group"),
    "fluency": ("fluency:Fluency", "weighted bi/tri-gram entropy (bits) of a sampled continuation"),
    "exact_match": ("generation:ExactMatch", "greedy decoding reproduces the answer exactly"),
    "contains": ("generation:Contains", "the answer occurs in a greedy continuation"),
    "perplexity": ("perplexity:Perplexity", "perplexity of target_new after the prompt (WikiBio)"),
    "convsent_es": ("convsent:ConvSentSuccess", "ConvSent edit success from answer log-probabilities"),
    "convsent_kl": ("convsent:ConvSentKL", "ConvSent locality: KL(pre || post) on another topic"),
    "sanitation_success": ("sanitation:SanitationSuccess", "forget prompts answered with target_new"),
    "sanitation_locality": ("sanitation:SanitationLocality", "retain prompts keep their pre-edit answer"),
}


@hookimpl
def harness_register_metrics(register):
    for name, (target, description) in METRICS.items():
        register(name, f"{_MODULE}.{target}", description=description)
