"""The command line: ``autogen-http-runtime serve``."""

from .main import main

__all__ = ["main"]
