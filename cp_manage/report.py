"""Findings: the outcome of a list of independent checks (validate, doctor)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class Finding:
    """The outcome of one check; ``fix`` says what to do when it failed."""

    check: str
    status: Status
    detail: str
    fix: str | None = None
    items: list[dict[str, Any]] | None = None
    """What the check found, one record each (e.g. the partial transfers ``doctor`` lists)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for optional in ("fix", "items"):
            if data[optional] is None:
                del data[optional]
        return data


@dataclass
class ValidationReport:
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.status != "failed" for f in self.findings)

    def to_list(self) -> list[dict[str, Any]]:
        return [f.to_dict() for f in self.findings]
