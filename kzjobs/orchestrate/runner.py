"""The subprocess runner: one ``kzjobs`` command run by this Python, its log streamed, its
JSON summary returned; and the summary's parser, which the container operators share.

Below the launcher (:mod:`kzjobs.orchestrate.launch`) and its operators
(:mod:`kzjobs.orchestrate.operators`), which both import it; it imports neither, and no Airflow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# A job also writes its summary to this file when set (kzjobs.core.options.emit).
SUMMARY_FILE_ENV = "KZ_SUMMARY_FILE"


class JobFailed(RuntimeError):
    """A job ended with a non-zero exit code; the message carries the code and its last log."""

    def __init__(self, argv: Sequence[str], returncode: int, tail: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.tail = tail
        last = next((ln for ln in reversed(tail.splitlines()) if ln.strip()), "")
        super().__init__(
            f"`{' '.join(self.argv)}` failed with exit code {returncode}: {last}\n"
            f"last log lines:\n{tail}"
        )


def command_words(command: str) -> list[str]:
    words = command.split()
    if not words:
        raise ValueError("empty job command")
    return words


def parse_summary(output: str) -> Any:
    """The JSON summary a job printed: the whole output, or its last top-level object.

    Container logs mix stderr into stdout; ``emit`` prints the summary last, starting
    with a ``{`` alone on a line, so the last such line starts it.
    """
    text = output.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    lines = text.splitlines()
    for start in range(len(lines) - 1, -1, -1):
        if lines[start].startswith(("{", "[")):
            try:
                return json.loads("\n".join(lines[start:]))
            except json.JSONDecodeError:
                continue
    raise ValueError(f"no JSON summary in the job's output; it ended with: {text[-500:]!r}")


def local_argv(command: str, args: Sequence[str]) -> list[str]:
    """The same ``kzjobs`` command, run by this Python (so it uses this environment)."""
    return [sys.executable, "-m", "kzjobs", *command_words(command), *map(str, args)]


def run_local(
    command: str,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    log: Callable[[str], None] | None = None,
    on_start: Callable[[subprocess.Popen], None] | None = None,
    tail_lines: int = 40,
) -> Any:
    """Run a ``kzjobs`` command here; stream its log; return its JSON summary.

    Raises :class:`JobFailed` with the exit code and the log's tail when it fails.
    """
    argv = local_argv(command, args)
    full_env = {**os.environ, **(env or {})}
    full_env.pop(SUMMARY_FILE_ENV, None)  # the summary comes back on stdout here
    log = log or (lambda line: print(line, file=sys.stderr))
    tail: deque[str] = deque(maxlen=tail_lines)
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=full_env,
        text=True,
        bufsize=1,
    )
    if on_start:
        on_start(proc)

    def pump() -> None:  # stderr is the job's log: stream it as it comes
        assert proc.stderr is not None
        for line in proc.stderr:
            line = line.rstrip("\n")
            tail.append(line)
            log(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    returncode = proc.wait()
    reader.join()
    if returncode != 0:
        raise JobFailed(["kzjobs", *argv[3:]], returncode, "\n".join(tail))
    return parse_summary(stdout)
