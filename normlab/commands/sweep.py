"""Commands: ``normlab sweep``, ``study``, ``deploy``, ``serve`` and ``reproduce``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from normlab.cli import (
    ConfigArg,
    DataOpt,
    SetOpt,
    SummaryOpt,
    app,
    as_user_error,
    check_data_or_fail,
    console,
    fail,
    load_or_fail,
    prepare_environment,
    ui_command,
    write_summary,
)
from normlab.errors import ConfigError, NormlabError


def _prepare() -> None:
    """The shared environment defaults, and Dask's own log lines at warnings only."""
    prepare_environment()
    # Read by dask when it is first imported, in this process and in its workers.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")


def _list_override(key: str, value: str | None) -> list[str]:
    """``--norms batch,layer`` as the override ``sweep.norms=[batch,layer]``."""
    if value is None:
        return []
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ConfigError(f"--{key.split('.')[-1].replace('_', '-')}: give at least one value, comma-separated")
    return [f"{key}=[{','.join(items)}]"]


def _run_flow(call, summary_path: Path | None) -> dict[str, Any]:
    """Run a flow; a user-fixable error becomes one line, a partial summary is still written."""
    try:
        return call()
    except Exception as exc:
        user_error = as_user_error(exc)
        if user_error is None and isinstance(exc, OSError) and "trying to connect" in str(exc):
            # distributed's own wording when sweep.address does not answer.
            user_error = ConfigError(f"Dask scheduler unreachable: {str(exc).splitlines()[0]}")
        if user_error is None:
            raise
        write_summary(summary_path, {"status": "failed", "parent_run_id": getattr(exc, "run_id", None),
                                     "error": str(user_error).splitlines()[0]})
        raise fail(user_error, user_error.exit_code) from None


def aggregate_table(summary: dict[str, Any], key: str, title: str) -> Table:
    """Norms by batch sizes: mean and 95 % interval over seeds of ``key``."""
    from normlab.report import metric_table

    cells = metric_table(summary["aggregate"], key)
    table = Table(title=title)
    for i, head in enumerate(cells.header):
        table.add_column(head, justify="left" if i == 0 else "right", no_wrap=True)
    for row in cells.rows:
        table.add_row(*row)
    return table


def print_sweep(summary: dict[str, Any]) -> None:
    """The ID and OOD accuracy tables, the failed points, where the report and runs are."""
    console.print(aggregate_table(summary, "id/test/accuracy", "ID test accuracy: mean [95 % interval] over seeds"))
    console.print(aggregate_table(summary, "ood/mean/accuracy", "OOD accuracy: mean [95 % interval] over seeds"))
    for point in summary["points"]:
        if point["status"] != "finished":
            console.print(f"[red]failed[/] {point['norm']} batch {point['batch_size']} seed {point['seed']}: "
                          f"{point['error']} (run {point['run_id']})", soft_wrap=True)
    console.print(f"parent run {summary['parent_run_id']}  report {summary['report']['html']}", soft_wrap=True)
    console.print(f"open the MLflow UI:  [bold]{ui_command(summary['tracking_uri'])}[/]", soft_wrap=True)


