"""Errors a user can act on.

The rule: bad user input raises one ``UserError`` whose message names the file, the line or
record, and the field. The CLI prints it and exits non-zero; nothing is half-written because
every write happens inside one transaction.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: bad input, a missing dataset, a wrong option."""


class InputError(UserError):
    """A bad record in an input file."""

    def __init__(
        self, location: str, message: str, field: str | None = None, column: str | None = None
    ) -> None:
        self.location = location
        self.field = field
        self.column = column
        self.message = message
        where = ""
        if field is not None:
            where = f"field '{field}'"
            if column is not None and column != field:
                where += f" (column '{column}')"
            where += ": "
        super().__init__(f"{location}: {where}{message}")


class NotFound(UserError):
    """No such thing, or nothing the asking person may see (the web app answers 404)."""


class Forbidden(UserError):
    """The asking person's role does not allow this (the web app answers 403)."""


class Conflict(UserError):
    """The request clashes with the current state, e.g. an item with all its answers (409)."""
