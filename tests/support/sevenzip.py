"""7z archives for the tests, written by libarchive (the library the gateway reads them with;
Python writes no 7z, and no 7-Zip is installed here)."""

from __future__ import annotations

import ctypes
import ctypes.util

_REGULAR = 0o100000


def seven_zip(files: dict[str, bytes], compression: str = "lzma2") -> bytes:
    """A 7z archive of `files` (name -> bytes), compressed with `compression` ("copy", "lzma1",
    "lzma2", "deflate", "bzip2", "ppmd")."""
    library = ctypes.CDLL(ctypes.util.find_library("archive") or "libarchive.so.13")
    pointer = ctypes.c_void_p
    library.archive_write_new.restype = pointer
    library.archive_entry_new.restype = pointer
    for name in ("archive_write_set_format_7zip", "archive_write_close", "archive_write_free"):
        getattr(library, name).argtypes = [pointer]
    library.archive_write_set_option.argtypes = [pointer, ctypes.c_char_p, ctypes.c_char_p,
                                                 ctypes.c_char_p]  # fmt: skip
    library.archive_write_open_memory.argtypes = [pointer, pointer, ctypes.c_size_t,
                                                  ctypes.POINTER(ctypes.c_size_t)]  # fmt: skip
    library.archive_entry_set_pathname.argtypes = [pointer, ctypes.c_char_p]
    library.archive_entry_set_size.argtypes = [pointer, ctypes.c_int64]
    library.archive_entry_set_filetype.argtypes = [pointer, ctypes.c_uint]
    library.archive_entry_set_perm.argtypes = [pointer, ctypes.c_uint]
    library.archive_entry_free.argtypes = [pointer]
    library.archive_write_header.argtypes = [pointer, pointer]
    library.archive_write_data.argtypes = [pointer, ctypes.c_char_p, ctypes.c_size_t]
    library.archive_write_data.restype = ctypes.c_ssize_t
    capacity = 2 * sum(len(data) for data in files.values()) + 65536
    buffer = ctypes.create_string_buffer(capacity)
    used = ctypes.c_size_t()
    archive = library.archive_write_new()
    assert library.archive_write_set_format_7zip(archive) == 0
    assert library.archive_write_set_option(archive, b"7zip", b"compression",
                                            compression.encode()) == 0  # fmt: skip
    assert library.archive_write_open_memory(archive, buffer, capacity, ctypes.byref(used)) == 0
    for name, data in files.items():
        entry = library.archive_entry_new()
        library.archive_entry_set_pathname(entry, name.encode())
        library.archive_entry_set_size(entry, len(data))
        library.archive_entry_set_filetype(entry, _REGULAR)
        library.archive_entry_set_perm(entry, 0o644)
        assert library.archive_write_header(archive, entry) == 0
        assert library.archive_write_data(archive, data, len(data)) == len(data)
        library.archive_entry_free(entry)
    assert library.archive_write_close(archive) == 0
    library.archive_write_free(archive)
    return buffer.raw[: used.value]
