"""Per-question scores, their mean and spread over runs, and the summary as a table, Markdown and a plot."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from rumination.eval.judge import Grade, Grading
from rumination.results import StopReason
from rumination.sanitize import terminal_safe

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class ScoreRecord(BaseModel):
    """How one report of one run scored."""

    run: int
    id: str
    question: str
    answers: list[str]
    short_answer: str = Field(description="the answer extracted from the report, compared by exact match and F1")
    exact_match: bool
    f1: float
    contained: bool = Field(description="a gold answer appears in the report")
    grading: Grading | None = Field(None, description="the judge's grade; None without a judge")
    judge: str | None = Field(None, description="the judge's backend and model")
    model: str | None = Field(None, description="the model that researched the report, where known")
    error: str | None = Field(None, description="the research failed: every score counts as wrong")
    stop_reason: StopReason | None = None
    turns: int
    generated_tokens: int | None
    seconds: float
    report_sha256: str = Field(description="the scored report's hash: a grade is reused only for the same report")

    @property
    def grade(self) -> Grade | None:
        """The judge's grade, if judged."""
        return self.grading.grade if self.grading else None


class RunMetrics(BaseModel):
    """One run's scores: rates over its questions (0-1) and means per question."""

    run: int
    questions: int
    errors: int
    exact_match: float
    f1: float
    contained: float
    correct: float | None = Field(None, description="judged correct, of all judged questions")
    incorrect: float | None = None
    not_attempted: float | None = None
    unparsed: float | None = Field(None, description="judge replies that named no grade")
    accuracy_given_attempted: float | None = Field(None, description="correct / (correct + incorrect)")
    # Means over the questions researched (not failed): None when every one failed.
    turns: float | None
    generated_tokens: float | None
    seconds: float | None


class Stat(BaseModel):
    """A metric over runs: mean, sample standard deviation (None for one run) and each run's value."""

    mean: float
    std: float | None
    values: list[float]


class EvalSummary(BaseModel):
    """The evaluation: each run's metrics, and each metric's mean and spread over the runs."""

    dataset: str
    questions: int
    model: str
    judge: str | None
    complete: bool = Field(True, description="no question failed to be researched")
    failed: int = Field(0, description="questions that failed to be researched, summed over the runs")
    runs: list[RunMetrics]
    metrics: dict[str, Stat]


# Every metric of a run, its label, and how it is shown.
METRICS: list[tuple[str, str, Literal["rate", "count", "number"]]] = [
    ("exact_match", "exact match", "rate"),
    ("f1", "F1", "rate"),
    ("contained", "answer contained", "rate"),
    ("correct", "judge: correct", "rate"),
    ("incorrect", "judge: incorrect", "rate"),
    ("not_attempted", "judge: not attempted", "rate"),
    ("unparsed", "judge: no grade", "rate"),
    ("accuracy_given_attempted", "judge: correct given attempted", "rate"),
    ("turns", "turns per question", "number"),
    ("generated_tokens", "tokens per question", "count"),
    ("seconds", "seconds per question", "number"),
]


def run_metrics(run: int, records: list[ScoreRecord]) -> RunMetrics:
    """One run's metrics from its score records."""

    def rate(test: Callable[[ScoreRecord], bool], among: list[ScoreRecord]) -> float | None:
        return sum(map(test, among)) / len(among) if among else None

    judged = [r for r in records if r.grading is not None]
    attempted = [r for r in judged if r.grade in ("correct", "incorrect")]
    researched = [r for r in records if r.error is None]
    tokens = [r.generated_tokens for r in researched if r.generated_tokens is not None]
    return RunMetrics(
        run=run,
        questions=len(records),
        errors=sum(r.error is not None for r in records),
        exact_match=statistics.fmean(r.exact_match for r in records),
        f1=statistics.fmean(r.f1 for r in records),
        contained=statistics.fmean(r.contained for r in records),
        correct=rate(lambda r: r.grade == "correct", judged),
        incorrect=rate(lambda r: r.grade == "incorrect", judged),
        not_attempted=rate(lambda r: r.grade == "not_attempted", judged),
        unparsed=rate(lambda r: r.grade == "unparsed", judged),
        accuracy_given_attempted=rate(lambda r: r.grade == "correct", attempted),
        turns=statistics.fmean(r.turns for r in researched) if researched else None,
        generated_tokens=statistics.fmean(tokens) if tokens else None,
        seconds=statistics.fmean(r.seconds for r in researched) if researched else None,
    )


