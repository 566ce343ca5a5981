"""Stop requests from a scheduler: SIGUSR1 to this process, or a stop file a batch script creates.

SLURM's ``--signal=B:USR1@120`` warns only the batch shell (the signal's default action would kill
``accelerate launch``); the batch script then creates ``$CODETUNE_STOP_FILE``. The loop polls
:meth:`StopRequest.requested` at step boundaries, saves a checkpoint, and the recipe exits with
:data:`EXIT_PREEMPTED` so the script knows to requeue.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again later"
STOP_FILE_ENV = "CODETUNE_STOP_FILE"


class Preempted(Exception):
    """Raised by the loop after it saved a checkpoint because a stop was requested."""

    def __init__(self, step: int, checkpoint: Path):
        super().__init__(f"stopped at step {step} on request; checkpoint {checkpoint}")
        self.step, self.checkpoint = step, checkpoint


class StopRequest:
    """Watches for SIGUSR1 and for the file named by ``$CODETUNE_STOP_FILE``."""

    def __init__(self) -> None:
        self._signalled = False
        path = os.environ.get(STOP_FILE_ENV)
        self.stop_file = Path(path) if path else None
        if hasattr(signal, "SIGUSR1"):
            signal.signal(signal.SIGUSR1, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self._signalled = True

    def requested(self) -> bool:
        """True once a signal arrived or the stop file exists (this process's view only)."""
        return self._signalled or (self.stop_file is not None and self.stop_file.exists())
