"""The ground layer: errors, plain data types and the base classes of plugins.

It imports nothing of the harness (a test checks it), so every other layer, and `harness.api`,
can build on it without import cycles, and it stays importable without torch so that
`harness list` and `harness --help` stay fast. Plugins reach these names through `harness.api`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from harness.evaluation.requests import Outcomes, Request
    from harness.models.handle import ModelHandle

__all__ = [
    "LOCALITY_GROUPS",
    "PORTABILITY_GROUPS",
    "AppliedEdit",
    "Capabilities",
    "DatasetSpec",
    "EditCase",
    "HarnessError",
    "LoadedCases",
    "Method",
    "Metric",
    "MetricInfo",
    "Probe",
    "RecordIssue",
    "Task",
]

#: Canonical portability groups (the KnowEdit names in snake_case).
PORTABILITY_GROUPS = ("subject_aliasing", "reasoning", "logical_generalization")
#: Canonical locality groups.
LOCALITY_GROUPS = ("relation_specificity", "forgetfulness")


class HarnessError(Exception):
    """An error with a message meant for the user: the CLI prints it without a traceback."""


@dataclass(frozen=True)
class Probe:
    """A question put to the model, with every answer that counts as right.

    `answers` keeps the order of the source data: the first answer is the one the reference
    toolkit scores ("first alias"); the rest are aliases a "best alias" policy may use.
    """

    prompt: str
    answers: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "answers": list(self.answers)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Probe:
        return cls(prompt=data["prompt"], answers=tuple(data["answers"]))


@dataclass(frozen=True)
class EditCase:
    """One requested edit and the probes that judge it, in a form that no longer depends on the
    dataset it came from.

    `portability` and `locality` map a group name (see PORTABILITY_GROUPS / LOCALITY_GROUPS; a task
    may add its own) to its probes. `extras` holds what only one task's metrics understand (for
    example ConvSent's sentiment sentences); it must stay JSON-serializable.
    """

    case_id: str
    prompt: str
    target_new: str
    subject: str = ""
    ground_truth: tuple[str, ...] = ()
    rephrases: tuple[str, ...] = ()
    portability: Mapping[str, tuple[Probe, ...]] = field(default_factory=dict)
    locality: Mapping[str, tuple[Probe, ...]] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "prompt": self.prompt,
            "target_new": self.target_new,
            "subject": self.subject,
            "ground_truth": list(self.ground_truth),
            "rephrases": list(self.rephrases),
            "portability": {g: [p.to_json() for p in ps] for g, ps in self.portability.items()},
            "locality": {g: [p.to_json() for p in ps] for g, ps in self.locality.items()},
            "extras": dict(self.extras),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EditCase:
        def groups(raw: Mapping[str, Any]) -> dict[str, tuple[Probe, ...]]:
            return {g: tuple(Probe.from_json(p) for p in ps) for g, ps in raw.items()}

        return cls(
            case_id=data["case_id"],
            prompt=data["prompt"],
            target_new=data["target_new"],
            subject=data.get("subject", ""),
            ground_truth=tuple(data.get("ground_truth", ())),
            rephrases=tuple(data.get("rephrases", ())),
            portability=groups(data.get("portability", {})),
            locality=groups(data.get("locality", {})),
            extras=dict(data.get("extras", {})),
        )


@dataclass(frozen=True)
class Capabilities:
    """What a method can do; the planner refuses impossible runs with these before loading a model.

    batch: one `apply` call may take several cases.
    sequential: edits may be stacked without undoing the earlier ones.
    needs_training: `fit` must see a train split before editing (cross-domain runs).
    edits_weights: the method changes parameters in place (undo restores them bit-exactly).
    """

    batch: bool = False
    sequential: bool = True
    needs_training: bool = False
    edits_weights: bool = True


class AppliedEdit:
    """What one `Method.apply` call changed, and how to take it back.

    `context` is text put before every probe prompt while the edit is active: in-context methods
    (IKE, ICE) edit through it, weight editors leave it empty.
    """

    context: str = ""

    def undo(self) -> None:
        """Return the model to the state it had before `apply`. Must be exact."""


class Method:
    """Base class of an editing method plugin.

    Subclasses set `name`, `capabilities` and `hparams_schema` (a JSON Schema whose `default`
    values are the family-independent defaults) and implement `apply`. Values that depend on the
    model (layers, learning rates scaled to depth) come from `default_hparams`.
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()
    hparams_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}
    #: The hyperparameters to try first when a method's edits do not take on a model, in words
    #: (e.g. "layers, lr, num_steps"): a run that sees most edits leave the edit-success metrics
    #: where the unedited model had them names these. "" (the default) for a method without such
    #: knobs, whose warning then gives no tuning advice.
    tuning_hint: ClassVar[str] = ""

    def default_hparams(self, handle: ModelHandle) -> dict[str, Any]:
        """Model-dependent defaults, chosen from the architecture adapter and relative depth."""
        return {}

    def check_case(self, case: EditCase) -> str | None:
        """Why this method cannot edit `case` (naming the case and the field), or None. The runner
        asks for every case of a job before any model loads, so a case the method would fail on
        stops the run at its start instead of hours into it."""
        return None

    def case_note(self, case: EditCase) -> str | None:
        """What a reader of the results should know about how this method reads `case`, which it
        edits all the same (a subject found in the prompt under another letter case, say), or
        None. Asked beside `check_case`, before any model loads: the run warns with every note and
        records it in the manifest (`jobs.<key>.notes`, case id -> note)."""
        return None

    def fit(self, handle: ModelHandle, train_cases: Sequence[EditCase], hparams: Mapping[str, Any]) -> None:
        """Learn from a train split; called once per job for methods with `needs_training`."""

    def apply(
        self, handle: ModelHandle, cases: Sequence[EditCase], hparams: Mapping[str, Any]
    ) -> AppliedEdit:
        """Edit the model so that each case's `prompt` leads to its `target_new`."""
        raise NotImplementedError