def summarize(records: list[ScoreRecord], *, dataset: str, model: str, judge: str | None) -> EvalSummary:
    """Group the records by run; each metric's mean and standard deviation over the runs that have it."""
    by_run: dict[int, list[ScoreRecord]] = {}
    for record in records:
        by_run.setdefault(record.run, []).append(record)
    runs = [run_metrics(run, by_run[run]) for run in sorted(by_run)]
    metrics = {}
    for key, _, _ in METRICS:
        values = [value for run in runs if (value := getattr(run, key)) is not None]
        if values:
            std = statistics.stdev(values) if len(values) > 1 else None
            metrics[key] = Stat(mean=statistics.fmean(values), std=std, values=values)
    questions = len({record.id for record in records})
    failed = sum(run.errors for run in runs)
    return EvalSummary(
        dataset=dataset,
        questions=questions,
        model=model,
        judge=judge,
        complete=not failed,
        failed=failed,
        runs=runs,
        metrics=metrics,
    )


def _format(value: float, kind: str) -> str:
    return f"{100 * value:.1f}%" if kind == "rate" else f"{value:.1f}" if kind == "number" else f"{value:.0f}"


def _mean_std(stat: Stat, kind: str) -> str:
    return _format(stat.mean, kind) + (f" ± {_format(stat.std, kind)}" if stat.std is not None else "")


def _rows(summary: EvalSummary) -> list[list[str]]:
    """The table: a header, then one row per metric measured (mean ± std, then each run; one run: its values)."""
    several = len(summary.runs) > 1
    rows = [["metric", *(["mean ± std"] if several else []), *(f"run {run.run}" for run in summary.runs)]]
    for key, label, kind in METRICS:
        if key in summary.metrics:
            per_run = [getattr(run, key) for run in summary.runs]
            cells = ["-" if v is None else _format(v, kind) for v in per_run]
            rows.append([label, *([_mean_std(summary.metrics[key], kind)] if several else []), *cells])
    return rows


def _heading(summary: EvalSummary) -> str:
    runs = len(summary.runs)
    judge = f"judge {summary.judge}" if summary.judge else "no judge"
    heading = f"{summary.questions} questions × {runs} run{'s' * (runs != 1)}; {summary.model}; {judge}"
    return heading + ("; INCOMPLETE" if summary.failed else "")


def failures(summary: EvalSummary) -> str:
    """How many questions failed to be researched (by run when there are several), in words; "" for none."""
    if not summary.failed:
        return ""
    text = f"{summary.failed} question{'s' * (summary.failed != 1)} failed to be researched"
    if len(summary.runs) > 1:
        text += " (" + ", ".join(f"run {run.run}: {run.errors}" for run in summary.runs if run.errors) + ")"
    return text


RETRY_HINT = "run the same command again with --retry-failed to research them again"


def text_table(summary: EvalSummary) -> str:
    """The summary as a plain-text table, for stdout."""
    rows = _rows(summary)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join([row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True))])
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    footer = f"\nincomplete: {failures(summary)}, scored as wrong" if summary.failed else ""
    table = f"{summary.dataset}: {_heading(summary)}\n" + "\n".join(line.rstrip() for line in lines) + footer + "\n"
    return terminal_safe(table)  # the served model's name is the server's text


PLOT_HINT = (
    "The plot needs matplotlib: `pip install 'rumination[eval]'` (in a checkout: `pip install -e '.[eval]'`), "
    "then run the same `rumination eval` command again: the runs and grades already made are reused."
)


