"""Progress bars for long work (rich), silent on non-main ranks and when asked to be."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from genrep.core.distributed import is_main_process

T = TypeVar("T")


def _enabled(disable: bool) -> bool:
    return not disable and is_main_process() and os.environ.get("GENREP_NO_PROGRESS", "") != "1"


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        transient=False,
    )


class _Bar:
    def __init__(self, progress: Progress | None, task: TaskID | None):
        self._progress, self._task = progress, task

    def advance(self, n: float = 1) -> None:
        if self._progress is not None:
            assert self._task is not None
            self._progress.advance(self._task, n)

    def status(self, text: str) -> None:
        """Show a short status (e.g. the current loss) next to the bar."""
        if self._progress is not None:
            assert self._task is not None
            self._progress.update(self._task, status=text)


@contextmanager
def progress_bar(total: int | None, description: str, *, disable: bool = False) -> Iterator[_Bar]:
    """``with progress_bar(n, "train") as bar: ... bar.advance(); bar.status("loss 0.1")``."""
    if not _enabled(disable):
        yield _Bar(None, None)
        return
    with _progress() as progress:
        task = progress.add_task(description, total=total, status="")
        yield _Bar(progress, task)


def track(items: Iterable[T], description: str, *, total: int | None = None, disable: bool = False) -> Iterator[T]:
    """Iterate with a progress bar."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(total, description, disable=disable) as bar:
        for item in items:
            yield item
            bar.advance()
