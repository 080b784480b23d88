"""Audio datasets: which clips exist and how they split into train/validation/test.

Two layers, each usable on its own (chunking into model inputs is :mod:`audio_cnn.chunks`):

* clip lists — :class:`AudioFolder` (one folder per class) and :class:`GTZAN` list
  :class:`ClipRecord` s (path, label, track id) without decoding anything. Folders are
  scanned the same way in both (see :class:`AudioFolder`): linked folders are never
  followed, a linked file only when it lies in the same class folder, every file counts
  once, and whatever is left out (links, duplicates, unreadable subfolders) is warned
  about;
* splits — :func:`load_split_lists` reads train/val/test lists, :func:`make_splits` and the
  GTZAN folds generate them, always stratified by class and grouped by track, so the clips
  (and chunks) of one track never land in two splits;
"""

from __future__ import annotations

import errno
import operator
import os
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from atomic_io import write_text_atomic

__all__ = [
    "AUDIO_EXTENSIONS",
    "GTZAN",
    "GTZAN_GENRES",
    "SPLIT_NAMES",
    "AudioFolder",
    "ClipRecord",
    "load_split_lists",
    "make_splits",
]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".au", ".aiff")
SPLIT_NAMES = ("train", "val", "test")
GTZAN_GENRES = (
    "pop",
    "metal",
    "disco",
    "blues",
    "reggae",
    "classical",
    "rock",
    "hiphop",
    "country",
    "jazz",
)
"""The ten GTZAN genres in the class order of the reference pipeline."""

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class ClipRecord:
    """One audio file of a dataset.

    Attributes
    ----------
    path:
        The audio file.
    label:
        Class index.
    track_id:
        The unit that must never straddle splits: every clip with the same ``track_id`` goes
        to the same split or fold (GTZAN: ``"blues.00012"``; folders: the file's path
        relative to the root without extension, ``"dog/0001"``).
    """

    path: Path
    label: int
    track_id: str


# --------------------------------------------------------------------------- clip lists


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def name_some(reasons: Mapping[Path, str], limit: int = 5) -> str:
    """``"a.wav: why; b.wav: why ... (and 3 more)"``: the first ``limit`` entries, for
    warnings and errors that must name files without flooding the terminal."""
    shown = "; ".join(f"{path}: {reason}" for path, reason in list(reasons.items())[:limit])
    return shown + (f" ... (and {len(reasons) - limit} more)" if len(reasons) > limit else "")


@dataclass
class _Scan:
    """What scanning class folders found and left out."""

    files: list[list[Path]] = field(default_factory=list)
    """Audio files of each class folder, sorted."""
    skipped: dict[Path, str] = field(default_factory=dict)
    """Links and duplicates left out, with the reason."""
    unreadable: dict[Path, str] = field(default_factory=dict)
    """Subfolders that could not be listed, with the system's reason."""


def _follow_link(link: Path, home: Path, suffixes: set[str], scan: _Scan) -> Path | None:
    """The resolved target of ``link`` when it may be followed (an audio file inside
    ``home``, the resolved class folder); otherwise ``None``, with the reason recorded in
    ``scan.skipped`` (links with a non-audio name are ignored like other non-audio files)."""
    try:
        target = link.resolve()
    except (OSError, RuntimeError):  # a loop of links
        scan.skipped[link] = "a link that cannot be resolved (a loop of links)"
        return None
    if target.is_dir():
        scan.skipped[link] = f"a link to the folder {target}; linked folders are not followed"
        return None
    if link.suffix.lower() not in suffixes:
        return None
    if not target.exists():
        scan.skipped[link] = f"a broken link (to {target})"
        return None
    if not target.is_relative_to(home):
        scan.skipped[link] = f"a link to {target}, outside its class folder"
        return None
    return target


