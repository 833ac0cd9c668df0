"""The one error a user can cause: bad input (a study file, data file, CSV or flag). The command line
prints its message as one line naming the input and what was expected, and exits with code 2."""


class InputError(ValueError):
    """Bad user input; the message is one line naming the input and what was expected."""
