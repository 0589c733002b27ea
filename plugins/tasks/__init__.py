"""Built-in tasks: the six KnowEdit datasets, more editing formats and the bundled sample.

Each is registered by "module:Class" so that `harness list tasks` imports none of them.
"""

from harness.api import hookimpl

_MODULE = "harness_plugins.tasks"
_KNOWEDIT = "KnowEdit (zjunlp/KnowEdit on the Hugging Face hub, or --data-dir)"
_MINI = "bundled sample knowedit-mini (package data: no download, no --data-dir)"

#: name -> (module:Class, record format, source, description)
TASKS: dict[str, tuple[str, str, str, str]] = {
    "zsre": ("knowedit:ZsRE", "zsre", _KNOWEDIT, "ZsRE question-answer edits with rephrases and portability"),
    "wiki_recent": ("knowedit:WikiRecent", "wiki_recent", _KNOWEDIT, "insertion of recent WikiData facts"),
    "wiki_counterfact": (
        "knowedit:WikiCounterfact",
        "wiki_counterfact",
        _KNOWEDIT,
        "counterfactual WikiData edits with two locality kinds",
    ),
    "wikibio": ("knowedit:WikiBio", "wikibio", _KNOWEDIT, "hallucination correction in WikiBio passages"),
    "convsent": ("knowedit:ConvSent", "convsent", _KNOWEDIT, "steering a chatbot's sentiment on a topic"),
    "sanitation": (
        "knowedit:Sanitation",
        "sanitation",
        _KNOWEDIT,
        "TriviaQA answers replaced by I don't know",
    ),
    "counterfact": (
        "formats:CounterFact",
        "counterfact",
        "ROME/MEMIT counterfact.json (--data-dir)",
        "CounterFact in the ROME format (requested_rewrite)",
    ),
    "zsre_mend": (
        "formats:ZsREMend",
        "zsre_mend",
        "MEND zsre_mend_eval.json (--data-dir)",
        "zsRE in the MEND format",
    ),
    "mquake": (
        "formats:MQuAKE",
        "mquake",
        "MQuAKE-CF-3k.json (--data-dir)",
        "multi-hop questions over edits",
    ),
    "easyedit_counterfact": (
        "easyedit:EasyEditCounterFact",
        "easyedit_counterfact",
        "EasyEdit counterfact-{edit,val,train}.json (--data-dir)",
        "CounterFact in EasyEdit's flat format",
    ),
    "wise_hallucination": (
        "easyedit:WiseHallucination",
        "wise_hallucination",
        "WISE hallucination-{edit,train}.json (--data-dir)",
        "WISE: corrected continuations of WikiBio passages",
    ),
    "wise_temporal": (
        "easyedit:WiseTemporal",
        "wise_temporal",
        "WISE temporal-{edit,train}.json (--data-dir)",
        "WISE: long descriptions of recent events about a topic",
    ),
}

#: The bundled sample: one task per KnowEdit format, `mini_<task>`, with that task's record format.
MINI_TASKS = {
    "zsre": "MiniZsRE",
    "wiki_recent": "MiniWikiRecent",
    "wiki_counterfact": "MiniWikiCounterfact",
    "wikibio": "MiniWikiBio",
    "convsent": "MiniConvSent",
    "sanitation": "MiniSanitation",
}
TASKS.update(
    {
        f"mini_{full}": (f"mini:{cls}", TASKS[full][1], _MINI, f"{TASKS[full][3]} (bundled sample)")
        for full, cls in MINI_TASKS.items()
    }
)


#: The task that reads dataset specs with a `fields` mapping: `base.apply_field_map` rewrites the
#: user's records into KnowEdit fact records, the wiki_recent format (no ground truth needed).
FIELD_MAPPING_TASK = "wiki_recent"


@hookimpl
def harness_register_tasks(register):
    for name, (target, record_format, source, description) in TASKS.items():
        register(
            name,
            f"{_MODULE}.{target}",
            description=description,
            record_format=record_format,
            source=source,
            **({"field_mapping": True} if name == FIELD_MAPPING_TASK else {}),
        )