@app.command()
def sweep(
    config: ConfigArg = None,
    set_: SetOpt = None,
    data: DataOpt = None,
    norms: Annotated[str | None, typer.Option(
        "--norms", help="Comma-separated norms, e.g. batch,layer,group (default: sweep.norms, all seven).")] = None,
    batch_sizes: Annotated[str | None, typer.Option(
        "--batch-sizes", help="Comma-separated training batch sizes, e.g. 2,8,64.")] = None,
    seeds: Annotated[str | None, typer.Option("--seeds", help="Comma-separated seeds, e.g. 0,1,2.")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Worker processes of the local Dask cluster (one thread each).")] = None,
    dask_address: Annotated[str | None, typer.Option(
        "--dask-address", help="Run on an existing Dask scheduler, e.g. tcp://10.0.0.5:8786.")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", help="Report folder (default: <workdir>/sweeps/<parent run id>).")] = None,
    summary: SummaryOpt = None,
) -> None:
    """Train every norm x batch size x seed as nested MLflow runs on Dask; write a comparison report.

    Each point's learning rate is train.lr scaled by batch_size / train.batch_size
    (sweep.lr_scaling: linear, sqrt or none). Exit code 1 when a grid point failed.
    """
    _prepare()
    if workers is not None and dask_address is not None:
        raise fail(ConfigError("--workers and --dask-address exclude each other: a scheduler has its own workers"), 2)
    try:
        overrides = [*(set_ or []), *_list_override("sweep.norms", norms),
                     *_list_override("sweep.batch_sizes", batch_sizes), *_list_override("sweep.seeds", seeds)]
    except NormlabError as exc:
        raise fail(exc, exc.exit_code) from None
    if workers is not None:
        overrides += [f"sweep.workers={workers}", "sweep.address=null"]
    if dask_address is not None:
        overrides.append(f"sweep.address={dask_address}")
    if output is not None:
        overrides.append(f"sweep.output={output.resolve()}")
    cfg = load_or_fail(config, overrides)
    check_data_or_fail(data or cfg.data.path)

    from normlab.flows.sweep import sweep_flow
    from normlab.sweep import expand_grid

    where = cfg.sweep.address or f"a local Dask cluster of {cfg.sweep.workers} worker(s)"
    console.print(f"normlab sweep: {len(expand_grid(cfg))} grid points ({len(cfg.sweep.norms)} norms x "
                  f"{len(cfg.sweep.batch_sizes)} batch sizes x {len(cfg.sweep.seeds)} seeds) on {where}, "
                  f"store {cfg.redacted().tracking_uri()}", soft_wrap=True)
    result = _run_flow(lambda: sweep_flow(cfg, data_path=data), summary)
    print_sweep(result)
    write_summary(summary, result)
    if result["status"] != "finished":
        failed = sum(p["status"] != "finished" for p in result["points"])
        raise fail(RuntimeError(f"{failed} of {len(result['points'])} grid points failed; see the report"), 1)


@app.command()
def study(
    config: ConfigArg = None,
    set_: SetOpt = None,
    quick: Annotated[bool, typer.Option("--quick", help="3 seeds, 5 epochs: about a third of the time.")] = False,
    seeds: Annotated[int | None, typer.Option("--seeds", min=2, help="Number of seeds (default 5; --quick 3).")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Training epochs per run.")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Worker processes of the local Dask cluster (default: sweep.workers).")] = None,
    summary: SummaryOpt = None,
) -> None:
    """Check known findings about normalization on this data and write a one-page report of which held.

    BatchNorm at small batches, BatchNorm folding, BatchNorm re-estimation on corrupted
    data, RMSNorm and Dynamic Tanh against LayerNorm: each with its test, 95 % intervals
    over seeds and a verdict. On the built-in digits and 2 cores: under 10 minutes
    (--quick: about 3).
    """
    _prepare()
    cfg = load_or_fail(config, set_)
    check_data_or_fail(cfg.data.path)
    from normlab.study import study_config

    try:
        scfg = study_config(cfg, quick=quick, seeds=seeds, epochs=epochs, workers=workers)
    except NormlabError as exc:
        raise fail(exc, exc.exit_code) from None
    from normlab.flows.sweep import study_flow
    from normlab.sweep import expand_grid

    console.print(f"normlab study: {len(expand_grid(scfg))} runs ({', '.join(scfg.sweep.norms)} x batch "
                  f"{' and '.join(map(str, scfg.sweep.batch_sizes))} x {len(scfg.sweep.seeds)} seeds, "
                  f"{scfg.train.epochs} epochs) on {scfg.sweep.workers} worker(s), "
                  f"store {scfg.redacted().tracking_uri()}", soft_wrap=True)
    result = _run_flow(lambda: study_flow(scfg), summary)
    table = Table(title=f"{result['held']} of {len(result['findings'])} findings held on this data")
    table.add_column("#", justify="right")
    table.add_column("finding")
    table.add_column("held", no_wrap=True)
    table.add_column("here")
    for i, finding in enumerate(result["findings"], 1):
        mark = "[green]held[/]" if finding["held"] else "[red]not held[/]"
        table.add_row(str(i), finding["title"], mark, finding["verdict"])
    console.print(table)
    console.print(f"report {result['report']['html']}  (parent run {result['parent_run_id']})", soft_wrap=True)
    console.print(f"open the MLflow UI:  [bold]{ui_command(result['tracking_uri'])}[/]", soft_wrap=True)
    write_summary(summary, result)


@app.command()
def reproduce(
    run_id: Annotated[str, typer.Argument(help="The MLflow run id to rerun (32 hex digits).")],
    config: Annotated[Path | None, typer.Option(
        "--config", help="Config naming the tracking store that holds the run (default: configs/digits.yaml).",
    )] = None,
    set_: SetOpt = None,
    tracking_uri: Annotated[str | None, typer.Option(
        "--tracking-uri", help="Read the run from this MLflow store instead of the config's.")] = None,
    summary: SummaryOpt = None,
) -> None:
    """Rerun a logged run from its logged config and data; say metric by metric whether the results are identical.

    Refuses, with the reason, when the data no longer has the logged fingerprint.
    Wall-clock metrics (time/...) are listed apart: they are not expected to repeat.
    Exit code 6 when a metric differs.
    """
    _prepare()
    from normlab import reproduce as rep

    try:
        rep.check_run_id(run_id)
    except NormlabError as exc:
        raise fail(exc, exc.exit_code) from None
    uri = tracking_uri or load_or_fail(config, set_).tracking_uri()
    try:
        plan = rep.prepare(uri, run_id)
    except Exception as exc:
        user_error = as_user_error(exc)
        if user_error is None:
            raise
        raise fail(user_error, user_error.exit_code) from None
    cfg = plan["config"]
    console.print(f"reproducing run {run_id}: {cfg.model.family} + [bold]{cfg.model.norm}[/] norm, seed {cfg.seed}, "
                  f"data {plan['source']} (fingerprint {plan['fingerprint'][:12]}, unchanged)", soft_wrap=True)

    from normlab.flows.training import training_flow

    result = _run_flow(lambda: training_flow(cfg, data_path=plan["data_path"], resume=False), summary)
    comparison = rep.compare(uri, run_id, result["run_id"])
    rep.mark_reproduction(uri, run_id, result["run_id"], comparison["identical"])

    if comparison["differ"]:
        table = Table(title="Metrics that differ (last logged value)")
        for head in ("metric", "original", "reproduced"):
            table.add_column(head, justify="left" if head == "metric" else "right")
        for row in comparison["metrics"]:
            if row["key"] in comparison["differ"]:
                table.add_row(row["key"], _num(row["original"]), _num(row["reproduced"]))
        console.print(table)
    if comparison["unrepeatable"]:
        console.print(f"not compared (wall-clock or registry state, not expected to repeat): "
                      f"{', '.join(comparison['unrepeatable'])}", soft_wrap=True)
    if comparison["extra"]:
        console.print(f"only in the reproduction (stages the original did not run): "
                      f"{', '.join(comparison['extra'])}", soft_wrap=True)
    if comparison["rounding"]:
        console.print(f"equal to float64 rounding (relative difference <= {rep.ROUNDING_RTOL:g}), not bit for bit: "
                      f"{', '.join(comparison['rounding'])}", soft_wrap=True)
    same = comparison["compared"] - len(comparison["differ"])
    verdict = "[green]identical[/]" if comparison["identical"] else "[red]different[/]"
    console.print(f"{same} of {comparison['compared']} metrics equal at every step "
                  f"({same - len(comparison['rounding'])} bit for bit): {verdict}  "
                  f"(original {run_id}, reproduction {result['run_id']})", soft_wrap=True)
    write_summary(summary, {"status": "identical" if comparison["identical"] else "different",
                            "tracking_uri": cfg.redacted().tracking_uri(), "data": result["data"], **comparison})
    if not comparison["identical"]:
        raise typer.Exit(6)


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.6g}"


