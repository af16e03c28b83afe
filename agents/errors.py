"""Exceptions raised by the device agents.

Every hwnas exception carries ``exit_code``: 1 when the work ran but failed on its
own terms (a device failed, a link was lost), 2 for usage, configuration or input
errors. The CLI maps exceptions to exit codes from that attribute, in one place.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base class of the agents' errors."""

    exit_code = 1


class DeviceError(AgentError, RuntimeError):
    """A command on a device failed, with the context needed to act on it.

    ``device`` names the device, ``command`` what ran, ``returncode`` its exit
    status, ``output`` the last lines it printed, ``hint`` what to do next.
    """

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        device: str | None = None,
        command: str | None = None,
        returncode: int | None = None,
        output: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.device = device
        self.command = command
        self.returncode = returncode
        self.output = output
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = [f"{self.device}: {self.message}" if self.device else self.message]
        if self.command:
            parts.append(f"command: {self.command}")
        if self.returncode is not None:
            parts.append(f"exit code {self.returncode}")
        if self.output:
            tail = " | ".join(line.strip() for line in self.output.strip().splitlines()[-3:] if line.strip())
            if tail:
                parts.append(f"output: {tail}")
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "; ".join(parts)


class DeviceTimeout(DeviceError, TimeoutError):
    """A command on a device ran past its timeout and was killed."""


class LinkLost(DeviceError, ConnectionError):
    """The connection to a device dropped (cleanly or silently)."""


class DeviceBusy(DeviceError):
    """Another profiling run holds the device's lock."""


class ProfileError(AgentError, ValueError):
    """A device profile (YAML) or a transport setting is invalid."""

    exit_code = 2


class WorkdirRefused(DeviceError, ProfileError):
    """The profile's workdir on the device is a symlink, not a folder, or someone else's (exit code 2: a setting
    to fix, or a board to check)."""

    exit_code = 2


class OutputTooLarge(DeviceError):
    """A command printed more than hwnas keeps in memory; it was stopped."""
