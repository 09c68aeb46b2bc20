"""``SEND /<ID>?admin`` on the RAWX port (spec send.md: the legacy form, and the feed
form in ``storage.send.feeds``), mixed into
RawxApp: the admin check shared by every admin HTTP route, the request headers, and
the TaskReply that runs the transfer on the worker's transfer threads."""
import logging
import re

from storage.errors import BadRequest
from storage.http.reply import Reply, TaskOutcome, TaskReply
from storage.send import feeds
from storage.send.legacy import LegacySend

log = logging.getLogger(__name__)

# host:port of a node (or reverse proxy): a name or IPv4 address, or [IPv6]
_TARGET = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253})|\[[0-9A-Fa-f:.]+\]):"
                     r"(?:[1-9][0-9]{0,4})\Z")
NO_ADMIN_FILE = "admin operations are disabled: the node has no admin_htdigest"


def query_args(query):
    """{lower-case name: [values]} of a query string; a name without '=' is 'true'."""
    args = {}
    for item in filter(None, query.split("&")):
        name, sep, value = item.partition("=")
        args.setdefault(name.lower(), []).append(value if sep else "true")
    return args


def parse_target(value):
    """'host:port' of Castor-System-Target, checked; BadRequest otherwise."""
    value = value.strip()
    match = _TARGET.match(value)
    if not match or int(value.rpartition(":")[2]) > 65535:
        raise BadRequest(f"Castor-System-Target must be host:port, got {value[:80]!r}")
    return value


def parse_auth(value):
    """(user, password) of Castor-System-Auth 'user:password', or None."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user:
        raise BadRequest("Castor-System-Auth must be user:password")
    return user, password


class SendRoutes:
    """SEND for RawxApp (uses self.admin, self.config, self._open)."""

    def admin_refusal(self, request):
        """The reply refusing an admin request, or None when its credentials are
        good: 403 without an admin_htdigest, 401 with both challenges otherwise."""
        admin = self.admin
        if admin is None:
            return Reply(403, body=(NO_ADMIN_FILE + "\n").encode(), reason=NO_ADMIN_FILE)
        result = admin.check(request.method, request.target,
                             request.headers.get("authorization"))
        if result.ok:
            return None
        log.info("admin %s %s refused: %s", request.method, request.path, result.reason)
        body = b"admin credentials required\n"
        return Reply(401, admin.challenge(stale=result.stale) +
                     [("Content-Type", "text/plain")], body=body,
                     reason=f"unauthorized: {result.reason}")

    def _chunk_send(self, chunk_id, request, exchange):
        args = query_args(request.query)
        if "admin" not in args:
            return Reply(400, body=b"SEND is an admin operation: add ?admin\n",
                         reason="SEND without ?admin")
        refusal = self.admin_refusal(request)
        if refusal is not None:
            return refusal
        if feeds.is_feed_send(args):
            return self._feed_send(chunk_id, args, exchange)
        headers = request.headers
        cluster = headers.get("castor-system-cluster", "").strip()
        target = headers.get("castor-system-target", "")
        if not cluster or not target:
            missing = "Castor-System-Cluster" if not cluster else "Castor-System-Target"
            raise BadRequest(f"missing header {missing}")
        target = parse_target(target)
        auth = parse_auth(headers.get("castor-system-auth", ""))
        reader, stored, fields = self._open(chunk_id, exchange)
        job = LegacySend(chunk_id, reader, stored, target, cluster, auth,
                         self.config.send_timeout)
        return TaskReply(job.run, job.cancel, fields=fields,
                         interval=self.config.keepalive_interval)

    def _feed_send(self, chunk_id, args, exchange):
        recorder = self.feeds
        selected = feeds.select_feeds(args, recorder.feeds if recorder else ())
        timeout = feeds.parse_timeout(args, self.config.feed_send_timeout)
        force = feeds.parse_force(args)
        reader, stored, fields = self._open(chunk_id, exchange)
        reader.close()
        if not selected:  # no feed matches: 200 and no status at all
            return TaskReply(lambda progress: TaskOutcome(200), lambda: None,
                             fields=fields, light=True)
        job = feeds.FeedSend(recorder, chunk_id, stored, selected, timeout, force)
        return TaskReply(job.run, job.cancel, fields=fields,
                         interval=self.config.keepalive_interval, light=True)