def _scan_audio(folder: Path, suffixes: set[str], scan: _Scan) -> list[Path]:
    """Audio files below ``folder`` (recursively; hidden files and folders, linked folders,
    and links leaving ``folder`` skipped; each file once), sorted; what is left out goes
    into ``scan``.

    Raises ``OSError`` naming ``folder`` when ``folder`` itself cannot be listed.
    """
    home = folder.resolve()
    candidates: list[tuple[bool, Path, Path]] = []  # (is a link, path, resolved path)
    pending = [folder]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as listing:
                entries = list(listing)
        except OSError as error:
            if directory == folder:
                raise OSError(
                    error.errno or errno.EIO,
                    f"class folder {folder} cannot be read ({error.strerror or error}); fix its "
                    f"permissions (e.g. chmod -R u+rX '{folder}') or remove the folder",
                ) from error
            scan.unreadable[directory] = error.strerror or str(error)
            continue
        for entry in entries:
            if _is_hidden(entry.name):
                continue
            path = Path(entry.path)
            if entry.is_symlink():
                target = _follow_link(path, home, suffixes, scan)
                if target is not None:
                    candidates.append((True, path, target))
            elif entry.is_dir(follow_symlinks=False):
                pending.append(path)
            elif path.suffix.lower() in suffixes:
                # No link lies between folder and this file, so this is its resolved path.
                candidates.append((False, path, home / path.relative_to(folder)))
    first_of: dict[Path, Path] = {}
    for _, path, target in sorted(candidates):  # real files before links to them
        first = first_of.setdefault(target, path)
        if first != path:
            scan.skipped[path] = f"the same file as {first}, counted once"
    return sorted(first_of.values())


def _check_distinct(folders: Sequence[Path]) -> None:
    """Class folders must not be, or contain, one another (a linked class folder could):
    their clips would carry two labels."""
    resolved = [folder.resolve() for folder in folders]
    for i, (folder, real) in enumerate(zip(folders, resolved, strict=True)):
        for other, other_real in zip(folders[i + 1 :], resolved[i + 1 :], strict=True):
            if real.is_relative_to(other_real) or other_real.is_relative_to(real):
                raise ValueError(
                    f"class folders {folder} and {other} overlap (they resolve to {real} and "
                    f"{other_real}), so their clips would have two labels; remove the link "
                    "that makes one reach the other"
                )


def _relative(reasons: Mapping[Path, str], root: Path) -> dict[Path, str]:
    """The same entries keyed by paths relative to ``root``, for shorter messages."""
    return {path.relative_to(root): reason for path, reason in reasons.items()}


def _scan_classes(
    root: Path, folders: Sequence[Path], extensions: Sequence[str], *, allow_empty: bool
) -> _Scan:
    """Scan every class folder; warn about what is left out (stack level: the caller of the
    dataset's constructor); raise on an empty class folder unless ``allow_empty``."""
    _check_distinct(folders)
    suffixes = {extension.lower() for extension in extensions}
    scan = _Scan()
    for folder in folders:
        files = _scan_audio(folder, suffixes, scan)
        if not files and not allow_empty:
            raise _empty_class_error(folder, extensions, scan.skipped)
        scan.files.append(files)
    # Directory listings come in no particular order; reports must not depend on it.
    scan.skipped = dict(sorted(scan.skipped.items()))
    scan.unreadable = dict(sorted(scan.unreadable.items()))
    if scan.skipped:
        count = len(scan.skipped)
        names = name_some(_relative(scan.skipped, root))
        warnings.warn(
            f"left out {count} linked or duplicate {'entry' if count == 1 else 'entries'} "
            f"under {root}: {names}; links are followed only to files inside the same class "
            "folder and every file counts once; copy the files into their class folder (or "
            "link a whole class folder) to include them",
            UserWarning,
            stacklevel=3,
        )
    if scan.unreadable:
        count = len(scan.unreadable)
        names = name_some(_relative(scan.unreadable, root))
        warnings.warn(
            f"{count} {'folder' if count == 1 else 'folders'} under {root} cannot be read, so "
            f"the audio files in them are left out: {names}; fix the permissions (e.g. chmod "
            "-R u+rX) or move the files",
            UserWarning,
            stacklevel=3,
        )
    return scan


