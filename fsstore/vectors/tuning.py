"""The sizes and periods a vector collection works with, read from this module at call
time by the modules that use them.

None of them is part of the on-disk format: a collection written with one setting opens
and searches the same with any other. Tests and tools that want small shards or many
merges patch them here, and only here::

    monkeypatch.setattr(fsstore.vectors.tuning, "SEAL_ROWS", 8)

(an assignment to ``fsstore.vectors.SEAL_ROWS`` would change nothing: the package does
not define them).
"""

from __future__ import annotations

SEAL_ROWS = 4096  # documents held in the log (and memory) before they become a shard
SEAL_BYTES = 8 << 20  # log bytes, likewise; an upsert this big is written as a shard
TIER_FANOUT = 4  # shards of one size tier merged at once
#: How long files and log records a seal or merge stops naming stay on disk (seconds),
#: so that a copy of the folder taken meanwhile (cp -r, tar) still holds a whole state
#: (docs/FORMAT.md, section 15.8).
COPY_GRACE_SECONDS = 600.0
CHUNK_ROWS = 16384  # rows scored per BLAS call in a search: the scores stay in cache
