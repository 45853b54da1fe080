"""Run the benchmarks: ``python -m bench [--quick] [--only SECTION[,SECTION]]``.

Prints a table per section and the targets, writes ``bench/results.json`` and
rewrites the generated block of ``bench/README.md``. With ``--only`` the other
sections' results are kept from the existing JSON (each section carries the
machine and date it was measured on).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from bench import REPO, machine_info

SECTIONS: tuple[str, ...] = ("training", "norms", "inference", "pipeline", "scaling", "streaming")
RESULTS = REPO / "bench" / "results.json"
README = REPO / "bench" / "README.md"
BEGIN = "<!-- bench:results:begin (written by python -m bench; edits inside are lost) -->"
END = "<!-- bench:results:end -->"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="size", const="quick",
                      help="the quick suite (under 10 minutes on 2 cores)")
    size.add_argument("--smoke", action="store_const", dest="size", const="smoke",
                      help="tiny sizes that only check the code runs (numbers meaningless)")
    parser.set_defaults(size="full")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run, of: {', '.join(SECTIONS)}")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads on both sides of every comparison (default 1: on a shared "
                             "machine a multi-threaded op waits for descheduled threads, which swamps what is measured)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    parser.add_argument("--readme", type=Path, default=README, help="Markdown file whose generated block is rewritten")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; known: {', '.join(SECTIONS)}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    return args


def run_section(name: str, size: str, threads: int | None) -> dict[str, Any]:
    """One section's result, with its status, duration and machine; a failure is recorded, not raised."""
    machine = machine_info()
    start = time.perf_counter()
    try:
        module = importlib.import_module(f"bench.{name}")
        with warnings.catch_warnings():
            # Deprecation notices of torch.ao and friends are not results.
            warnings.simplefilter("ignore")
            result = module.run(size, threads=threads)
        result.setdefault("status", "ok")
    except Exception as exc:  # noqa: BLE001 - one broken section must not lose the others' numbers
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        result = {"status": "failed", "error": f"{type(exc).__name__}: {first}",
                  "traceback": traceback.format_exc(), "rows": [], "table": [], "targets": [], "notes": []}
    result.update({"section": name, "size": size, "threads": threads or machine["torch_threads"],
                   "seconds": time.perf_counter() - start, "machine": machine,
                   "load_average_end": [round(x, 2) for x in os.getloadavg()]})
    result["busy"] = is_busy(result)
    return result


def is_busy(section: dict[str, Any]) -> bool:
    """True when other work kept the cores busy (1-minute load above the usable cores at start or end)."""
    cores = section["machine"]["usable_cores"]
    loads = [section["machine"]["load_average"][0], section.get("load_average_end", [0.0])[0]]
    return max(loads) > cores


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def merge_results(path: Path, fresh: dict[str, dict[str, Any]], size: str) -> dict[str, Any]:
    """The results file's content with ``fresh`` sections replacing their old versions."""
    sections: dict[str, Any] = {}
    if path.is_file():
        try:
            sections = json.loads(path.read_text(encoding="utf-8")).get("sections", {})
        except (json.JSONDecodeError, AttributeError):
            sections = {}
    sections.update(fresh)
    ordered = {name: sections[name] for name in SECTIONS if name in sections}
    targets = [{"section": name, **t} for name, s in ordered.items() for t in s.get("targets", [])]
    return {"suite": size, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "sections": ordered,
            "targets": targets}


def _md_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    columns = list(rows[0])
    for row in rows[1:]:
        columns += [c for c in row if c not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")).replace("|", "/") for c in columns) + " |")
    return lines


def _value(t: dict[str, Any]) -> str:
    if t["value"] is None:
        return "not measured"
    return f"{t['value']:.3g}{t.get('unit', '')}"


def _met(t: dict[str, Any]) -> str:
    return {True: "met", False: "**not met**", None: "not measured"}[t["met"]]


def render_markdown(results: dict[str, Any]) -> str:
    """The generated block: targets first, then one table per section with its machine."""
    lines = [BEGIN, "", "### Targets", ""]
    lines += _md_table([{"section": t["section"], "target": t["name"], "bound": t["target"],
                         "measured": _value(t), "status": _met(t)} for t in results["targets"]])
    for name, section in results["sections"].items():
        m = section["machine"]
        where = (f"{section['size']} suite, {m['date']}, {m['cpu']}, {m['usable_cores']} cores, "
                 f"torch {m['torch']} with {section.get('threads', m['torch_threads'])} thread(s) "
                 f"(default here: {m['torch_threads']}), Python {m['python']}, "
                 f"load average {m['load_average'][0]} -> {section.get('load_average_end', ['?'])[0]}, "
                 f"commit {(m['git_commit'] or '?')[:10]}"
                 f"{' (uncommitted changes)' if m['git_dirty'] else ''}"
                 f"{', GPU ' + m['cuda'] if m.get('cuda') else ''}; section took {section['seconds']:.0f} s.")
        lines += ["", f"### {name}", "", where, ""]
        if section.get("busy"):
            busy = (f"**The machine was busy with other work during this section** (load above its "
                    f"{m['usable_cores']} cores): its timings are noisy.")
            lines += [busy, ""]
        if section["status"] == "failed":
            lines.append(f"Failed: `{section['error']}`")
            continue
        if section["status"] != "ok":
            lines.append(f"Status: {section['status']}.")
        lines += _md_table(section.get("table", []))
        for title, table in section.get("tables", {}).items():
            lines += ["", f"*{title}*", "", *_md_table(table)]
        for note in section.get("notes", []):
            lines += ["", f"- {note}"]
    lines += ["", END]
    return "\n".join(lines)


def write_readme(path: Path, block: str) -> None:
    """Replace the generated block of ``path`` (or append one); the rest of the file is kept."""
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def print_section(console, section: dict[str, Any]) -> None:
    from rich.table import Table

    console.rule(f"{section['section']} ({section['status']}, {section['seconds']:.0f} s)")
    if section.get("busy"):
        console.print(f"[yellow]warning:[/] load average {section['machine']['load_average'][0]} -> "
                      f"{section['load_average_end'][0]} on {section['machine']['usable_cores']} cores: "
                      "other work shared the machine, these timings are noisy")
    if section["status"] == "failed":
        console.print(section["traceback"], highlight=False, markup=False)
        return
    for title, rows in [("", section.get("table", [])), *list(section.get("tables", {}).items())]:
        if not rows:
            continue
        table = Table(title=title or None)
        for column in rows[0]:
            table.add_column(str(column))
        for row in rows:
            table.add_row(*(str(row.get(c, "")) for c in rows[0]))
        console.print(table)
    for note in section.get("notes", []):
        console.print(f"- {note}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections; exit 1 when a section failed, else 0 (missed targets are results)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args = parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    console = Console()
    fresh: dict[str, dict[str, Any]] = {}
    for name in args.sections:
        console.print(f"[bold]{name}[/] ({args.size}) ...")
        fresh[name] = json_safe(run_section(name, args.size, args.threads))
        print_section(console, fresh[name])
    results = merge_results(args.out, fresh, args.size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    write_readme(args.readme, render_markdown(results))

    table = Table(title="Targets")
    for column in ("section", "target", "bound", "measured", "status"):
        table.add_column(column)
    for t in results["targets"]:
        if t["section"] in fresh:
            table.add_row(t["section"], t["name"], t["target"], _value(t), _met(t).replace("**", ""))
    console.print(table)
    console.print(f"wrote {args.out} and {args.readme}")
    return 1 if any(s["status"] == "failed" for s in fresh.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
