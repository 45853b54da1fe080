"""Commands: ``normlab promote`` (move the champion alias by hand, with who and why)."""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Annotated

import typer

from normlab.cli.app import ConfigArg, SetOpt, SummaryOpt, app, console
from normlab.cli.common import as_user_error, fail, load_or_fail, prepare_environment, write_summary

if TYPE_CHECKING:
    from normlab.contracts import Publication


def print_promotion(publication: Publication) -> None:
    """One line on what the run's model version became, and the gate's reason."""
    if not publication.enabled:
        return
    aliases = ", ".join(publication.aliases)
    verdict = "[bold green]champion[/]" if "champion" in publication.aliases else "[bold yellow]not promoted[/]"
    console.print(f"model {publication.name} version {publication.version} ({aliases}): {verdict}")
    console.print(f"  gate {publication.reason}", highlight=False, soft_wrap=True)
    console.print(f"  governance record: {publication.record}", highlight=False, soft_wrap=True)


@app.command()
def promote(
    run_id: Annotated[str, typer.Argument(help="The MLflow run whose registered model version becomes champion.")],
    reason: Annotated[str, typer.Option("--reason", help="Why, in words; kept in the governance record.")],
    config: ConfigArg = None,
    set_: SetOpt = None,
    by: Annotated[str | None, typer.Option("--by", help="Who promotes (default: the login name).")] = None,
    summary: SummaryOpt = None,
) -> None:
    """Make a run's model version the champion by hand, overriding the gate; records who and why first."""
    prepare_environment()
    cfg = load_or_fail(config, set_)
    from normlab import governance_record, registry
    from normlab.tracking import TrackingStore

    name, store = registry.registry_name(cfg), TrackingStore(cfg.tracking_uri())
    who = by or getpass.getuser()
    try:
        result = governance_record.promote(store, name, run_id, reason=reason, by=who)
    except Exception as exc:
        user_error = as_user_error(exc)
        if user_error is None:
            raise
        raise fail(user_error, user_error.exit_code) from None
    if result.already:
        console.print(f"{name} version {result.version} is the champion already; nothing changed")
    else:
        previous = f" (was version {result.previous_champion})" if result.previous_champion else ""
        console.print(f"{name} version {result.version} is now the champion{previous}; promoted by {who}")
        console.print(f"  governance record: {result.record}", highlight=False, soft_wrap=True)
    write_summary(summary, {"status": "unchanged" if result.already else "promoted", "by": who,
                            "reason": reason, **result.model_dump()})
