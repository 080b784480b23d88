"""Training loop with early stopping, atomic checkpoints and exact resume.

Every random choice of an epoch (shuffle order, crops, augmentation, dropout, SpecAugment) is
a pure function of ``(seed, epoch)``, and checkpoints are written at epoch boundaries. A run
killed at any point and restarted with ``resume=True`` therefore repeats the interrupted epoch
exactly and ends with the same weights as an uninterrupted run (same machine, CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler
from tqdm.auto import tqdm

from atomic_io import write_json_atomic, write_text_atomic
from audio_cnn.audio_io import DecodedAudioCache, DecodeReport
from audio_cnn.augment import Compose, SpecAugment, build_augmentation
from audio_cnn.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    resolve_device,
    save_checkpoint,
)
from audio_cnn.chunks import EvenChunkDataset, RandomChunkDataset
from audio_cnn.dataset_dirs import open_dataset_dir
from audio_cnn.datasets import ClipRecord
from audio_cnn.distributed import all_sum, on_rank0, process_group, world
from audio_cnn.figures import plot_training_curves
from audio_cnn.frontend import LogMel, LogMelConfig
from audio_cnn.inference import predict_chunks
from audio_cnn.metrics import classification_metrics
from audio_cnn.model import AudioCNN, AudioCNNConfig
from audio_cnn.ownership import lock_folder

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "train",
]


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept on disk."""


# The settings every preset may change, and the values of each preset (the rest: defaults).
_PRESETS: dict[str, dict[str, Any]] = {
    # Your own data (GTZAN or a folder per class): train until the validation score stops
    # improving, within an hour; the epoch cap is only a guard. The learning rate halves on
    # validation plateaus (a cosine schedule would need the number of epochs in advance).
    "gtzan": {},
    # One-second clips (the toy task, spoken words): also until the validation score stops
    # improving, within 5 minutes (the toy task reached 0.998 test accuracy after 16 epochs,
    # about 100 s on 2 cores). No SpecAugment: short events masked out mostly add label noise
    # (measured: slower convergence). The demo pins its own fixed recipe (cosine decay over
    # 20 epochs), on which its recorded sweep was computed.
    "toy": {
        "batch_size": 64,
        "spec_augment": False,
        "patience": 8,
        "max_minutes": 5.0,
    },
}
_CHOICES = {
    "optimizer": ("adamw", "sgd"),
    "scheduler": ("cosine", "plateau", "none"),
    "short_clips": ("pad", "skip"),
}
# torch.manual_seed takes at most 64 bits; numpy's SeedSequence needs seeds >= 0.
_MAX_SEED = 2**63 - 1


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _integer_problem(name: str, value: Any, low: int, high: int | None = None) -> str | None:
    # bool is an int subclass, but {"epochs": true} is a mistake, not 1 epoch.
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{name} must be a whole number, got {_shown(value)}"
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        return f"{name} must be {bound}, got {_shown(value)}"
    return None


def _number_problem(
    name: str, value: Any, low: float, *, low_allowed: bool, below: float | None = None
) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{name} must be a number, got {_shown(value)}"
    # The settings are stored as JSON, which has no NaN or infinity; a whole number too
    # large for a float would become one.
    if isinstance(value, int) and abs(value) > sys.float_info.max:
        return f"{name} is too large, got {_shown(value)}"
    if not math.isfinite(value):
        return f"{name} must be finite, got {value}"
    if value < low or (value == low and not low_allowed):
        return f"{name} must be {'>=' if low_allowed else '>'} {low:g}, got {value}"
    if below is not None and value >= below:
        return f"{name} must be < {below:g}, got {value}"
    return None


