"""The report's run-level facts: endpoint, arguments, timings, request counts, selection.

Kept apart from the run that gathers them so the report's shape can be read in one place, and
so no token can slip in: only the fields named here ever reach a report.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bulkcancel._client import OperationsClient
    from bulkcancel._config import RunConfig
    from bulkcancel._engine import Engine
    from bulkcancel._models import StopReason
    from bulkcancel._sources import Resolver


def run_meta(
    config: RunConfig,
    client: OperationsClient,
    *,
    started: float,
    resolver: Resolver | None,
    engine: Engine | None,
    stopped: StopReason | None,
) -> dict[str, Any]:
    """Run-level facts for the report (never a token). ``started`` is a ``time.time()``."""
    stats = client.stats
    finished = time.time()
    processed = resolver.stats.selected if resolver else 0
    meta: dict[str, Any] = {
        "tool": {"name": "bulkcancel", "version": _version()},
        "endpoint": config.endpoint,
        "api_version": config.api_version,
        "arguments": {
            "rate": config.rate,
            "concurrency": config.concurrency,
            "deadline": config.deadline,
            "reconcile": config.reconcile.value,
            "parents": list(config.parents),
            "filter": config.filter,
            "dry_run": config.dry_run,
            "quota_project": config.quota_project,
            "journal": config.journal,
            "request_timeout": config.request_timeout,
            "credentials": _credentials_kind(config),
            "impersonate_service_account": config.impersonate,
            **selection_arguments(config),
        },
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "duration_seconds": round(finished - started, 3),
        "requests": {
            **stats.requests,
            "total": stats.total,
            "retries": stats.retries,
            "throttled": stats.throttled,
            "per_operation": round(stats.total / processed, 3) if processed else 0.0,
        },
        "rates": client.rates(),
    }
    if resolver is not None:
        rs = resolver.stats
        meta["selection"] = {
            "given": rs.given,
            "listed": rs.listed,
            "selected": rs.selected,
            "skipped": dict(rs.skipped),
        }
    if engine is not None:
        es = engine.stats
        meta["reconcile"] = {
            "sweeps": es.sweeps,
            "sweep_pages": es.sweep_pages,
            "settled_by_list": es.settled_by_list,
            "list_disabled": es.list_disabled,
        }
    if engine is not None or stopped is not None:
        meta["stopped"] = stopped
    return meta


def selection_arguments(config: RunConfig) -> dict[str, Any]:
    """Every flag that chose the targets, as given: a report must say what was asked for, not
    only what was found (``filter`` and ``parents`` are recorded beside these)."""
    sel = config.selection
    return {
        "match": sel.match.pattern if sel.match is not None else None,
        "target": sel.target.pattern if sel.target is not None else None,
        "verb": sel.verb,
        "older_than_seconds": sel.older_than.total_seconds() if sel.older_than else None,
        "shard": {"index": sel.shard[0], "count": sel.shard[1]} if sel.shard else None,
        "name_patterns": list(sel.rules.patterns) if sel.rules.patterns is not None else None,
        "until_quiet_seconds": config.until_quiet,
        "max_operations": config.max_operations,
    }


def _version() -> str:
    from bulkcancel import __version__

    return __version__


def _credentials_kind(config: RunConfig) -> str:
    if config.impersonate:
        return "impersonated"
    if config.anonymous:
        return "anonymous"
    if config.token is not None:
        return "token"
    if config.credentials is not None:
        return "credentials"
    return "application_default"


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
