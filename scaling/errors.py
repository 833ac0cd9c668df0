"""Errors a user can cause: the command line prints them as one line and exits with code 2 (the class
lives in the shared leaf package, so the torch-free analysis raises the same one)."""
from common.errors import InputError

__all__ = ["InputError"]
