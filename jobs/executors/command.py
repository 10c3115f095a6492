"""The command executor: runs a task's argv as a subprocess, never through a shell.

- Parameters are substituted per argument (`{{ name }}` inside one argv element stays inside
  that element), and also given as SWITCHYARD_PARAM_<NAME> variables and a params.json file.
- The process gets its own session/process group, a scrubbed environment, a fresh working
  directory, and PR_SET_PDEATHSIG so it dies if the worker process dies.
- stdout/stderr are read with a selector in this thread and stored in batches (LogWriter).
- Timeout or stop: SIGTERM to the whole group, a grace period, then SIGKILL. Processes left in
  the group after the main process exits are killed too, so nothing outlives the attempt.
- A result.json written in the working directory becomes the execution's result.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import resource
import selectors
import shutil
import signal
import subprocess
import time
from typing import Any

from django.conf import settings

from jobs.executors import ExecutionContext, Outcome, error_truncate
from jobs.orphans import database_marker
from jobs.worker import worker_id
from runs.models import ExecutionStatus, LogStream
from runs.secret_box import mask_secrets
from runs.specs import PLACEHOLDER_RE

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_prctl = _libc.prctl


_LIMITS = {
    "cpu_seconds": (resource.RLIMIT_CPU, 1),
    "memory_mb": (resource.RLIMIT_AS, 1024 * 1024),
    "open_files": (resource.RLIMIT_NOFILE, 1),
    "file_size_mb": (resource.RLIMIT_FSIZE, 1024 * 1024),
    "processes": (resource.RLIMIT_NPROC, 1),
}


def _child_setup_for(limits: dict[str, int]):
    """The function run in the child between fork and exec: die with the worker, apply the
    task's resource limits. Everything is computed beforehand; the child only makes syscalls."""
    prepared = [(_LIMITS[k][0], v * _LIMITS[k][1]) for k, v in limits.items() if k in _LIMITS]

    def setup() -> None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        for which, value in prepared:
            resource.setrlimit(which, (value, value))

    return setup


def sandbox_argv(argv: list[str], ctx: ExecutionContext, spec: dict) -> list[str]:
    """Wrap argv in bubblewrap when the task or the installation asks for isolation: the root
    file system read-only, only the working directory writable, no network unless the task
    allows it, and the sandbox dies with the worker."""
    wanted = spec.get("isolation") == "bwrap" or settings.SWITCHYARD_BWRAP
    if not wanted:
        return argv
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise FileNotFoundError(
            "isolation is enabled but bubblewrap (bwrap) is not installed on this worker; "
            "install it (apt-get install bubblewrap) or turn isolation off"
        )
    workdir = str(ctx.workdir)
    # No tmpfs over /tmp: the interpreter or tools may live under /tmp (a CI checkout, say) and
    # must stay visible. /tmp is read-only like the rest; TMPDIR points at the working dir.
    # Empty tmpfs over the other attempts' working directories (their params.json holds
    # decrypted secrets), over var/ (the secret key) and over the artifacts, then this
    # attempt's own directory.
    # Outer directories first: a tmpfs mounted later over a parent would hide an inner one.
    # The artifact directory too when artifacts are on the file system: it holds every
    # project's kept files, response bodies included, and is often outside var/.
    paths = {str(settings.SWITCHYARD_WORK_ROOT), str(settings.VAR_DIR)}
    if settings.ARTIFACTS_STORAGE_KIND == "filesystem" and os.path.isdir(settings.ARTIFACTS_ROOT):
        paths.add(str(settings.ARTIFACTS_ROOT))  # (bwrap cannot mount over a missing path)
    covered = sorted(paths, key=lambda p: p.count("/"))
    hidden = [arg for path in covered for arg in ("--tmpfs", path)]
    read_only = [arg for path in covered for arg in ("--remount-ro", path)]
    wrapped = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", *hidden,
               "--bind", workdir, workdir, *read_only, "--chdir", workdir,
               "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"]
    if not spec.get("network", False):
        wrapped.append("--unshare-net")
    return [*wrapped, "--", *argv]


