"""The evaluation suite on a synthetic task: synthesise, train, analyse at chosen layers and K.

For ``--task toy`` (:meth:`audio_cnn.synthetic.SyntheticTask.toy`, 1 s clips, the ``toy``
preset) or ``--task scenes`` (:meth:`~audio_cnn.synthetic.SyntheticTask.scenes`, 3 s clips,
one chunk each of the reference ``gtzan`` preset), the script

1. writes the task's clips to ``OUT/data`` (:func:`~audio_cnn.synthetic.write_synthetic_dataset`);
2. trains the matching preset's CNN into ``OUT/run`` (:func:`audio_cnn.train.train`);
3. runs one :class:`audio_concepts.analysis.Analysis` per ``(layer, K)`` pair into
   ``OUT/analysis/<layer>_K<k>`` (fit, explain, evaluate, report; the public steps, in
   memory, the model and audio loaded once), and prints each pair's ``summary.json``: the
   table of :func:`audio_concepts.summary.format_summary`, then every further entry the
   evaluation wrote there;
4. collects the pairs' summaries in ``OUT/suite.json``.

It resumes: the data are reused (completed when interrupted), training continues from
``OUT/run/last.pt`` until it has finished once (``OUT/train_done.json``; a resumed run gets a
fresh time budget), and a pair whose ``summary.json`` holds the same settings is printed, not
computed again. Delete ``OUT/analysis/<pair>`` to recompute a pair.

Layers are convolutional block numbers (``4``: the ReLU output of the 4th block) or module
names (``features.10``). Training time is bounded by ``--max-minutes`` (checked after each
epoch) and ``--clips-per-class``. On 2 shared CPU cores, run it with ``OMP_NUM_THREADS=1``
under ``nice``.

Example::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/evaluation_suite.py --task scenes \\
        --out suite-scenes --clips-per-class 150 --max-minutes 8 --layers 3 4 5 --ks 3 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from atomic_io import read_json, write_json_atomic
from audio_cnn.model import AudioCNN
from audio_cnn.synthetic import SyntheticTask, write_synthetic_dataset
from audio_cnn.train import TrainConfig, train
from audio_concepts.analysis import Analysis
from audio_concepts.config import EVAL_SPLITS, METHODS, AnalysisConfig
from audio_concepts.summary import format_summary
from audio_concepts.workspace import Workspace

# Task → (SyntheticTask constructor, training preset, default clips per class).
TASKS = {"toy": (SyntheticTask.toy, "toy", 2000), "scenes": (SyntheticTask.scenes, "gtzan", 500)}
# Settings that change how a pair is computed, not what (a finished pair is reused across them).
_EXECUTION = ("batch_size", "device")
# summary.json entries shown by format_summary or too bulky to print.
_SHOWN = ("accuracy", "methods", "seeds", "settings", "warnings", "timings_s")
_PRINT_CHARS = 400
_DONE = "train_done.json"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    make_task, preset, default_clips = TASKS[args.task]
    clips = args.clips_per_class or default_clips
    progress = not args.no_progress
    timings: dict[str, float] = {}

    start = time.perf_counter()
    data = write_synthetic_dataset(
        out / "data", make_task(seed=args.seed), clips_per_class=clips, progress=progress
    )
    timings["synthesise"] = time.perf_counter() - start

    run = out / "run"
    training = _training(args, preset)
    done = (
        read_json(out / _DONE, what="the suite's training record")
        if (out / _DONE).is_file()
        else None
    )
    start = time.perf_counter()
    if done is not None and done.get("train") == training.to_dict():
        print(f"training: reused {run} ({done['result']})")
    else:
        result = train(
            data,
            run,
            preset=preset,
            config=training,
            resume=(run / "last.pt").is_file(),
            progress=progress,
        )
        best = result.best_metrics
        line = (
            f"{result.epochs_run} epochs (stopped: {result.stop_reason}); best epoch "
            f"{result.best_epoch}: validation clip accuracy {best['clip_accuracy']:.4f}, "
            f"loss {best['loss']:.4f}"
        )
        write_json_atomic(out / _DONE, {"train": training.to_dict(), "result": line})
        print(f"training: {line}")
        timings["train"] = time.perf_counter() - start  # only when it ran

    if args.train_only:
        print(f"data: {data}\nrun: {run}")
        return {"task": args.task, "preset": preset, "data": str(data), "run": str(run)}
    summaries = _analyse(args, run, data, timings, progress=progress)
    suite = {
        "task": args.task,
        "preset": preset,
        "clips_per_class": clips,
        "seed": args.seed,
        "train": training.to_dict(),
        "pairs": summaries,
    }
    write_json_atomic(out / "suite.json", suite)
    print(f"suite: {out / 'suite.json'}")
    return suite


def _training(args: argparse.Namespace, preset: str) -> TrainConfig:
    overrides: dict[str, Any] = {"seed": args.seed, "device": args.device}
    if args.max_minutes is not None:
        overrides["max_minutes"] = args.max_minutes
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    return TrainConfig.preset(preset, **overrides)


def _analysis_config(args: argparse.Namespace) -> AnalysisConfig:
    settings: dict[str, Any] = {
        "fit_clips_per_class": args.fit_clips_per_class,
        "eval_clips_per_class": args.eval_clips_per_class,
        "eval_split": args.eval_split,
        "methods": tuple(args.methods),
        "seeds": tuple(args.analysis_seeds),
        "device": args.device,
    }
    for item in args.setting:
        key, separator, value = item.partition("=")
        if not separator:
            raise SystemExit(f'--setting {item!r}: expected KEY=JSON, e.g. ordering="union"')
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value  # a bare string, e.g. ordering=union
    return AnalysisConfig.from_dict(AnalysisConfig().to_dict() | settings)


def _layer_name(model: AudioCNN | Any, layer: str) -> str:
    """A block number as the module name of its last ReLU; a module name as it is."""
    if layer.lstrip("-").isdigit():
        if not isinstance(model, AudioCNN):
            raise SystemExit(f"layer {layer}: block numbers need an audio_cnn model")
        return model.block_output(int(layer))
    return layer


def _analyse(
    args: argparse.Namespace,
    run: Path,
    data: Path,
    timings: dict[str, float],
    *,
    progress: bool,
) -> dict[str, Any]:
    base = _analysis_config(args)
    root = args.out / "analysis"
    first: Analysis | None = None
    summaries: dict[str, Any] = {}
    for layer in args.layers:
        for k in args.ks:
            if first is None:  # one model and one opened audio folder serve every pair
                first = Analysis.create(run, data, root, base)
            name = _layer_name(first.model.network, layer)
            config = dataclasses.replace(base, layer=name, n_subspaces=k)
            folder = root / f"{name}_K{k}"
            summary = _finished(folder, config, str(run.resolve()))
            if summary is None:
                print(f"\n== layer {name}, K = {k}: computing into {folder}")
                analysis = Analysis(first.model, first.data, Workspace(folder), config)
                analysis.fit(progress=progress)
                analysis.explain(progress=progress)
                analysis.evaluate(progress=progress)
                if args.no_report:
                    summary = {**analysis.summary(), "timings_s": dict(analysis.state.timings_s)}
                    write_json_atomic(folder / "summary.json", summary)
                else:
                    summary = analysis.report(progress=progress, timings=dict(timings))
            else:
                print(f"\n== layer {name}, K = {k}: reused {folder / 'summary.json'}")
            _print_summary(summary, args.full)
            summaries[f"{name}_K{k}"] = summary
    return summaries


def _finished(folder: Path, config: AnalysisConfig, run: str) -> dict[str, Any] | None:
    """The pair's summary when it was computed with these settings on this run, else None."""
    path = folder / "summary.json"
    if not path.is_file():
        return None
    summary = read_json(path, what="an analysis summary (delete it to recompute the pair)")
    settings = summary.get("settings", {}) if isinstance(summary, dict) else {}
    wanted = config.to_dict()
    if wanted["subspace_dim"] is None:  # the summary records the resolved d_k
        wanted.pop("subspace_dim")
    same = all(settings.get(key) == value for key, value in wanted.items() if key not in _EXECUTION)
    same_run = Path(str(settings.get("run", ""))).resolve() == Path(run)
    return summary if same and same_run else None


