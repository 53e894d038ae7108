"""The on-disk episode format: one ``.npz`` per episode plus a JSON index.

Arrays (T = number of env steps; ``frames[t]`` is the observation before ``actions[t]``):

==============  ==============  ==================================================================
key             dtype / shape   meaning
==============  ==============  ==================================================================
frames          uint8 [T,H,W,3] camera images, upright
actions         float32 [T,A]   executed actions (Meta-World: dx, dy, dz, gripper effort)
state           float32 [T,S]   proprio + object state (Meta-World: see ``STATE_LAYOUT``)
gripper         float32 [T]     commanded gripper state, 1 = closed, 0 = open
instruction     str             natural-language task instruction
task            str             task name (e.g. ``pick-place-v3``)
success         bool            whether the episode reached the task's success condition
seed            int64           simulator seed
camera          str             which camera took the frames (optional; old files: ``corner``)
action_repeat   int64           env steps per recorded step (optional; old files: 1)
==============  ==============  ==================================================================

Files are read with ``allow_pickle=False``: an episode file can never execute code.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INDEX_NAME = "index.json"
FORMAT_VERSION = 1

# Meta-World state vector (first 18 entries of the observation).
STATE_LAYOUT = {
    "ee_pos": slice(0, 3),
    "gripper_opening": slice(3, 4),
    "object_pos": slice(4, 7),
    "object_quat": slice(7, 11),
    "object2": slice(11, 18),
}


class EpisodeFormatError(ValueError):
    """An episode file or index is unreadable or breaks the format; the message names the file."""


@dataclass
class Episode:
    frames: np.ndarray
    actions: np.ndarray
    state: np.ndarray
    gripper: np.ndarray
    instruction: str
    task: str
    success: bool = True
    seed: int = 0
    camera: str = "corner"
    action_repeat: int = 1
    # Perturbed demos (DART): what the expert commanded before the execution noise was added.
    # ``actions`` is what ran (what the frames show); these are the behaviour-cloning labels.
    expert_actions: np.ndarray | None = None

    def __post_init__(self) -> None:
        problem = _shape_problem(self)
        if problem:
            raise EpisodeFormatError(f"episode for task {self.task!r}: {problem}")

    @property
    def length(self) -> int:
        return int(self.actions.shape[0])

    @property
    def ee_pos(self) -> np.ndarray:
        return self.state[:, STATE_LAYOUT["ee_pos"]]

    @property
    def object_pos(self) -> np.ndarray | None:
        if self.state.shape[1] < STATE_LAYOUT["object_pos"].stop:
            return None
        return self.state[:, STATE_LAYOUT["object_pos"]]


def _shape_problem(ep: Episode) -> str | None:
    f, a, s, g = ep.frames, ep.actions, ep.state, ep.gripper
    if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
        return f"frames must be uint8 [T,H,W,3], got {getattr(f, 'dtype', type(f))} {getattr(f, 'shape', '')}"
    if not isinstance(a, np.ndarray) or a.ndim != 2:
        return f"actions must be [T,A], got shape {getattr(a, 'shape', type(a))}"
    if not isinstance(s, np.ndarray) or s.ndim != 2:
        return f"state must be [T,S], got shape {getattr(s, 'shape', type(s))}"
    if not isinstance(g, np.ndarray) or g.ndim != 1:
        return f"gripper must be [T], got shape {getattr(g, 'shape', type(g))}"
    lengths = {"frames": len(f), "actions": len(a), "state": len(s), "gripper": len(g)}
    if len(set(lengths.values())) != 1:
        return f"arrays disagree on T: {lengths}"
    if len(a) == 0:
        return "episode is empty (T = 0)"
    if ep.expert_actions is not None and (not isinstance(ep.expert_actions, np.ndarray)
                                          or ep.expert_actions.shape != a.shape):
        return f"expert_actions must match actions {a.shape}, got {getattr(ep.expert_actions, 'shape', None)}"
    arrays = (("actions", a), ("state", s), ("gripper", g))
    if ep.expert_actions is not None:
        arrays += (("expert_actions", ep.expert_actions),)
    for name, arr in arrays:
        if not np.issubdtype(arr.dtype, np.floating):
            return f"{name} must be floating point, got {arr.dtype}"
        if not np.all(np.isfinite(arr)):
            return f"{name} contains NaN or Inf"
    return None


def write_episode(path: str | os.PathLike, episode: Episode) -> Path:
    """Write one episode atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
    optional = {} if episode.expert_actions is None else {"expert_actions": episode.expert_actions.astype(np.float32)}
    np.savez_compressed(
        tmp,
        frames=episode.frames,
        actions=episode.actions.astype(np.float32),
        state=episode.state.astype(np.float32),
        gripper=episode.gripper.astype(np.float32),
        instruction=np.array(episode.instruction),
        task=np.array(episode.task),
        success=np.array(bool(episode.success)),
        seed=np.array(int(episode.seed), dtype=np.int64),
        camera=np.array(episode.camera),
        action_repeat=np.array(int(episode.action_repeat), dtype=np.int64),
        **optional,
    )
    os.replace(tmp, path)
    return path


