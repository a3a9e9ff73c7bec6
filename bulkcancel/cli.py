"""The command line: click only. Flags become a RunConfig and UI options, handed to ``_app``.

What happens next (resolve, confirm, execute, report, exit code, signals) lives in ``_app`` so
that the demo runs exactly the same path.
"""

from __future__ import annotations

import functools
import gc
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import anyio
import click

from bulkcancel import _logging, _ui
from bulkcancel._app import EXIT_HELP, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, drive, guard
from bulkcancel._config import DEFAULT_ENDPOINT, RunConfig
from bulkcancel._engine import ReconcileMode
from bulkcancel._errors import ConfigError
from bulkcancel._names import NameRules
from bulkcancel._presets import PRESETS
from bulkcancel._report import load_report, merge_reports, write_atomically
from bulkcancel._sources import Selection

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise click.BadParameter("use a number and a unit: 90s, 30m, 2h, 7d, 1w")
    try:
        return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    except OverflowError:
        raise ConfigError(f"--older-than {text}: too far back") from None


def parse_duration(flag: str, text: str) -> float:
    """Seconds from ``30s``, ``2m``, ``1h`` (or a bare number of seconds)."""
    stripped = text.strip()
    try:
        seconds = float(stripped)
    except ValueError:
        match = _DURATION.match(stripped)
        if not match:
            raise ConfigError(f"{flag} {text!r}: use a number and a unit: 30s, 2m, 1h") from None
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"{flag} must be a positive duration, not {text!r}")
    return seconds


def parse_shard(spec: str | None, count_flag: int | None) -> tuple[int, int] | None:
    """``I/N``, or ``auto`` from Cloud Run Jobs or a Kubernetes Indexed Job's environment."""
    if spec is None:
        return None
    env = os.environ
    if spec == "auto":
        if "CLOUD_RUN_TASK_INDEX" in env:
            index_text, count_text = env["CLOUD_RUN_TASK_INDEX"], env.get("CLOUD_RUN_TASK_COUNT")
        elif "JOB_COMPLETION_INDEX" in env:
            index_text = env["JOB_COMPLETION_INDEX"]
            count_text = str(count_flag) if count_flag else env.get("BULKCANCEL_SHARD_COUNT")
        else:
            raise ConfigError(
                "--shard auto needs CLOUD_RUN_TASK_INDEX/CLOUD_RUN_TASK_COUNT or "
                "JOB_COMPLETION_INDEX with --shard-count (or BULKCANCEL_SHARD_COUNT)"
            )
        if count_text is None:
            raise ConfigError("--shard auto: the shard count is not set")
    else:
        index_text, sep, count_text = spec.partition("/")
        if not sep:
            raise ConfigError("--shard takes I/N (e.g. 0/3) or auto")
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ConfigError(f"--shard: not whole numbers: {index_text}/{count_text}") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard: need 0 <= I < N, got {index}/{count}")
    return index, count


def _regex(flag: str, text: str | None) -> re.Pattern[str] | None:
    if text is None:
        return None
    try:
        return re.compile(text)
    except re.error as exc:
        raise ConfigError(f"{flag}: bad regular expression: {exc}") from None


_F = TypeVar("_F", bound=Callable[..., Any])
ENV_PREFIX = "BULKCANCEL"


def option(*decls: str, **kw: Any) -> Callable[[_F], _F]:
    """A ``cancel`` option that also reads ``BULKCANCEL_<FLAG>`` (named after the flag, not the
    Python parameter: ``--format`` reads ``BULKCANCEL_FORMAT``), shown in ``--help``."""
    flag = next(d for d in decls if d.startswith("--"))
    kw.setdefault("envvar", f"{ENV_PREFIX}_{flag[2:].upper().replace('-', '_')}")
    kw.setdefault("show_envvar", True)
    decorator: Callable[[_F], _F] = click.option(*decls, **kw)
    return decorator


