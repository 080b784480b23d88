"""The ``zennit-drsa`` command: the toy demo; fit, explain, evaluate, report, sweep a run."""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from audio_cnn.command import HelpFormatter, read_settings, run_command

__all__ = ["main"]

# Flags that map one-to-one onto AnalysisConfig fields: flag name → (type, meaning).
# ``sweep`` varies the _SWEPT ones per analysis instead of taking them as flags.
_SWEPT = ("layer", "n_subspaces")
_CONFIG_FLAGS: dict[str, tuple[type, str]] = {
    "layer": (str, "module name of the layer to decompose, e.g. features.10; None: the run's "
              "4th block"),
    "n_subspaces": (int, "number of concepts K, the same for every method"),
    "subspace_dim": (int, "dimension d_k of each subspace; None: channels // K (then the "
                     "concepts span the layer and leave no residual)"),
    "n_locations": (int, "map positions per chunk whose (activation, context) pairs are fitted"),
    "fit_clips_per_class": (int, "training clips per class the subspaces are fitted on "
                            "(up to 10 chunks each); None: all"),
    "eval_clips_per_class": (int, "clips per class explained and evaluated (first chunk of each)"),
    "eval_split": (str, "split explained and evaluated: test, or val to choose settings"),
    "subset": (str, "how clips are taken: random (seeded by the first seed) or first (path "
               "order)"),
    "stratify": (str, "regex over file names whose first group names strata the random "
                 "subsets balance, e.g. '^([a-z]+)_'"),
    "composite": (str, "LRP composite: reference, or a Zennit composite name"),
    "max_iter": (int, "iteration limit of the DRSA and DSA solvers"),
    "n_restarts": (int, "random starts of the DRSA and DSA solvers"),
    "tol": (float, "relative improvement over 10 iterations below which the solvers stop"),
    "ordering": (str, "patch flipping of K concept maps: round_robin, union or positive_sum"),
    "removal": (float, "value written into removed patches; None: the front-end's log-mel floor"),
    "score": (str, "score tracked by patch flipping: logit or relu_logit"),
    "selectivity_fraction": (float, "area removed per concept by concept selectivity, in (0, 1]"),
    "min_objects": (int, "synthetic data: evaluate only clips with at least this many sound "
                    "objects"),
    "sanity_inputs": (int, "inputs the model-randomisation sanity checks run on; 0 skips them"),
    "batch_size": (int, "chunks per forward/backward pass"),
    "device": (str, "torch device, e.g. cpu or cuda:0; None: CUDA when available"),
}  # fmt: skip


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zennit-drsa",
        description=(
            "Concept explanations (DRSA) of an audio CNN: fit, explain, evaluate, report; "
            "sweep layers and K. 'zennit-drsa COMMAND --help' shows every setting."
        ),
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=text, description=text, formatter_class=HelpFormatter)

    demo = command("demo", "synthesise the toy task, train the CNN, analyse it, write a report")
    demo.add_argument("--out", type=Path, required=True, help="output directory")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data and the training")
    demo.add_argument("--clips-per-class", type=int, default=2000, help="toy clips per class")
    demo.add_argument("--epochs", type=int, default=20, help="training epochs")
    demo.add_argument(
        "--max-minutes", type=float, help="training time budget (default: none, reproducible)"
    )
    demo.add_argument(
        "--sweep",
        action="store_true",
        help="choose the layer and K from a fresh sweep on the validation split (slow) "
        "instead of the recorded one",
    )
    _add_progress(demo)

    fit = command("fit", "fit DRSA and the baselines per class for a run")
    _add_analysis_arguments(fit, "analysis directory to write")

    sweep = command("sweep", "fit, explain and evaluate at several layers and K; table and figure")
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
        step = command(name, text)
        step.add_argument("out", type=Path, help="analysis directory written by 'fit'")
        _add_progress(step)
        if name == "report":
            step.add_argument(
                "--examples-per-class",
                type=int,
                default=2,
                help="explained chunks per class shown with their concepts and sounds",
            )
            step.add_argument(
                "--prototypes-per-concept",
                type=int,
                default=4,
                help="chunks per concept in each class's prototype figure",
            )
    return parser


def _add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_analysis_arguments(
    parser: argparse.ArgumentParser, out_help: str, exclude: Sequence[str] = ()
) -> None:
    """RUN, DATA, --out and the analysis settings (all but ``exclude``) of fit and sweep."""
    from audio_concepts.config import AnalysisConfig

    defaults = AnalysisConfig()
    parser.add_argument("run", type=Path, help="run directory written by 'audio-cnn train'")
    parser.add_argument("data", type=Path, help="the audio folder the run was trained on")
    parser.add_argument("--out", type=Path, required=True, help=out_help)
    parser.add_argument(
        "--config",
        type=Path,
        help="JSON file of analysis settings (keys as the flags, with _); flags override it",
    )
    parser.add_argument(
        "--methods",
        help=f"methods compared, comma-separated (default: {','.join(defaults.methods)})",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="seeds of the random baseline and of the DRSA/DSA starts; each seeded method is "
        f"fitted once per seed (default: {' '.join(map(str, defaults.seeds))})",
    )
    parser.add_argument(
        "--patch-size",
        type=int,
        nargs=2,
        metavar=("MELS", "FRAMES"),
        help="mel bins and frames of a patch-flipping patch "
        f"(default: {' '.join(map(str, defaults.patch_size))})",
    )
    parser.add_argument(
        "--no-references",
        dest="references",
        action="store_const",
        const=False,
        help="on synthetic data, skip the reference decompositions (oracle, random, entangled) "
        "that validate the measures; nothing is then marked validated",
    )
    _add_progress(parser)
    for flag, (kind, meaning) in _CONFIG_FLAGS.items():
        if flag not in exclude:
            # default=None: an unset flag must not override the --config file.
            parser.add_argument(
                "--" + flag.replace("_", "-"),
                dest=flag,
                type=kind,
                help=f"{meaning} (default: {getattr(defaults, flag)})",
            )


def _analysis_config(args: argparse.Namespace) -> Any:
    from audio_concepts.analysis import AnalysisConfig

    # sweep has no flags for the settings it varies: getattr's default leaves them unset.
    flags = {name: getattr(args, name, None) for name in _CONFIG_FLAGS}
    if args.methods is not None:
        flags["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    flags["seeds"] = args.seeds
    flags["patch_size"] = args.patch_size
    flags["references"] = getattr(args, "references", None)
    return AnalysisConfig.from_dict(read_settings(args.config, flags, what="analysis settings"))


def _run(args: argparse.Namespace) -> int:
    """Run one command, under torchrun on every rank (see :mod:`audio_concepts.sharding`)."""
    from audio_cnn.distributed import process_group, torchrun_env

    launched = torchrun_env()
    if launched is None:
        return _command(args)
    if args.command == "demo":
        raise ValueError(
            "the demo runs on one process; under torchrun run its steps instead: audio-cnn "
            "train, then zennit-drsa fit, explain, evaluate and report (or sweep)"
        )
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with process_group(device):
        if launched[0] == 0:
            return _command(args)
        # The other ranks compute their shares and stay silent: rank 0 speaks for all.
        with contextlib.redirect_stdout(io.StringIO()):
            return _command(args)


def _command(args: argparse.Namespace) -> int:
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
