"""Asking a replication feed's target, over SWAP, which chunks it has already: one
``GET_PATH_DETAILS`` frame for a batch of due chunks instead of one HTTP ``HEAD`` per
chunk (spec swap.md; the target must be one of our nodes with ``swap_listen``).

A feed with ``swap = "host:port"`` keeps one SWAP session to its target (``swap_auth =
"user:password"`` for SASL PLAIN, or none when this node is in the target's
``swap_peers``). The chunks the target has count as delivered (as a 409 would); the
others go to the PUT threads, which skip their HEAD. The answer is only advice: a
chunk stored there meanwhile still ends in a 409, which is done.

If the session cannot be opened or fails, the batch goes the HTTP way (a HEAD per
chunk) and SWAP is tried again after ``RETRY_AFTER`` seconds: the feed never waits
for SWAP.
"""
import logging
import time

from storage.swap.client import SwapClient, SwapError
from storage.swap.messages import PathKind

log = logging.getLogger(__name__)

GROUP = "chunks"
BATCH = 512  # chunks asked about in one frame
RETRY_AFTER = 30.0  # seconds without SWAP after it failed


class SwapProbe:
    """The SWAP session of one replication feed (used by one thread at a time)."""

    def __init__(self, feed, timeout):
        self.feed = feed
        self.timeout = timeout
        self.client = None
        self.down_until = 0.0

    def close(self):
        if self.client is not None:
            self.client.close()
            self.client = None

    def _connect(self):
        host, port = self.feed.swap
        auth = self.feed.swap_auth
        client = SwapClient.connect(host, port, timeout=self.timeout, peer=not auth)
        try:
            if auth:
                client.authenticate(*auth)
            client.group(GROUP)
        except BaseException:
            client.close()
            raise
        self.client = client
        log.info("feed %d: asking %s:%d over SWAP which chunks it has", self.feed.id,
                 host, port)

    def present(self, chunk_ids):
        """The subset of ``chunk_ids`` the target has, or None when SWAP could not
        tell (the caller asks by HTTP instead)."""
        if time.monotonic() < self.down_until:
            return None
        try:
            if self.client is None:
                self._connect()
            details = self.client.stat(GROUP, chunk_ids)
        except (SwapError, OSError, ValueError) as exc:
            self.close()
            self.down_until = time.monotonic() + RETRY_AFTER
            host, port = self.feed.swap
            log.warning("feed %d: SWAP on %s:%d failed (%s); HEAD per chunk for %.0fs",
                        self.feed.id, host, port, exc, RETRY_AFTER)
            return None
        return {d.path for d in details if d.kind == PathKind.FILE}