CANCEL_EPILOG = f"""\b
Examples:
  # what is running, without sending anything:
  bulkcancel cancel --parent projects/P/locations/us-central1 --dry-run
  # cancel a list of names, keep a report and a journal (rerun to resume):
  bulkcancel cancel --names-file names.txt --report r.json --journal r.journal
  # what gcloud lists (a JSON array, or JSON Lines), piped in:
  gcloud redis operations list --region=us-central1 --format=json \\
    | bulkcancel cancel --service redis --names-file - --dry-run
  # a scheduled job: no prompt, JSON logs, records on stdout:
  BULKCANCEL_LOG_FORMAT=json bulkcancel cancel -y --format jsonl \\
    --parent projects/P/locations/us-central1 --older-than 2h

\b
Environment:
  Every option reads BULKCANCEL_<OPTION> (shown beside each option above),
  e.g. BULKCANCEL_PARENT, BULKCANCEL_LOG_FORMAT, BULKCANCEL_YES=1; a
  repeatable option takes several values separated by spaces. --token reads
  BULKCANCEL_ACCESS_TOKEN. Without --token/--anonymous, Application Default
  Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud, the metadata server).

{EXIT_HELP}
"""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bulkcancel")
def cli() -> None:
    """Cancel Google Cloud long-running operations in bulk, and prove what happened."""


@cli.command(
    epilog=CANCEL_EPILOG,
    context_settings={"auto_envvar_prefix": ENV_PREFIX},
)
@click.argument("names", nargs=-1)
@option("--names-file", multiple=True, help="One name per line; '-' is stdin. Repeatable.")
@option("--parent", "parents", multiple=True, help="List operations under it. Repeatable.")
@option("--filter", "filter_expr", help="Passed verbatim to the list call's filter.")
@option("--service", type=click.Choice(sorted(PRESETS)), help="Endpoint and name preset.")
@option("--endpoint", help=f"API root. Default {DEFAULT_ENDPOINT}.")
@option("--api-version", help="Default v1.")
@option("--name-pattern", multiple=True, help="Accepted shape, '*' = one segment.")
@option("--token", envvar="BULKCANCEL_ACCESS_TOKEN", help="Static OAuth access token.")
@option("--anonymous", is_flag=True, help="Send no credentials (emulators, the fake).")
@option("--quota-project", help="Project billed for quota (x-goog-user-project).")
@option("--rate", type=float, default=50.0, show_default=True, help="Max requests/s.")
@option("--concurrency", type=int, default=32, show_default=True, help="Max in flight.")
@option("--deadline", type=float, default=120.0, show_default=True, help="Seconds.")
@option(
    "--reconcile",
    type=click.Choice([m.value for m in ReconcileMode]),
    default="auto",
    show_default=True,
    help="Read back by GET per operation, by listing the parent, or choose per parent.",
)
@option("--page-size", type=int, default=0, help="List page size (0: server default).")
@option(
    "--request-timeout",
    type=float,
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Give up on one HTTP request after this long (it is retried like any failure).",
)
@option("--report", "report_path", type=click.Path(dir_okay=False), help="JSON report.")
@option("--journal", type=click.Path(dir_okay=False), help="Durable progress; resumes.")
@option(
    "--format",
    "out_format",
    type=click.Choice(["table", "json", "jsonl"]),
    default="table",
    show_default=True,
)
@option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@option("--dry-run", is_flag=True, help="Resolve and validate; send no cancel.")
@option("--max-operations", type=int, help="Refuse when more targets are selected.")
@option("--shard", "shard_spec", help="I/N, or auto (Cloud Run Jobs / Indexed Jobs).")
@option("--shard-count", type=int, help="Shard count for --shard auto on Kubernetes.")
@option("--older-than", help="Only listed operations created before this age (2h, 7d).")
@option("--match", "match_re", help="Only names matching this regular expression.")
@option("--target", "target_re", help="Only listed operations whose target matches.")
@option("--verb", help="Only listed operations with this metadata verb.")
@option(
    "--until-quiet",
    metavar="DURATION",
    help="With --parent: keep re-listing and cancelling what newly appears until nothing new "
    "has appeared for DURATION (30s, 2m).",
)
@option("--quiet", "-q", is_flag=True, help="No progress bar or table.")
@option(
    "--progress-every",
    type=click.FloatRange(min=0.0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Without a progress bar (stderr not a terminal, or --log-format json): a progress "
    "line every SECONDS; 0: none.",
)
@option(
    "--impersonate-service-account",
    "impersonate",
    metavar="SA[,SA...]",
    help="Act as this service account (IAM Token Creator); a list is a delegation chain.",
)
@option("--iam-endpoint", hidden=True, help="IAM Credentials API root (tests).")
@option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="stderr for people, or one JSON object per event (Cloud Logging).",
)
@option("--debug", is_flag=True, help="Tracebacks on errors.")
def cancel(**kw: Any) -> None:
    """Cancel operations by NAME, from --names-file (names, or gcloud's JSON), or listed under
    --parent."""
    debug = bool(kw["debug"])
    log_format = kw["log_format"]
    _logging.setup_logging(log_format, logging.INFO if log_format == "json" else logging.WARNING)
    try:
        config, options = _build(kw)
    except (ConfigError, click.BadParameter) as exc:
        if log_format == "json":
            _logging.event(str(exc), level=logging.ERROR)
        else:
            _ui.error(str(exc))
        sys.exit(EXIT_USAGE)
    run = functools.partial(
        drive, config, kw["names"], options, names_files=kw["names_file"], debug=debug
    )
    sys.exit(guard(lambda: anyio.run(run, backend_options=loop_options()), debug=debug))