_REQUIRED = ("frames", "actions", "state", "gripper", "instruction", "task")


def read_episode(path: str | os.PathLike) -> Episode:
    """Read and validate one episode; any problem raises ``EpisodeFormatError`` naming the file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in _REQUIRED if k not in data.files]
            if missing:
                raise EpisodeFormatError(f"{path}: missing arrays {missing}")
            arrays = {k: data[k] for k in data.files}
    except EpisodeFormatError:
        raise
    except FileNotFoundError:
        raise EpisodeFormatError(f"{path}: no such episode file") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as exc:
        raise EpisodeFormatError(f"{path}: not a readable episode .npz ({exc})") from exc
    try:
        return Episode(
            frames=arrays["frames"],
            actions=arrays["actions"],
            state=arrays["state"],
            gripper=arrays["gripper"],
            instruction=str(arrays["instruction"]),
            task=str(arrays["task"]),
            success=bool(arrays.get("success", np.array(True))),
            seed=int(arrays.get("seed", np.array(0))),
            camera=str(arrays.get("camera", np.array("corner"))),
            action_repeat=int(arrays.get("action_repeat", np.array(1))),
            expert_actions=arrays.get("expert_actions"),
        )
    except EpisodeFormatError as exc:
        raise EpisodeFormatError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class IndexEntry:
    file: str
    task: str
    instruction: str
    length: int
    success: bool
    seed: int


class EpisodeStore:
    """A directory of episodes with ``index.json``. Append with :meth:`add`, read by iteration."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.entries: list[IndexEntry] = self._read_index() if (self.root / INDEX_NAME).exists() else []

    def _read_index(self) -> list[IndexEntry]:
        path = self.root / INDEX_NAME
        try:
            data = json.loads(path.read_text())
            if data.get("format_version") != FORMAT_VERSION:
                raise EpisodeFormatError(f"{path}: unsupported format_version {data.get('format_version')!r}")
            return [IndexEntry(**e) for e in data["episodes"]]
        except EpisodeFormatError:
            raise
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise EpisodeFormatError(f"{path}: not a valid episode index ({exc})") from exc

    def _write_index(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        payload = {
            "format_version": FORMAT_VERSION,
            "episodes": [e.__dict__ for e in self.entries],
        }
        tmp = self.root / f".{INDEX_NAME}.tmp"
        tmp.write_text(json.dumps(payload, indent=1))
        os.replace(tmp, self.root / INDEX_NAME)

    def add(self, episode: Episode, name: str | None = None) -> IndexEntry:
        # one flat directory: a task name with a '/' (LIBERO's "<suite>/<task>") is not a subfolder
        name = name or f"{episode.task.replace('/', '__')}_{episode.seed:06d}.npz"
        write_episode(self.root / name, episode)
        entry = IndexEntry(name, episode.task, episode.instruction, episode.length,
                           bool(episode.success), int(episode.seed))
        self.entries = [e for e in self.entries if e.file != name] + [entry]
        self._write_index()
        return entry

    def __len__(self) -> int:
        return len(self.entries)

    def paths(self) -> list[Path]:
        return [self.root / e.file for e in self.entries]

    def __iter__(self) -> Iterator[Episode]:
        for path in self.paths():
            yield read_episode(path)


def find_episode_files(root: str | os.PathLike) -> list[Path]:
    """Episode files under ``root``: from index.json files where present, else every ``*.npz``."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise EpisodeFormatError(f"{root}: no such directory")
    indexes = sorted(root.rglob(INDEX_NAME))
    if indexes:
        return [p for idx in indexes for p in EpisodeStore(idx.parent).paths()]
    return sorted(p for p in root.rglob("*.npz") if not p.name.startswith("."))


def split_holdout(paths: list[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Split episode files into (train, held-out) by a seeded permutation.

    With two or more files and a fraction above 0, at least one is held out and at least one
    kept for training; fraction 0 holds nothing out."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))
    n_hold = 0
    if len(paths) > 1 and fraction > 0:
        n_hold = min(max(round(len(paths) * fraction), 1), len(paths) - 1)
    hold = {int(i) for i in order[:n_hold]}
    return ([p for i, p in enumerate(paths) if i not in hold],
            [p for i, p in enumerate(paths) if i in hold])