# Deployments ------------------------------------------------------------------------------

PrefectFileOpt = Annotated[Path | None, typer.Option(
    "--prefect-file", help="Deployments to read (default: deploy/prefect.yaml of the repository).")]
LandingOpt = Annotated[Path | None, typer.Option(
    "--landing", help="Landing folder the monitor deployment watches (default: its `data` parameter).")]
OnlyOpt = Annotated[list[str] | None, typer.Option(
    "--only", help="Deploy only this deployment (repeatable): train, monitor, sweep.")]

# Config values that are paths: made absolute so a run started elsewhere finds them.
_PATH_KEYS: tuple[tuple[str, ...], ...] = (
    ("workdir",), ("data", "path"), ("data", "expectations"), ("gate", "quarantine_dir"),
    ("monitor", "workspace"), ("sweep", "output"),
)


def code_root() -> Path:
    """The folder holding ``flows/`` (the repository root of an editable install)."""
    from normlab import flows

    return Path(flows.__file__).resolve().parent.parent


def deployable_config(cfg) -> dict[str, Any]:
    """The config as a deployment parameter: absolute paths, no credentials.

    Alert URLs stay out of the Prefect database (they hold tokens); workers read
    them from ``NORMLAB_ALERT_URLS``.
    """
    safe = cfg.redacted()
    safe = safe.model_copy(update={"alerts": safe.alerts.model_copy(update={"urls": []})})
    data = safe.model_dump(mode="json")
    for keys in _PATH_KEYS:
        node = data
        for key in keys[:-1]:
            node = node.get(key) or {}
        value = node.get(keys[-1])
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            node[keys[-1]] = str(Path(value).expanduser().resolve())
    return data


