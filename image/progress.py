"""Progress of the long build steps: a quiet recorder and a rich progress bar (I/O shell).

`Progress.step(name, total)` starts a step (`total` in bytes, or None when unknown);
`advance(n)` moves the current step on. The build only reports; it never reads the display.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Self

if TYPE_CHECKING:
    from types import TracebackType

    import rich.progress


class Progress(Protocol):
    """What the build reports to."""

    def step(self, name: str, total: int | None) -> None:
        """Start a step."""

    def advance(self, amount: int) -> None:
        """Advance the current step."""


class StepLog:
    """Records the step names (tests, non-interactive runs)."""

    def __init__(self) -> None:
        """Start with no steps."""
        self.steps: list[str] = []

    def step(self, name: str, total: int | None) -> None:  # noqa: ARG002 - protocol signature
        """Record the step."""
        self.steps.append(name)

    def advance(self, amount: int) -> None:
        """Ignore progress within a step."""


class RichProgress:
    """A rich progress display on stderr: one line per step, a bar where the size is known."""

    def __init__(self) -> None:
        """Create the display (started by `with`)."""
        from rich.console import Console  # noqa: PLC0415 - keep `--help` fast
        from rich.progress import (  # noqa: PLC0415
            BarColumn,
            DownloadColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as RichBar  # noqa: PLC0415

        self._bar: rich.progress.Progress = RichBar(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TimeElapsedColumn(), console=Console(stderr=True))
        self._task: rich.progress.TaskID | None = None

    def __enter__(self) -> Self:
        """Start the display."""
        self._bar.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Finish the current step and stop the display."""
        self._finish()
        self._bar.stop()

    def _finish(self) -> None:
        if self._task is not None:
            task = self._bar.tasks[-1]
            self._bar.update(self._task, total=task.total or 1, completed=task.total or 1)

    def step(self, name: str, total: int | None) -> None:
        """Finish the previous step and start `name`."""
        self._finish()
        self._task = self._bar.add_task(name, total=total)

    def advance(self, amount: int) -> None:
        """Advance the current bar."""
        if self._task is not None:
            self._bar.advance(self._task, amount)
