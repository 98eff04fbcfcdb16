"""Process supervisor of app instances (spawn, health, rolling update, scale to zero, logs).

Layout: ``spec`` (values, settings, errors), ``machine`` (pure per-app state machine),
``rollout`` and ``coldstart`` (pure plans), ``runner`` (executes actions: the only code
that awaits), ``process``, ``health`` and ``logs`` (I/O), ``supervisor`` (the facade).
"""

from tako_server.supervisor.coldstart import ColdStartOutcome, ColdStartQueue
from tako_server.supervisor.logs import AppLog, LineSplitter, LogFollow
from tako_server.supervisor.machine import AppMachine
from tako_server.supervisor.rollout import RolloutPlan
from tako_server.supervisor.spec import (
    AppRuntime,
    ColdStartFailed,
    ColdStartRejected,
    ColdStartTimeout,
    LaunchSpec,
    RolloutError,
    RolloutResult,
    SupervisorError,
    SupervisorSettings,
    UnknownApp,
)
from tako_server.supervisor.supervisor import Supervisor

__all__ = [
    "AppLog",
    "AppMachine",
    "AppRuntime",
    "ColdStartFailed",
    "ColdStartOutcome",
    "ColdStartQueue",
    "ColdStartRejected",
    "ColdStartTimeout",
    "LaunchSpec",
    "LineSplitter",
    "LogFollow",
    "RolloutError",
    "RolloutPlan",
    "RolloutResult",
    "Supervisor",
    "SupervisorError",
    "SupervisorSettings",
    "UnknownApp",
]