def _check_root(root: PathLike) -> Path:
    path = Path(root).absolute()
    if not path.exists():
        raise FileNotFoundError(f"dataset root {path} does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"dataset root {path} is not a directory")
    return path


def _empty_class_error(
    folder: Path, extensions: Sequence[str], skipped: Mapping[Path, str]
) -> FileNotFoundError:
    links = {path: why for path, why in skipped.items() if path.is_relative_to(folder)}
    left_out = (
        f" (left out: {name_some(links, 3)}; links are followed only to files inside the "
        "same class folder)"
        if links
        else ""
    )
    return FileNotFoundError(
        f"class folder {folder} contains no audio files ({', '.join(extensions)}){left_out}; "
        "add files, remove the folder, or pass allow_empty=True"
    )


class AudioFolder:
    """Labelled clips stored as ``root/<class>/<clip>`` (like torchvision's ImageFolder).

    Classes are the sorted names of the non-hidden subfolders of ``root``; a top-level
    ``splits/`` folder is not a class (it holds split lists, see :meth:`splits`). Clips are
    found recursively inside each class folder; hidden files and folders are ignored.

    Links and unreadable folders never change the data silently:

    * a class folder may itself be a link, but no two class folders may resolve to the same
      folder or one inside the other (``ValueError``): their clips would carry two labels;
    * links to folders inside a class folder are not followed (a link to a parent folder
      would list its files again, a link to a sibling class would relabel them);
    * a linked file is followed only when it resolves inside the same class folder, and
      every file is listed once (a real file before the links to it, then by path);
    * a subfolder that cannot be listed is left out, while a class folder that cannot be
      listed is an ``OSError`` (training without the class would change the label set).

    What is left out is listed in :attr:`skipped` and :attr:`unreadable_folders` and told in
    one warning each.

    Parameters
    ----------
    root:
        Dataset folder.
    extensions:
        File suffixes that count as audio (case-insensitive).
    allow_empty:
        Accept class folders without audio files instead of raising.

    Attributes
    ----------
    root:
        Absolute dataset folder.
    classes:
        Class names; the label of a clip indexes this list.
    class_to_idx:
        Class name to label.
    clips:
        All clips, by class, then by path.
    skipped:
        Links and duplicate files left out, with the reason.
    unreadable_folders:
        Subfolders of class folders that could not be listed, with the system's reason.

    Raises
    ------
    FileNotFoundError
        ``root`` is missing, has no class subfolders, or a class folder has no audio files.
    NotADirectoryError
        ``root`` is a file.
    ValueError
        Two class folders resolve to the same folder or one inside the other.
    OSError
        A class folder cannot be listed (e.g. no permission); the message names it.
    """

    def __init__(
        self,
        root: PathLike,
        *,
        extensions: Sequence[str] = AUDIO_EXTENSIONS,
        allow_empty: bool = False,
    ) -> None:
        self.root = _check_root(root)
        class_folders = sorted(
            entry
            for entry in self.root.iterdir()
            if entry.is_dir() and not _is_hidden(entry.name) and entry.name != "splits"
        )
        if not class_folders:
            raise FileNotFoundError(
                f"{self.root} has no class subfolders; expected one folder per class, "
                f"e.g. {self.root}/<class>/<clip>.wav"
            )
        self.classes = [folder.name for folder in class_folders]
        self.class_to_idx = {name: label for label, name in enumerate(self.classes)}
        scan = _scan_classes(self.root, class_folders, extensions, allow_empty=allow_empty)
        self.skipped, self.unreadable_folders = scan.skipped, scan.unreadable
        self.clips: list[ClipRecord] = [
            ClipRecord(path, label, path.relative_to(self.root).with_suffix("").as_posix())
            for label, files in enumerate(scan.files)
            for path in files
        ]

    def __len__(self) -> int:
        return len(self.clips)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.root)!r}: {len(self.clips)} clips, "
            f"{len(self.classes)} classes)"
        )

    def splits(
        self, fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0
    ) -> dict[str, list[ClipRecord]]:
        """Train/val/test clips: from ``root/splits/*.txt`` if present, else generated.

        Parameters
        ----------
        fractions, seed:
            Passed to :func:`make_splits` when no split lists exist; ignored otherwise.

        Returns
        -------
        dict
            ``{"train": [...], "val": [...], "test": [...]}``. With split lists, clips that
            no list names are in no split.

        Raises
        ------
        ValueError
            A list names a file that is not a clip of this dataset (wrong extension, hidden,
            outside a class folder), or the lists put one track into two splits.
        """
        lists = load_split_lists(self.root)
        if lists is None:
            return make_splits(self.clips, fractions, seed=seed)
        by_path = {clip.path: clip for clip in self.clips}
        splits = {}
        for name, paths in lists.items():
            strangers = [path for path in paths if path not in by_path]
            if strangers:
                why = self.skipped.get(strangers[0])
                raise ValueError(
                    f"{self.root / 'splits' / name}.txt lists {len(strangers)} files that are "
                    f"not clips of this dataset, e.g. {strangers[0]}"
                    f"{'' if why is None else f' ({why})'}; list only audio files inside "
                    "class folders"
                )
            splits[name] = [by_path[path] for path in paths]
        _check_disjoint_tracks(splits)
        return splits