@dataclass(frozen=True)
class RecordIssue:
    """One problem found in an input record: where it is and what is wrong."""

    file: str
    index: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.index is None else f"{self.file}: record {self.index}"
        at = f" at {self.path}" if self.path else ""
        return f"{where}{at}: {self.message}"


@dataclass(frozen=True)
class DatasetSpec:
    """A user's dataset as a dataset spec file describes it (schemas/dataset-spec.schema.json),
    validated: what `Task.from_spec` is given.

    name: the task name the results are filed under.
    files: split -> data file; relative paths of the spec file are resolved against its folder.
    record_format: the record format the files are in, or None when `fields` maps them.
    fields: canonical field (`prompt`, `target_new`, `portability.<group>`, ...) -> the (dotted)
        field of the user's records holding it, or None when `record_format` is given. A spec has
        exactly one of the two.
    metrics: metric names to score with, or None for the reading task's defaults.
    chat_template: the prompts are meant for the model's chat template: a run with this task
        applies it (as `--chat-template` does), the harness sets `Task.chat_template` from it.
    description: free text from the spec.
    source: the spec file, for messages.
    """

    name: str
    files: Mapping[str, Path]
    record_format: str | None = None
    fields: Mapping[str, Any] | None = None
    metrics: tuple[str, ...] | None = None
    chat_template: bool = False
    description: str = ""
    source: str = ""


@dataclass(frozen=True)
class LoadedCases:
    """Edit cases of one task split, with where they came from and what was skipped."""

    cases: tuple[EditCase, ...]
    source: str
    skipped: tuple[RecordIssue, ...] = ()


