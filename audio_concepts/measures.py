"""The measures an analysis computes, what they need, and which way is better.

One table, read by the evaluate step (what to compute), the summary (validation and paired
comparisons) and the report (labels and plain-language descriptions), so that a measure is
named, oriented and described in one place.

``level`` says which reference decompositions can judge the measure (METHOD.md §5):
``"map"`` measures are computed from heatmaps, so the map-level references (the standard
heatmap split by the ground-truth masks, ``oracle``; the whole standard map as one concept,
``entangled``; random subspaces) validate them; ``"layer"`` measures are computed from the
concepts' layer relevances, which a split of heatmaps does not have, so the layer-level
references (oracle, random and entangled *subspaces*) validate them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["MEASURES", "Measure", "deletion_name"]


@dataclass(frozen=True)
class Measure:
    """One evaluation measure.

    Attributes
    ----------
    name:
        Key in ``evaluation/results.json`` and ``summary.json``.
    label:
        Short human-readable name.
    better:
        ``"lower"`` or ``"higher"``.
    level:
        ``"map"`` or ``"layer"`` (see the module).
    needs_truth:
        Whether it needs the sound objects of synthetic data.
    description:
        One plain-language sentence for the report.
    """

    name: str
    label: str
    better: Literal["lower", "higher"]
    level: Literal["map", "layer"]
    needs_truth: bool
    description: str


def deletion_name(ordering: str) -> str:
    """The measure name of disentangled deletion AUPC under ``ordering``."""
    return f"deletion_{ordering}"


MEASURES: tuple[Measure, ...] = (
    Measure(
        "recovery",
        "heatmap recovery",
        "higher",
        "map",
        True,
        "Share of each sound object's positive heatmap relevance held by the concept matched "
        "to it (1: one concept per object; chance: one concept holds everything).",
    ),
    Measure(
        "interventional_recovery",
        "interventional recovery",
        "higher",
        "layer",
        True,
        "The same matching on how much each concept's layer relevance drops when one sound "
        "object is removed from the waveform: judges the subspaces without heatmaps.",
    ),
    Measure(
        "selectivity",
        "concept selectivity",
        "higher",
        "layer",
        False,
        "Removing a concept's top patches should lower that concept's layer relevance more "
        "than the others' (own drop minus mean other drop).",
    ),
    *(
        Measure(
            deletion_name(ordering),
            f"deletion AUPC ({ordering.replace('_', ' ')})",
            "lower",
            "map",
            False,
            f"Area under the logit curve as the concepts' patches are removed "
            f"({ordering.replace('_', ' ')} order): lower means the evidence went faster.",
        )
        for ordering in ("union", "round_robin", "positive_sum")
    ),
    Measure(
        "insertion",
        "insertion AUPC",
        "higher",
        "map",
        False,
        "Area under the logit curve as the concepts' patches are put back into an emptied "
        "input, most relevant first: higher means the evidence came back faster.",
    ),
)
"""Every measure, ground-truth measures first."""
