"""The sweep report's figures, drawn with matplotlib's Agg canvas.

Our own, not Optuna's `optuna.visualization.matplotlib`, which is experimental (it warns on every call)
and draws neither failed trials with their marks nor params that only some trials have.
Each function returns PNG bytes. Figures are built as plain `Figure` objects, never through
pyplot, so none is registered anywhere or outlives its call.
"""

import io
import math
from itertools import accumulate, combinations
from typing import Any, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

DPI = 110
ABSENT = object()  # a param the trial did not sample (conditional search spaces)


def to_png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def label(name: str, maximize: bool) -> str:
    return f"{name} ({'max' if maximize else 'min'})"


def optimization_history(trials: Sequence[FrozenTrial], names: Sequence[str], maximize: Sequence[bool]) -> bytes:
    """Each objective per trial with its best-so-far line; pruned and failed trials marked."""
    fig = Figure(layout="constrained", figsize=(8, 1 + 2.8 * len(names)))
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    for i, (ax, name, up) in enumerate(zip(axes, names, maximize)):
        numbers, values = [t.number for t in complete], [t.values[i] for t in complete]
        ax.plot(numbers, values, "o", color="tab:blue", markersize=4, label="complete")
        best = list(accumulate(values, max if up else min))
        ax.step(numbers, best, where="post", color="tab:red", label="best so far")
        pruned = [t for t in trials if t.state == TrialState.PRUNED and t.values]  # the last value they reported
        if pruned and i == 0:  # Optuna prunes single-objective studies only
            ax.plot([t.number for t in pruned], [t.values[0] for t in pruned], "x", color="tab:orange",
                    label="pruned (last reported)")
        for state, marker, color in ((TrialState.PRUNED, "x", "tab:orange"), (TrialState.FAIL, "v", "tab:gray")):
            marked = [t.number for t in trials if t.state == state and not t.values]
            if marked:  # no value to place them by: along the bottom edge
                ax.plot(marked, [0.03] * len(marked), marker, color=color, markersize=8, clip_on=False,
                        transform=ax.get_xaxis_transform(), label=state.name.lower())
        ax.set_ylabel(label(name, up))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    axes[-1].set_xlabel("trial")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_title("Optimization history")
    return to_png(fig)


def param_importances(importances: dict[str, dict[str, float]]) -> bytes:
    """One bar chart per objective, the most important parameter on top."""
    fig = Figure(layout="constrained", figsize=(7, 0.6 + 0.45 * sum(len(v) + 2 for v in importances.values())))
    axes = fig.subplots(len(importances), 1, squeeze=False)[:, 0]
    for ax, (name, values) in zip(axes, importances.items()):
        ranked = sorted(values.items(), key=lambda item: item[1])
        bars = ax.barh([param for param, _ in ranked], [value for _, value in ranked], color="tab:blue")
        ax.bar_label(bars, fmt="%.3f", fontsize="small", padding=2)
        ax.set_xlim(0, 1.1)  # importances sum to one; room for the labels
        ax.set_title(f"Importance for {name}")
    return to_png(fig)


def is_log(distribution: BaseDistribution | None) -> bool:
    return isinstance(distribution, (FloatDistribution, IntDistribution)) and distribution.log


def axis_positions(
    values: Sequence[Any], distribution: BaseDistribution | None
) -> tuple[list[float], list[tuple[float, str]]]:
    """Where each trial meets one axis, in [0, 1], and the axis's labelled ticks.

    Categories sit at even steps in the search space's order; numbers are scaled between the
    lowest and highest seen, on a log scale where the search space is log.
    """
    present = [v for v in values if v is not ABSENT]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)
    if isinstance(distribution, CategoricalDistribution) or not numeric:
        choices = list(distribution.choices) if isinstance(distribution, CategoricalDistribution) else []
        choices += [v for v in dict.fromkeys(present) if v not in choices]
        step = 1.0 / (len(choices) - 1) if len(choices) > 1 else 0.0
        spot = {i: (i * step if len(choices) > 1 else 0.5) for i in range(len(choices))}
        positions = [math.nan if v is ABSENT else spot[choices.index(v)] for v in values]
        return positions, [(spot[i], str(choice)) for i, choice in enumerate(choices)]
    log = is_log(distribution) and all(v > 0 for v in present)
    scale = math.log10 if log else float
    low, high = min(present), max(present)
    span = scale(high) - scale(low)
    positions = [math.nan if v is ABSENT else ((scale(v) - scale(low)) / span if span else 0.5) for v in values]
    ticks = [(0.0, f"{low:.3g}"), (1.0, f"{high:.3g}")] if span else [(0.5, f"{low:.3g}")]
    return positions, ticks