def load_deployment_specs(path: Path | None, cfg, landing: Path | None, only: list[str] | None) -> list[dict[str, Any]]:
    """The deployments of a prefect.yaml, with the resolved config as their ``config`` parameter.

    Raises:
        ConfigError: The file is missing or malformed, or ``only`` names an unknown deployment.
    """
    from normlab.config import read_yaml

    file = path or (Path("deploy/prefect.yaml") if Path("deploy/prefect.yaml").is_file()
                    else code_root() / "deploy" / "prefect.yaml")
    raw = read_yaml(file)
    entries = raw.get("deployments")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{file}: no `deployments:` list")
    specs = []
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("entrypoint"):
            raise ConfigError(f"{file}: every deployment needs a `name` and an `entrypoint`")
        params = dict(entry.get("parameters") or {})
        if "config" in params:
            params["config"] = deployable_config(cfg)
        if "data" in params and entry["entrypoint"].startswith("flows/monitoring.py"):
            params["data"] = str((landing or Path(params["data"])).expanduser().resolve())
        pool = entry.get("work_pool") or {}
        specs.append({
            "name": entry["name"], "entrypoint": entry["entrypoint"], "parameters": params,
            "schedules": list(entry.get("schedules") or []), "description": entry.get("description"),
            "tags": list(entry.get("tags") or []), "work_pool": pool.get("name") or "normlab",
            "work_queue": pool.get("work_queue_name"),
        })
    names = {s["name"] for s in specs}
    unknown = sorted(set(only or []) - names)
    if unknown:
        raise ConfigError(f"--only {unknown[0]}: not a deployment in {file}; known: {', '.join(sorted(names))}")
    return [s for s in specs if not only or s["name"] in only]


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


def describe_schedules(spec: dict[str, Any]) -> str:
    """``cron 0 2 * * * (UTC)``, ``every 3600 s``, or ``on demand``."""
    parts = []
    for item in spec["schedules"]:
        if "cron" in item:
            parts.append(f"cron {item['cron']}" + (f" ({item['timezone']})" if item.get("timezone") else ""))
        elif "interval" in item:
            parts.append(f"every {item['interval']} s")
        else:
            parts.append(f"rrule {item.get('rrule')}")
    return ", ".join(parts) or "on demand"


def _available(spec: dict[str, Any]) -> bool:
    """True when the deployment's flow file exists in this code tree."""
    return (code_root() / spec["entrypoint"].split(":", 1)[0]).is_file()


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
    _prepare()
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
        if not _available(spec):
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
    _prepare()
    cfg = load_or_fail(config, set_)
    try:
        specs = load_deployment_specs(prefect_file, cfg, landing, only)
    except NormlabError as exc:
        raise fail(exc, exc.exit_code) from None
    import importlib

    from prefect import serve as prefect_serve

    deployments = []
    for spec in specs:
        if not _available(spec):
            console.print(f"skipped {spec['name']}: {spec['entrypoint']} is not in {code_root()}", soft_wrap=True)
            continue
        path, attr = spec["entrypoint"].split(":", 1)
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), attr)
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