def load_split_lists(root: PathLike) -> dict[str, list[Path]] | None:
    """Read ``root/splits/{train,val,test}.txt``.

    Each list holds paths relative to ``root``, one per line; blank lines and lines starting
    with ``#`` are ignored. ``train.txt`` is required once any list exists; a missing
    ``val.txt`` or ``test.txt`` gives an empty split.

    Parameters
    ----------
    root:
        Dataset folder.

    Returns
    -------
    dict or None
        ``{"train": [...], "val": [...], "test": [...]}`` of absolute paths in list order,
        or ``None`` when no list exists (generate splits with :func:`make_splits`).

    Raises
    ------
    FileNotFoundError
        ``train.txt`` is missing, or a listed file does not exist (file and line named).
    ValueError
        A path is absolute, or a file is listed twice (in one list or in two).
    """
    root = Path(root).absolute()
    folder = root / "splits"
    files = {name: folder / f"{name}.txt" for name in SPLIT_NAMES}
    if not any(file.is_file() for file in files.values()):
        return None
    if not files["train"].is_file():
        raise FileNotFoundError(
            f"{folder} holds split lists but no train.txt; add it or remove the folder"
        )
    lists: dict[str, list[Path]] = {}
    listed_in: dict[Path, str] = {}
    for name, file in files.items():
        lists[name] = []
        for line_number, entry in _list_entries(file):
            where = f"{file}:{line_number}"
            if Path(entry).is_absolute():
                raise ValueError(f"{where}: '{entry}' is absolute; write it relative to {root}")
            path = root / entry
            if not path.is_file():
                raise FileNotFoundError(f"{where}: listed file {path} does not exist")
            if path in listed_in:
                raise ValueError(
                    f"{where}: '{entry}' is already listed in {listed_in[path]}.txt; "
                    "every file may appear once, in one list"
                )
            listed_in[path] = name
            lists[name].append(path)
    return lists


def _list_entries(file: Path) -> list[tuple[int, str]]:
    """Non-blank, non-comment lines of a list file as ``(line number, stripped text)``."""
    if not file.is_file():
        return []
    lines = file.read_text(encoding="utf-8").splitlines()
    return [
        (number, line.strip())
        for number, line in enumerate(lines, start=1)
        if line.strip() and not line.strip().startswith("#")
    ]


