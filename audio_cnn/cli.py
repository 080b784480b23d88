"""The ``audio-cnn`` command: write a synthetic task, train, evaluate, predict."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from audio_cnn.command import HelpFormatter, read_settings, run_command

__all__ = ["main"]

_PRESETS = ("toy", "gtzan")
# Synthetic tasks of `synth` (SyntheticTask classmethods) → the preset to train them with.
_TASKS = {"toy": "toy", "scenes": "gtzan"}

# Flags that map one-to-one onto TrainConfig fields: field name → (type, help). Their default
# is None ("not given"): the preset's value, or the --config file's, applies.
_TRAIN_FLAGS: dict[str, tuple[type, str]] = {
    "epochs": (int, "most epochs to train"),
    "batch_size": (int, "chunks per optimisation step"),
    "optimizer": (str, "adamw or sgd"),
    "lr": (float, "learning rate"),
    "weight_decay": (float, "weight decay of the optimiser"),
    "scheduler": (
        str,
        "learning-rate schedule: plateau (halve it when the validation loss stalls), "
        "cosine (decay over --epochs) or none",
    ),
    "patience": (
        int,
        "stop after this many epochs without a better validation score; 0: never stop early",
    ),
    "seed": (int, "seed of the weights, shuffling, crops, augmentation and dropout"),
    "max_minutes": (float, "time budget in minutes: stop after the epoch that passes it"),
    "num_workers": (int, "data-loading worker processes (0: load in the main process)"),
    "device": (
        str,
        "torch device: cpu, cuda, cuda:N or mps (default: CUDA when available, else the CPU)",
    ),
}


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


class _HelpFormatter(HelpFormatter):
    """Also shows, for a training setting left to the preset, each preset's value."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        trained = action.dest in {*_TRAIN_FLAGS, "spec_augment"} and action.option_strings
        if trained and action.default is None and "default" not in text:
            from audio_cnn.train import TrainConfig

            values = {
                preset: _shown(getattr(TrainConfig.preset(preset), action.dest))
                for preset in _PRESETS
            }
            if len(set(values.values())) == 1:
                return f"{text} (default: {values[_PRESETS[0]]})"
            shown = ", ".join(
                f"{value} with the {preset} preset" for preset, value in values.items()
            )
            return f"{text} (default: {shown})"
        return super()._get_help_string(action)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audio-cnn",
        description="Train and evaluate the audio CNN that zennit-drsa explains.",
        formatter_class=_HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=summary, description=summary, formatter_class=_HelpFormatter
        )

    synth = command("synth", "write a synthetic task (the toy task by default) as a WAV folder")
    synth.add_argument("directory", type=Path, help="folder to write the task into")
    synth.add_argument(
        "--task",
        choices=_TASKS,
        default="toy",
        help="toy: 2 classes of 1 s clips, four objects each (train with the toy preset); "
        "scenes: 4 classes of 3 s clips, three objects each (train with --preset gtzan)",
    )
    synth.add_argument(
        "--clips-per-class",
        type=int,
        default=2000,
        help="clips per class (70 in 100 for training, 15 for validation, 15 for test)",
    )
    synth.add_argument("--seed", type=int, default=0, help="seed of the synthesis")
    synth.add_argument("--no-progress", action="store_true", help="hide the progress bars")

    train = command(
        "train",
        "train a model on an audio folder: until the validation score stops improving or "
        "the time budget is used (gtzan preset), or for the toy task's 20 epochs (toy preset)",
    )
    train.add_argument("data", type=Path, help="synthetic, GTZAN or folder-per-class dataset")
    train.add_argument("--out", type=Path, required=True, help="run directory to write (required)")
    train.add_argument(
        "--preset",
        choices=_PRESETS,
        help="front-end, model and training defaults (default: from the clips' durations, "
        "toy below 3 s and gtzan from 3 s; training says which and why)",
    )
    train.add_argument(
        "--config",
        type=Path,
        help="JSON file of training settings; flags override it (default: none)",
    )
    train.add_argument("--resume", action="store_true", help="continue a killed run in --out")
    train.add_argument(
        "--augment",
        action="store_true",
        help="augment the training clips' waveforms (the standard augmentation)",
    )
    train.add_argument(
        "--spec-augment",
        action=argparse.BooleanOptionalAction,
        help="time and frequency masks on the training log-mels",
    )
    train.add_argument("--cache-dir", type=Path, help="decoded-audio cache (default: RUN/cache)")
    train.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the progress bars and the per-epoch lines",
    )
    for name, (kind, meaning) in _TRAIN_FLAGS.items():
        train.add_argument(_flag(name), dest=name, type=kind, help=meaning)

    evaluate = command("evaluate", "score a trained run on a dataset (writes RUN/evaluation)")
    evaluate.add_argument("run", type=Path, help="run directory written by 'audio-cnn train'")
    evaluate.add_argument(
        "data",
        type=Path,
        help="dataset to score: the run's own training data, or other data with its classes",
    )
    evaluate.add_argument(
        "--split",
        choices=("train", "val", "test", "all"),
        help="clips to score (default: test for the run's own training data, all for other data)",
    )
    evaluate.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default="best",
        help="best validation score or last epoch",
    )
    evaluate.add_argument(
        "--device", help="torch device (default: CUDA when available, else the CPU)"
    )
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.add_argument("--no-progress", action="store_true", help="hide the progress bars")

    predict = command("predict", "classify audio files with a trained run")
    predict.add_argument("run", type=Path, help="run directory written by 'audio-cnn train'")
    predict.add_argument("files", type=Path, nargs="+", help="audio files to classify")
    predict.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default="best",
        help="best validation score or last epoch",
    )
    predict.add_argument("--device", help="torch device, e.g. cuda (default: the CPU)")
    predict.add_argument(
        "--json", action="store_true", help="print every class's probability as JSON"
    )
    return parser


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _train_config(args: argparse.Namespace) -> Any:
    """The training settings of ``train``, checked before the data directory is read.

    A bad value is reported with where it came from: the flag, else the ``--config`` file.
    """
    from audio_cnn.augment import DEFAULT_AUGMENTATION
    from audio_cnn.checkpoint import resolve_device
    from audio_cnn.dataset_dirs import open_dataset_dir
    from audio_cnn.train import TrainConfig

    flags = {name: getattr(args, name) for name in _TRAIN_FLAGS}
    for name, value in flags.items():
        if value is not None:
            try:
                TrainConfig.from_dict({name: value})
            except ValueError as error:
                raise ValueError(f"{_flag(name)}: {error}") from error
    flags["augmentation"] = DEFAULT_AUGMENTATION if args.augment else None
    flags["spec_augment"] = args.spec_augment
    settings = read_settings(args.config, flags, what="training settings")
    try:
        TrainConfig.from_dict(settings)
    except ValueError as error:
        # Each flag is valid on its own (checked above), so the bad setting is in the file.
        raise ValueError(f"{args.config}: {error}") from error
    try:
        resolve_device(settings.get("device"))
    except ValueError as error:
        raise ValueError(f"{'--device' if args.device else args.config}: {error}") from error
    preset = args.preset or open_dataset_dir(args.data).preset
    return TrainConfig.preset(preset, **settings)


