"""File helpers shared by the readers and the build pipeline (:mod:`dustmaps_ext_build`).

:func:`atomic_output` writes a file under a temporary name, flushes it and renames it into
place, so that no reader ever sees a file that looks complete and is not;
:func:`write_text_atomic` and :func:`write_json_atomic` are its one-line forms.
"""

from ._io.files import atomic_output, fsync_dir, fsync_file, write_json_atomic, write_text_atomic

__all__ = ["atomic_output", "write_text_atomic", "write_json_atomic", "fsync_file", "fsync_dir"]
