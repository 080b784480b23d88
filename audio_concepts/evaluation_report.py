"""Report sections on the evaluation itself: what can be believed, and how the methods compare.

Four sections built from the summary (:func:`~audio_concepts.summary.summarize`):

* **Headline**: each validated measure, each method's mean and its paired difference
  against the baselines with the 95 % CI — the only figures the report makes claims with.
* **Which measures can be believed (meta-evaluation)**: per measure, the oracle, random and
  entangled references, the paired figures and p-values behind the verdict, and a short
  plain-language verdict.
* **Where separation is lost**: interventional against heatmap recovery.
* **Sanity checks**: model-randomisation similarities and the task-fitness check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audio_concepts.meta_evaluation import VALIDATION_ALPHA
from audio_concepts.report import MeanSem, Report

__all__ = ["add_evaluation_sections"]


def add_evaluation_sections(report: Report, summary: dict[str, Any], evaluation_dir: Path) -> None:
    """Add the headline, meta-evaluation, separation and sanity sections to ``report``."""
    measures = summary.get("measures", {})
    if not measures:
        return
    _headline(report, summary)
    _meta_evaluation(report, summary)
    _separation(report, summary)
    _sanity(report, summary, evaluation_dir)


def _headline(report: Report, summary: dict[str, Any]) -> None:
    measures = summary["measures"]
    validated = [name for name, row in measures.items() if row["validated"]]
    section = report.section("Headline: validated measures")
    if not validated:
        section.paragraph(
            "No measure is validated on this task, so this report makes no claim about which "
            "method is better: every figure below is shown for inspection only. "
            + (
                "A measure is validated when it ranks the oracle decomposition ahead of random "
                "subspaces and random ahead of (or level with) one concept holding everything, "
                f"each by a paired Wilcoxon test at p < {VALIDATION_ALPHA}."
            )
        )
        return
    section.paragraph(
        "Only measures that rank decompositions of known quality correctly on this task "
        "(oracle ahead of random, random ahead of or level with entangled; paired Wilcoxon, "
        f"p < {VALIDATION_ALPHA}) are used for claims. Each method's pooled mean ± s.e.m. over "
        "inputs (each input averaged over seeds first), and its paired difference against "
        "each baseline on the same inputs: mean, 95 % bootstrap CI and Wilcoxon p."
    )
    for name in validated:
        section.table(
            _comparison_rows(summary, name),
            caption=f"{measures[name]['label']} ({measures[name]['better']} is better): "
            f"{measures[name]['description']}",
        )
        section.paragraph(_plain_comparison(summary, name))


def _comparison_rows(summary: dict[str, Any], name: str) -> list[dict[str, Any]]:
    rows = []
    comparisons = summary.get("comparisons", {}).get(name, {})
    for method, entry in summary["methods"].items():
        means = entry.get("means", {}).get(name)
        if not means:
            continue
        row: dict[str, Any] = {
            "method": method,
            "mean ± s.e.m.": MeanSem(_nan(means["mean"]), _nan(means["sem"])),
            "inputs": means["n"],
        }
        for baseline, figures in comparisons.get(method, {}).items():
            row[f"− {baseline} [95 % CI]"] = _difference_text(figures)
            row[f"median − {baseline}"] = figures["median_difference"]
            row[f"p vs {baseline}"] = figures["p_value"]
        rows.append(row)
    return rows


def _plain_comparison(summary: dict[str, Any], name: str) -> str:
    """One sentence per method: ahead of, behind or level with each baseline."""
    words = {
        "a_ahead": "ahead of",
        "b_ahead": "behind",
        "level": "level with",
        "undecided": "not distinguishable (too few inputs) from",
    }
    sentences = []
    for method, rows in summary.get("comparisons", {}).get(name, {}).items():
        parts = [f"{words[figures['verdict']]} {baseline}" for baseline, figures in rows.items()]
        sentences.append(f"{method} is " + ", ".join(parts))
    if not sentences:
        return "No paired comparison was possible for this measure."
    return "At p < 0.05: " + "; ".join(sentences) + "."


def _meta_evaluation(report: Report, summary: dict[str, Any]) -> None:
    section = report.section(
        "Which measures can be believed (meta-evaluation)",
        "Every measure also scored decompositions of known quality, through the same code: "
        "map level — the standard heatmap split by the ground-truth object masks (oracle), "
        "the random-subspace method, and the whole standard map as one concept (entangled); "
        "layer level — oracle subspaces fitted on each sound object played alone, random "
        "subspaces of the same size, and one subspace spanning the layer. Only clips with two "
        "or more sound objects enter. A measure is validated when, paired over the same "
        f"inputs, oracle is ahead of random and random ahead of or level with entangled "
        f"(Wilcoxon, p < {VALIDATION_ALPHA}); map measures are judged at the map level, layer "
        "measures at the layer level.",
    )
    validation = summary.get("validation", {})
    if not validation:
        section.paragraph(
            "Not available: the references need synthetic data with known sound objects "
            "(and AnalysisConfig.references). Without them no measure is validated."
        )
        return
    rows = []
    for name, row in summary["measures"].items():
        entry = validation.get(name)
        if entry is None:
            continue
        for level in ("map", "layer"):
            figures = entry.get(level)
            if figures is None:
                continue
            first, second = figures["oracle_vs_random"], figures["random_vs_entangled"]
            rows.append(
                {
                    "measure": row["label"],
                    "references": level + (" (decides)" if level == entry["level"] else ""),
                    "oracle": first["mean_a"],
                    "random": first["mean_b"],
                    "entangled": None if second is None else second["mean_b"],
                    "oracle − random [95 % CI]": _difference_text(first),
                    "p": first["p_value"],
                    "random − entangled [95 % CI]": None
                    if second is None
                    else _difference_text(second),
                    "p ": None if second is None else second["p_value"],
                    "validated": "yes" if figures["validated"] else "no",
                }
            )
    if rows:
        section.table(rows, caption="Meta-evaluation: mean per reference and the paired tests")
    else:
        section.paragraph("No reference decomposition was scored, so no measure is validated.")
    for row in summary["measures"].values():
        status = "Validated" if row["validated"] else "Not validated"
        section.paragraph(f"{row['label']}: {status}. {_sentence(row['reason'])}")
    overview = {
        name: summary["references"][name]["means"]
        for name in summary.get("references", {})
        if summary["references"][name].get("means")
    }
    if overview:
        section.table(
            [
                {"reference": name, **{_label(summary, m): v["mean"] for m, v in means.items()}}
                for name, means in overview.items()
            ],
            caption="Reference decompositions: mean of every measure (eligible and other inputs)",
        )
    layer = summary.get("layer_references")
    if layer:
        section.paragraph(f"Layer references: {layer}.")


def _separation(report: Report, summary: dict[str, Any]) -> None:
    found = summary.get("separation")
    if not found:
        return
    section = report.section(
        "Where separation is lost",
        "Interventional recovery judges the subspaces alone (how each concept's layer "
        "relevance drops when one sound object is removed from the waveform); heatmap "
        "recovery judges them after the backward pass. If the subspaces separate the objects "
        "but the heatmaps do not, the separation is lost in the backward pass.",
    )
    rows = []
    for name, figures in found.items():
        rows.append(
            {
                "decomposition": name,
                "interventional": figures["mean_a"],
                "heatmap": figures["mean_b"],
                "difference [95 % CI]": _difference_text(figures),
                "p": figures["p_value"],
                "finding": {
                    "backward pass": "lost in the backward pass",
                    "heatmaps": "heatmaps separate better than the layer",
                    "neither": "no clear difference",
                }[figures["finding"]],
            }
        )
    section.table(rows, caption="Interventional minus heatmap recovery, paired per input")
    for name in ("interventional_recovery", "recovery"):
        row = summary["measures"].get(name)
        if row is not None and not row["validated"]:
            section.paragraph(
                f"Caution: {row['label']} is not validated on this task "
                f"({_sentence(row['reason'])}), so this comparison cannot say where separation "
                "is lost; it is shown for inspection only."
            )


def _sanity(report: Report, summary: dict[str, Any], evaluation_dir: Path) -> None:
    fitness, sanity = summary.get("fitness"), summary.get("sanity")
    if not fitness and not sanity:
        return
    section = report.section("Sanity checks")
    if fitness:
        section.paragraph(
            "Is the task fit for logit-based measures? Removing all of a clip's sound objects "
            "from the waveform should remove its class's evidence: the share of clips whose "
            "true-class logit falls by at least half is "
            + ", ".join(
                f"{name} {_percent(entry.get('share_passing'))}"
                for name, entry in fitness["classes"].items()
            )
            + f" (threshold {_percent(fitness.get('threshold'))} in every class): the task "
            + ("passes." if fitness["fit"] else "FAILS, so flipping measures on logits are weak.")
        )
    if sanity:
        section.paragraph(_sanity_text(sanity))
        figure = evaluation_dir / "sanity.png"
        if figure.is_file():
            section.figure(
                figure,
                "Similarity of the concept heatmaps to the original as the model's layers are "
                "randomised from the top down (and for a random other class)",
            )


def _sanity_text(sanity: dict[str, Any]) -> str:
    """The two model-randomisation verdicts in words, with their rules and figures."""
    verdict = sanity.get("cascading", {}).get("verdict") or {}
    random_class = sanity.get("random_class") or {}
    parts = [
        f"Model-randomisation checks on {sanity.get('settings', {}).get('n_inputs', '?')} "
        f"inputs ({sanity.get('method', '?')}, seed {sanity.get('seed', '?')})."
    ]
    if verdict:
        top, final = verdict.get("top", {}), verdict.get("final", {})
        parts.append(
            f"Cascading randomisation {'passes' if verdict.get('passes') else 'FAILS'}: mean "
            f"Spearman of the concept maps {_number(top.get('mean'))} after randomising the "
            f"output layer, {_number(final.get('mean'))} after randomising every layer. "
            f"Rule: {_sentence(str(verdict.get('rule', '')))}"
        )
    if random_class.get("skipped"):
        parts.append(f"Random-class check skipped: {_sentence(str(random_class.get('note')))}")
    elif random_class:
        spearman = random_class.get("concepts", {}).get("spearman", {})
        parts.append(
            f"Random-class check {'passes' if random_class.get('passes') else 'FAILS'}: mean "
            f"Spearman {_number(spearman.get('mean'))} between the maps for the true class "
            f"and for a random other class. Rule: {_sentence(str(random_class.get('rule', '')))}"
        )
    return " ".join(parts)


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _difference_text(figures: dict[str, Any]) -> str:
    low, high = figures["ci"]
    mean = figures["mean_difference"]
    if mean is None or low is None or high is None:
        return "n/a"
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def _label(summary: dict[str, Any], name: str) -> str:
    row = summary["measures"].get(name)
    return row["label"] if row else name


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f} %"


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return ""
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)
