"""The one base of normlab's typed hand-offs: a frozen pydantic model that refuses unknown keys.

`normlab.contracts`, `normlab.gate.contracts`, `normlab.sweep_contracts`,
`normlab.monitoring.contracts`, `normlab.governance_record` and `normlab.drift`
build their models on `Contract`. A leaf module: it imports
nothing from normlab, so any module may build on it.

A module subclasses it as ``class _Contract(Contract, BaseModel)``: naming
``BaseModel`` again changes nothing (it already is `Contract`'s base), but ruff
recognises a pydantic model only through a base defined in the same file or
imported from pydantic, and would otherwise flag every list or dict default of
the module's models (RUF012), although pydantic copies them for each instance.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Contract(BaseModel):
    """A frozen model (no attribute can be reassigned) that refuses keys it does not declare."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_json(self) -> dict[str, Any]:
        """The JSON document: ``model_dump`` of the fields that were set, so its shape is what was built or read."""
        return self.model_dump(exclude_unset=True)
