"""The ``audio-cnn`` command: synthesise the toy task, train, evaluate, predict."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from audio_cnn.command import read_settings, run_command

__all__ = ["main"]

# Flags that map one-to-one onto TrainConfig fields (flag name → field name).
_TRAIN_FLAGS = {
    "epochs": int,
    "batch_size": int,
    "optimizer": str,
    "lr": float,
    "weight_decay": float,
    "scheduler": str,
    "patience": int,
    "seed": int,
    "max_minutes": float,
    "num_workers": int,
    "device": str,
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audio-cnn",
        description="Train and evaluate the audio CNN that zennit-drsa explains.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synth = commands.add_parser("synth", help="write the synthetic toy task as a WAV folder")
    synth.add_argument("directory", type=Path)
    synth.add_argument("--clips-per-class", type=int, default=2000)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--no-progress", action="store_true")

    train = commands.add_parser("train", help="train a model on an audio folder")
    train.add_argument("data", type=Path, help="synthetic, GTZAN or folder-per-class dataset")
    train.add_argument("--out", type=Path, required=True, help="run directory to write")
    train.add_argument("--preset", choices=("toy", "gtzan"), help="default: from the data")
    train.add_argument("--config", type=Path, help="JSON file of training settings")
    train.add_argument("--resume", action="store_true", help="continue a killed run in --out")
    train.add_argument("--augment", action="store_true", help="default waveform augmentation")
    train.add_argument(
        "--spec-augment",
        action=argparse.BooleanOptionalAction,
        help="time and frequency masks on the training log-mels (default: per preset)",
    )
    train.add_argument("--cache-dir", type=Path, help="decoded-audio cache (default RUN/cache)")
    train.add_argument("--no-progress", action="store_true")
    for flag, kind in _TRAIN_FLAGS.items():
        train.add_argument("--" + flag.replace("_", "-"), dest=flag, type=kind)

    evaluate = commands.add_parser("evaluate", help="score a trained run on a split")
    evaluate.add_argument("run", type=Path)
    evaluate.add_argument("data", type=Path)
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--checkpoint", choices=("best", "last"), default="best")
    evaluate.add_argument("--device")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.add_argument("--no-progress", action="store_true")

    predict = commands.add_parser("predict", help="classify audio files with a trained run")
    predict.add_argument("run", type=Path)
    predict.add_argument("files", type=Path, nargs="+")
    predict.add_argument("--checkpoint", choices=("best", "last"), default="best")
    predict.add_argument("--device")
    predict.add_argument("--json", action="store_true")
    return parser


def _train_config(args: argparse.Namespace) -> Any:
    from audio_cnn.augment import DEFAULT_AUGMENTATION
    from audio_cnn.dataset_dirs import open_dataset_dir
    from audio_cnn.train import TrainConfig

    flags = {name: getattr(args, name) for name in _TRAIN_FLAGS}
    flags["augmentation"] = DEFAULT_AUGMENTATION if args.augment else None
    flags["spec_augment"] = args.spec_augment
    settings = read_settings(args.config, flags, what="training settings")
    TrainConfig.from_dict(settings)  # report bad settings before reading the data directory
    preset = args.preset or open_dataset_dir(args.data).preset
    return TrainConfig.preset(preset, **settings)


def _run(args: argparse.Namespace) -> int:
    if args.command == "synth":
        from audio_cnn.synthetic import SyntheticTask, write_synthetic_dataset

        root = write_synthetic_dataset(
            args.directory,
            SyntheticTask.toy(seed=args.seed),
            clips_per_class=args.clips_per_class,
            progress=not args.no_progress,
        )
        print(f"wrote the toy task to {root}")
    elif args.command == "train":
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
        print(
            f"trained {result.epochs_run} epochs; best epoch {result.best_epoch}: validation "
            f"clip accuracy {best['clip_accuracy']:.4f}, loss {best['loss']:.4f}; "
            f"run in {result.run_dir}"
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
                f"{args.split}: accuracy {metrics['accuracy']:.4f} (clips), "
                f"{metrics['chunk_accuracy']:.4f} (chunks), balanced "
                f"{metrics['balanced_accuracy']:.4f}"
            )
            for name, value in metrics["per_class_accuracy"].items():
                print(f"  {name:>12}: {'n/a' if value is None else f'{value:.4f}'}")
    elif args.command == "predict":
        from audio_cnn.inference import predict_files

        predictions = predict_files(args.run, args.files, which=args.checkpoint, device=args.device)
        if args.json:
            print(json.dumps(predictions, indent=2))
        else:
            for item in predictions:
                print(f"{item['file']}: {item['class']} (p = {item['probability']:.3f})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``audio-cnn``; returns the process exit status."""
    args = _build_parser().parse_args(argv)
    resume = "interrupted; resume training with --resume"
    return run_command("audio-cnn", _run, args, interrupted=resume)


if __name__ == "__main__":
    sys.exit(main())