class Task:
    """Base class of a task plugin: a dataset in one record format, turned into edit cases.

    `record_format` names the JSON Schema (in schemas/) its records validate against;
    `metrics` are the metric names its cases are scored with by default. `chat_template` True
    says the task's prompts are meant for the model's chat template, so a run with the task
    applies it (`harness run --chat-template`); the harness sets it on the task of a dataset spec
    whose `chat_template` is true.
    """

    name: ClassVar[str]
    record_format: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]] = ()
    splits: ClassVar[tuple[str, ...]] = ("test",)
    chat_template: bool = False

    def load(
        self, *, split: str = "test", data_dir: str | None = None, skip_invalid: bool = False
    ) -> LoadedCases:
        """Read, validate and normalize the records of `split` into edit cases."""
        raise NotImplementedError

    def check_file(self, path: str) -> list[RecordIssue] | None:
        """Every problem of one data file in this task's format (`harness validate --task`).

        None (the default) lets the harness check every record against the JSON Schema of
        `record_format`; override it for a format that a schema cannot describe.
        """
        return None

    @classmethod
    def from_spec(cls, spec: DatasetSpec) -> Task:
        """A task reading a user's dataset in this class's record format: the format-to-task
        contract of dataset specs.

        The harness calls it on the class registered for the spec's `record_format` (the task
        named after the format first), or, for a spec with `fields`, on the class registered with
        `field_mapping=True`, which rewrites each record by the mapping before reading it. The
        task must take its name, splits and files from `spec`, and its metrics too when
        `spec.metrics` is not None. The default refuses: a class that can read files other than
        its own says so by overriding this. Raises HarnessError.
        """
        raise HarnessError(f"{spec.source}: task class {cls.__name__} does not read dataset specs")


@dataclass(frozen=True)
class MetricInfo:
    """What a metric's numbers mean, so that summaries and leaderboards need no list of names.

    unit: "fraction" (a score in [0, 1], shown x100 in tables as in the KnowEdit paper), or a
        quantity shown as it is: "bits", "nats", "perplexity", "rank", "count", or any other word.
    higher_is_better: the direction of improvement (False for perplexity, KL, rank).
    headline: the column's place in the paper-shaped (`knowedit`) leaderboard, smallest first;
        None keeps the metric out of that layout (it stays in the `wide` one).
    edit_success: the metric says whether the edit took (edit success, ConvSent's and Sanitation's
        success); a run warns when most edits leave these at or below the unedited model.
    """

    unit: str = "fraction"
    higher_is_better: bool = True
    headline: int | None = None
    edit_success: bool = False

    @property
    def is_fraction(self) -> bool:
        return self.unit == "fraction"

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "headline": self.headline,
            "edit_success": self.edit_success,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MetricInfo:
        return cls(
            unit=data.get("unit", "fraction"),
            higher_is_better=data.get("higher_is_better", True),
            headline=data.get("headline"),
            edit_success=data.get("edit_success", False),
        )


class Metric:
    """Base class of a metric plugin.

    A metric never runs the model itself: it states the `requests` it needs for a case (answer
    scoring, generation, ...), the evaluator runs all requests of all metrics in shared batches,
    and `score` turns the outcomes into numbers. Keys of the returned dict are the metric's name,
    or `name.group` for a sub-score (e.g. `portability.reasoning`); a metric that does not apply
    to a case returns no key for it (never 0).
    """

    name: ClassVar[str]
    info: ClassVar[MetricInfo] = MetricInfo()
    #: The options this metric reads, with their defaults (JSON scalars), e.g.
    #: `{"fluency_top_k": 5}`. All metrics of a run share one namespace, so prefix a name with the
    #: metric's. A run sets values through `EvalOptions(metric_options=...)`; the metric reads them
    #: with `EvalOptions.metric_option(self, name)`; the run manifest records the values used.
    option_defaults: ClassVar[Mapping[str, Any]] = {}

    def requests(self, case: EditCase) -> Sequence[Request]:
        raise NotImplementedError

    def score(self, case: EditCase, outcomes: Outcomes) -> dict[str, float]:
        raise NotImplementedError
