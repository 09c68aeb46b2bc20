"""Reading an s3backup feed's bucket back onto a RAWX node (``storage-node feeds
restore``): each chunk is PUT with the metadata headers its object carries (user
metadata or sidecar, see ``feeds.s3``), its hash among them, so the node verifies the
data; a chunk the node already has is skipped (HEAD 200). The object's body streams
through in pieces.

``RestorePool`` runs ``jobs`` restores at once: a lister thread reads the listing (or
the named ids) into a bounded queue of ``2 * jobs`` ids, each worker thread restores
with a RawxClient of its own (one connection, not thread-safe) and the boto3 client
they share (thread-safe), and the caller's thread gets every result, in the order they
finish. Memory stays bounded by a page of the listing, the queue and ``jobs`` pieces,
whatever the bucket holds. ``stop()`` ends it early: the lister stops, a worker drops
a PUT between two pieces (the node discards a body cut short) and the workers'
connections are shut down, so a stop never leaves a partial chunk on the node.
"""
import logging
import queue
import threading
import time

from storage.feeds import s3
from storage.rawx.meta import valid_chunk_id
from storage.rawxclient import RawxError

PIECE = 1 << 20  # bytes read from S3 and sent to the node at once
RESTORED, SKIPPED, FAILED = "restored", "skipped", "failed"
LISTING = "listing"  # a result whose reason says why the listing failed
DEFAULT_JOBS, MAX_JOBS = 4, 64
log = logging.getLogger(__name__)


class Stopped(Exception):
    """A restore dropped because the run is stopping (RestorePool.stop)."""


def chunk_ids(client, bucket, key_prefix):
    """The chunk ids under ``key_prefix`` in ``bucket``, a page of the listing at a
    time (sidecars and keys that are not ``<prefix>/<CHUNKID>`` are left out)."""
    start = f"{key_prefix}/" if key_prefix else ""
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=start):
        for obj in page.get("Contents", ()):
            name = obj["Key"][len(start):]
            if valid_chunk_id(name):
                yield name


class Restorer:
    """Restores chunks of one s3backup ``feed`` (its bucket and prefix) with the boto3
    ``client`` onto the node of ``rawx`` (a RawxClient)."""

    def __init__(self, client, feed, rawx, stopping=None):
        self.client = client
        self.feed = feed
        self.rawx = rawx
        self.stopping = stopping  # a threading.Event: set, a PUT is dropped midway

    def restore(self, chunk_id):
        """-> (RESTORED | SKIPPED | FAILED, reason). Stopped when ``stopping`` is set
        during the copy (the PUT is dropped: the node keeps nothing of it)."""
        import botocore.exceptions as boterr
        try:
            status, _ = self.rawx.head(chunk_id)
            if status == 200:
                return SKIPPED, "already on the node"
            if status != 404:
                return FAILED, f"the node answered HEAD with {status}"
            return self._copy(chunk_id)
        except s3.BadBackup as exc:
            return FAILED, f"not restored: {exc}"
        except RawxError as exc:
            if exc.status == 409:  # stored there meanwhile
                return SKIPPED, "already on the node"
            return FAILED, str(exc)
        except boterr.ClientError as exc:
            code, _ = s3.error_code(exc)
            if code in ("NoSuchKey", "404"):
                return FAILED, "no such object in the bucket"
            return FAILED, s3.describe(exc)
        except boterr.BotoCoreError as exc:
            return FAILED, s3.describe(exc)

    def headers(self, chunk_id, user_meta):
        """The PUT headers of a chunk whose object has ``user_meta``. BadBackup."""
        user = {k.lower(): v for k, v in user_meta.items()}
        if user.get("oio-format") != s3.FORMAT:
            raise s3.BadBackup("its object has no chunk metadata")
        if user.get("oio-sidecar") == "1":
            key = s3.object_key(self.feed, chunk_id) + s3.SIDECAR_SUFFIX
            try:
                obj = self.client.get_object(Bucket=self.feed.bucket, Key=key)
            except Exception as exc:
                if s3.error_code(exc)[0] in ("NoSuchKey", "404"):
                    raise s3.BadBackup("its metadata sidecar is missing") from None
                raise
            with obj["Body"] as body:
                data = body.read(s3.SIDECAR_MAX + 1)
            if len(data) > s3.SIDECAR_MAX:
                raise s3.BadBackup("its metadata sidecar is too large")
            headers = s3.decode_sidecar(data, chunk_id)
        else:
            headers = s3.decode_user_metadata(user)
        named = {k.lower(): v for k, v in headers.items()}
        if named.get("x-oio-chunk-meta-chunk-id", "").upper() != chunk_id.upper():
            raise s3.BadBackup("its metadata name another chunk, or none")
        if not named.get("x-oio-chunk-meta-chunk-hash"):
            raise s3.BadBackup("its metadata have no chunk hash")
        return headers

    def _copy(self, chunk_id):
        key = s3.object_key(self.feed, chunk_id)
        obj = self.client.get_object(Bucket=self.feed.bucket, Key=key)
        body = obj["Body"]
        try:
            headers = self.headers(chunk_id, obj.get("Metadata", {}))
            size = {k.lower(): v for k, v in headers.items()}.get("x-oio-chunk-meta-chunk-size")
            if size is not None and size != str(obj.get("ContentLength")):
                raise s3.BadBackup(f"its object has {obj.get('ContentLength')} bytes, its "
                                   f"metadata say {size}")
            upload = self.rawx.put(chunk_id, headers)
            try:
                while True:
                    data = body.read(PIECE)
                    if not data:
                        break
                    if self.stopping is not None and self.stopping.is_set():
                        raise Stopped()
                    upload.write(data)
            except BaseException:
                upload.abort()
                raise
            upload.finish()
        finally:
            body.close()
        return RESTORED, ""


