"""onnxruntime, imported with its telemetry switched off. Import it only through this module.

On import, onnxruntime writes a persistent device id for Microsoft's telemetry under
~/.cache/Microsoft/DeveloperTools unless ORT_DISABLE_TELEMETRY is set. A filtering appliance keeps
no such identifier and writes nothing outside its own paths (the booted-Debian install test found
it left in /root by the installer's `check-config`).
"""

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import onnxruntime as ort

__all__ = ["ort"]
