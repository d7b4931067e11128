"""Run the `rumination` CLI and SIGKILL it right after a chosen journal record or page fetch: the crash under test.

    python tests/kill_driver.py POINT N rumination-arguments...

POINT is `header`, `checkpoint`, `event:TYPE` (an event type, e.g. event:tool_call) or `fetched` (a page the run's
recorded web has just stored, before the browser shows it); the process kills itself at the N-th one.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from rumination import journal
from rumination.snapshot import SnapshotFetcher


def main() -> int:
    point, count, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    seen = [0]

    def hit() -> None:
        seen[0] += 1
        if seen[0] == count:
            os.kill(os.getpid(), signal.SIGKILL)

    write, fetch = journal.Journal.write, SnapshotFetcher.fetch

    def killing_write(self: journal.Journal, record: Any) -> None:
        write(self, record)
        kind = record.kind if record.kind != "event" else f"event:{record.event.type}"
        if kind == point:
            hit()

    async def killing_fetch(self: SnapshotFetcher, url: str) -> Any:
        page = await fetch(self, url)
        if point == "fetched" and self.store.path.name == journal.WEB:
            hit()
        return page

    journal.Journal.write = killing_write  # type: ignore[method-assign]
    SnapshotFetcher.fetch = killing_fetch  # type: ignore[method-assign]
    from rumination.cli import main as cli

    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