class RestorePool:
    """One thread per Restorer of ``restorers`` (each with its own RawxClient, all
    with the same ``stopping`` event) restoring the chunk ids the iterable ``ids``
    yields. ``results()`` yields (chunk_id, outcome, reason) in the caller's thread,
    and (None, LISTING, reason) if iterating ``ids`` raised."""

    def __init__(self, restorers, ids, stopping):
        self.restorers = restorers
        self.ids = ids
        self.stopping = stopping
        jobs = len(restorers)
        self.todo = queue.Queue(2 * jobs)  # chunk ids, then one None per worker
        self.done = queue.Queue()  # results; a worker that ends puts None
        self.threads = [threading.Thread(target=self._list, name="restore-lister",
                                         daemon=True)]
        self.threads += [threading.Thread(target=self._work, args=(one,), daemon=True,
                                          name=f"restore-{n}")
                         for n, one in enumerate(restorers)]
        self.running = jobs  # workers not ended yet
        self.started = False

    def start(self):
        """Start the threads (``results()`` does it if need be)."""
        if not self.started:
            self.started = True
            for thread in self.threads:
                thread.start()

    def results(self):
        self.start()
        while self.running:
            item = self._get(0.5)
            if item is not None:
                yield item

    def stop(self, grace=5.0):
        """Stop early: -> the results that came in meanwhile (restores that ended
        before they saw the stop). Waits ``grace`` seconds at most."""
        self.stopping.set()
        for restorer in self.restorers:
            restorer.rawx.shutdown()  # a HEAD or a reply being waited for fails now
        deadline = time.monotonic() + grace
        late = []
        while self.running and time.monotonic() < deadline:
            item = self._get(0.1)
            if item is not None and item[1] != FAILED:  # a failure now is the stop's
                late.append(item)
        return late

    def _get(self, timeout):
        """A result, or None (a worker ended, or nothing came within ``timeout``)."""
        try:
            item = self.done.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is None:
            self.running -= 1
        return item

    def _put(self, item):
        """Put on the bounded queue unless the run stops first; -> whether it did."""
        while not self.stopping.is_set():
            try:
                self.todo.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _list(self):
        import botocore.exceptions as boterr
        try:
            for chunk_id in self.ids:
                if not self._put(chunk_id):
                    break
        except (boterr.ClientError, boterr.BotoCoreError) as exc:
            self.done.put((None, LISTING, s3.describe(exc)))
        except Exception as exc:  # said, rather than a hung run
            log.exception("listing the chunks to restore")
            self.done.put((None, LISTING, f"{exc.__class__.__name__}: {exc}"))
        finally:
            for _ in self.restorers:
                if not self._put(None):
                    break

    def _next(self):
        while not self.stopping.is_set():
            try:
                return self.todo.get(timeout=0.2)
            except queue.Empty:
                continue
        return None

    def _work(self, restorer):
        try:
            while True:
                chunk_id = self._next()
                if chunk_id is None:
                    break
                try:
                    outcome, reason = restorer.restore(chunk_id)
                except Stopped:
                    break
                except Exception as exc:  # a bug fails one chunk, not the run
                    log.exception("restoring %s", chunk_id)
                    outcome, reason = FAILED, f"{exc.__class__.__name__}: {exc}"
                if self.stopping.is_set() and outcome == FAILED:
                    break  # the stop's doing: it shut the connection down
                self.done.put((chunk_id, outcome, reason))
        finally:
            restorer.rawx.close()
            self.done.put(None)