def param_text(value: Any) -> str:
    """A parameter value as the text a program receives."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def render(template: str, params: dict[str, Any]) -> str:
    """Substitute {{ name }} placeholders. The result is one string: one argv element."""
    return PLACEHOLDER_RE.sub(lambda m: param_text(params.get(m.group(1), "")), template)


def command_env(ctx: ExecutionContext, spec: dict) -> dict[str, str]:
    """The scrubbed environment: nothing of the worker's except PATH and locale."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(ctx.workdir),
        "TMPDIR": str(ctx.workdir),
        "PYTHONUNBUFFERED": "1",  # so Python programs' lines arrive as they are printed
        "SWITCHYARD_RUN_ID": str(ctx.run_id),
        "SWITCHYARD_EXECUTION_ID": str(ctx.execution_id),
        "SWITCHYARD_ATTEMPT": str(ctx.attempt),
        # Lets the orphan sweep (jobs.orphans) find what this attempt left behind.
        "SWITCHYARD_WORKER": worker_id(),
        "SWITCHYARD_DATABASE": database_marker(),
        "SWITCHYARD_PARAMS_FILE": str(ctx.workdir / "params.json"),
        "SWITCHYARD_RESULT_FILE": str(ctx.workdir / "result.json"),
        "SWITCHYARD_INPUT_FILE": str(ctx.workdir / "input.json"),
    }
    for name, value in (spec.get("env") or {}).items():
        env[name] = render(value, ctx.params)
    for name, value in ctx.params.items():
        env[f"SWITCHYARD_PARAM_{name.upper()}"] = param_text(value)
    return env


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def command_execute(ctx: ExecutionContext) -> Outcome:
    """Run the command of ctx.snapshot and return how it ended."""
    spec = ctx.snapshot["spec"]
    timeout = int(ctx.snapshot.get("timeout_seconds") or settings.SWITCHYARD_DEFAULT_TIMEOUT)
    grace = settings.SWITCHYARD_KILL_GRACE
    from runs.params import leading_dash_errors

    dash = leading_dash_errors(spec["argv"], ctx.snapshot.get("params_schema") or [], ctx.params)
    if dash:
        message = "; ".join(f"{k}: {', '.join(v)}" for k, v in dash.items())
        ctx.log.system(f"refused to start: {message}")
        return Outcome(status=ExecutionStatus.FAILED, outcome="not_started", error=message)
    argv = [render(arg, ctx.params) for arg in spec["argv"]]
    (ctx.workdir / "params.json").write_text(json.dumps(ctx.params))
    (ctx.workdir / "params.json").chmod(0o600)
    (ctx.workdir / "input.json").write_text(json.dumps(ctx.input))
    for name, template in (spec.get("files") or {}).items():
        # Inventories, extra-vars...: rendered before the command starts (names validated).
        (ctx.workdir / name).write_text(render(template, ctx.params))
    env = command_env(ctx, spec)
    log = ctx.log
    # Mask each argument before quoting it, so escaping cannot hide a secret from the mask.
    masked = [mask_secrets(a, ctx.secret_values) for a in argv]
    shown = " ".join(repr(a) if " " in a else a for a in masked)
    log.system(f"$ {shown}")
    try:
        final_argv = sandbox_argv(argv, ctx, spec)
        proc = subprocess.Popen(  # noqa: S603  argv list, no shell
            final_argv,
            cwd=ctx.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_child_setup_for(spec.get("limits") or {}),
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError, OSError) as exc:
        message = f"Could not start {argv[0]!r}: {exc.strerror or exc}"
        log.system(message)
        return Outcome(status=ExecutionStatus.FAILED, outcome="not_started", error=message)

    pgid = proc.pid  # start_new_session makes the child the leader of a new group
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ, LogStream.STDOUT)
    selector.register(proc.stderr, selectors.EVENT_READ, LogStream.STDERR)
    partial = {LogStream.STDOUT: b"", LogStream.STDERR: b""}
    max_partial = settings.SWITCHYARD_LOG_MAX_LINE * 4

    deadline = time.monotonic() + timeout

    def emit(stream: str, raw: bytes) -> None:
        log.add(stream, raw.decode("utf-8", errors="replace").rstrip("\r"))

    try:
        returncode, stop_kind = _supervise(proc, pgid, selector, partial, max_partial, ctx,
                                           deadline, timeout, grace, emit)
    finally:
        # Whatever happened above (even an exception), nothing of the command outlives the
        # attempt.
        _signal_group(pgid, signal.SIGKILL)
        selector.close()
        proc.stdout.close()
        proc.stderr.close()
    log.flush()

    result, result_note = _read_result(ctx)
    if result_note:
        log.system(result_note)

    if stop_kind == "timeout":
        return Outcome(
            status=ExecutionStatus.TIMED_OUT,
            exit_code=returncode,
            outcome="timed_out",
            error=f"Timed out after {timeout} s; the process group was terminated.",
            result=result,
        )
    if stop_kind == "stop":
        return Outcome(
            status=ExecutionStatus.CANCELLED,
            exit_code=returncode,
            outcome="stopped",
            error=ctx.stop_reason or "stopped",
            result=result,
        )
    exit_codes = {int(k): v for k, v in (spec.get("exit_codes") or {}).items()}
    outcome = exit_codes.get(returncode, "success" if returncode == 0 else "failure")
    success = spec.get("success_outcomes") or ["success", "changed", "ok"]
    if outcome in success:
        return Outcome(status=ExecutionStatus.SUCCEEDED, exit_code=returncode, outcome=outcome,
                       result=result)
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        headline = f"Killed by {name}"
    else:
        headline = f"Exited with code {returncode}"
    if outcome != "failure":
        headline += f" ({outcome})"
    tail = "\n".join(log.stderr_tail)
    error = f"{headline}\n{tail}" if tail else headline
    return Outcome(
        status=ExecutionStatus.FAILED,
        exit_code=returncode,
        outcome=outcome,
        error=error_truncate(error),
        result=result,
    )


