"""Guards around a run: refuse unusable output folders up front, never show a traceback, stop
cleanly on a signal.

Exit codes beyond the BIDS-Apps specification follow BSD ``sysexits.h``: 70 internal error
(a bug: the traceback is in a crash file), 73 an output folder cannot be written, 74 the disk
filled up during the run.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import traceback
from datetime import datetime
from pathlib import Path

from .. import __version__
from .derivatives import write_derivatives_root

EXIT_INTERNAL = 70
EXIT_CANNOT_WRITE = 73
EXIT_NO_SPACE = 74
EXIT_INTERRUPTED = 130  # the shell's convention for a process stopped by SIGINT


class OutputError(Exception):
    """An output folder that cannot be used; the message is the one line to print."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _user_hint() -> str:
    return (
        f"the app runs as uid {os.getuid()}: make the folder writable for that user "
        "(in Docker, add --user $(id -u):$(id -g) to run as yourself)"
    )


def check_writable(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and prove a file can be written in it, else OutputError."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"bids_brainage: {what} {folder} is a file, not a folder; give a "
                          "folder path (it is created if missing)", 64)  # fmt:skip
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise OutputError(f"bids_brainage: {what} {folder}: no space left on the device; "
                              "free some space first", EXIT_NO_SPACE) from None  # fmt:skip
        message = f"bids_brainage: cannot write to {what} {folder} ({err.strerror}); "
        raise OutputError(message + _user_hint(), EXIT_CANNOT_WRITE) from None


def write_crash_report(log_dir: Path, level: str, exc: BaseException) -> Path | None:
    """The full traceback in ``log_dir/crash-<time>-<level>.txt`` (a temporary folder if the
    log folder cannot be written); None if nowhere can be written.
    """
    text = (f"bids_brainage {__version__}, {level} level, {datetime.now().isoformat()}\n"
            f"command: {' '.join(sys.argv)}\n\n"
            + "".join(traceback.format_exception(exc)))  # fmt:skip
    name = f"crash-{datetime.now():%Y%m%d-%H%M%S}-{level}.txt"
    for folder in (Path(log_dir), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
            return folder / name
        except OSError:
            continue
    return None


def describe_failure(exc: BaseException, log_dir: Path, level: str) -> tuple[str, int]:
    """The one console line for an exception that escaped a level, and the exit code.

    The traceback goes to a crash file (when anywhere can still be written), never the console.
    """
    crash = write_crash_report(log_dir, level, exc)
    where = f"traceback in {crash}" if crash else "no crash file could be written"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return (f"bids_brainage: no space left on the device while writing "
                f"{exc.filename or log_dir.parent}; free some space and run again (finished "
                f"outputs are kept, unfinished ones removed; {where})", EXIT_NO_SPACE)  # fmt:skip
    if isinstance(exc, PermissionError):
        return (f"bids_brainage: permission denied writing {exc.filename}; {_user_hint()} "
                f"({where})", EXIT_CANNOT_WRITE)  # fmt:skip
    detail = str(exc).splitlines()[0] if str(exc) else ""
    return (f"bids_brainage: internal error ({type(exc).__name__}: {detail}); {where}; "
            "please report it", EXIT_INTERNAL)  # fmt:skip


def stop_cleanly_on_signals(output_dir: Path, bids_dir: Path) -> None:
    """Ctrl-C (SIGINT) and schedulers' SIGTERM stop the whole run at once.

    Nipype turns an interrupt raised inside a node into a node failure and carries on, so the
    handler does not raise: it stops the worker processes, removes this process's unfinished
    temporary files from OUTPUT_DIR (finished files were renamed into place atomically, so
    they are whole), rewrites dataset_description.json and exits with 130.
    """
    main_pid = os.getpid()

    def stop(signum, frame):
        if os.getpid() != main_pid:  # a forked worker: the main process does the cleaning
            os._exit(EXIT_INTERRUPTED)
        for child in multiprocessing.active_children():
            child.terminate()
        for partial in output_dir.rglob(f"*.{os.getpid()}.partial*"):
            if partial.is_dir():
                shutil.rmtree(partial, ignore_errors=True)  # an uncommitted group staging tree
            else:
                partial.unlink(missing_ok=True)
        write_derivatives_root(output_dir, bids_dir)
        print(
            f"bids_brainage: stopped by signal {signum}; OUTPUT_DIR holds only complete files",
            file=sys.stderr,
        )
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
