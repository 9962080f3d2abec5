"""Files shipped inside the package: configs, search-space presets, demo and probe data.

They are read through ``importlib.resources``, so the same code finds them in a clone, an
editable install and a wheel installed into site-packages; nothing assumes a repository beside
the package.
"""
from __future__ import annotations

import atexit
from contextlib import ExitStack
from importlib.resources import as_file, files
from pathlib import Path

# as_file() may hand out a temporary copy (a zipped install); keep it for the life of the process.
_open = ExitStack()
atexit.register(_open.close)


def shipped(*parts: str) -> Path:
    """The shipped file or folder ``pipeline/<parts...>`` as a filesystem path."""
    return _open.enter_context(as_file(files("pipeline").joinpath(*parts)))