@dataclass
class TrainConfig:
    """Settings of :func:`train` (all JSON-safe, stored in the run directory).

    Every setting is checked for type and range when the configuration is built, so bad
    settings fail before any data is read: ``ValueError`` naming each bad setting.

    Parameters
    ----------
    epochs:
        Maximum number of epochs (one random crop per training clip per epoch).
    batch_size:
        Chunks per optimisation step.
    optimizer:
        ``"adamw"`` or ``"sgd"`` (with ``momentum``).
    lr, weight_decay, momentum:
        Optimiser settings (``lr > 0``, ``weight_decay >= 0``, ``0 <= momentum < 1``).
    scheduler:
        ``"plateau"`` (halve the rate when the validation loss stalls for 2 epochs),
        ``"cosine"`` (cosine decay over ``epochs``) or ``"none"``.
    patience:
        Early stopping: stop after this many epochs without a better validation score
        (clip accuracy, ties broken by lower loss); 0 disables early stopping.
    seed:
        Seeds weights, shuffling, crops, augmentation and dropout (``0 … 2**63 - 1``).
    augmentation:
        Waveform augmentation config for :func:`audio_cnn.augment.build_augmentation`, or
        ``None`` for none.
    spec_augment:
        One time mask and one frequency mask on the training log-mels.
    short_clips:
        ``"pad"`` (zero-pad clips shorter than a chunk) or ``"skip"`` them.
    eval_chunks, eval_span_seconds:
        Validation/evaluation chunks: this many evenly spaced chunks of the first
        ``eval_span_seconds`` of each clip.
    max_minutes:
        Time budget; training stops after the epoch that exceeds it. ``None``: no budget.
    num_workers:
        DataLoader worker processes (0 loads in the main process).
    device:
        Torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``); ``None`` picks CUDA
        when available, else the CPU. Whether it is available is checked when training
        starts (see :func:`audio_cnn.checkpoint.resolve_device`).
    """

    epochs: int = 200
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-2
    momentum: float = 0.9
    scheduler: str = "plateau"
    patience: int = 10
    seed: int = 0
    augmentation: dict[str, Any] | None = None
    spec_augment: bool = True
    short_clips: str = "pad"
    eval_chunks: int = 8
    eval_span_seconds: float = 29.0
    max_minutes: float | None = 60.0
    num_workers: int = 0
    device: str | None = None

    def __post_init__(self) -> None:
        problems = [
            _integer_problem("epochs", self.epochs, 1),
            _integer_problem("batch_size", self.batch_size, 1),
            _integer_problem("patience", self.patience, 0),
            _integer_problem("seed", self.seed, 0, _MAX_SEED),
            _integer_problem("eval_chunks", self.eval_chunks, 1),
            _integer_problem("num_workers", self.num_workers, 0),
            _number_problem("lr", self.lr, 0, low_allowed=False),
            _number_problem("weight_decay", self.weight_decay, 0, low_allowed=True),
            _number_problem("momentum", self.momentum, 0, low_allowed=True, below=1),
            _number_problem("eval_span_seconds", self.eval_span_seconds, 0, low_allowed=False),
        ]
        if self.max_minutes is not None:
            problems.append(_number_problem("max_minutes", self.max_minutes, 0, low_allowed=False))
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                problems.append(
                    f"{name} must be one of {list(choices)}, got {_shown(getattr(self, name))}"
                )
        if not isinstance(self.spec_augment, bool):
            problems.append(f"spec_augment must be true or false, got {_shown(self.spec_augment)}")
        problems.append(self._augmentation_problem())
        problems.append(self._device_problem())
        failed = [problem for problem in problems if problem is not None]
        if failed:
            raise ValueError("invalid training settings: " + "; ".join(failed))
        # Whole numbers given for real-valued settings are stored as floats, so a run's
        # settings compare equal however they were written (resume checks them).
        for name in ("lr", "weight_decay", "momentum", "eval_span_seconds"):
            setattr(self, name, float(getattr(self, name)))
        if self.max_minutes is not None:
            self.max_minutes = float(self.max_minutes)

    def _augmentation_problem(self) -> str | None:
        try:
            build_augmentation(self.augmentation)
        except (TypeError, ValueError) as error:
            return f"augmentation: {error}"
        return None

    def _device_problem(self) -> str | None:
        if self.device is None:
            return None
        if not isinstance(self.device, str):
            return (
                f"device must be a device name such as 'cpu' or 'cuda', got {_shown(self.device)}"
            )
        try:
            torch.device(self.device)
        except RuntimeError:
            return f"device {self.device!r} is not a torch device; use cpu, cuda, cuda:N or mps"
        return None

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """Training defaults for a data preset, with ``overrides`` applied.

        ``"gtzan"`` (the default for GTZAN and any folder of your own): the reference
        recipe (SpecAugment on, batch 32), trained until the validation score has not
        improved for 10 epochs or for at most 60 minutes (checked after each epoch), with
        the learning rate halved on validation plateaus; 200 epochs at most.
        ``"toy"``: batch 64, 20 epochs with cosine decay, patience 8, no time budget, no
        SpecAugment. On the default toy task (2000 clips per class) 20 epochs took 104 s on
        2 CPU cores and reached 0.998 test accuracy (12 epochs: 71 s, 0.970).
        """
        if name not in _PRESETS:
            raise ValueError(f"unknown training preset {name!r}; choose one of {sorted(_PRESETS)}")
        return cls.from_dict({**_PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys and bad values are a ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(key) for key in set(data) - known)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; known: {sorted(known)}")
        return cls(**dict(data))

    def stopping_rule(self) -> str:
        """When training stops, in words (printed when training starts)."""
        if not self.patience and self.max_minutes is None:
            return f"runs all {self.epochs} epochs (no early stopping, no time budget)"
        rules = []
        if self.patience:
            rules.append(
                f"when the validation score has not improved for {self.patience} "
                f"epoch{'s' * (self.patience != 1)}"
            )
        if self.max_minutes is not None:
            rules.append(f"after the epoch that passes {self.max_minutes:g} min")
        return f"stops {', '.join(rules)}, or after {self.epochs} epochs, whichever comes first"


@dataclass
class TrainResult:
    """What :func:`train` did: run directory, epochs run, best validation metrics, history.

    ``stop_reason`` says in words why training ended (validation plateau, time budget or
    epoch cap); ``stopped_early`` is true when it was the validation plateau.
    """

    run_dir: Path
    epochs_run: int
    best_epoch: int
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    stop_reason: str = ""


def _epoch_seed(seed: int, epoch: int, *more: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, *more]).generate_state(1)[0])


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2)
    return None


