"""The exception every layer raises for bad user input (an argument, an option, a file).

The `msdfast` command prints such an error as one line naming the argument or file and exits with status 2
(a traceback only with `--debug`); library callers catch it as a ValueError. Programming errors and failed
invariants stay ordinary exceptions, so they are never mistaken for a user's typo.
"""
from __future__ import annotations


class UserInputError(ValueError):
    """Bad input from the user. The message is one line and names the argument, option or file."""


def require_packages(what: str, modules: tuple[str, ...], extra: str) -> None:
    """Raise one UserInputError naming the pip extra when an optional dependency of `what` is missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UserInputError(f"{what} needs {' and '.join(missing)}; install with: pip install 'msdfast[{extra}]'")
