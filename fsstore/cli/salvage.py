"""``fsstore cat SESSION --salvage``: what can still be read from a damaged session,
without changing it (docs/FORMAT.md, section 7.6)."""

from __future__ import annotations

import argparse
import itertools
import sys

from .. import layout
from ..salvage import salvage_session
from ..turns import callers_events
from ._common import event_json, store_from


def run_cat_salvage(args: argparse.Namespace) -> int:
    """Print every event that still verifies as ``cat`` prints events (JSON lines on
    stdout, in seq order, those after damage included), then the report to stderr: the
    seqs saved and lost, and each damaged byte range with its file and offset. Exits 1
    when records were lost or a file is damaged."""
    store = store_from(args)
    path = layout.session_dir(store.path, args.session)
    report = salvage_session(store.io, path, args.session, check_files=False)
    events = report.events(max(args.after, 0))
    if args.all_records:
        shown = events if args.limit is None else itertools.islice(events, max(args.limit, 0))
    else:
        shown = callers_events(events, args.limit)
    write = sys.stdout.write
    for event in shown:
        write(event_json(event) + "\n")
    sys.stdout.flush()
    for line in report.summary_lines():
        print(line, file=sys.stderr)
    print("other files (snapshots, checkpoints, blobs): see `fsstore verify "
          f"{args.session}`", file=sys.stderr)
    return 0 if report.clean else 1
