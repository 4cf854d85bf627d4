"""Exceptions that map to the documented exit codes.

Exit codes (also in ``mineru-cli --help`` and the README):

====  ==========================================================================
0     every document converted or skipped
1     one or more documents failed
2     usage or configuration error (bad flag, bad config file)
3     environment error (requested tier has no model weights, backend unusable,
      a Ray cluster that cannot be used, output storage not writable)
4     another run is already writing to the same OUTPUT
130   interrupted by SIGINT (Ctrl-C); the report is written, a rerun resumes
143   terminated by SIGTERM; the report is written, a rerun resumes
====  ==========================================================================

Must not: import anything of the package (every room may raise these).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_LOCKED = 4
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class CliError(Exception):
    """Base class: ``exit_code`` is the process exit code, ``str(self)`` a one-line message."""

    exit_code = EXIT_USAGE


class UsageError(CliError):
    """Bad flags, bad configuration file or bad setting value (exit code 2)."""

    exit_code = EXIT_USAGE


class EnvironmentProblem(CliError):
    """The machine cannot run what was asked: missing model weights, unusable backend,
    unwritable output storage (exit code 3)."""

    exit_code = EXIT_ENVIRONMENT


class OutputLocked(CliError):
    """Another live run holds the lock on the same OUTPUT (exit code 4)."""

    exit_code = EXIT_LOCKED
