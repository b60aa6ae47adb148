"""Errors a user can act on.

Every error raised for bad input derives from :class:`EdgempirError`. The CLI turns it
into one line on stderr and exit code 2, with no traceback (see ``edgempir.cli``).
This module imports nothing heavy: the device path uses it.
"""


class EdgempirError(Exception):
    """Bad input or state the user can fix; the message says what is wrong and what to do."""


class SpecError(EdgempirError):
    """A member spec or member list that does not parse."""


class DataError(EdgempirError):
    """Missing or corrupt data set files."""


class RunDirError(EdgempirError):
    """A run directory that is missing files, from another version, or inconsistent."""


class BundleError(EdgempirError):
    """A bundle that is missing files, tampered with, or for an absent runtime."""


class WriteError(EdgempirError, OSError):
    """An artefact that could not be written (disk full, quota, read-only folder).

    Raised by the atomic writers in :mod:`edgempir.fsutil`, which leave the previous
    version in place. It is an OSError too, so code that already handles OSError still does.
    """


class TrainingError(EdgempirError):
    """A training that cannot go on (a non-finite loss: the learning rate is too high)."""


class InputError(EdgempirError, ValueError):
    """An input array handed to a deployed ensemble that is not what its bundle takes."""


class HostInstallError(EdgempirError):
    """A host command (train, eval, export, experiment) run where only the device install is."""
