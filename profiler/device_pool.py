"""Profile several devices at once: one thread per device, one device's failure does not stop the others.

``hwnas profile A B C`` and users' Python code call :func:`profile_devices`; a device profile is named
(a name under ``device_profiles/`` or a YAML path) and loaded here. What each device gives back is an
:class:`Outcome`: its result, or the exception that stopped it (the caller decides what an exception means,
e.g. the CLI's exit code).
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..agents.errors import DeviceError
from ..agents.profiles import load_profile
from .profile import ProfileRequest, profile_device

Progress = Callable[[int, "int | None", str], None]


@dataclass(frozen=True)
class Outcome:
    """One device's run: ``result`` (``profile_device``'s) when it finished, else ``error``."""

    device: str
    result: dict[str, Any] | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def profile_named(name: str, request: ProfileRequest, on_progress: Progress | None = None) -> dict[str, Any]:
    """:func:`~.profile.profile_device` on the device profile ``name`` (a name or a YAML path). A device
    error without a hint gets one: how to go on with ``--resume`` (the rows measured so far are kept)."""
    profile = load_profile(name)
    try:
        return profile_device(profile, request, on_progress=on_progress)
    except DeviceError as exc:
        if exc.hint is None:
            exc.hint = f"rows measured so far are kept; continue with: hwnas profile {name} --space {request.space} --resume"
            exc.args = (exc.one_line(),)
        raise


def profile_devices(
    names: Sequence[str],
    request: ProfileRequest,
    *,
    on_progress: Progress | None = None,
    on_error: Callable[[str, BaseException], None] | None = None,
) -> list[Outcome]:
    """Profile every device of ``names`` concurrently (one thread each) with the same ``request``.

    ``on_progress(done, None, "NAME: what")`` counts the entries done over all devices;
    ``on_error(name, exc)`` is called (in the calling thread) as soon as a device fails. Returns one
    :class:`Outcome` per name, in the order of ``names``; never raises for one device's failure."""
    lock = threading.Lock()
    done_by: dict[str, int] = {}

    def progress_of(name: str) -> Progress:
        def report(done: int, total: int | None, what: str) -> None:
            with lock:
                done_by[name] = done
                if on_progress is not None:
                    on_progress(sum(done_by.values()), None, f"{name}: {what}")

        return report

    outcomes: dict[str, Outcome] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        futures = {pool.submit(profile_named, name, request, progress_of(name)): name for name in names}
        for fut in concurrent.futures.as_completed(futures):
            name = futures[fut]
            try:
                outcomes[name] = Outcome(device=name, result=fut.result())
            except Exception as exc:  # one device's failure does not stop the others
                outcomes[name] = Outcome(device=name, error=exc)
                if on_error is not None:
                    on_error(name, exc)
    return [outcomes[n] for n in names]


__all__ = ["Outcome", "profile_devices", "profile_named"]
