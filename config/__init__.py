"""The default configuration files, shipped as the data package `schoolgate.defaults`.

They live here, at the top of the repository, where people read them; the code that reads them is
`schoolgate.config` (filter/schoolgate/config.py). This file only makes the folder a regular
package: importlib.resources cannot read a namespace package through an editable install.
"""
