"""Batch runner: apply one job to many inputs, report and skip the ones that fail.

A failing input (InputError, NumericalError) is reported on one line and skipped; the others
complete. Model errors and anything unexpected stop the batch, because every later input would
fail the same way. KeyboardInterrupt stops at once: finished outputs stay, and the atomic writes
leave no partial file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import GenartError, InputError, NumericalError


@dataclass
class BatchResult:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[str, GenartError]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return max((err.exit_code for _, err in self.failed), default=0)


def run_batch(items: Iterable[tuple[str, Callable[[], Path]]], report: Callable[[str], None],
              on_written: Callable[[Path], None]) -> BatchResult:
    """Run each (label, job) pair; a job returns the path it wrote."""
    result = BatchResult()
    for label, job in items:
        try:
            path = job()
        except (InputError, NumericalError) as err:
            result.failed.append((label, err))
            report(str(err))
            continue
        result.written.append(path)
        on_written(path)
    return result
