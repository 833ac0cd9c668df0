"""Errors a user can cause: the command line prints them as one line and exits with code 2."""


class InputError(ValueError):
    """Bad user input (study file, data file, flag). The message is one line naming the input."""
