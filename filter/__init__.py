"""schoolgate: the filter core. Media, hashes, banks, classifier, policy, audit; no mitmproxy."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("schoolgate")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