def _run(args: argparse.Namespace) -> int:
    if args.command == "synth":
        from audio_cnn.synthetic import SyntheticTask, write_synthetic_dataset

        task = getattr(SyntheticTask, args.task)(seed=args.seed)
        root = write_synthetic_dataset(
            args.directory,
            task,
            clips_per_class=args.clips_per_class,
            progress=not args.no_progress,
        )
        print(f"wrote the {args.task} task to {root}")
        if _TASKS[args.task] != "toy":  # `train` picks the toy preset for synthetic data
            print(f"train it with: audio-cnn train {root} --preset {_TASKS[args.task]} --out RUN")
    elif args.command == "train":
        from audio_cnn.distributed import torchrun_env
        from audio_cnn.train import train

        result = train(
            args.data,
            args.out,
            preset=args.preset,
            config=_train_config(args),
            resume=args.resume,
            cache_dir=args.cache_dir,
            progress=not args.no_progress,
        )
        best = result.best_metrics
        launched = torchrun_env()
        if launched is None or launched[0] == 0:  # under torchrun, rank 0 speaks for all
            print(
                f"trained {result.epochs_run} epochs (stopped: {result.stop_reason}); best epoch "
                f"{result.best_epoch}: validation clip accuracy {best['clip_accuracy']:.4f}, "
                f"loss {best['loss']:.4f}; run in {result.run_dir}"
            )
    elif args.command == "evaluate":
        from audio_cnn.evaluate import evaluate

        metrics = evaluate(
            args.run,
            args.data,
            split=args.split,
            which=args.checkpoint,
            device=args.device,
            progress=not (args.no_progress or args.json),
        )
        if args.json:
            print(json.dumps(metrics, indent=2))
        else:
            print(
                f"{metrics['split']} split of {metrics['data_dir']}: accuracy "
                f"{metrics['accuracy']:.4f} (clips), {metrics['chunk_accuracy']:.4f} (chunks), "
                f"balanced {metrics['balanced_accuracy']:.4f}"
            )
            for name, value in metrics["per_class_accuracy"].items():
                print(f"  {name:>12}: {'n/a' if value is None else f'{value:.4f}'}")
            print(f"metrics and confusion matrices in {metrics['output_dir']}")
    elif args.command == "predict":
        from audio_cnn.inference import predict_files

        predictions = predict_files(args.run, args.files, which=args.checkpoint, device=args.device)
        if args.json:
            print(json.dumps(predictions, indent=2))
        else:
            for item in predictions:
                if item["class"] is None:
                    print(f"{item['file']}: not classified ({item['skipped']})")
                else:
                    print(f"{item['file']}: {item['class']} (p = {item['probability']:.3f})")
        skipped = [item["file"] for item in predictions if item["class"] is None]
        if skipped:
            raise ValueError(
                f"{len(skipped)} of {len(predictions)} files not classified (too short or "
                f"silent): {', '.join(skipped[:3])}{' ...' if len(skipped) > 3 else ''}"
            )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``audio-cnn``; returns the process exit status."""
    args = _build_parser().parse_args(argv)
    resume = "interrupted; resume training with --resume"
    return run_command("audio-cnn", _run, args, interrupted=resume)


if __name__ == "__main__":
    sys.exit(main())
