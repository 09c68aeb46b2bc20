"""What a put does when nodes fail.

``Plan`` places the chunks of each metachunk as nodes are given up. A node
that refuses a chunk before any byte of it was sent simply hands it to the
next node of the order; a node that fails once bytes were sent leaves the
chunk ``lost``. Once the other chunks are stored, a lost chunk is stored
again on the best spare:

- ``regenerate``: rebuilt from the metachunk's stored chunks (the rebuild
  path; works for any input, needs k of them, so at most m lost);
- ``resend``: the metachunk's bytes read again from the input, which must
  be seekable, and encoded again; any number of lost chunks, as long as
  spares remain.

Memory stays bounded either way: one segment and one set of fragments.
"""
import hashlib
import io
import logging
import threading

from storage.ec import description as descmod
from storage.ec import placement, rebuild
from storage.rawxclient import META, RawxClient, RawxError

log = logging.getLogger(__name__)


class WriteError(Exception):
    """The object could not be stored; nothing of it should be relied on."""


def read_full(stream, buf):
    """Fill buf from the stream; returns the bytes read (short only at EOF)."""
    view = memoryview(buf)
    got = 0
    readinto = getattr(stream, "readinto", None)
    while got < len(view):
        if readinto is not None:
            n = readinto(view[got:])
        else:
            data = stream.read(len(view) - got)
            n = len(data)
            view[got:got + n] = data
        if not n:
            break
        got += n
    return got


def start_offset(stream):
    """Where a seekable stream stands (put can read it again from there), or None."""
    try:
        if stream.seekable():
            return stream.tell()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        pass
    return None


class Plan:
    """Where the chunks of one put go, shared by the uploaders (locked).

    Metachunk N's chunks go to the first k + m nodes of the rendezvous order
    for its key, leaving out the nodes given up earlier in the put. The
    put's ``error`` is set as soon as it cannot succeed: fewer than k + m
    live nodes, or more than m lost chunks in a metachunk when the input
    cannot be read again (``reread`` False).
    """

    def __init__(self, nodes, content_id, layout, reread):
        self.nodes = nodes
        self.content_id = content_id
        self.layout = layout
        self.reread = reread
        self.dead = {}          # node URL -> why it was given up
        self.lost = {}          # metachunk number -> {chunk index: (node, chunk id)}
        self.error = None       # a WriteError once the put cannot succeed
        self._order = {}        # metachunk number -> [node URL] best first
        self._holders = {}      # metachunk number -> {chunk index: node URL}
        self._lock = threading.Lock()

    def _too_few(self, number):
        """A WriteError if fewer than k + m live nodes remain, else None."""
        live = [n for n in self._order[number] if n not in self.dead]
        if len(live) >= self.layout.n:
            return None
        return WriteError(f"metachunk {number}: {len(live)} live nodes remain, {self.layout.n} "
                          f"distinct ones needed; given up: "
                          + "; ".join(f"{n} ({r})" for n, r in self.dead.items()))

    def _give_up(self, number, node, reason):
        """Mark ``node`` dead; the put's error if too few live nodes remain."""
        self.dead.setdefault(node, str(reason))
        if self.error is None:
            self.error = self._too_few(number)
        return self.error

    def assign(self, number):
        """The nodes of metachunk ``number``'s chunks, in index order."""
        with self._lock:
            self._order[number] = placement.rank(
                self.nodes, placement.metachunk_key(self.content_id, number))
            error = self._too_few(number)
            if error is not None:
                raise error
            live = [n for n in self._order[number] if n not in self.dead]
            self._holders[number] = dict(enumerate(live[:self.layout.n]))
            return live[:self.layout.n]

    def replace(self, number, index, node, reason):
        """``node`` refused chunk ``index`` of metachunk ``number`` before any
        byte was sent: the node that takes it now; WriteError if none."""
        with self._lock:
            error = self._give_up(number, node, reason)
            if error is not None:
                raise error
            holders = self._holders[number]
            taken = set(holders.values())
            holders[index] = next(n for n in self._order[number]
                                  if n not in self.dead and n not in taken)
            return holders[index]

    def lose(self, number, index, node, chunk_id, reason):
        """``node`` failed with bytes of the chunk sent (or stored): the
        chunk must be stored again elsewhere."""
        with self._lock:
            lost = self.lost.setdefault(number, {})
            lost[index] = (node, chunk_id)
            self._give_up(number, node, reason)
            if len(lost) > self.layout.m and not self.reread and self.error is None:
                self.error = self.too_many(number)

    def too_many(self, number):
        lost = self.lost[number]
        return WriteError(
            f"metachunk {number}: {len(lost)} chunks lost on failed nodes; at most "
            f"{self.layout.m} can be rebuilt from the others, and the input cannot be read "
            f"again: " + "; ".join(f"{n} ({self.dead[n]})" for n, _ in lost.values()))


