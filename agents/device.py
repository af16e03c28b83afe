"""A device: a profile plus an open transport, and the runner protocol on top of it.

``Device.measure(models, ...)`` pushes the runner (once per version, checked by
checksum) and the model files, runs a job on the device with the profile's
interpreter, threads and core pinning, and hands each result line to a callback as
it arrives, so callers can append rows to a LUT while the device is still working.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import posixpath
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bench_binary import BINARY_RUNTIMES, measure_with_binary
from .device_state import CpuCluster, CpuFreq, cpu_clusters, derive_core_mask
from .errors import DeviceBusy, DeviceError, LinkLost
from .lock import DeviceLock, kill_leftover_runners
from .profiles import PYTHON_RUNTIMES, DeviceProfile
from .transport import Transport, open_transport, prepare_workdir

log = logging.getLogger(__name__)

RUNNER_PATH = Path(__file__).with_name("runner.py")


_SHA256_CACHE: dict[tuple[str, int, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a local file; remembered per (path, inode, size, mtime), since a profile names
    every model several times (staging, each batch's job, the push check) and a file that changes gets
    a new size or mtime."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_ino, st.st_size, st.st_mtime_ns)
    digest = _SHA256_CACHE.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digest = _SHA256_CACHE[key] = h.hexdigest()
    return digest


@dataclass(frozen=True)
class ModelFile:
    """A model to measure: an id (echoed back in results) and a local file."""

    id: str
    path: Path
    flush_kb: int = 0  # evict the caches before each timed run (see runner.make_flusher)


ResultCallback = Callable[[dict[str, Any]], None]


class Device:
    """An open link to one profiled device."""

    def __init__(self, profile: DeviceProfile, transport: Transport | None = None) -> None:
        self.profile = profile
        self.transport = transport or open_transport(
            profile.transport, profile.transport_settings, device=profile.name, workdir=profile.workdir
        )
        self._pushed: dict[str, str] = {}
        self._workdir: str | None = None
        self.hello: dict[str, Any] | None = None
        self.lock: DeviceLock | None = None

    # -- the device lock -------------------------------------------------------------------
    def acquire(self, *, resume: bool = False) -> None:
        """Take the device's lock (one profiling run per device at a time).

        With ``resume``, runners left over on the device by a broken run are killed first.
        Raises DeviceBusy when a live run holds the device.
        """
        # the lock first: it refuses another host's live run, so only our own broken run's runners die below
        self.lock = DeviceLock(self.transport).acquire(resume=resume)
        # On this machine every local device (and every other user's hwnas) runs the same runner file: a match on
        # its path would kill their runs too; the lock's own runner record (runner.pid, killed on takeover) is it.
        if resume and self.profile.transport != "local":
            killed = kill_leftover_runners(self.transport, self.remote("runner") + "/")
            if killed:
                log.warning("%s: killed %d runner(s) left over by a broken run", self.profile.name, len(killed))

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    @contextlib.contextmanager
    def held(self, *, wait_s: float = 0.0) -> Iterator[Device]:
        """The device's lock for the block (:meth:`acquire` ... :meth:`release`). While another run holds the
        device, wait up to ``wait_s`` seconds for it, polling (work already done, such as a trained network, is
        not thrown away for a busy device); DeviceBusy after that."""
        deadline = time.monotonic() + wait_s
        waited = False
        while True:
            try:
                self.acquire()
                break
            except DeviceBusy:
                if time.monotonic() >= deadline:
                    raise
                if not waited:
                    log.warning("%s is busy with another run; waiting up to %.0f s", self.profile.name, wait_s)
                    waited = True
                time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))
        try:
            yield self
        finally:
            self.release()

    # -- files ---------------------------------------------------------------------------
    @property
    def workdir(self) -> str:
        """The profile's work folder on the device, made and checked on first use (absolute; see
        :func:`~.transport.prepare_workdir`)."""
        if self.transport.workdir_setting == self.profile.workdir:
            return self.transport.workdir
        if self._workdir is None:
            self._workdir = prepare_workdir(self.transport, self.profile.workdir)
        return self._workdir

    def remote(self, *parts: str) -> str:
        return posixpath.join(self.workdir, *parts)

    def ensure_dir(self, path: str) -> None:
        self.transport.run(["mkdir", "-p", path], description="create the work folder", timeout=30)

    def remote_check(self, *, sizes: Sequence[str] = (), sums: Sequence[str] = ()) -> tuple[dict[str, int], dict[str, str]]:
        """What the device holds, in one command: the size of each of ``sizes`` and the SHA-256 of each of
        ``sums`` (missing files are left out, and sizes on a device whose ``stat`` has no ``-c``)."""
        if not sizes and not sums:
            return {}, {}
        res = self.transport.run(
            ["sh", "-c", _CHECK_SCRIPT, "hwnas-check", *_check_args(sizes, sums)],
            description="look for files on the device",
            timeout=120,
            check=False,
        )
        return _parse_sizes(res.stdout), _parse_sha256sum(res.stdout)

    def push_files(self, files: Sequence[tuple[Path, str]], *, executables: Sequence[str] = ()) -> int:
        """Push (local, remote) pairs whose content the device does not have yet; returns the count pushed.

        A remote name that holds the start of its content's SHA-256 (models: see :meth:`model_remote_path`)
        is checked by its size alone: the name already says which content it is, and a push cut short
        leaves a shorter file. That is enough for data that is only read. Whatever will be executed (the
        runner, a benchmark program: every remote path in ``executables``, and :meth:`runner_remote_path`)
        and any other name is checksummed on the device, so a same-size file planted there is replaced,
        never run. (Hashing a profile's ~70 MB of models there took longer than sending them over loopback.)
        """
        if self.profile.transport == "local":
            return 0
        wanted = {remote: file_sha256(local) for local, remote in files}
        sizes = {remote: os.path.getsize(local) for local, remote in files}
        todo = [(local, remote) for local, remote in files if self._pushed.get(remote) != wanted[remote]]
        run = {*executables, self.runner_remote_path()}
        named = {remote for _, remote in todo if wanted[remote][:12] in posixpath.basename(remote) and remote not in run}
        have_size, have_sum = self.remote_check(sizes=sorted(named), sums=[r for _, r in todo if r not in named])

        def on_device(remote: str) -> bool:
            return have_size.get(remote) == sizes[remote] if remote in named else have_sum.get(remote) == wanted[remote]

        need = [(local, remote) for local, remote in todo if not on_device(remote)]
        # One tar stream instead of a round trip or three per file (the remote path's main cost);
        # files it does not deliver whole go one by one (Transport.push makes their folders).
        if len(need) > 1:
            got = self._push_archive(need, named)
            have_size.update(got[0])
            have_sum.update(got[1])
        for local, remote in need:
            if not on_device(remote):
                self.transport.push(local, remote)
        for _, remote in todo:
            self._pushed[remote] = wanted[remote]
        return len(need)

    def _push_archive(
        self, files: Sequence[tuple[Path, str]], named: set[str]
    ) -> tuple[dict[str, int], dict[str, str]]:
        """Send files under the workdir as one tar stream, unpacked and checked on the device in the same
        command (``tar -x`` fed on stdin, then :meth:`remote_check`'s script: sizes of the ``named`` ones,
        checksums of the others); returns the sizes and checksums found there afterwards (nothing when the
        device has no usable tar)."""
        prefix = self.workdir.rstrip("/") + "/"
        inside = [(local, remote) for local, remote in files if remote.startswith(prefix)]
        if len(inside) < 2:
            return {}, {}
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            # folders first, as members of their own: every tar makes them, with or without the GNU habit
            # of creating a member's missing parents
            folders: set[str] = set()
            for _, remote in inside:
                parts = remote[len(prefix):].split("/")[:-1]
                folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
            for name in sorted(folders):
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            for local, remote in inside:
                info = tar.gettarinfo(str(local), arcname=remote[len(prefix):])
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(local, "rb") as fh:
                    tar.addfile(info, fh)
        check = _check_args([r for _, r in inside if r in named], [r for _, r in inside if r not in named])
        res = self.transport.run(
            ["sh", "-c", 'mkdir -p -- "$1" && tar -x -f - -C "$1" || exit 97; shift; ' + _CHECK_SCRIPT,
             "hwnas-unpack", self.workdir, *check],
            description=f"unpack {len(inside)} files on the device",
            timeout=300 + buf.tell() / 50e3,  # a hang only: a dead link is noticed by the transport
            check=False,
            stdin=buf.getvalue(),
        )
        if res.returncode != 0:
            log.debug("%s: tar failed (%s); pushing file by file", self.profile.name, res.returncode)
            return {}, {}
        return _parse_sizes(res.stdout), _parse_sha256sum(res.stdout)

    def model_remote_path(self, model: ModelFile) -> str:
        """Where ``model`` lives on the device: named by its content, so a changed file is a new name."""
        return self.remote("models", f"{file_sha256(model.path)[:16]}{Path(model.path).suffix}")

    def stage(self, models: Sequence[ModelFile], *, runtime: str | None = None) -> int:
        """Send every model a series of measurements with ``runtime`` will need (and the Python runner,
        unless a benchmark program measures) ahead, in one archive: the ``measure`` calls that follow
        then push nothing. Returns the number of files sent."""
        if self.profile.transport == "local":
            return 0
        files = [(Path(m.path), self.model_remote_path(m)) for m in models]
        if (runtime or self.profile.runtime) not in BINARY_RUNTIMES:
            files.append((RUNNER_PATH, self.runner_remote_path()))
        unique = {remote: local for local, remote in files}  # the reference recurs in every batch
        return self.push_files([(local, remote) for remote, local in unique.items()])

    def runner_remote_path(self) -> str:
        if self.profile.transport == "local":
            return str(RUNNER_PATH)
        return self.remote("runner", f"runner-{file_sha256(RUNNER_PATH)[:12]}.py")

    # -- measuring -----------------------------------------------------------------------
    def runtime_hello(self, runtime: str | None = None) -> dict[str, Any]:
        """The runner's hello for a Python runtime (its version, the device's Python), without staging
        anything: a remote device runs the runner from stdin. Raises DeviceError when the runtime is not
        usable there."""
        runtime = runtime or self.profile.runtime
        if runtime not in PYTHON_RUNTIMES:
            raise DeviceError(f"runtime {runtime!r} is not driven by the Python runner", device=self.profile.name)
        local = self.profile.transport == "local"
        argv = [*self.python_argv(), str(RUNNER_PATH) if local else "-", "--hello", runtime]
        res = self.transport.run(argv, description=f"ask the runner for {runtime}'s version", timeout=120,
                                 check=False, stdin=None if local else RUNNER_PATH.read_bytes())
        msgs = []
        for line in res.stdout.splitlines():
            if line.strip().startswith("{"):
                try:
                    msgs.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        msg = next((m for m in msgs if m.get("type") in ("hello", "fatal")), None)
        if msg is None or msg["type"] == "fatal":
            raise DeviceError(
                msg["message"] if msg else "the runner said no hello", device=self.profile.name,
                command=" ".join(argv), returncode=res.returncode, output=(res.stdout + "\n" + res.stderr)[-2000:],
                hint=f"install {runtime} on the device or pick another runtime in the profile",
            )
        self.hello = msg
        return msg

    def python_argv(self) -> list[str]:
        python = self.profile.python
        if self.profile.transport == "local" and python == "python3":
            python = sys.executable  # the local device runs the runner with hwnas's own interpreter
        argv = [python]
        mask = self.core_mask()
        if mask:
            argv = ["taskset", mask, *argv]
        return argv

    def core_mask(self) -> str | None:
        """The taskset mask of the profile's ``cores`` (``device_state.derive_core_mask``; ``big`` reads the
        device's CPU clusters)."""
        cores = self.profile.cores
        return derive_core_mask(self._cpu_clusters() if cores == "big" else [], cores)

    def _cpu_clusters(self) -> list[CpuCluster]:
        res = self.transport.run(
            [
                "sh",
                "-c",
                'for c in /sys/devices/system/cpu/cpu[0-9]*; do '
                'echo "${c##*cpu} $(cat "$c/cpufreq/cpuinfo_max_freq" 2>/dev/null || echo 0)"; done',
            ],
            description="read CPU clusters",
            timeout=30,
            check=False,
        )
        freqs: dict[int, CpuFreq] = {}
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                freqs[int(parts[0])] = CpuFreq(cpu=int(parts[0]), max_khz=int(parts[1]) or None)
        return cpu_clusters(freqs)

    def measure(
        self,
        models: Sequence[ModelFile],
        *,
        runtime: str | None = None,
        threads: int | None = None,
        runs: int | None = None,
        warmup: int | None = None,
        min_seconds: float | None = None,
        rounds: int = 1,
        profile_ops: bool = False,
        keep_samples: bool = True,
        temp_paths: Sequence[str] = (),
        state_paths: Sequence[str] = (),
        extra: dict[str, Any] | None = None,
        on_result: ResultCallback | None = None,
        timeout: float | None = None,
    ) -> list[dict[str, Any]]:
        """Measure ``models`` with the Python runner (or, for runtimes ``tflite-benchmark`` and
        ``onnxruntime-perf-test``, the profile's benchmark program: see ``bench_binary``); each result
        dict also goes to ``on_result``.

        Raises DeviceError when the runtime is unusable on the device or the runner
        fails, DeviceTimeout when it hangs past ``timeout``, LinkLost on a lost link.
        """
        runtime = runtime or self.profile.runtime
        m = self.profile.measure
        if runtime in BINARY_RUNTIMES:  # a benchmark program on the device, one process per model
            return measure_with_binary(
                self, models, runtime=runtime, threads=threads or self.profile.threads,
                runs=m.runs if runs is None else runs, warmup=m.warmup if warmup is None else warmup,
                min_seconds=m.min_seconds if min_seconds is None else min_seconds, rounds=rounds,
                profile_ops=profile_ops, temp_paths=temp_paths, extra=extra, on_result=on_result, timeout=timeout,
            )
        if runtime not in PYTHON_RUNTIMES:
            raise DeviceError(f"runtime {runtime!r} is not driven by the Python runner", device=self.profile.name)
        job: dict[str, Any] = {
            "runtime": runtime,
            "threads": threads or self.profile.threads,
            "warmup": m.warmup if warmup is None else warmup,
            "runs": m.runs if runs is None else runs,
            "min_seconds": m.min_seconds if min_seconds is None else min_seconds,
            "rounds": rounds,
            "cooldown_s": m.cooldown_s,
            "max_temp_c": m.max_temp_c,
            "temp_paths": list(temp_paths),
            "state_paths": list(state_paths),
            "keep_samples": keep_samples,
            "profile_ops": profile_ops,
        }
        if extra:
            job.update(extra)
        local = self.profile.transport == "local"
        files: list[tuple[Path, str]] = []
        specs = []
        for model in models:
            if local:
                specs.append({"id": model.id, "path": str(Path(model.path).resolve()), "flush_kb": model.flush_kb})
            else:
                remote = self.model_remote_path(model)
                files.append((Path(model.path), remote))
                specs.append({"id": model.id, "path": remote, "flush_kb": model.flush_kb})
        job["models"] = specs
        runner = self.runner_remote_path()
        if not local:
            files.append((RUNNER_PATH, runner))
            self.push_files(files)
        with tempfile.TemporaryDirectory() as tmp:
            job_local = Path(tmp) / "job.json"
            job_local.write_text(json.dumps(job))
            # on a remote device the job goes on the runner's stdin: no file to push and clean up
            job_path = str(job_local) if local else "-"
            results: list[dict[str, Any]] = []
            errors: list[dict[str, Any]] = []
            fatal: list[str] = []

            def on_line(line: str) -> None:
                line = line.strip()
                if not line.startswith("{"):
                    return
                try:
                    msg = json.loads(line)
                except json.JSONDecodeError:
                    log.warning("%s: runner printed a broken line: %.200s", self.profile.name, line)
                    return
                kind = msg.get("type")
                if kind == "hello":
                    self.hello = msg
                elif kind == "result":
                    results.append(msg)
                    if on_result is not None:
                        on_result(msg)
                elif kind == "error":
                    errors.append(msg)
                    log.warning("%s: %s failed: %s", self.profile.name, msg.get("id"), msg.get("message"))
                elif kind == "fatal":
                    fatal.append(str(msg.get("message")))

            if timeout is None:
                per_model = (m.warmup + (runs or m.runs) * rounds) * 2.0 + m.min_seconds + 30
                timeout = 120 + per_model * max(1, len(models)) + m.cooldown_s * len(models) * rounds
            argv = [*self.python_argv(), runner, job_path]
            if self.lock is not None and self.lock.held:
                argv = self.lock.runner_argv(argv)
            res = self.transport.run(
                argv, description=f"measure {len(models)} models with {runtime}", timeout=timeout, check=False,
                on_line=on_line, stdin=None if local else job_local.read_bytes(),
            )
        if fatal:
            raise DeviceError(
                fatal[0], device=self.profile.name, command=" ".join(argv),
                hint=f"install {runtime} on the device or pick another runtime in the profile",
            )
        if res.returncode != 0:
            raise DeviceError(
                "the runner failed",
                device=self.profile.name,
                command=" ".join(argv),
                returncode=res.returncode,
                output=(res.stdout + "\n" + res.stderr)[-2000:],
            )
        if errors and not results:
            raise DeviceError(
                f"every model failed on the device; first: {errors[0].get('id')}: {errors[0].get('message')}",
                device=self.profile.name,
            )
        for err in errors:
            results.append({"type": "error", **err})
        return results

    def close(self) -> None:
        try:
            self.release()
        finally:
            self.transport.close()

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Arguments: N, then N files to checksum, then files to size (see :func:`_check_args`). One ``sha256sum``
#: per checksummed file, one ``stat`` for all the others; each prints only the files it can read.
_CHECK_SCRIPT = (
    'n=$1; shift; i=0; while [ "$i" -lt "$n" ]; do sha256sum -- "$1" 2>/dev/null; shift; i=$((i+1)); done; '
    '[ "$#" -gt 0 ] && stat -c "%s %n" -- "$@" 2>/dev/null; exit 0'
)


def _check_args(sizes: Sequence[str], sums: Sequence[str]) -> list[str]:
    return [str(len(sums)), *sums, *sizes]


def _parse_sizes(text: str) -> dict[str, int]:
    """``stat -c "%s %n"`` output (``SIZE PATH`` per line) as {path: size}."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split(" ", 1)
        if len(parts) == 2 and parts[0].isdigit() and len(parts[0]) < 64:  # not a sha256sum line
            out[parts[1].rstrip("\r")] = int(parts[0])
    return out


def _parse_sha256sum(text: str) -> dict[str, str]:
    """``sha256sum`` output (``DIGEST  PATH`` or ``DIGEST *PATH`` per line) as {path: digest}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and len(parts[0]) == 64:
            out[parts[1].lstrip("*").strip()] = parts[0]
    return out


__all__ = ["Device", "ModelFile", "LinkLost", "RUNNER_PATH"]
