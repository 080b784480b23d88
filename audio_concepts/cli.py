"""The ``zennit-drsa`` command: the toy demo; fit, explain, evaluate, report, sweep a run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from audio_cnn.command import read_settings, run_command

__all__ = ["main"]

# Flags that map one-to-one onto AnalysisConfig fields (flag name → type).
# ``sweep`` varies these per analysis instead of taking them as flags.
_SWEPT = ("layer", "n_subspaces")
_CONFIG_FLAGS = {
    "layer": str,
    "n_subspaces": int,
    "subspace_dim": int,
    "n_locations": int,
    "fit_clips_per_class": int,
    "eval_clips_per_class": int,
    "eval_split": str,
    "composite": str,
    "max_iter": int,
    "n_restarts": int,
    "tol": float,
    "ordering": str,
    "removal": float,
    "score": str,
    "batch_size": int,
    "device": str,
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zennit-drsa",
        description=(
            "Concept explanations (DRSA) of an audio CNN: fit, explain, evaluate, report; "
            "sweep layers and K."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="synthesise the toy task, train the CNN, analyse it, write a report"
    )
    demo.add_argument("--out", type=Path, required=True, help="output directory")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--clips-per-class", type=int, default=2000)
    demo.add_argument("--epochs", type=int, default=20)
    demo.add_argument(
        "--max-minutes", type=float, help="training time budget (default: none, reproducible)"
    )
    demo.add_argument(
        "--sweep",
        action="store_true",
        help="choose the layer and K from a fresh sweep on the validation split (slow) "
        "instead of the recorded one",
    )
    demo.add_argument("--no-progress", action="store_true")

    fit = commands.add_parser("fit", help="fit DRSA and the baselines per class for a run")
    _add_analysis_arguments(fit, "analysis directory to write")

    sweep = commands.add_parser(
        "sweep", help="fit, explain and evaluate at several layers and K; table and figure"
    )
    _add_analysis_arguments(sweep, "sweep directory (one analysis per layer and K)", _SWEPT)
    sweep.add_argument(
        "--layers", nargs="+", required=True, help="layer names, e.g. features.10 features.13"
    )
    sweep.add_argument(
        "--k", dest="ks", type=int, nargs="+", required=True, help="values of K, e.g. 2 4 8 16"
    )

    for name, text in (
        ("explain", "concept heatmaps of test (or validation) chunks (after fit)"),
        ("evaluate", "patch flipping, concept recovery and accuracy (after explain)"),
        ("report", "write report.html and summary.json (after evaluate)"),
    ):
        step = commands.add_parser(name, help=text)
        step.add_argument("out", type=Path, help="analysis directory written by 'fit'")
        step.add_argument("--no-progress", action="store_true")
        if name == "report":
            step.add_argument("--examples-per-class", type=int, default=2)
            step.add_argument("--prototypes-per-concept", type=int, default=4)
    return parser


def _add_analysis_arguments(
    parser: argparse.ArgumentParser, out_help: str, exclude: Sequence[str] = ()
) -> None:
    """RUN, DATA, --out and the analysis settings (all but ``exclude``) of fit and sweep."""
    parser.add_argument("run", type=Path, help="run directory written by 'audio-cnn train'")
    parser.add_argument("data", type=Path, help="the dataset the run was trained on")
    parser.add_argument("--out", type=Path, required=True, help=out_help)
    parser.add_argument("--config", type=Path, help="JSON file of analysis settings")
    parser.add_argument("--methods", help="comma-separated, e.g. drsa,prca,dsa,random")
    parser.add_argument(
        "--seeds", type=int, nargs="+", help="seeds of the random baseline and DRSA"
    )
    parser.add_argument("--patch-size", type=int, nargs=2, metavar=("MELS", "FRAMES"))
    parser.add_argument("--no-progress", action="store_true")
    for flag, kind in _CONFIG_FLAGS.items():
        if flag not in exclude:
            parser.add_argument("--" + flag.replace("_", "-"), dest=flag, type=kind)


def _analysis_config(args: argparse.Namespace) -> Any:
    from audio_concepts.analysis import AnalysisConfig

    # sweep has no flags for the settings it varies: getattr's default leaves them unset.
    flags = {name: getattr(args, name, None) for name in _CONFIG_FLAGS}
    if args.methods is not None:
        flags["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    flags["seeds"] = args.seeds
    flags["patch_size"] = args.patch_size
    return AnalysisConfig.from_dict(read_settings(args.config, flags, what="analysis settings"))


def _run(args: argparse.Namespace) -> int:
    from audio_concepts import analysis

    progress = not args.no_progress
    if args.command == "demo":
        if args.clips_per_class < 10:
            raise ValueError(f"--clips-per-class must be at least 10, got {args.clips_per_class}")
        from audio_concepts.demo import run_demo

        run_demo(
            args.out,
            clips_per_class=args.clips_per_class,
            epochs=args.epochs,
            max_minutes=args.max_minutes,
            seed=args.seed,
            sweep=args.sweep,
            progress=progress,
        )
    elif args.command == "fit":
        config = _analysis_config(args)
        state = analysis.fit_concepts(args.run, args.data, args.out, config, progress=progress)
        print(
            f"fitted {', '.join(config.methods)} at layer {state['layer']} for "
            f"{len(state['class_names'])} classes; next: zennit-drsa explain {args.out}"
        )
    elif args.command == "sweep":
        from audio_concepts.sweep import format_sweep, sweep_concepts

        result = sweep_concepts(
            args.run,
            args.data,
            args.out,
            layers=args.layers,
            n_subspaces=args.ks,
            config=_analysis_config(args),
            progress=progress,
        )
        print(format_sweep(result))
        print(f"sweep: {args.out / 'sweep.json'}, {args.out / 'sweep.png'}")
    elif args.command == "explain":
        folder = analysis.explain_concepts(args.out, progress=progress)
        print(f"explanations in {folder}; next: zennit-drsa evaluate {args.out}")
    elif args.command == "evaluate":
        folder = analysis.evaluate_concepts(args.out, progress=progress)
        print(f"evaluation in {folder}; next: zennit-drsa report {args.out}")
    elif args.command == "report":
        summary = analysis.write_report(
            args.out,
            examples_per_class=args.examples_per_class,
            prototypes_per_concept=args.prototypes_per_concept,
            progress=progress,
        )
        print(analysis.format_summary(summary))
        print(f"report: {args.out / 'report.html'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``zennit-drsa``; returns the process exit status."""
    args = _build_parser().parse_args(argv)
    return run_command("zennit-drsa", _run, args)


if __name__ == "__main__":
    sys.exit(main())
