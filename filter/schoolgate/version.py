"""The installed schoolgate's version (the namespace package `schoolgate` has no __init__)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("schoolgate")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
