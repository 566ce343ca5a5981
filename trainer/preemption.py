"""Stop requests from a scheduler: SIGUSR1 to this process, or a stop file a batch script creates.

SLURM's ``--signal=B:USR1@120`` warns only the batch shell (the signal's default action would kill
``accelerate launch``); the batch script then creates ``$CODETUNE_STOP_FILE``. The loop polls
:meth:`StopRequest.requested` at step boundaries, saves a checkpoint, and the recipe exits with
:data:`EXIT_PREEMPTED` so the script knows to requeue.

A recipe watches from its first line, not from its first step: a request during model loading,
data mining or the base evaluation is honoured at the first step boundary (a checkpoint of step 1)
instead of killing the process silently. Under a launcher (``accelerate launch``, torchrun) the
kernel also sends SIGUSR1 when the launcher dies, so killing the launcher stops its workers the
same clean way instead of orphaning them.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import stat
import sys
from pathlib import Path

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again later"
STOP_FILE_ENV = "CODETUNE_STOP_FILE"


class Preempted(Exception):
    """Raised by the loop after it saved a checkpoint because a stop was requested."""

    def __init__(self, step: int, checkpoint: Path):
        super().__init__(f"stopped at step {step} on request; checkpoint {checkpoint}")
        self.step, self.checkpoint = step, checkpoint


_signalled = False  # process-wide: every StopRequest sees a signal that came before it was made


def _on_signal(signum, frame) -> None:
    global _signalled
    _signalled = True
    _reroute_broken_output()


def _reroute_broken_output() -> None:
    """Point stderr (or stdout) at the other stream if its reader is gone.

    ``accelerate launch`` tees its worker's stderr through a pipe. When the launcher dies, the
    kernel's SIGUSR1 arrives after that pipe lost its reader, and the next progress bar or log line
    would raise BrokenPipeError in the middle of the checkpoint this signal asks for.
    """
    if not hasattr(select, "poll"):
        return
    broken = [fd for fd in (1, 2) if _reader_gone(fd)]
    if len(broken) == 2:
        null = os.open(os.devnull, os.O_WRONLY)
        for fd in broken:
            os.dup2(null, fd)
        os.close(null)
    elif broken:
        os.dup2(3 - broken[0], broken[0])  # to the other stream, which still has its reader


def _reader_gone(fd: int) -> bool:
    """True for the write end of a pipe whose read end is closed (Linux and macOS report POLLERR)."""
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except OSError:
        return False


class StopRequest:
    """Watches for SIGUSR1 (also sent when a launcher parent dies) and for the file named by ``$CODETUNE_STOP_FILE``.

    Making one installs the handler (once per process); recipes make one first thing, before their
    slow imports, so that no moment of a run is left with SIGUSR1's default action (death).
    """

    def __init__(self) -> None:
        path = os.environ.get(STOP_FILE_ENV)
        self.stop_file = Path(path) if path else None
        if hasattr(signal, "SIGUSR1") and signal.getsignal(signal.SIGUSR1) is not _on_signal:
            signal.signal(signal.SIGUSR1, _on_signal)
            if _launched():
                _signal_on_parent_death(signal.SIGUSR1)

    def requested(self) -> bool:
        """True once a signal arrived or the stop file exists (this process's view only)."""
        return _signalled or (self.stop_file is not None and self.stop_file.exists())


def _launched() -> bool:
    """Started by ``accelerate launch`` or torchrun (not by a shell the user may leave on purpose)."""
    return "ACCELERATE_USE_CPU" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ


def _signal_on_parent_death(signum: int) -> None:
    """Linux: the kernel sends ``signum`` to this process when its parent exits."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signum), 0, 0, 0)
    if os.getppid() == 1:  # the parent was gone before the request took effect
        os.kill(os.getpid(), signum)