def _is_better(metrics: dict[str, Any], best: dict[str, Any] | None) -> bool:
    if best is None:
        return True
    if metrics["clip_accuracy"] != best["clip_accuracy"]:
        return metrics["clip_accuracy"] > best["clip_accuracy"]
    return metrics["loss"] < best["loss"]


def _validate(
    model: AudioCNN,
    logmel: LogMel,
    dataset: EvenChunkDataset,
    class_names: list[str],
    config: TrainConfig,
    device: torch.device,
) -> dict[str, Any]:
    logits, labels, clips = predict_chunks(
        model, logmel, dataset, batch_size=4 * config.batch_size, device=device, progress=False
    )
    loss = nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels))
    metrics = classification_metrics(logits, labels, clips, class_names)
    return {
        "loss": float(loss),
        "chunk_accuracy": metrics["chunk"]["accuracy"],
        "clip_accuracy": metrics["clip"]["accuracy"],
    }


def _save_epoch(
    out_dir: Path, state: dict[str, Any], history: list[dict[str, Any]], *, improved: bool
) -> None:
    """Write an epoch's checkpoints, metrics and curves (by one process: rank 0)."""
    try:
        if improved:
            save_checkpoint(out_dir / "best.pt", state)
        save_checkpoint(out_dir / "last.pt", state)
        write_text_atomic(out_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        plot_training_curves(history, out_dir / "curves.png")
    except OSError as error:
        # Every file is replaced atomically, so the previous epoch's files are intact.
        raise OSError(
            f"cannot save epoch {state['epoch'] + 1} in {out_dir} ({error}); free disk space, "
            "then continue with --resume from the last complete checkpoint"
        ) from error


def _diverged(what: str, value: float, epoch: int, out_dir: Path, lr: float) -> str:
    return (
        f"non-finite {what} ({value}) in epoch {epoch + 1}; the last good checkpoint is kept in "
        f"{out_dir}. Lower the learning rate (now {lr}) or check the data for NaN/Inf."
    )


def train(
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    preset: str | None = None,
    config: TrainConfig | None = None,
    resume: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train an :class:`AudioCNN` on an audio folder and write a run directory.

    Training stops by the rule of ``config`` (:meth:`TrainConfig.stopping_rule`): with the
    ``gtzan`` preset, when the validation score stops improving or the time budget is used;
    with ``toy``, after its 20 epochs (or 8 without improvement). The preset, why it was
    chosen and the stopping rule are printed first (with ``progress``). The run directory is
    locked while training (:func:`~audio_cnn.ownership.lock_folder`): a second writer is
    refused.

    Launched by ``torchrun`` on several processes, it trains data-parallel
    (:mod:`audio_cnn.distributed`): every process calls it with the same arguments, trains
    on its share of each epoch's chunks and returns the same result; rank 0 alone decodes
    the audio, validates, holds the lock and writes the run directory.

    Parameters
    ----------
    data_dir:
        A synthetic dataset (``audio-cnn synth``), a GTZAN tree, or a folder with one subfolder
        per class (split lists in ``splits/`` are used when present).
    out_dir:
        Run directory: ``best.pt``, ``last.pt``, ``config.json``, ``metrics.jsonl``,
        ``curves.png``.
    preset:
        ``"toy"`` or ``"gtzan"`` (front-end and model); default inferred from the data
        (GTZAN → gtzan; otherwise the preset whose chunks fit the median clip, e.g. toy for
        the 1 s toy task and gtzan for the 3 s scenes task).
    config:
        Training settings; default ``TrainConfig.preset(preset)``.
    resume:
        Continue the run in ``out_dir`` from its last checkpoint (settings must match).
    cache_dir:
        Decoded-audio cache; default ``out_dir/cache``.
    progress:
        Show tqdm progress bars, and print the preset, the stopping rule and each epoch.

    Raises
    ------
    ValueError
        Bad data, settings that differ from the run being resumed, or a damaged checkpoint.
    FileExistsError, FileNotFoundError
        ``out_dir`` holds a run and ``resume`` is false, or holds none to resume.
    ~audio_cnn.ownership.FolderInUseError
        Another process is training into ``out_dir``.
    OSError
        A checkpoint or metrics file could not be written (e.g. a full disk); the files of
        the last complete epoch are kept, so the run can be resumed.
    TrainingDivergedError
        The loss became NaN or infinite.
    """
    # The device is checked before any data is read (a missing GPU is a one-line error).
    device = resolve_device(config.device if config is not None else None)
    with process_group(device) as device:
        return _train(
            data_dir,
            Path(out_dir),
            preset=preset,
            config=config,
            resume=resume,
            cache_dir=cache_dir,
            progress=progress,
            device=device,
        )


def _train(
    data_dir: str | os.PathLike[str],
    out_dir: Path,
    *,
    preset: str | None,
    config: TrainConfig | None,
    resume: bool,
    cache_dir: str | os.PathLike[str] | None,
    progress: bool,
    device: torch.device,
) -> TrainResult:
    """:func:`train` on this process's device, within torchrun's process group if any."""
    dataset = open_dataset_dir(data_dir)
    if preset is None:
        preset = dataset.preset
        reason = dataset.preset_reason or f"preset {preset}: the default for {dataset.kind} data"
    else:
        reason = f"preset {preset}: given explicitly"
    config = config or TrainConfig.preset(preset)

    logmel_config = LogMelConfig.preset(preset)
    model_config = AudioCNNConfig.preset(
        preset,
        n_classes=len(dataset.class_names),
        input_shape=(logmel_config.n_mels, logmel_config.n_frames),
    )
    run_settings = {
        "data_dir": str(Path(data_dir).resolve()),
        "preset": preset,
        "train": config.to_dict(),
        "model_config": model_config.to_dict(),
        "logmel_config": logmel_config.to_dict(),
        "class_names": dataset.class_names,
    }
    augment = build_augmentation(config.augmentation, sample_rate=logmel_config.sample_rate)

    last_path = out_dir / "last.pt"
    # Rank 0's checkpoint stays here (broadcasting it would pickle every weight): the other
    # ranks read the file themselves.
    opened: list[dict[str, Any] | None] = [None]
    with contextlib.ExitStack() as held:

        def open_run() -> None:
            """Check and lock the run directory (rank 0 only: one writer per run)."""
            if resume and not last_path.is_file():
                raise FileNotFoundError(f"cannot resume: {last_path} does not exist")
            held.enter_context(lock_folder(out_dir, what="run", hint="or write to another --out"))
            checkpoint = None
            if resume:
                checkpoint = load_checkpoint(last_path)
                stored = checkpoint.get("run_settings", {})
                differing = sorted(
                    k for k in run_settings if k != "data_dir" and stored.get(k) != run_settings[k]
                )
                if differing:
                    raise ValueError(
                        f"cannot resume {out_dir}: settings differ from the stored run in "
                        f"{differing}; use the same flags (or a new --out)"
                    )
            elif last_path.exists():
                raise FileExistsError(
                    f"{out_dir} already holds a training run; pass resume=True (--resume) to "
                    "continue it or choose another output directory"
                )
            # Always said: a preset chosen from the data must never be a silent choice.
            tqdm.write(f"{reason}\ntraining {config.stopping_rule()}")
            write_json_atomic(out_dir / "config.json", run_settings)
            opened[0] = checkpoint

        on_rank0(open_run, "opening the run directory")
        rank = world()[0]
        checkpoint = opened[0]
        if rank != 0 and resume:
            # Checked by rank 0; every rank resumes from the same checkpoint.
            checkpoint = load_checkpoint(last_path)
        return _train_locked(
            dataset.splits,
            dataset.class_names,
            out_dir,
            config=config,
            logmel_config=logmel_config,
            model_config=model_config,
            run_settings=run_settings,
            checkpoint=checkpoint,
            augment=augment,
            device=device,
            cache_dir=Path(cache_dir) if cache_dir else out_dir / "cache",
            progress=progress and rank == 0,
        )


def _train_locked(
    splits: Mapping[str, list[ClipRecord]],
    class_names: list[str],
    out_dir: Path,
    *,
    config: TrainConfig,
    logmel_config: LogMelConfig,
    model_config: AudioCNNConfig,
    run_settings: dict[str, Any],
    checkpoint: dict[str, Any] | None,
    augment: Compose | None,
    device: torch.device,
    cache_dir: Path,
    progress: bool,
) -> TrainResult:
    """The training loop of :func:`train`, run while it holds the run directory.

    Under torchrun every rank runs it: rank 0 alone fills the cache, validates and writes the
    run directory, and gives its results to the others (:func:`~audio_cnn.distributed.on_rank0`),
    so that every rank takes the same decisions; each rank trains on its share of every epoch's
    chunks, and DistributedDataParallel keeps their weights identical.
    """
    rank, world_size = world()
    cache = DecodedAudioCache(cache_dir, logmel_config.sample_rate)

    def prepare() -> DecodeReport:
        # One rank decodes while the others wait, so no two processes write the same entry;
        # the others then read the entries it wrote.
        report = cache.prepare(
            [clip.path for clips in splits.values() for clip in clips], progress=progress
        )
        # prepare() has warned about each kind of bad clip; the run keeps the counts and reasons.
        write_json_atomic(out_dir / "data_report.json", report.to_dict())
        return report

    report = on_rank0(prepare, "decoding the audio")
    splits = {
        name: [clip for clip in clips if clip.path not in report.failed]
        for name, clips in splits.items()
    }
    if not splits["train"] or not splits["val"]:
        raise ValueError(
            f"{run_settings['data_dir']}: the train and validation splits must not be empty"
        )

    train_set = RandomChunkDataset(
        splits["train"],
        cache,
        logmel_config.chunk_samples,
        seed=config.seed,
        short=config.short_clips,
        waveform_transform=augment,
    )
    val_set = EvenChunkDataset(
        splits["val"],
        cache,
        logmel_config.chunk_samples,
        n_chunks=config.eval_chunks,
        span_seconds=config.eval_span_seconds,
        sample_rate=logmel_config.sample_rate,
        short=config.short_clips,
    )

    if progress:
        tqdm.write(f"training chunks: {train_set.summary}\nvalidation chunks: {val_set.summary}")

    # The same seed on every rank: every rank starts from the same weights.
    torch.manual_seed(config.seed)
    model = AudioCNN(model_config).to(device)
    logmel = LogMel(logmel_config).to(device)
    # The reference masks (≤ 40 frames, ≤ 20 bands of a 128×128 input), scaled to the input.
    spec_augment = (
        SpecAugment(
            max_time=max(1, round(40 * logmel_config.n_frames / 128)),
            max_freq=max(1, round(20 * logmel_config.n_mels / 128)),
            floor=logmel.floor,
        )
        if config.spec_augment
        else None
    )
    optimizer = _make_optimizer(model, config)
    scheduler = _make_scheduler(optimizer, config)

    start_epoch, history, best, best_epoch, stale = 0, [], None, -1, 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model_state"])
        optimizer.load_state_dict(checkpoint["optimizer_state"])
        if scheduler is not None:
            scheduler.load_state_dict(checkpoint["scheduler_state"])
        start_epoch = checkpoint["epoch"] + 1
        history = json.loads(checkpoint["history_json"])
        best = json.loads(checkpoint["best_json"])
        best_epoch, stale = checkpoint["best_epoch"], checkpoint["stale_epochs"]
    # Averages the gradients of the ranks' shares in every step (and checks at the start that
    # every rank holds rank 0's weights). Validation and checkpoints use the bare model.
    network: nn.Module = (
        DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        if world_size > 1
        else model
    )

    started = time.monotonic()
    stop_reason = f"all {config.epochs} epochs are done"
    for epoch in range(start_epoch, config.epochs):
        if config.patience and stale >= config.patience:
            stop_reason = (
                f"the validation score has not improved for {stale} epoch{'s' * (stale != 1)}"
            )
            break
        epoch_seed = _epoch_seed(config.seed, epoch)
        # Dropout and SpecAugment masks differ between ranks (they see different chunks); on
        # one process they are those of the epoch seed.
        local_seed = epoch_seed if world_size == 1 else _epoch_seed(config.seed, epoch, rank)
        torch.manual_seed(local_seed)  # dropout masks
        train_set.set_epoch(epoch)
        sampler: Sampler[int]
        if world_size == 1:
            sampler = RandomSampler(train_set, generator=torch.Generator().manual_seed(epoch_seed))
        else:
            # Every rank draws the epoch's order from the epoch seed and takes its share; the
            # shares have one length (padded with repeats), so all ranks run as many steps.
            sampler = DistributedSampler(train_set, seed=epoch_seed)
        loader = DataLoader(
            train_set,
            batch_size=config.batch_size,
            sampler=sampler,
            num_workers=config.num_workers,
            generator=torch.Generator().manual_seed(epoch_seed),
            drop_last=len(sampler) > config.batch_size,
        )
        mask_rng = torch.Generator(device=device).manual_seed(local_seed)
        network.train()
        total_loss, total_correct, total_seen = 0.0, 0, 0
        bar = tqdm(
            loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False
        )
        for waveforms, labels in bar:
            waveforms, labels = waveforms.to(device), labels.to(device)
            inputs = logmel(waveforms)
            if spec_augment is not None:
                inputs = spec_augment(inputs, generator=mask_rng)
            logits = network(inputs)
            loss = nn.functional.cross_entropy(logits, labels)
            # The sum over ranks is non-finite on every rank when it is on one: all stop.
            (checked,) = all_sum([loss.item()], device)
            if not math.isfinite(checked):
                raise TrainingDivergedError(
                    _diverged("training loss", checked, epoch, out_dir, config.lr)
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(labels)
            total_correct += int((logits.argmax(1) == labels).sum())
            total_seen += len(labels)
            bar.set_postfix(loss=f"{total_loss / total_seen:.3f}")

        model.eval()
        # Rank 0 scores the whole validation split and every rank takes its metrics, so all
        # take the same scheduler, best-epoch and early-stopping decisions.
        val = on_rank0(
            lambda: _validate(model, logmel, val_set, class_names, config, device), "validation"
        )
        total_loss, total_correct, total_seen = all_sum(
            [total_loss, total_correct, total_seen], device
        )
        if not math.isfinite(val["loss"]):
            # The last step broke the weights: saving them would replace the good checkpoint.
            raise TrainingDivergedError(
                _diverged("validation loss", val["loss"], epoch, out_dir, config.lr)
            )
        if scheduler is not None:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(val["loss"])
            else:
                scheduler.step()
        record = {
            "epoch": epoch + 1,
            "train_loss": total_loss / total_seen,
            "train_accuracy": total_correct / total_seen,
            "val_loss": val["loss"],
            "val_chunk_accuracy": val["chunk_accuracy"],
            "val_clip_accuracy": val["clip_accuracy"],
            "lr": optimizer.param_groups[0]["lr"],
        }
        history.append(record)
        improved = _is_better(val, best)
        if improved:
            best, best_epoch, stale = val, epoch + 1, 0
        else:
            stale += 1

        state = {
            "format": CHECKPOINT_FORMAT,
            "model_config": model_config.to_dict(),
            "logmel_config": logmel_config.to_dict(),
            "class_names": list(class_names),
            "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer_state": optimizer.state_dict(),
            "scheduler_state": scheduler.state_dict() if scheduler is not None else {},
            "epoch": epoch,
            "best_epoch": best_epoch,
            "stale_epochs": stale,
            # JSON strings keep nested floats/None loadable with weights_only=True.
            "history_json": json.dumps(history),
            "best_json": json.dumps(best),
            "run_settings": run_settings,
        }
        on_rank0(
            functools.partial(_save_epoch, out_dir, state, history, improved=improved),
            f"saving epoch {epoch + 1}",
        )
        if progress:
            tqdm.write(
                f"epoch {epoch + 1}: train loss {record['train_loss']:.4f} "
                f"acc {record['train_accuracy']:.3f} | val loss {val['loss']:.4f} "
                f"clip acc {val['clip_accuracy']:.3f}{' *' if improved else ''}"
            )
        # Rank 0's clock decides, so that every rank stops after the same epoch.
        if config.max_minutes is not None and on_rank0(
            lambda: time.monotonic() - started > 60 * config.max_minutes, "checking the time"
        ):
            stop_reason = f"the time budget of {config.max_minutes:g} min is used"
            break

    if best is None:
        raise RuntimeError("training produced no validated epoch")
    stopped_early = bool(config.patience) and stale >= config.patience
    return TrainResult(out_dir, len(history), best_epoch, best, history, stopped_early, stop_reason)
