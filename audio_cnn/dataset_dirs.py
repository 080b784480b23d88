"""Open a dataset directory of any supported layout as class names plus train/val/test clips.

The training and evaluation commands accept three layouts and tell them apart here:

* a synthetic dataset written by :func:`audio_cnn.synthetic.write_synthetic_dataset`
  (``synthetic.json`` at the root; front-end preset ``toy``);
* a GTZAN tree (``genres_original/<genre>/<genre>.000NN.wav``; preset ``gtzan``);
* any folder with one subfolder per class (split lists in ``splits/`` if present;
  preset ``gtzan``, i.e. 3 s chunks at 16 kHz).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from audio_cnn.datasets import GTZAN, GTZAN_GENRES, AudioFolder, ClipRecord

__all__ = ["DatasetDir", "open_dataset_dir"]


@dataclass(frozen=True)
class DatasetDir:
    """A dataset directory resolved to its classes and splits.

    Attributes
    ----------
    root:
        The directory given.
    kind:
        ``"synthetic"``, ``"gtzan"`` or ``"folder"``.
    preset:
        Default front-end/model preset for this kind of data (``"toy"`` or ``"gtzan"``).
    class_names:
        Class names in label order.
    splits:
        ``{"train": [...], "val": [...], "test": [...]}`` clip records, disjoint by track.
    """

    root: Path
    kind: str
    preset: str
    class_names: list[str]
    splits: dict[str, list[ClipRecord]]


def _is_gtzan(root: Path) -> bool:
    if any((root / name).is_dir() for name in ("genres_original", "genres")):
        return True
    present = {entry.name for entry in root.iterdir() if entry.is_dir()}
    return len(present & set(GTZAN_GENRES)) >= 2 and present <= set(GTZAN_GENRES) | {"splits"}


def open_dataset_dir(root: str | os.PathLike[str], *, seed: int = 0) -> DatasetDir:
    """Recognise the layout of ``root`` and return its classes and splits.

    ``seed`` only matters where splits are generated (no split lists on disk).
    Raises ``FileNotFoundError`` / ``NotADirectoryError`` naming the path when ``root`` is not
    a usable dataset directory.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(
            f"dataset directory {root} does not exist (create the toy task with "
            f"'audio-cnn synth {root}')"
        )
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is a file; expected a dataset directory")
    if (root / "synthetic.json").is_file():
        folder = AudioFolder(root)
        return DatasetDir(root, "synthetic", "toy", folder.classes, folder.splits(seed=seed))
    if _is_gtzan(root):
        gtzan = GTZAN(root, seed=seed)
        return DatasetDir(root, "gtzan", "gtzan", list(gtzan.classes), gtzan.splits())
    folder = AudioFolder(root)
    return DatasetDir(root, "folder", "gtzan", folder.classes, folder.splits(seed=seed))