def _supervise(proc, pgid, selector, partial, max_partial, ctx, deadline, timeout, grace,
               emit) -> tuple[int, str | None]:
    """Read output until the command has exited and its pipes are drained, enforcing the
    timeout and stop requests the whole time (also after the command closed its pipes)."""
    log = ctx.log
    stop_kind: str | None = None  # "timeout" or "stop"
    kill_at: float | None = None
    leader_exited_at: float | None = None
    while selector.get_map() or proc.poll() is None:
        events = []
        if selector.get_map():
            events = selector.select(timeout=0.1)
        else:  # the command closed its pipes but runs on: keep the clock and stop checks
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.1)
        for key, _events in events:
            stream = key.data
            data = os.read(key.fd, 65536)
            if not data:
                selector.unregister(key.fileobj)
                if partial[stream]:
                    emit(stream, partial[stream])
                    partial[stream] = b""
                continue
            buffer = partial[stream] + data
            cut = buffer.rfind(b"\n")
            if cut >= 0:
                # Decode the complete lines of this read in one go (a UTF-8 sequence split
                # across reads stays in `partial` until its end arrives).
                text = buffer[:cut].decode("utf-8", errors="replace")
                partial[stream] = buffer[cut + 1 :]
                log.add_lines(stream, text.replace("\r\n", "\n").split("\n"))
            else:
                partial[stream] = buffer
            if len(partial[stream]) > max_partial:  # a huge line without newline
                emit(stream, partial[stream])
                partial[stream] = b""
        if log.due():
            log.flush()
        now = time.monotonic()
        if stop_kind is None:
            if now >= deadline:
                stop_kind = "timeout"
                log.system(f"timed out after {timeout} s: sending SIGTERM to the process group")
            elif ctx.stop.is_set():
                stop_kind = "stop"
                log.system(f"stopping ({ctx.stop_reason}): sending SIGTERM to the process group")
            if stop_kind:
                _signal_group(pgid, signal.SIGTERM)
                kill_at = now + grace
        elif kill_at is not None and now >= kill_at:
            if _signal_group(pgid, signal.SIGKILL):
                log.system(f"still running {grace:g} s after SIGTERM: sent SIGKILL")
            kill_at = None
        if leader_exited_at is None and proc.poll() is not None:
            leader_exited_at = now
            # Anything the command left running in its group dies with the attempt.
            if _signal_group(pgid, signal.SIGKILL):
                log.system("killed processes the command left running in its process group")
        if leader_exited_at is not None and now - leader_exited_at > 2.0:
            # A process that left the group still holds our pipes; stop reading.
            log.system("stopped reading output held open by a process outside the group")
            break
    return proc.wait(), stop_kind


def _read_result(ctx: ExecutionContext) -> tuple[Any, str]:
    path = ctx.workdir / "result.json"
    if not path.is_file() or path.is_symlink():
        return None, ""
    size = path.stat().st_size
    limit = settings.SWITCHYARD_RESULT_MAX_BYTES
    if size > limit:
        return None, f"result.json ignored: {size} bytes is over the {limit} byte limit"
    try:
        return json.loads(path.read_text(encoding="utf-8")), ""
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"result.json ignored: not valid JSON ({exc})"