def _print_summary(summary: dict[str, Any], full: bool = False) -> None:
    """The summary table, then every further entry (cut at a few hundred characters)."""
    print(format_summary(summary))
    for key, value in summary.items():
        if key not in _SHOWN:
            text = json.dumps(value, default=str)
            if full or len(text) <= _PRINT_CHARS:
                print(f"{key}: {text}")
            else:
                print(f"{key}: {text[:_PRINT_CHARS]} ... ({len(text)} characters; --full)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--task", choices=tuple(TASKS), default="toy", help="synthetic task")
    parser.add_argument("--out", type=Path, required=True, help="suite folder (resumed if present)")
    parser.add_argument(
        "--clips-per-class",
        type=int,
        help="clips per class (70 %% train, 15 %% validation, 15 %% test); default: "
        + ", ".join(f"{task} {clips}" for task, (_, _, clips) in TASKS.items()),
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the training")
    parser.add_argument(
        "--max-minutes",
        type=float,
        help="training time budget in minutes (default: the preset's: toy 5, gtzan 60)",
    )
    parser.add_argument("--epochs", type=int, help="most training epochs (default: the preset's)")
    parser.add_argument(
        "--layers",
        nargs="+",
        default=["4"],
        help="block numbers (4: ReLU output of the 4th conv block) or module names",
    )
    parser.add_argument("--ks", nargs="+", type=int, default=[3], help="numbers of concepts K")
    parser.add_argument("--fit-clips-per-class", type=int, default=200)
    parser.add_argument("--eval-clips-per-class", type=int, default=40)
    parser.add_argument("--eval-split", choices=EVAL_SPLITS, default="test")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument(
        "--analysis-seeds", nargs="+", type=int, default=[0], help="seeds of the analysis"
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="any other AnalysisConfig setting, e.g. max_iter=300 or patch_size=[4,4] (repeatable)",
    )
    parser.add_argument("--device", help="torch device (default: CUDA when available, else CPU)")
    parser.add_argument(
        "--no-report",
        action="store_true",
        help="skip report.html (summary.json is still written)",
    )
    parser.add_argument("--full", action="store_true", help="print every summary entry in full")
    parser.add_argument(
        "--train-only",
        action="store_true",
        help="stop after training (to check the task, e.g. its fitness, before looking at "
        "any method's figures)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


if __name__ == "__main__":
    main()
