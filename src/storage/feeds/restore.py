"""Reading an s3backup feed's bucket back onto a RAWX node (``storage-node feeds
restore``): each chunk is PUT with the metadata headers its object carries (user
metadata or sidecar, see ``feeds.s3``), its hash among them, so the node verifies the
data; a chunk the node already has is skipped (HEAD 200). The object's body streams
through in pieces: memory is bounded by a piece and a page of the listing.
"""
from storage.feeds import s3
from storage.rawx.meta import valid_chunk_id
from storage.rawxclient import RawxError

PIECE = 1 << 20  # bytes read from S3 and sent to the node at once
RESTORED, SKIPPED, FAILED = "restored", "skipped", "failed"


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

    def __init__(self, client, feed, rawx):
        self.client = client
        self.feed = feed
        self.rawx = rawx

    def restore(self, chunk_id):
        """-> (RESTORED | SKIPPED | FAILED, reason)."""
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
                    upload.write(data)
            except BaseException:
                upload.abort()
                raise
            upload.finish()
        finally:
            body.close()
        return RESTORED, ""