def markdown(summary: EvalSummary, plot: str | None) -> str:
    """The summary as Markdown, with the plot file `plot` (or how to get it)."""
    rows = _rows(summary)
    table = [f"| {' | '.join(rows[0])} |", "|---|" + "---:|" * (len(rows[0]) - 1)]
    table += [f"| {' | '.join(row)} |" for row in rows[1:]]
    note = (
        "Exact match and F1 compare the short answer taken from each report with the gold answers (SQuAD "
        "normalisation; Chinese compared character by character); *answer contained* looks for a gold answer "
        "anywhere in the report."
    )
    if summary.judge:
        note += (
            " The judge grades each report with SimpleQA's grader prompt; *correct given attempted* leaves out the "
            "questions it judged not attempted, and *no grade* counts replies that named no grade."
        )
    note += (
        " Turns, tokens and seconds are means over the questions researched: a failed one is left out of them "
        "(its accuracy counts as wrong)."
    )
    if len(summary.runs) > 1:
        note += " Spread: standard deviation over the runs."
    incomplete = " (incomplete)" if summary.failed else ""
    lines = [f"# Evaluation: {summary.dataset}{incomplete}", "", _heading(summary) + ".", "", *table, "", note]
    if summary.failed:
        lines += ["", f"**Incomplete:** {failures(summary)}, scored as wrong: {RETRY_HINT}."]
    lines += ["", f"![accuracy, turns, tokens and time per question]({plot})" if plot else PLOT_HINT]
    return "\n".join(lines) + "\n"


def write_plot(summary: EvalSummary, records: list[ScoreRecord], path: Path) -> bool:
    """Accuracy, turns, tokens and time per question as a PNG; False when matplotlib is not installed."""
    figure = plot(summary, records)
    if figure is None:
        return False
    figure.savefig(path, dpi=100)
    return True


def plot(summary: EvalSummary, records: list[ScoreRecord]) -> Figure | None:
    """Accuracy, then histograms of turns, tokens and time over the questions researched; None without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
    figure = Figure(figsize=(12, 8), layout="constrained")
    FigureCanvasAgg(figure)  # the non-interactive backend, without touching pyplot's global state
    accuracy, turns, tokens, seconds = figure.subplots(2, 2).flat
    rates = [
        (label, summary.metrics[key])
        for key, label, kind in METRICS
        if kind == "rate" and key in summary.metrics and key != "unparsed"
    ]
    accuracy.bar(
        [label.removeprefix("judge: ") for label, _ in rates],
        [100 * stat.mean for _, stat in rates],
        yerr=[100 * (stat.std or 0) for _, stat in rates],
        capsize=4,
        color="tab:blue",
    )
    accuracy.set_ylim(0, 100)
    accuracy.set_ylabel("% of questions (mean ± std over runs)")
    accuracy.set_title("accuracy")
    for label in accuracy.get_xticklabels():
        label.set(rotation=30, horizontalalignment="right")
    researched = [r for r in records if r.error is None]
    token_counts = [r.generated_tokens for r in researched if r.generated_tokens is not None]
    for axes, values, title, integers in (
        (turns, [r.turns for r in researched], "tool turns per question", True),
        (tokens, token_counts, "generated tokens per question", True),
        (seconds, [r.seconds for r in researched], "seconds per question", False),
    ):
        axes.hist(values, bins=_bins(values, integers), color="tab:gray")
        axes.set_title(title)
        axes.set_ylabel("questions researched (all runs)")
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        if integers:
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle(f"{summary.dataset}: {_heading(summary)}")
    return figure


def _bins(values: list[float], integers: bool) -> int | list[float]:
    """Histogram bins: one per value for a narrow range of integers (centred on it), else up to 30."""
    if integers and values and max(values) - min(values) < 30:
        low, high = int(min(values)), int(max(values))
        return [edge - 0.5 for edge in range(low, high + 2)]
    return min(30, max(5, len(set(values))))


def write_summary(summary: EvalSummary, records: list[ScoreRecord], out_dir: Path) -> Path:
    """Write summary.md, summary.json and summary.png (when matplotlib is there) into `out_dir`; the Markdown's path."""
    plotted = write_plot(summary, records, out_dir / "summary.png")
    if not plotted:  # a plot from an earlier summary would no longer match
        (out_dir / "summary.png").unlink(missing_ok=True)
    path = out_dir / "summary.md"
    path.write_text(markdown(summary, "summary.png" if plotted else None), encoding="utf-8")
    (out_dir / "summary.json").write_text(summary.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path
