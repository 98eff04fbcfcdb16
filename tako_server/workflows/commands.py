"""The ``workflows*`` management commands (``tako workflows ...``), over the service.

Rules: each takes its typed request and returns its typed answer; an app without
workflows on this server, an unknown group or run, a malformed or oversized payload is a
:class:`TakoError` that names the rule, and changes nothing.
"""

from __future__ import annotations

from tako_common.errors import TakoError
from tako_common.protocol import (
    WorkflowEnqueueRequest,
    WorkflowRetryRequest,
    WorkflowRunData,
    WorkflowRunInfo,
    WorkflowRunsData,
    WorkflowRunsRequest,
    WorkflowsData,
    WorkflowsRequest,
)
from tako_server.workflows.service import WorkflowService
from tako_server.workflows.store import Run


class WorkflowsOff(TakoError):
    code = "not_supported"


def _service(service: WorkflowService | None) -> WorkflowService:
    if service is None:
        raise WorkflowsOff("this server runs without workflows")
    return service


def run_info(run: Run) -> WorkflowRunInfo:
    return WorkflowRunInfo.model_validate(run.to_json())


async def workflows(service: WorkflowService | None, req: WorkflowsRequest) -> WorkflowsData:
    entry = _service(service).entry(req.app, req.env)
    groups = await _service(service).status(req.app, req.env)
    return WorkflowsData(
        app=req.app,
        env=req.env,
        storage="postgres" if entry.spec.shared else "sqlite",
        groups=groups,
    )


async def runs(service: WorkflowService | None, req: WorkflowRunsRequest) -> WorkflowRunsData:
    svc = _service(service)
    entry = svc.entry(req.app, req.env)
    if req.group is not None:
        svc.group_spec(entry, req.group)
    state = "failed" if req.failed else None
    found = await entry.store.runs(req.app, req.env, req.group, state, req.limit)
    return WorkflowRunsData(app=req.app, env=req.env, runs=[run_info(r) for r in found])


async def retry(service: WorkflowService | None, req: WorkflowRetryRequest) -> WorkflowRunData:
    run = await _service(service).retry(req.app, req.env, req.run_id)
    return WorkflowRunData(app=req.app, env=req.env, run=run_info(run))


async def enqueue(
    service: WorkflowService | None, req: WorkflowEnqueueRequest
) -> WorkflowRunData:
    svc = _service(service)
    entry = svc.entry(req.app, req.env)
    run, created = await svc.enqueue(
        entry, req.group, req.payload, delay=req.delay, key=req.idempotency_key
    )
    return WorkflowRunData(app=req.app, env=req.env, run=run_info(run), created=created)
