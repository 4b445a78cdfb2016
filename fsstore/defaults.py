"""Settings whose defaults the command line prints in its help, in one module that
imports nothing: ``fsstore --help`` builds every command's parser, and must not import
the engine modules that use these (and msgspec, zstandard, numpy through them) to do it.
Each is re-exported by the module that uses it (``compaction.DEFAULT_LEVEL``, ...)."""

#: Sealed segments are merged into files of about this many plain bytes.
DEFAULT_TARGET_BYTES = 4 << 20
#: zstd level: 3 compresses a log about 3.5x at about 250 MB/s (docs/PERFORMANCE facts).
DEFAULT_LEVEL = 3
#: Unreferenced blobs younger than this are kept by gc and vacuum (an hour).
DEFAULT_GRACE_SECONDS = 3600.0
#: ``log/*.torn`` files (bytes a writer set aside) are kept this long: a week.
DEFAULT_TORN_GRACE_SECONDS = 7 * 24 * 3600.0
#: What git runs for a file of the ``fsstore`` diff driver (with the file's path after it).
TEXTCONV_COMMAND = "fsstore textconv"
