"""The ``jobshelf`` command: see, migrate and repair a job collection from the shell.

Installed with ``pip install "jobshelf[cli]"`` (click and rich). ``jobshelf --help`` lists the
subcommands: ``status``, ``list``, ``inspect``, ``migrate``, ``quarantine`` and ``history``.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Console-script entry point."""
    try:
        from ._commands import cli
    except ImportError as exc:  # click or rich missing
        sys.stderr.write(
            f"jobshelf: the command needs click and rich ({exc.name} is not installed): "
            'pip install "jobshelf[cli]"\n'
        )
        raise SystemExit(2) from None
    cli(prog_name="jobshelf")
