"""Find and run the ``dinogeo`` executable, relaying its JSON progress lines to QGIS.

dinogeo runs in its own Python environment (3.12, PyTorch); QGIS's Python never imports it. The
command is started with ``--progress json``: each JSON line on stderr sets the Processing
progress bar and text, every other line goes to the log. Cancelling in QGIS terminates the
process group (data-loader workers included).
"""

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading

from qgis.core import QgsProcessingException

#: Processing setting holding the path of the dinogeo executable
SETTING_EXECUTABLE = "DINOGEO_EXECUTABLE"
#: environment variable that overrides the setting (headless runs, qgis_process)
ENV_EXECUTABLE = "DINOGEO_EXECUTABLE"


def configured_executable():
    """The executable set in Processing > Options > Providers > dinogeo ('' when unset)."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig
    except ImportError:  # Processing plugin not loaded
        return ""
    return (ProcessingConfig.getSetting(SETTING_EXECUTABLE) or "").strip()


def find_executable():
    """The dinogeo executable: $DINOGEO_EXECUTABLE, the Processing setting, or the PATH.

    Raises:
        QgsProcessingException: when none is found, saying where to set it.
    """
    for candidate in (os.environ.get(ENV_EXECUTABLE, "").strip(), configured_executable()):
        if candidate:
            if os.path.isdir(candidate):  # a venv or its bin folder
                for sub in ("bin", "Scripts", ""):
                    for name in ("dinogeo", "dinogeo.exe"):
                        path = os.path.join(candidate, sub, name)
                        if os.path.isfile(path):
                            return path
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
            raise QgsProcessingException(
                f"The dinogeo executable '{candidate}' does not exist or is not executable. "
                "Fix: set Processing > Options > Providers > dinogeo > dinogeo executable to the "
                "'dinogeo' program of the environment where dinogeo is installed "
                "(e.g. /path/to/venv/bin/dinogeo)."
            )
    found = shutil.which("dinogeo")
    if found:
        return found
    raise QgsProcessingException(
        "The dinogeo executable was not found on the PATH. Fix: install dinogeo in its own "
        "Python 3.12 environment (pip install dinogeo) and set Processing > Options > "
        "Providers > dinogeo > dinogeo executable to its 'dinogeo' program, or set the "
        "DINOGEO_EXECUTABLE environment variable."
    )


def _environment():
    env = dict(os.environ)
    env["DINOGEO_PROGRESS"] = "json"
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONHOME", None)  # QGIS's own Python must not leak into dinogeo's
    return env


def _pump(stream, lines):
    for line in iter(stream.readline, ""):
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _terminate(proc):
    """Stop the process and its children (SIGTERM, then SIGKILL after 5 s)."""
    if proc.poll() is not None:
        return
    try:
        if sys.platform == "win32":
            proc.terminate()
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        if sys.platform == "win32":
            proc.kill()
        else:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()


def _relay(line, feedback):
    """Show one output line in QGIS: progress records set the bar, others go to the log."""
    text = line.strip()
    if text.startswith("{") and '"progress"' in text:
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if isinstance(record, dict) and "progress" in record:
            message = record.get("message") or ""
            eta = record.get("eta_s")
            if eta is not None:
                message += f" (about {eta:.0f} s left)"
            if record["progress"] is not None:
                feedback.setProgress(100.0 * float(record["progress"]))
            feedback.setProgressText(message)
            return
    if text:
        feedback.pushConsoleInfo(text)


def run_dinogeo(args, feedback, executable=None):
    """Run ``dinogeo --progress json ARGS...`` and relay its output to ``feedback``.

    Args:
        args: the subcommand and its arguments (strings).
        feedback: the algorithm's QgsProcessingFeedback (progress, log, cancel).
        executable: the dinogeo program (default: :func:`find_executable`).

    Returns:
        The lines the command printed that were not progress records.

    Raises:
        QgsProcessingException: dinogeo failed (its error message is included) or was cancelled.
    """
    program = executable or find_executable()
    command = [program, "--progress", "json", *[str(a) for a in args]]
    feedback.pushCommandInfo(" ".join(_quote(c) for c in command))
    popen_options = {}
    if sys.platform == "win32":
        popen_options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        popen_options["start_new_session"] = True
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
        env=_environment(),
        **popen_options,
    )
    lines = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    output = []
    done = False
    while not done:
        if feedback.isCanceled():
            _terminate(proc)
            proc.stdout.close()
            raise QgsProcessingException("dinogeo was cancelled; its partial outputs were left")
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            done = True
            continue
        _relay(line, feedback)
        if not line.startswith('{"progress"'):
            output.append(line)
    status = proc.wait()
    proc.stdout.close()
    if status != 0:
        errors = [x for x in output if "error" in x.lower()] or output[-5:]
        raise QgsProcessingException(
            f"dinogeo {args[0]} failed (exit status {status}): " + " | ".join(errors[-3:])
        )
    return output


def _quote(text):
    return f'"{text}"' if (" " in text or not text) else text