#: Allocations (net) between young-generation collections, CPython's default is 700.
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Fewer garbage collections: called by the ``bulkcancel`` command's entry point, for its
    own process (the library leaves its host's collector alone).

    Each young collection walks every object still alive since the last one, and during a run
    that is the whole in-flight working set (64 requests' futures, buffers and answers): at
    CPython's default threshold the collector took about 9% of a 10,000-operation run's CPU
    (0.45 s of 4.8 s, measured with ``gc.callbacks``), at 10,000 about 1%. Nearly everything a
    run allocates is freed by reference counting, so memory barely moves (1,000,000 names: 69 MB
    peak, 66 MB before). ``gc.freeze()`` first: the objects of the imports and of start-up are
    never garbage, and full collections no longer walk them."""
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def loop_options() -> dict[str, Any]:
    """anyio's options for a run: uvloop's event loop where it is installed (a run with the rate
    out of the way is CPU-bound in this process, and uvloop's loop and transports take about a
    tenth less of it; see README), asyncio's own loop otherwise (Windows, PyPy, or uvloop not
    installed)."""
    if sys.platform == "win32" or importlib.util.find_spec("uvloop") is None:
        return {}
    return {"use_uvloop": True}


def _build(kw: dict[str, Any]) -> tuple[RunConfig, _ui.Options]:
    preset = PRESETS[kw["service"]] if kw["service"] else PRESETS["clouddeploy"]
    if kw["name_pattern"]:
        patterns: tuple[str, ...] | None = tuple(kw["name_pattern"])
    else:
        patterns = preset.patterns
    for pattern in patterns or ():
        if not pattern.endswith("operations/*"):
            raise ConfigError(f"--name-pattern {pattern!r} must end in operations/*")
    if kw["token"] is not None and kw["anonymous"]:
        raise ConfigError("--token and --anonymous exclude each other")
    if kw["token"] is not None and not kw["token"].strip():
        raise ConfigError("--token is empty")
    if kw["max_operations"] is not None and kw["max_operations"] < 0:
        raise ConfigError("--max-operations must not be negative")
    shard = parse_shard(kw["shard_spec"], kw["shard_count"])
    for key in ("report_path", "journal"):
        # {shard} in a path becomes this shard's index: one file per task from one manifest.
        if kw[key] and "{shard}" in kw[key]:
            if shard is None:
                raise ConfigError(f"--{key.split('_')[0]} uses {{shard}} but no --shard is set")
            kw[key] = kw[key].replace("{shard}", str(shard[0]))
    selection = Selection(
        rules=NameRules(patterns),
        shard=shard,
        match=_regex("--match", kw["match_re"]),
        older_than=parse_age(kw["older_than"]) if kw["older_than"] else None,
        target=_regex("--target", kw["target_re"]),
        verb=kw["verb"],
    )
    config = RunConfig(
        endpoint=kw["endpoint"] or preset.endpoint,
        api_version=kw["api_version"] or preset.api_version,
        token=kw["token"],
        anonymous=kw["anonymous"],
        quota_project=kw["quota_project"],
        rate=kw["rate"],
        concurrency=kw["concurrency"],
        deadline=kw["deadline"],
        reconcile=ReconcileMode(kw["reconcile"]),
        parents=tuple(kw["parents"]),
        filter=kw["filter_expr"],
        list_page_size=kw["page_size"],
        request_timeout=kw["request_timeout"],
        dash_ok=preset.dash_ok,
        selection=selection,
        dry_run=kw["dry_run"],
        journal=kw["journal"],
        impersonate=kw["impersonate"],
        iam_endpoint=kw["iam_endpoint"],
        until_quiet=(
            parse_duration("--until-quiet", kw["until_quiet"])
            if kw["until_quiet"] is not None
            else None
        ),
        max_operations=kw["max_operations"],
    )
    config.validate()
    if not kw["names"] and not kw["names_file"] and not kw["parents"]:
        raise ConfigError("nothing to cancel: give NAMEs, --names-file or --parent")
    if sum(1 for f in kw["names_file"] if f == "-") > 1:
        raise ConfigError("--names-file - (stdin) may be given once")
    for path in kw["names_file"]:
        if path != "-" and os.path.isdir(path):
            raise ConfigError(f"--names-file {path} is a directory, not a file of names")
        if path != "-" and not os.path.isfile(path):
            raise ConfigError(f"--names-file {path}: no such file")
    options = _ui.Options(
        out_format=kw["out_format"],
        report_path=kw["report_path"],
        yes=kw["yes"],
        max_operations=kw["max_operations"],
        quiet=kw["quiet"],
        shard=selection.shard,
        dry_run=kw["dry_run"],
        log_format=kw["log_format"],
        progress_every=kw["progress_every"],
    )
    return config, options


@cli.command("report")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--format", "out_format", type=click.Choice(["table", "csv", "json"]), default="table"
)
def report_cmd(path: str, out_format: str) -> None:
    """Re-render a saved report."""
    try:
        data = load_report(path)
    except (OSError, ValueError) as exc:
        _ui.error(f"cannot read report: {exc}")
        sys.exit(EXIT_USAGE)
    _ui.render_saved(data, out_format)


@cli.command("merge-reports")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
def merge_reports_cmd(paths: tuple[str, ...], output: str) -> None:
    """Combine shard reports into one, checking that no target is reported twice."""
    try:
        loaded = [(p, load_report(p)) for p in paths]
    except (OSError, ValueError) as exc:
        _ui.error(f"cannot read report: {exc}")
        sys.exit(EXIT_USAGE)
    merged, twice = merge_reports(loaded)
    if twice:
        _ui.error(f"{len(twice)} target(s) reported twice, e.g. {twice[0]}: not merged")
        sys.exit(EXIT_USAGE)
    import json
    from pathlib import Path

    try:
        write_atomically(Path(output), lambda out: json.dump(merged, out, indent=1))
    except (OSError, ConfigError) as exc:  # a link, a directory, a full disk: one line
        _ui.error(f"cannot write {output}: {getattr(exc, 'strerror', None) or exc}")
        sys.exit(EXIT_USAGE)
    _ui.render_saved(merged, "table")
    ok = all(merged["totals"][k] == 0 for k in merged["totals"] if k not in _ui.SUCCESS_KEYS)
    sys.exit(EXIT_OK if ok else EXIT_INCOMPLETE)


@cli.command()
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--quiet", "-q", is_flag=True)
def demo(seed: int, quiet: bool) -> None:
    """Run the whole job against the built-in fake server: no account, no network."""
    from bulkcancel._demo import run_demo

    sys.exit(guard(lambda: anyio.run(run_demo, seed, quiet)))


@cli.command("fake-server")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=0, help="0: any free port.")
@click.option(
    "--parent",
    multiple=True,
    help="Repeatable: a parent holding --operations operations "
    "[default: projects/demo/locations/us-central1].",
)
@click.option("--operations", type=int, default=100, show_default=True, help="Per parent.")
@click.option("--cancel-delay", type=float, default=0.0)
@click.option("--quota", type=float, help="Requests/s (sustained) past which it answers 429.")
@click.option(
    "--personality",
    multiple=True,
    metavar="NAME[,NAME...]",
    help="Named server traits, combinable (see below).",
)
@click.option(
    "--window",
    type=float,
    default=60.0,
    show_default=True,
    help=(
        "Seconds per quota window (bucket-minute, fixed-window, sliding-window); scale it"
        " down for tests."
    ),
)
@click.option(
    "--background-share",
    type=float,
    default=0.1,
    show_default=True,
    help="Share of requests answered 429 with background-429.",
)
@click.option(
    "--location-quota",
    multiple=True,
    metavar="LOCATION=RATE",
    help="Repeatable: a different quota (requests/s) for one region.",
)
@click.option(
    "--location-mode",
    multiple=True,
    metavar="LOCATION=MODE",
    help="Repeatable: normal, unsupported (cancel 501), unrouted (cancel HTML 404), denied "
    "(403), unavailable (503). LOCATION is a location id or a projects/P[/locations/L] path.",
)
@click.option("--dash-listing", is_flag=True, help="Accept locations/- in list calls.")
@click.option(
    "--partial-success",
    is_flag=True,
    help="Honour returnPartialSuccess (lists name unreachable locations); else it earns 501.",
)
@click.option(
    "--runaway",
    metavar="RATE/SECONDS",
    help="A runaway producer: RATE new operations per second under each --parent, for SECONDS "
    "from the start (what --until-quiet drains).",
)
@click.option("--missing", type=int, default=0, help="Also write N names that do not exist.")
@click.option("--seed", type=int, default=0, show_default=True, help="For faults, 429s and jitter.")
@click.option(
    "--latency",
    type=click.FloatRange(min=0.0),
    default=0.0,
    metavar="SECONDS",
    help="Seconds the fake waits before each answer.",
)
@click.option(
    "--latency-jitter",
    type=click.FloatRange(min=0.0),
    default=0.0,
    metavar="SIGMA",
    help="Vary the latency as a network does: half before the request reaches the quota and "
    "half after, each times a log-normal factor of this sigma (mean 1; 0.5 is a fair network).",
)
@click.option("--token", help="Require this bearer token.")
@click.option("--names-out", type=click.Path(dir_okay=False), help="Write the names here.")
@click.option(
    "--request-log",
    type=click.Path(dir_okay=False),
    help="Append one JSON line per request (method, path, query, status, user_agent, token "
    "sent or not, time) here.",
)
@click.option(
    "--mix",
    type=int,
    help="Mixed behaviours (cancels, completes or fails anyway, already done, not "
    "cancellable), drawn with this seed, instead of all cancelling.",
)
@click.option(
    "--expected-out",
    type=click.Path(dir_okay=False),
    help="Write the outcome each operation must get (JSON) here.",
)
def fake_server(**kw: Any) -> None:
    """Serve the fake Operations API on loopback until interrupted.

    The first line on stdout is the endpoint URL; a ready-to-paste bulkcancel command follows
    on stderr.

    \b
    Personalities (--personality, one per group, comma-separated or repeated):
      quota shape (needs --quota):
        bucket-small     token bucket, burst max(1, R/10)
        bucket-minute    token bucket, burst R*window (a minute's budget at once)
        fixed-window     R*window per aligned window, then 429 until it turns
        sliding-window   R*window in any span of window seconds (a rolling log)
      quota scope:
        regional-quota   one quota per project+region (default)
        shared-quota     one quota per project, shared by its regions
      refusal shape:
        429-errorinfo    429 with ErrorInfo quota metadata (default)
        429-bare         429 with status and message only
        429-retryinfo    429 with ErrorInfo and RetryInfo retryDelay
        403-rate-limit   403 rateLimitExceeded instead of 429
      noise:
        background-429   a share of 429s with no quota (--background-share)
        fault-mix        8% 429, 5% 503, 2% HTML 502, 2% resets
      pages:
        pages-50, pages-100, pages-1000   list pages capped there
        pages-ignored    pageSize ignored: every page has the default size
      metering (needs --quota):
        reads-apart      GET and list on a quota of their own, 2.5x the writes'
    """
    from bulkcancel._demo import run_fake_server

    sys.exit(guard(lambda: anyio.run(run_fake_server, kw)))


def main() -> None:
    tune_gc()
    cli(prog_name="bulkcancel")
