"""Task-activity reports: a CSV of every task in a period and an HTML summary.

The summary gives counts by kind and state, run durations (mean, median, 95th percentile,
maximum) by kind, the failures with their errors, and the slowest tasks.
"""

from __future__ import annotations

import csv
import html
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from scheduler.taskstore import FAILED, TaskRecord, isoformat

CSV_NAME = "report.csv"
HTML_NAME = "report.html"
SLOWEST = 10
CSV_COLUMNS = [
    "id",
    "kind",
    "state",
    "created_at",
    "started_at",
    "finished_at",
    "duration_seconds",
    "deliveries",
    "error",
]


@dataclass(frozen=True)
class ReportSummary:
    """Headline figures of one report, also returned as the task result."""

    tasks: int
    by_state: dict[str, int]
    by_kind: dict[str, int]
    failures: int


def count_tasks(count: int) -> str:
    """Return "1 task" or "N tasks"."""
    return f"{count} task" if count == 1 else f"{count} tasks"


def duration(record: TaskRecord) -> float | None:
    """Return how long the task ran in seconds, or ``None`` when it never finished a run."""
    if record.started_at is None or record.finished_at is None:
        return None
    return max(record.finished_at - record.started_at, 0.0)


def write_csv(records: list[TaskRecord], path: Path) -> None:
    """Write one CSV row per task."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for record in records:
            seconds = duration(record)
            writer.writerow(
                [
                    record.id,
                    record.kind,
                    record.state,
                    isoformat(record.created_at),
                    isoformat(record.started_at),
                    isoformat(record.finished_at),
                    f"{seconds:.3f}" if seconds is not None else "",
                    record.deliveries,
                    record.error or "",
                ]
            )


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(int(round(fraction * (len(ordered) - 1))), len(ordered) - 1)
    return ordered[index]


def _table(headers: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_html(records: list[TaskRecord], path: Path, period: str) -> None:
    """Write the HTML summary of ``records``; every value is HTML-escaped."""
    by_kind_state = Counter((r.kind, r.state) for r in records)
    count_rows = [[kind, state, n] for (kind, state), n in sorted(by_kind_state.items())]

    duration_rows = []
    for kind in sorted({r.kind for r in records}):
        values = [d for r in records if r.kind == kind and (d := duration(r)) is not None]
        if values:
            duration_rows.append(
                [
                    kind,
                    len(values),
                    f"{statistics.fmean(values):.2f}",
                    f"{statistics.median(values):.2f}",
                    f"{_percentile(values, 0.95):.2f}",
                    f"{max(values):.2f}",
                ]
            )

    failures = [r for r in records if r.state == FAILED]
    failure_rows = [[r.id, r.kind, isoformat(r.finished_at), r.error or ""] for r in failures]
    timed = [(d, r) for r in records if (d := duration(r)) is not None]
    slow_rows = [
        [r.id, r.kind, r.state, f"{d:.2f}"]
        for d, r in sorted(timed, key=lambda pair: pair[0], reverse=True)[:SLOWEST]
    ]

    sections = [
        f"<h1>Task activity</h1><p>{html.escape(period)}: {count_tasks(len(records))}.</p>",
        "<h2>Counts</h2>" + _table(["kind", "state", "tasks"], count_rows),
        "<h2>Durations (seconds)</h2>"
        + _table(["kind", "runs", "mean", "median", "p95", "max"], duration_rows),
        f"<h2>Failures ({len(failures)})</h2>"
        + _table(["id", "kind", "finished", "error"], failure_rows),
        f"<h2>Slowest {SLOWEST}</h2>" + _table(["id", "kind", "state", "seconds"], slow_rows),
    ]
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Task activity</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}</style>"
        + "".join(sections)
        + "</html>"
    )
    path.write_text(page, encoding="utf-8")


def build_report(records: list[TaskRecord], out_dir: Path, period: str) -> ReportSummary:
    """Write ``report.csv`` and ``report.html`` into ``out_dir`` and return the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(records, out_dir / CSV_NAME)
    write_html(records, out_dir / HTML_NAME, period)
    return ReportSummary(
        tasks=len(records),
        by_state=dict(Counter(r.state for r in records)),
        by_kind=dict(Counter(r.kind for r in records)),
        failures=sum(1 for r in records if r.state == FAILED),
    )
