"""The records of the monitoring state (``<workdir>/monitoring/state.json``), typed.

`normlab.monitoring.ledger.locked_state` reads the file into a `MonitorState`
(``model_validate``) and writes it back with `JsonRecord.to_json`: every record
keeps the keys it was built or read with, so the file has the shape it always
had. A record is frozen; a locked section replaces whole records in the
state's three mappings (``files``, ``batches``, ``models``), which are its
working copy.

Optional fields are those a record of one kind lacks (a file recorded as
unreadable has no ``content``; a claim has no ``entry``), or that an older
state may lack (what the ledger always read with a default). (Defaults are
factories: ruff cannot tell these models from plain classes across modules.)
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from normlab.drift import AlertRecord
from normlab.monitoring.contracts import BatchEntry, Decision, JsonRecord, RetrainingRecord

STATE_VERSION = 1


class Processed(JsonRecord):
    """The last content of a file processed to the end: its content fingerprint, rows, batch and when."""

    content: str
    rows: int
    fingerprint: str
    at: str


class FileRecord(JsonRecord):
    """A batch file seen (``files.<path>``), known by its size and modification time.

    Read: its batch ``fingerprint`` (the appended rows only, or the whole
    file), its ``content`` fingerprint and ``rows``. Not read (``status``
    ``unreadable`` or ``refused``): the ``reason`` and when (``at``). Either
    way ``processed``: the last content of this path processed to the end.
    """

    size: int
    mtime_ns: int
    status: Literal["unreadable", "refused"] | None = None
    reason: str | None = None
    at: str | None = None
    fingerprint: str | None = None
    content: str | None = None
    rows: int | None = None
    processed: Processed | None = None


class BatchRecord(JsonRecord):
    """A batch by content fingerprint (``batches.<fingerprint>``): claimed, released, or done.

    A claim (``claimed``, or ``released`` by a process whose batch failed)
    has the ``pid``, ``host`` and time (``claimed_ts``) of its process, the
    ``model`` and the file's ``landed_ns``; ``decision`` once committed (a
    retry reuses it). A done batch has ``processed_at``, its MLflow run, the
    reference and its summary ``entry``.
    """

    status: Literal["claimed", "released", "done"] | None = None
    source: str | None = None
    pid: int | None = None
    host: str | None = None
    claimed_ts: float | None = None
    model: str | None = None
    landed_ns: int | None = None
    decision: Decision | None = None
    processed_at: str | None = None
    monitor_run_id: str | None = None
    reference_run_id: str | None = None
    entry: BatchEntry | None = None


class ModelHistory(JsonRecord):
    """A model's drift history against one reference (``models.<model>``, `normlab.monitoring.model_history`).

    ``streak``: drifted batches in a row; ``streak_batches``: their accepted
    rows (None for a blocked batch); ``alerts`` and ``quality_alerts``: the
    recent alerts (cooldown, de-duplication); ``retrained``: the retrainings.
    """

    reference_run_id: str | None = None
    version: str | None = None
    streak: int = 0
    streak_batches: list[str | None] = Field(default_factory=list)
    alerts: list[AlertRecord] = Field(default_factory=list)
    quality_alerts: list[AlertRecord] = Field(default_factory=list)
    retrained: list[RetrainingRecord] = Field(default_factory=list)


class MonitorState(JsonRecord):
    """The whole state: files seen by path, batches by fingerprint, histories by model."""

    version: int
    files: dict[str, FileRecord] = Field(default_factory=dict)
    batches: dict[str, BatchRecord] = Field(default_factory=dict)
    models: dict[str, ModelHistory] = Field(default_factory=dict)

    @classmethod
    def empty(cls) -> MonitorState:
        return cls(version=STATE_VERSION, files={}, batches={}, models={})