def _check_disjoint_tracks(splits: Mapping[str, Sequence[ClipRecord]]) -> None:
    split_of: dict[str, str] = {}
    for name, clips in splits.items():
        for clip in clips:
            other = split_of.setdefault(clip.track_id, name)
            if other != name:
                raise ValueError(
                    f"track {clip.track_id!r} is in both {other!r} and {name!r}; a track's "
                    "clips must all be in one split"
                )


def _labels_of_tracks(clips: Sequence[ClipRecord]) -> dict[str, int]:
    """Label of every track, in first-seen order; a track must have one label."""
    labels: dict[str, int] = {}
    for clip in clips:
        label = labels.setdefault(clip.track_id, clip.label)
        if label != clip.label:
            raise ValueError(
                f"track {clip.track_id!r} has clips with labels {label} and {clip.label}; "
                "give each track one label or distinct track ids"
            )
    return labels


def _tracks_by_class(clips: Sequence[ClipRecord]) -> dict[int, list[str]]:
    """Sorted track ids of each label, labels ascending (a seed-independent starting order)."""
    by_class: dict[int, list[str]] = defaultdict(list)
    for track, label in _labels_of_tracks(clips).items():
        by_class[label].append(track)
    return {label: sorted(by_class[label]) for label in sorted(by_class)}


def _allocate(n: int, fractions: np.ndarray) -> np.ndarray:
    """Split ``n`` items by ``fractions`` (largest remainder), giving every non-zero share
    at least one item while ``n`` allows, so small classes still reach val and test."""
    exact = n * fractions
    counts = np.floor(exact).astype(int)
    by_remainder = np.argsort(counts - exact, kind="stable")
    counts[by_remainder[: n - counts.sum()]] += 1
    for k in np.flatnonzero((fractions > 0) & (counts == 0)):
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[k] += 1
    return counts