def regenerate(desc, mc, lost, plan, stored, problems, timeout):
    """Rebuild the lost chunks of a metachunk (at most m) from its stored
    chunks, each onto the best live node holding none of them."""
    pending = set(lost)
    for index in sorted(lost):
        pos = f"{mc['pos']}.{index}"
        try:
            chunk = rebuild.rebuild(desc, mc["pos"], index,
                                    rebuild.spares(desc, mc["pos"], plan.nodes),
                                    exclude=pending - {index}, verify=False, dead=plan.dead,
                                    timeout=timeout)
        except rebuild.RebuildError as exc:
            raise WriteError(f"chunk {pos} could not be regenerated ({plan.layout.n} distinct "
                             f"live nodes needed): {exc}") from exc
        pending.discard(index)
        stored.append(chunk["url"])
        problems.append(f"chunk {pos}: regenerated on {chunk['url']}")
        log.warning("EC put: %s", problems[-1])


class _Resent:
    """One chunk being sent again: its PUT and running hash."""

    def __init__(self, chunk, node, timeout, headers):
        self.chunk = chunk
        self.node = node
        self.cid = descmod.new_chunk_id()
        self.client = RawxClient(node, timeout=timeout)
        self.md5 = hashlib.md5()
        self.size = 0
        self.upload = self.client.put(self.cid, headers(self.cid), descmod.CHUNK_TRAILERS)

    def write(self, view):
        self.upload.write(view)
        self.md5.update(view)
        self.size += view.nbytes

    def close(self):
        if self.upload is not None:
            self.upload.abort()
        self.client.close()


def resend(desc, mc, lost, plan, stream, start, codec, segment, views, stored, problems,
           timeout):
    """Store the lost chunks of a metachunk again from the input: seek to
    the metachunk's bytes (the put began at stream offset ``start``), read
    and encode them again segment by segment (into ``segment`` and the k + m
    fragment ``views``) and stream fragment i of each to the spare that
    replaces chunk i. A spare that fails is given up and the round starts
    over for the chunks still to store. WriteError when the bytes read
    differ from those stored (their MD5), or no spare is left."""
    number = mc["pos"]
    todo = sorted(lost)
    chunks = {c["index"]: c for c in mc["chunks"]}
    while todo:
        sending = {}
        try:
            spares = [n for n in rebuild.spares(desc, number, plan.nodes) if n not in plan.dead]
            for index in todo:
                while index not in sending:
                    if not spares:
                        raise WriteError(f"metachunk {number}: no live spare left for chunk "
                                         f"{number}.{index} ({plan.layout.n} distinct live "
                                         f"nodes needed)")
                    node = spares.pop(0)
                    try:
                        sending[index] = _Resent(chunks[index], node, timeout,
                                                 lambda cid, i=index: descmod.chunk_headers(
                                                     desc, f"{number}.{i}", cid))
                    except RawxError as exc:
                        plan.dead.setdefault(node, str(exc))
            _send_again(mc, stream, start, codec, segment, views, sending, plan)
            for index, item in sending.items():
                if _finish_again(mc, item, plan, stored, problems, timeout):
                    todo.remove(index)
        finally:
            for item in sending.values():
                item.close()


def _send_again(mc, stream, start, codec, segment, views, sending, plan):
    """One pass over the metachunk's bytes; a chunk whose node fails leaves
    ``sending`` (to be tried again on another spare)."""
    stream.seek(start + mc["offset"])
    md5 = hashlib.md5()
    left = mc["size"]
    while left:
        n = read_full(stream, memoryview(segment)[:min(len(segment), left)])
        if not n:
            raise WriteError(f"metachunk {mc['pos']}: the input ended early when read again")
        data = memoryview(segment)[:n]
        md5.update(data)
        fsize = codec.encode_into(data, views)
        for index, item in list(sending.items()):
            try:
                item.write(views[index][:fsize])
            except RawxError as exc:
                plan.dead.setdefault(item.node, str(exc))
                item.close()
                del sending[index]
        left -= n
    if md5.hexdigest().upper() != mc["hash"].upper():
        raise WriteError(f"metachunk {mc['pos']}: the input changed while it was stored "
                         f"(MD5 {md5.hexdigest().upper()} read again, {mc['hash']} before)")


def _finish_again(mc, item, plan, stored, problems, timeout):
    """End a chunk's PUT; False (its node given up) if that fails."""
    chunk_hash = item.md5.hexdigest().upper()
    trailers = descmod.metachunk_trailers(mc["size"], mc["hash"])
    trailers[META + "Chunk-Hash"] = chunk_hash
    trailers[META + "Chunk-Size"] = str(item.size)
    url = f"{item.node}/{item.cid}"
    upload, item.upload = item.upload, None
    try:
        upload.finish(trailers)
    except RawxError as exc:
        plan.dead.setdefault(item.node, str(exc))
        rebuild.delete_chunk(url, timeout)     # it may be stored all the same
        return False
    item.chunk.update({"url": url, "id": item.cid, "hash": chunk_hash, "size": item.size})
    stored.append(url)
    problems.append(f"chunk {item.chunk['pos']}: sent again to {url}")
    log.warning("EC put: %s", problems[-1])
    return True
