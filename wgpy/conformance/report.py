"""Conformance reports: a terminal table, JSON and JUnit XML."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from typing import Any, TextIO

from .runner import Result, Status

__all__ = [
    "counts",
    "format_row",
    "format_table",
    "to_json",
    "to_junit",
    "to_markdown",
    "write_json",
    "write_junit",
]

_NAME_W = 22
_STATUS_W = 7
_TIME_W = 7


def counts(results: Sequence[Result]) -> dict[str, int]:
    """How many results have each status (every status listed)."""
    c = Counter(r.status for r in results)
    return {s.value: c.get(s, 0) for s in Status}


def header() -> str:
    """The table's header line."""
    return f"{'scenario':<{_NAME_W}} {'result':<{_STATUS_W}} {'time':>{_TIME_W}}  summary"


def format_row(r: Result, width: int = 120) -> str:
    """One table row; a long summary wraps under the summary column."""
    lead = f"{r.name:<{_NAME_W}} {r.status.value:<{_STATUS_W}} {r.seconds:>{_TIME_W - 1}.1f}s  "
    wrap = textwrap.wrap(r.summary, max(30, width - len(lead))) or [""]
    pad = " " * len(lead)
    return "\n".join([lead + wrap[0], *(pad + line for line in wrap[1:])])


def format_table(results: Sequence[Result], title: str = "", width: int = 120) -> str:
    """The whole table with a totals line."""
    lines = [title] if title else []
    lines += [header(), "-" * min(width, 100)]
    lines += [format_row(r, width) for r in results]
    c = counts(results)
    lines.append("-" * min(width, 100))
    lines.append(", ".join(f"{v} {k}" for k, v in c.items() if v) or "no scenarios")
    return "\n".join(lines)


def to_json(results: Sequence[Result], meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: run metadata, totals and every result."""
    return {**meta, "counts": counts(results), "results": [r.as_dict() for r in results]}


def write_json(fh: TextIO, results: Sequence[Result], meta: dict[str, Any]) -> None:
    """Write :func:`to_json` as indented JSON."""
    json.dump(to_json(results, meta), fh, indent=2)
    fh.write("\n")


def to_junit(results: Sequence[Result], meta: dict[str, Any]) -> ET.Element:
    """A JUnit ``<testsuites>`` element: one ``<testcase>`` per scenario,
    FAIL as ``<failure>``, ERROR as ``<error>``, SKIP as ``<skipped>``
    (PARTIAL is a pass with the unchecked parts in ``<system-out>``), and
    the trace of what the target did in ``<system-out>``."""
    label = str(meta.get("target", {}).get("label", "target"))
    c = counts(results)
    suites = ET.Element("testsuites")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"wgpy-conformance.{label}",
        tests=str(len(results)),
        failures=str(c["FAIL"]),
        errors=str(c["ERROR"]),
        skipped=str(c["SKIP"]),
        time=f"{sum(r.seconds for r in results):.3f}",
        timestamp=str(meta.get("date", "")),
    )
    props = ET.SubElement(suite, "properties")
    target = meta.get("target", {})
    for key in ("label", "endpoint", "public_key", "control"):
        if target.get(key) is not None:
            ET.SubElement(props, "property", name=f"target.{key}", value=str(target[key]))
    for r in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"conformance.{label}",
            name=r.name,
            time=f"{r.seconds:.3f}",
        )
        if r.status is Status.FAIL:
            ET.SubElement(case, "failure", message=r.summary).text = r.description
        elif r.status is Status.ERROR:
            ET.SubElement(case, "error", message=r.summary).text = r.description
        elif r.status is Status.SKIP:
            ET.SubElement(case, "skipped", message=r.summary)
        ET.SubElement(case, "system-out").text = "\n".join(
            [f"{r.status.value}: {r.summary}", r.description, "", *r.details]
        )
    return suites


def to_markdown(results: Sequence[Result], meta: dict[str, Any]) -> str:
    """A Markdown table of the results with the target and the date above it."""
    target = meta.get("target", {})
    lines = [
        f"Target: {target.get('label', '?')} at {target.get('endpoint', '?')}"
        f" (setup: {target.get('control') or 'none'}); run {meta.get('date', '?')}.",
        "",
        "| scenario | result | time | what the target did |",
        "|---|---|---:|---|",
    ]
    for r in results:
        summary = r.summary.replace("|", "\\|")
        lines.append(f"| {r.name} | {r.status.value} | {r.seconds:.1f} s | {summary} |")
    c = counts(results)
    lines += ["", ", ".join(f"{v} {k}" for k, v in c.items() if v)]
    return "\n".join(lines) + "\n"


def write_junit(path: str, results: Sequence[Result], meta: dict[str, Any]) -> None:
    """Write :func:`to_junit` to ``path`` (UTF-8, with an XML declaration)."""
    tree = ET.ElementTree(to_junit(results, meta))
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)
