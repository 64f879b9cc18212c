"""Files that appear whole or not at all: write to a temp file beside the target, then rename.

A `StagedFiles` set is written first (temp files, fsync'ed) and published later with
`publish()` (one `os.replace` per file); `discard()` removes the temp files, and never raises
(it runs while another error is being reported). Temp names carry the run id, so files left by
a killed run are recognised and removed by the next run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

TMP_SUFFIX = ".batch-tmp"
log = logging.getLogger("vcp.batch")


def temp_path(target: Path, run_id: str) -> Path:
    return target.with_name(f".{target.name}.{run_id}{TMP_SUFFIX}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class StagedFiles:
    def __init__(self, folder: Path, run_id: str):
        self.folder = Path(folder)
        self.run_id = run_id
        self.staged: dict[Path, Path] = {}  # target -> temp

    def write(self, name: str, writer: Callable[[TextIO], object]) -> Path:
        """Write `name` into a temp file through `writer(handle)`; returns the final path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / name
        tmp = temp_path(target, self.run_id)
        self.staged[target] = tmp
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        return target

    def publish(self) -> list[Path]:
        for target, tmp in self.staged.items():
            os.replace(tmp, target)
        _fsync_dir(self.folder)
        published = list(self.staged)
        self.staged.clear()
        return published

    def discard(self) -> None:
        """Remove the temp files; one that cannot be removed is logged (the next run's
        clean-up removes it), never raised."""
        for tmp in self.staged.values():
            try:
                tmp.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("cannot remove the temp file %s: %s", tmp, exc)
        self.staged.clear()


def remove_leftovers(folder: Path, run_ids: list[str]) -> int:
    """Delete temp files of the given (dead) runs; returns how many were removed."""
    if not run_ids or not Path(folder).is_dir():
        return 0
    removed = 0
    for path in Path(folder).glob(f".*{TMP_SUFFIX}"):
        if any(path.name.endswith(f".{rid}{TMP_SUFFIX}") for rid in run_ids):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
