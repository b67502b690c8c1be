"""Errors caused by what a user gave us (a path, a file, a config key), as opposed to bugs.

The CLI prints these as one line and exits non-zero; the HTTP servers turn them into 4xx answers.
"""


class UserError(ValueError):
    """Bad input: the message names what was wrong and, where it helps, what would be right."""
