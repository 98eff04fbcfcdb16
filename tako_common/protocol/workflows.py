"""Workflow parts of the management protocol: what ``deploy`` carries and what the
``workflows_*`` commands answer.

Rules: a group name follows the app-name rule; ``run`` is an argv; a ``schedule`` is a
five-field cron expression (:mod:`tako_common.cron`) checked on both sides; group names
are unique within a deploy; ``shared`` says the environment has more than one server, so
its queue lives in PostgreSQL (``postgres_url``) and is shared by all of them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from tako_common.cron import parse_cron
from tako_common.errors import TakoError
from tako_common.names import NAME_RULE, is_valid_name
from tako_common.protocol.fields import Argv, Count, Flag
from tako_common.protocol.responses import Data, WorkflowGroupStatus


def _check_group(value: str) -> str:
    if not is_valid_name(value):
        raise ValueError(f"invalid workflow group name {value!r}: {NAME_RULE}")
    return value


def _schedule(value: str) -> str:
    try:
        parse_cron(value)
    except TakoError as exc:
        raise ValueError(exc.message) from None
    return value


GroupName = Annotated[str, AfterValidator(_check_group)]
Schedule = Annotated[str, AfterValidator(_schedule)]


class WorkflowGroupSpec(BaseModel):
    """One group's effective settings on the server the deploy goes to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: GroupName
    run: Argv = Field(min_length=1, max_length=256)
    workers: Count = Field(default=0, ge=0, le=64)
    concurrency: Count = Field(default=10, ge=1, le=1000)
    schedule: Schedule | None = None
    retries: Count = Field(default=2, ge=0, le=100)


class WorkflowsSpec(BaseModel):
    """``[workflows]`` of a deploy, resolved for one server."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    groups: list[WorkflowGroupSpec] = Field(default_factory=list, max_length=64)
    #: the environment has more than one server: the queue is in PostgreSQL
    shared: Flag = False

    @field_validator("groups")
    @classmethod
    def _unique(cls, groups: list[WorkflowGroupSpec]) -> list[WorkflowGroupSpec]:
        names = [group.name for group in groups]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"workflow groups named twice: {', '.join(duplicates)}")
        return groups

    def group(self, name: str) -> WorkflowGroupSpec | None:
        return next((g for g in self.groups if g.name == name), None)


class WorkflowsData(Data):
    app: str
    env: str
    storage: Literal["sqlite", "postgres"]
    groups: list[WorkflowGroupStatus]


class WorkflowRunInfo(Data):
    id: int
    group: str
    state: Literal["queued", "running", "done", "failed"]
    attempts: int
    retries: int
    key: str | None = None
    payload: Any = None
    last_error: str | None = None
    worker: str | None = None
    created_at: float
    run_at: float
    finished_at: float | None = None


class WorkflowRunsData(Data):
    app: str
    env: str
    runs: list[WorkflowRunInfo]


class WorkflowRunData(Data):
    app: str
    env: str
    run: WorkflowRunInfo
    created: bool = True