def make_splits(
    clips: Sequence[ClipRecord],
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> dict[str, list[ClipRecord]]:
    """Split clips into train/val/test, stratified by class and grouped by track.

    The tracks of each class are shuffled (``numpy.random.default_rng(seed)``) and cut by
    ``fractions`` (largest-remainder rounding; every split with a non-zero fraction gets at
    least one track of a class that has enough tracks). All clips of a track go to the same
    split, so chunks of one recording can never leak from training into evaluation.

    Parameters
    ----------
    clips:
        Clips to split; the same track must always carry the same label.
    fractions:
        Shares of ``(train, val, test)`` tracks; non-negative, summing to 1, train > 0.
    seed:
        Seed of the shuffle; the same clips and seed give the same split.

    Returns
    -------
    dict
        ``{"train": [...], "val": [...], "test": [...]}``, each in the order of ``clips``.

    Raises
    ------
    ValueError
        No clips, invalid fractions, or a track with two labels.
    """
    shares = np.asarray(fractions, dtype=float)
    if (
        shares.shape != (3,)
        or (shares < 0).any()
        or shares[0] == 0
        or not np.isclose(shares.sum(), 1.0)
    ):
        raise ValueError(
            f"fractions must be three non-negative numbers (train, val, test) summing to 1 "
            f"with train > 0, got {tuple(fractions)}"
        )
    if not clips:
        raise ValueError("cannot split an empty list of clips")
    rng = np.random.default_rng(seed)
    split_of: dict[str, int] = {}
    for tracks in _tracks_by_class(clips).values():
        bounds = np.cumsum(_allocate(len(tracks), shares))
        for rank, position in enumerate(rng.permutation(len(tracks))):
            split_of[tracks[position]] = int(np.searchsorted(bounds, rank, side="right"))
    return {
        name: [clip for clip in clips if split_of[clip.track_id] == k]
        for k, name in enumerate(SPLIT_NAMES)
    }


# --------------------------------------------------------------------------- GTZAN


def _gtzan_genre_folder(root: Path) -> Path:
    for name in ("genres_original", "genres"):
        if (root / name).is_dir():
            return root / name
    if any((root / genre).is_dir() for genre in GTZAN_GENRES):
        return root
    raise FileNotFoundError(
        f"no GTZAN genre folders found in {root}; expected {root}/genres_original/<genre>/"
        "<genre>.000NN.wav (or root pointing at genres_original itself)"
    )


def _track_of_entry(entry: str) -> str:
    """Track id of a GTZAN list entry: ``'blues/blues.00000.wav'``, ``'blues.00000.au'``
    and ``'blues.00000'`` all name track ``'blues.00000'``; a trailing label column (after
    whitespace) is ignored."""
    name = entry.split()[0].replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, suffix = name.rpartition(".")
    return stem if dot and f".{suffix.lower()}" in AUDIO_EXTENSIONS else name


class GTZAN:
    """The GTZAN genre collection with cross-validation folds or fixed split lists.

    Expects ``genres_original/<genre>/<genre>.000NN.wav`` (Kaggle) or ``genres/<genre>/
    <genre>.000NN.au`` (Marsyas); ``root`` may be the folder containing it or the genre
    folder itself. Track ids are file names without extension (``"blues.00012"``).

    Classes: when exactly the ten GTZAN genres are present they take the reference order
    :data:`GTZAN_GENRES` (pop = 0, ..., jazz = 9); otherwise the present genre folders are
    used in sorted order and a warning says so (labels then differ from the reference).

    Splits, in order of precedence:

    * ``fold_lists`` is a mapping ``{"train": file, "val": file, "test": file}`` or a
      directory holding ``train.txt`` and ``test.txt`` (``val.txt`` or ``valid.txt``
      optional): fixed splits, e.g. the artist-filtered split of Kereliuk et al. / Sturm;
    * ``fold_lists`` is a directory holding ``fold1.txt`` ... ``fold<n_folds>.txt``: those
      folds (write them with :meth:`save_folds`);
    * otherwise ``n_folds`` folds are generated: the tracks of each genre are shuffled
      (seed ``seed``) and dealt round-robin, so every fold is stratified by genre and holds
      each track exactly once.

    List entries may be written ``blues/blues.00000.wav``, ``blues.00000.wav``,
    ``blues.00000.au`` or ``blues.00000``, optionally followed by whitespace and a label.
    Listed tracks absent from disk (typically a deleted corrupt file) are skipped with a
    warning; tracks on disk that no list names belong to no split.

    Defaults: fold 1 validates, as in the reference pipeline; fold 2 is held out as test so
    that model selection (on fold 1) and the reported score use different tracks; folds
    3-5 train (60 % / 20 % / 20 %). ``test_fold=None`` reproduces the reference exactly:
    train on folds 2-5, validate on fold 1, no test split.

    Genre folders are scanned like the class folders of :class:`AudioFolder` (links,
    duplicates and unreadable folders are handled and reported the same way, see
    :attr:`skipped` and :attr:`unreadable_folders`).

    Files are only listed here, not decoded. Unreadable files (GTZAN's ``jazz.00054.wav``
    is a known one) are skipped with a warning and counted by the chunking datasets, so they
    never abort a run.

    Parameters
    ----------
    root:
        See above.
    n_folds:
        Number of folds (generated, or expected in ``fold_lists``).
    val_fold, test_fold:
        1-based fold numbers of the validation and test splits; ``test_fold=None`` gives
        an empty test split. Ignored with fixed train/val/test lists.
    fold_lists:
        See above.
    seed:
        Seed of generated folds.

    Attributes
    ----------
    root:
        The genre folder actually used.
    classes, class_to_idx, clips, skipped, unreadable_folders:
        As in :class:`AudioFolder`.
    folds:
        ``folds[k]`` are the clips of fold ``k + 1``; ``None`` with fixed split lists.
    """

    def __init__(
        self,
        root: PathLike,
        *,
        n_folds: int = 5,
        val_fold: int = 1,
        test_fold: int | None = 2,
        fold_lists: PathLike | Mapping[str, PathLike] | None = None,
        seed: int = 0,
    ) -> None:
        self.root = _gtzan_genre_folder(_check_root(root))
        self._set_classes()
        folders = [self.root / genre for genre in self.classes]
        scan = _scan_classes(self.root, folders, AUDIO_EXTENSIONS, allow_empty=False)
        self.skipped, self.unreadable_folders = scan.skipped, scan.unreadable
        self.clips: list[ClipRecord] = [
            ClipRecord(path, label, path.stem)
            for label, files in enumerate(scan.files)
            for path in files
        ]
        self._tracks: dict[str, list[ClipRecord]] = defaultdict(list)
        for clip in self.clips:
            self._tracks[clip.track_id].append(clip)
        _labels_of_tracks(self.clips)

        self.n_folds = operator.index(n_folds)
        self.folds: list[list[ClipRecord]] | None = None
        self._fixed: dict[str, list[ClipRecord]] | None = None
        if isinstance(fold_lists, Mapping):
            self._fixed = self._read_split_files(fold_lists)
        elif fold_lists is not None:
            self._read_list_folder(Path(fold_lists))
        else:
            self.folds = self._generate_folds(seed)
        if self.folds is not None:
            self._check_fold_choice(val_fold, test_fold)
        self.val_fold = val_fold
        self.test_fold = test_fold

    def _set_classes(self) -> None:
        present = sorted(
            entry.name
            for entry in self.root.iterdir()
            if entry.is_dir() and not _is_hidden(entry.name)
        )
        if set(present) == set(GTZAN_GENRES):
            self.classes = list(GTZAN_GENRES)
        else:
            self.classes = present
            warnings.warn(
                f"{self.root} holds the genre folders {present}, not the ten GTZAN genres; "
                "using them in sorted order, so class indices differ from the reference",
                UserWarning,
                stacklevel=3,
            )
        self.class_to_idx = {genre: label for label, genre in enumerate(self.classes)}

    def _check_fold_choice(self, val_fold: int, test_fold: int | None) -> None:
        folds = range(1, self.n_folds + 1)
        if val_fold not in folds or (test_fold is not None and test_fold not in folds):
            raise ValueError(
                f"val_fold={val_fold} and test_fold={test_fold} must be fold numbers in "
                f"1..{self.n_folds} (test_fold may be None)"
            )
        if val_fold == test_fold:
            raise ValueError(f"val_fold and test_fold are both {val_fold}; choose two folds")
        if self.n_folds - 1 - (test_fold is not None) < 1:
            raise ValueError(f"n_folds={self.n_folds} leaves no fold for training; use more folds")

    def _generate_folds(self, seed: int) -> list[list[ClipRecord]]:
        if self.n_folds < 2:
            raise ValueError(f"n_folds must be at least 2, got {self.n_folds}")
        rng = np.random.default_rng(seed)
        order = []
        for tracks in _tracks_by_class(self.clips).values():
            order += [tracks[i] for i in rng.permutation(len(tracks))]
        # Dealing continues across genres so fold sizes stay within one track of each other.
        fold_of = {track: position % self.n_folds for position, track in enumerate(order)}
        return [
            [clip for clip in self.clips if fold_of[clip.track_id] == k]
            for k in range(self.n_folds)
        ]

    def _read_list_folder(self, folder: Path) -> None:
        if not folder.is_dir():
            raise NotADirectoryError(f"fold_lists {folder} is not a directory")
        fold_files = sorted(folder.glob("fold*.txt"))
        if fold_files:
            expected = [folder / f"fold{k}.txt" for k in range(1, self.n_folds + 1)]
            if sorted(fold_files) != sorted(expected):
                raise ValueError(
                    f"{folder} holds {[file.name for file in fold_files]} but n_folds="
                    f"{self.n_folds} needs exactly fold1.txt ... fold{self.n_folds}.txt; "
                    "pass the matching n_folds"
                )
            named = self._read_lists({f"fold{k}": file for k, file in enumerate(expected, 1)})
            self.folds = list(named.values())
            return
        files = {name: folder / f"{name}.txt" for name in SPLIT_NAMES}
        if not files["val"].is_file():
            files["val"] = folder / "valid.txt"
        files = {name: file for name, file in files.items() if file.is_file()}
        if "train" not in files or "test" not in files:
            raise FileNotFoundError(
                f"{folder} holds neither fold1.txt ... fold{self.n_folds}.txt nor train.txt "
                "and test.txt; pass a mapping {'train': file, 'val': file, 'test': file} for "
                "other names"
            )
        self._fixed = self._read_split_files(files)

    def _read_split_files(self, files: Mapping[str, PathLike]) -> dict[str, list[ClipRecord]]:
        unknown = set(files) - set(SPLIT_NAMES)
        if unknown or "train" not in files:
            raise ValueError(
                f"split list keys must include 'train' and be among {SPLIT_NAMES}, got "
                f"{sorted(files)}"
            )
        named = self._read_lists({name: Path(files[name]) for name in files})
        return {name: named.get(name, []) for name in SPLIT_NAMES}

    def _read_lists(self, files: Mapping[str, Path]) -> dict[str, list[ClipRecord]]:
        """Clips named by each list file; disjoint across lists, unknown tracks warned about."""
        listed_in: dict[str, Path] = {}
        missing: list[str] = []
        lists: dict[str, list[ClipRecord]] = {}
        for name, file in files.items():
            if not file.is_file():
                raise FileNotFoundError(f"list file {file} does not exist")
            lists[name] = []
            for line_number, entry in _list_entries(file):
                track = _track_of_entry(entry)
                if track in listed_in:
                    raise ValueError(
                        f"{file}:{line_number}: track {track!r} is already listed in "
                        f"{listed_in[track]}; lists must be disjoint"
                    )
                listed_in[track] = file
                if track not in self._tracks:
                    missing.append(track)
                lists[name] += self._tracks.get(track, [])
        if missing:
            warnings.warn(
                f"{len(missing)} listed GTZAN tracks are not under {self.root} and are "
                f"skipped: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}",
                UserWarning,
                stacklevel=4,
            )
        return lists

    def __len__(self) -> int:
        return len(self.clips)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.root)!r}: {len(self.clips)} clips, "
            f"{len(self.classes)} genres)"
        )

    def splits(self) -> dict[str, list[ClipRecord]]:
        """Train/val/test clips from the fixed lists or from the chosen folds.

        Returns
        -------
        dict
            ``{"train": [...], "val": [...], "test": [...]}``; with folds, train is every
            fold except ``val_fold`` and ``test_fold``.
        """
        if self._fixed is not None:
            return {name: list(clips) for name, clips in self._fixed.items()}
        assert self.folds is not None
        chosen = {self.val_fold, self.test_fold}
        return {
            "train": [
                clip for k, fold in enumerate(self.folds, 1) if k not in chosen for clip in fold
            ],
            "val": list(self.folds[self.val_fold - 1]),
            "test": [] if self.test_fold is None else list(self.folds[self.test_fold - 1]),
        }

    def save_folds(self, directory: PathLike) -> list[Path]:
        """Write the folds as ``fold1.txt`` ... so they can be reused via ``fold_lists``.

        Each line is ``<genre>/<file name>``; files are written atomically.

        Returns
        -------
        list of Path
            The files written.

        Raises
        ------
        ValueError
            This instance uses fixed train/val/test lists, not folds.
        """
        if self.folds is None:
            raise ValueError("this GTZAN instance uses fixed split lists; there are no folds")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for k, fold in enumerate(self.folds, 1):
            lines = [clip.path.relative_to(self.root).as_posix() for clip in fold]
            written.append(directory / f"fold{k}.txt")
            write_text_atomic(written[-1], "".join(f"{line}\n" for line in lines))
        return written
