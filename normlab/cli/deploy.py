"""``normlab deploy`` (register deploy/prefect.yaml's deployments on a Prefect server) and ``normlab serve``.

Reading the file is `normlab.deployments` (no Prefect there); turning its
entries into Prefect objects (schedules, flows, work pools) happens here.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from normlab.cli.app import ConfigArg, SetOpt, SummaryOpt, app, console
from normlab.cli.common import fail, load_or_fail, prepare, write_summary
from normlab.deployments import available, code_root, describe_schedules, load_deployment_specs
from normlab.errors import ConfigError, NormlabError

PrefectFileOpt = Annotated[Path | None, typer.Option(
    "--prefect-file", help="Deployments to read (default: deploy/prefect.yaml of the repository).")]
LandingOpt = Annotated[Path | None, typer.Option(
    "--landing", help="Landing folder the monitor deployment watches (default: its `data` parameter).")]
OnlyOpt = Annotated[list[str] | None, typer.Option(
    "--only", help="Deploy only this deployment (repeatable): train, monitor, sweep.")]


def entrypoint_flow(entrypoint: str) -> Any:
    """The flow a prefect.yaml entrypoint names (``flows/<file>.py:<flow>``), from the installed ``normlab.flows``."""
    path, attr = entrypoint.split(":", 1)
    return getattr(importlib.import_module("normlab." + path.removesuffix(".py").replace("/", ".")), attr)


def prefect_schedules(spec: dict[str, Any]) -> list[Any]:
    """The spec's schedules as Prefect schedule objects (cron, interval in seconds, or rrule)."""
    from prefect.schedules import Cron, Interval, RRule

    out = []
    for item in spec["schedules"]:
        tz = item.get("timezone")
        if "cron" in item:
            out.append(Cron(item["cron"], timezone=tz))
        elif "interval" in item:
            out.append(Interval(float(item["interval"]), timezone=tz))
        elif "rrule" in item:
            out.append(RRule(item["rrule"], timezone=tz))
        else:
            raise ConfigError(f"deployment {spec['name']}: a schedule needs cron, interval or rrule, got {item}")
    return out


def _require_server() -> str:
    """The configured Prefect API URL, checked to answer; one-line errors otherwise."""
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise ConfigError("no Prefect server configured: start one (prefect server start) and set "
                          "PREFECT_API_URL=http://127.0.0.1:4200/api, or run the schedules with `normlab serve`")
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        from normlab.errors import TrackingError

        reason = str(problem).splitlines()[0] if str(problem) else repr(problem)
        raise TrackingError(f"Prefect server {url} unreachable: {reason}")
    return url


def ensure_work_pool(name: str) -> bool:
    """Create the process work pool ``name`` when missing; True when created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return False
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(
                name=name, type="process", base_job_template=ProcessWorker.get_default_base_job_template()))
            return True


@app.command()
def deploy(
    config: ConfigArg = None,
    set_: SetOpt = None,
    prefect_file: PrefectFileOpt = None,
    landing: LandingOpt = None,
    only: OnlyOpt = None,
    summary: SummaryOpt = None,
) -> None:
    """Register the deployments of deploy/prefect.yaml on the Prefect server (PREFECT_API_URL).

    train: nightly cron; monitor: hourly, watching the landing folder; sweep: on demand.
    Their config parameter is your resolved config. They go to the process work pool
    named there (created when missing); run it with: prefect worker start --pool normlab
    """
    prepare()
    cfg = load_or_fail(config, set_)
    try:
        specs = load_deployment_specs(prefect_file, cfg, landing, only)
        url = _require_server()
    except NormlabError as exc:
        raise fail(exc, exc.exit_code) from None
    from prefect import Flow

    root = code_root()
    table = Table(title=f"Deployments on {url}")
    for head in ("deployment", "schedule", "work pool", "id"):
        table.add_column(head)
    deployed = []
    for spec in specs:
        if not available(spec):
            console.print(f"skipped {spec['name']}: {spec['entrypoint']} is not in {root}", soft_wrap=True)
            continue
        if ensure_work_pool(spec["work_pool"]):
            console.print(f"created the process work pool {spec['work_pool']}")
        # From source: runs start in the code root (a set_working_directory pull step).
        flow = Flow.from_source(source=str(root), entrypoint=spec["entrypoint"])
        deployment_id = flow.to_deployment(
            name=spec["name"], work_pool_name=spec["work_pool"], work_queue_name=spec["work_queue"],
            schedules=prefect_schedules(spec), parameters=spec["parameters"], description=spec["description"],
            tags=spec["tags"],
        ).apply(work_pool_name=spec["work_pool"])
        full_name = f"{flow.name}/{spec['name']}"
        table.add_row(full_name, describe_schedules(spec), spec["work_pool"], str(deployment_id))
        deployed.append({"name": full_name, "id": str(deployment_id), "schedules": spec["schedules"],
                         "work_pool": spec["work_pool"]})
    console.print(table)
    pools = sorted({d["work_pool"] for d in deployed})
    if pools:
        console.print(f"start a worker:  [bold]prefect worker start --pool {pools[0]}[/]   "
                      f"run one now:  [bold]prefect deployment run '{deployed[0]['name']}'[/]", soft_wrap=True)
    write_summary(summary, {"status": "deployed", "api_url": url, "deployments": deployed})


@app.command()
def serve(
    config: ConfigArg = None,
    set_: SetOpt = None,
    prefect_file: PrefectFileOpt = None,
    landing: LandingOpt = None,
    only: OnlyOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Most flow runs at once.")] = None,
) -> None:
    """Run the deployments of deploy/prefect.yaml in this process, on their schedules (no work pool).

    One machine, one command: the Prefect UI shows the schedules and runs; Ctrl-C stops
    and pauses them. Uses the server at PREFECT_API_URL, else a temporary local one.
    """
    prepare()
    cfg = load_or_fail(config, set_)
    try:
        specs = load_deployment_specs(prefect_file, cfg, landing, only)
    except NormlabError as exc:
        raise fail(exc, exc.exit_code) from None
    from prefect import serve as prefect_serve

    deployments = []
    for spec in specs:
        if not available(spec):
            console.print(f"skipped {spec['name']}: {spec['entrypoint']} is not in {code_root()}", soft_wrap=True)
            continue
        flow = entrypoint_flow(spec["entrypoint"])
        deployments.append(flow.to_deployment(
            name=spec["name"], schedules=prefect_schedules(spec), parameters=spec["parameters"],
            description=spec["description"], tags=spec["tags"]))
        console.print(f"serving {flow.name}/{spec['name']}: {describe_schedules(spec)}")
    if not deployments:
        raise fail(ConfigError("no deployment to serve"), 2)
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        console.print("no PREFECT_API_URL: the schedules live in a temporary server that stops with this command; "
                      "for the UI and lasting history run `prefect server start` and set "
                      "PREFECT_API_URL=http://127.0.0.1:4200/api first", soft_wrap=True)
    prefect_serve(*deployments, limit=limit)