def parallel_coordinates(
    complete: Sequence[FrozenTrial], params: Sequence[str], names: Sequence[str], maximize: Sequence[bool]
) -> bytes:
    """One line per COMPLETE trial through every param and objective, colored by the first objective."""
    columns: list[tuple[str, list[Any], BaseDistribution | None]] = []
    for param in params:
        distribution = next((t.distributions[param] for t in complete if param in t.distributions), None)
        columns.append((param, [t.params.get(param, ABSENT) for t in complete], distribution))
    for i, (name, up) in enumerate(zip(names, maximize)):
        columns.append((label(name, up), [t.values[i] for t in complete], None))

    fig = Figure(layout="constrained", figsize=(max(6.0, 1.5 * len(columns)), 4.5))
    ax = fig.subplots()
    placed = [axis_positions(values, distribution) for _, values, distribution in columns]
    lines = list(zip(*(positions for positions, _ in placed)))
    scores = [t.values[0] for t in complete]
    norm = Normalize(min(scores), max(scores))
    cmap = "viridis" if maximize[0] else "viridis_r"  # the best trials are yellow either way
    mappable = ScalarMappable(norm=norm, cmap=cmap)
    for score, line in sorted(zip(scores, lines), key=lambda pair: pair[0] if maximize[0] else -pair[0]):
        ax.plot(range(len(columns)), line, color=mappable.to_rgba(score), alpha=0.8, linewidth=1.2)  # best last, on top
    for x, (_, ticks) in enumerate(placed):
        ax.axvline(x, color="black", linewidth=0.8)
        for y, text in ticks:
            ax.text(x + 0.03, y, text, fontsize=7, va="center")
    ax.set_xticks(range(len(columns)), [name for name, _, _ in columns], rotation=20, ha="right", fontsize=8)
    ax.set_xlim(-0.2, len(columns) - 0.6)
    ax.set_ylim(-0.05, 1.05)
    ax.set_yticks([])
    fig.colorbar(mappable, ax=ax, label=label(names[0], maximize[0]))
    ax.set_title(f"Parallel coordinates ({len(complete)} complete trials)")
    return to_png(fig)


def pareto_front(
    complete: Sequence[FrozenTrial], front: Sequence[FrozenTrial], names: Sequence[str], maximize: Sequence[bool]
) -> bytes:
    """Every pair of objectives, all COMPLETE trials in gray and the Pareto front in red."""
    pairs = list(combinations(range(len(names)), 2))
    ncols = min(3, len(pairs))
    nrows = math.ceil(len(pairs) / ncols)
    fig = Figure(layout="constrained", figsize=(5 * ncols, 4.2 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    on_front = {t.number for t in front}
    others = [t for t in complete if t.number not in on_front]
    for ax, (i, j) in zip(axes, pairs):
        ax.plot([t.values[i] for t in others], [t.values[j] for t in others], "o", color="tab:gray", alpha=0.6,
                markersize=5, label="trial")
        ax.plot([t.values[i] for t in front], [t.values[j] for t in front], "o", color="tab:red", markersize=6,
                label="Pareto front")
        if len(names) == 2:  # with two objectives the front is a staircase worth drawing
            ordered = sorted(front, key=lambda t: t.values[i])
            ax.plot([t.values[i] for t in ordered], [t.values[j] for t in ordered], color="tab:red", linewidth=1)
        for t in front:
            where = (t.values[i], t.values[j])
            ax.annotate(str(t.number), where, xytext=(3, 3), textcoords="offset points", fontsize=7)
        ax.set_xlabel(label(names[i], maximize[i]))
        ax.set_ylabel(label(names[j], maximize[j]))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes[len(pairs):]:
        ax.set_visible(False)
    fig.suptitle(f"Pareto front ({len(front)} of {len(complete)} complete trials)")
    return to_png(fig)
