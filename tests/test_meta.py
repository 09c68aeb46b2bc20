"""storage.rawx.meta: PUT header validation, xattr mapping and reply headers (spec
rawx.md sections 2-4)."""
import hashlib
import re
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.errors import BadRequest
from storage.rawx import meta
from storage.rawx.meta import (FullPath, PutMeta, StoredMeta, canonical_header,
                               container_id, escape_path, valid_chunk_id)

CHUNK_ID = "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF"
MD5 = "9E107D9D372BB6826BD81D3542A419D6"
BLAKE3 = "A" * 64
P = "x-oio-chunk-meta-"


def cid(account, container):
    """The spec's formula, written out independently of meta.container_id."""
    return hashlib.sha256(account + b"\x00" + container).hexdigest().upper()


def put_headers(**changes):
    """A valid PUT header set; keyword = header suffix with '_' for '-', None drops it."""
    headers = {
        P + "content-storage-policy": "THREECOPIES",
        P + "content-chunk-method": "plain/nb_copy=3",
        P + "chunk-pos": "0",
        P + "full-path": "my%20acct/cont/dir%2Fobj%20name/1700000000000000/a1b2c3",
        P + "chunk-id": CHUNK_ID.lower(),
        P + "container-id": cid(b"my acct", b"cont").lower(),
        P + "content-path": "dir%2Fobj%20name",
        P + "content-version": "1700000000000000",
        P + "content-id": "A1B2C3",
        "host": "127.0.0.1:6009",
        "content-length": "11",
    }
    for key, value in changes.items():
        name = key.replace("_", "-")
        name = name if name.startswith("x-oio-ext-") else P + name
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return headers


def rejected(**changes):
    with pytest.raises(BadRequest) as info:
        PutMeta(CHUNK_ID, put_headers(**changes))
    message = str(info.value)
    assert message and "\n" not in message
    return message


# -- a valid PUT ------------------------------------------------------------------

def test_valid_put_headers():
    put = PutMeta(CHUNK_ID, put_headers())
    assert put.policy == "THREECOPIES"
    assert put.position == "0"
    assert put.method.stored == "plain/nb_copy=3,cca=md5" and put.method.algo == "md5"
    assert not put.method.is_ec
    fp = put.fullpath
    assert fp.account == b"my acct" and fp.container == b"cont"
    assert fp.path == b"dir/obj name"
    assert fp.version == "1700000000000000"
    assert fp.content_id == "A1B2C3"
    assert fp.raw == "my%20acct/cont/dir%2Fobj%20name/1700000000000000/A1B2C3"
    assert put.chunk_hash == "" and put.chunk_size == ""
    assert put.metachunk_hash == "" and put.metachunk_size == ""
    assert put.non_optimal is False
    assert put.ext == {}


def test_only_mandatory_headers():
    headers = {P + "content-storage-policy": "SINGLE",
               P + "content-chunk-method": "plain/nb_copy=1",
               P + "chunk-pos": "3.1",
               P + "full-path": "a/c/p/0/ABCD"}
    put = PutMeta(CHUNK_ID, headers)
    assert put.position == "3.1"
    assert put.fullpath.content_id == "ABCD"


@pytest.mark.parametrize("header", ["content_storage_policy", "content_chunk_method",
                                    "chunk_pos", "full_path"])
@pytest.mark.parametrize("value", [None, ""])
def test_missing_mandatory_header(header, value):
    assert header.replace("_", "-") in rejected(**{header: value}).lower()


# -- chunk method and cca ---------------------------------------------------------------

@pytest.mark.parametrize("method,stored,algo", [
    ("plain/nb_copy=1", "plain/nb_copy=1,cca=md5", "md5"),
    ("plain/", "plain/cca=md5", "md5"),
    ("ec/algo=liberasurecode_rs_vand,k=6,m=3",
     "ec/algo=liberasurecode_rs_vand,k=6,m=3,cca=md5", "md5"),
    ("plain/nb_copy=1,cca=md5", "plain/nb_copy=1,cca=md5", "md5"),
    ("plain/cca=md5,nb_copy=1", "plain/cca=md5,nb_copy=1", "md5"),
    ("plain/nb_copy=1,cca=blake3", "plain/nb_copy=1,cca=blake3", "blake3"),
    ("plain/cca=sha256", "plain/cca=sha256", "blake3"),
    ("plain/nb_copy=1,cca=", "plain/nb_copy=1,cca=", "blake3"),
    ("backblaze/account_id=x,bucket_name=y", "backblaze/account_id=x,bucket_name=y,cca=md5",
     "md5"),
])
def test_chunk_method_cca(method, stored, algo):
    put = PutMeta(CHUNK_ID, put_headers(content_chunk_method=method))
    assert (put.method.stored, put.method.algo) == (stored, algo)
    assert put.xattrs()["user.grid.content.chunk_method"] == stored.encode()


@pytest.mark.parametrize("method", ["plain", "nb_copy=1", "ec"])
def test_chunk_method_without_slash(method):
    assert "chunk-method" in rejected(content_chunk_method=method)


def test_ec_method_detected():
    put = PutMeta(CHUNK_ID, put_headers(content_chunk_method="ec/k=6,m=3"))
    assert put.method.is_ec
    assert not PutMeta(CHUNK_ID, put_headers(content_chunk_method="ecx/k=6")).method.is_ec


# -- full path ---------------------------------------------------------------------

FP_OK = "a/c/p/1/ABCD"


def only_fp(fullpath, **changes):
    """Headers with the given full path and none of the optional consistency headers."""
    fields = dict(chunk_id=None, container_id=None, content_path=None,
                  content_version=None, content_id=None)
    fields.update(changes)
    return put_headers(full_path=fullpath, **fields)


@pytest.mark.parametrize("fullpath", [
    "a/c/p/1", "a/c/p/1/ABCD/x", "a/c/p", "a", "a/c/p%2F1%2FABCD",
    "/c/p/1/ABCD", "a//p/1/ABCD", "a/c//1/ABCD", "%41/c//1/ABCD",
    "a/c/p//ABCD", "a/c/p/1.5/ABCD", "a/c/p/x/ABCD", "a/c/p/1 /ABCD", "a/c/p/0x1/ABCD",
    "a/c/p/9223372036854775808/ABCD", "a/c/p/-9223372036854775809/ABCD",
    "a/c/p/%C3%A9/ABCD", "a/c/p/1/XYZ", "a/c/p/1/AB-CD", "a/c/p/1/" + "A" * 65,
    "a/c/p/1/%C3%A9",
])
def test_bad_full_path(fullpath):
    with pytest.raises(BadRequest):
        PutMeta(CHUNK_ID, only_fp(fullpath, content_id="ABCD"))


@pytest.mark.parametrize("version", ["0", "1", "-1", "+1", "9223372036854775807",
                                     "-9223372036854775808", "%31%32"])
def test_full_path_versions(version):
    put = PutMeta(CHUNK_ID, only_fp(f"a/c/p/{version}/ABCD"))
    assert put.fullpath.version == unquote_to_bytes(version).decode()


def test_full_path_parts_are_percent_decoded():
    put = PutMeta(CHUNK_ID, only_fp("acct%2Fx/c%25d/p%3Fq%20r+s/5/abcdef"))
    fp = put.fullpath
    assert (fp.account, fp.container, fp.path) == (b"acct/x", b"c%d", b"p?q r+s")
    assert fp.content_id == "ABCDEF"
    # stored as sent, only the content id part upper-cased
    assert fp.raw == "acct%2Fx/c%25d/p%3Fq%20r+s/5/ABCDEF"


def test_full_path_content_id_of_64_chars():
    content = "ab" * 32
    put = PutMeta(CHUNK_ID, only_fp(f"a/c/p/1/{content}"))
    assert put.fullpath.content_id == content.upper()


def test_empty_content_id_part_needs_a_content_id_header():
    assert "content id" in rejected(full_path="a/c/p/1/", content_id=None,
                                    container_id=None, content_path=None,
                                    content_version=None)
    with pytest.raises(BadRequest):
        PutMeta(CHUNK_ID, only_fp("a/c/p/1/", content_id="ABCD"))


def test_raw_non_ascii_bytes_in_full_path():
    """Header values arrive as latin-1 text of the wire bytes: the account, container and
    path are those bytes, not a re-encoding of their latin-1 text."""
    wire = b"acct/caf\xc3\xa9/\xe9t\xe9/1/ABCD"
    put = PutMeta(CHUNK_ID, only_fp(wire.decode("latin-1"),
                                    container_id=cid(b"acct", b"caf\xc3\xa9")))
    assert put.fullpath.container == b"caf\xc3\xa9"
    assert put.fullpath.path == b"\xe9t\xe9"
    assert put.xattrs()[meta.XATTR_FULLPATH + CHUNK_ID] == wire


# -- consistency headers ------------------------------------------------------------

def test_chunk_id_header_matches_ignoring_case():
    PutMeta(CHUNK_ID, put_headers(chunk_id=CHUNK_ID))
    PutMeta(CHUNK_ID, put_headers(chunk_id=CHUNK_ID.lower()))
    assert "chunk-id" in rejected(chunk_id="F" + CHUNK_ID[1:])
    assert "chunk-id" in rejected(chunk_id=CHUNK_ID[:-1])


def test_container_id():
    assert container_id(b"my acct", b"cont") == cid(b"my acct", b"cont")
    assert container_id(b"a", b"bc") != container_id(b"ab", b"c")  # the NUL separates
    PutMeta(CHUNK_ID, put_headers(container_id=cid(b"my acct", b"cont")))
    assert "container-id" in rejected(container_id=cid(b"my acct", b"cont2"))
    assert "container-id" in rejected(container_id=cid(b"my%20acct", b"cont"))
    assert "container-id" in rejected(container_id="00")


def test_content_path_compared_decoded():
    PutMeta(CHUNK_ID, put_headers(content_path="dir/obj name"))
    PutMeta(CHUNK_ID, put_headers(content_path="dir%2fobj%20name"))
    assert "content-path" in rejected(content_path="dir/obj+name")
    assert "content-path" in rejected(content_path="obj name")


def test_content_version_compared_as_a_string():
    assert "content-version" in rejected(content_version="1700000000000001")
    assert "content-version" in rejected(content_version="01700000000000000")
    assert "content-version" in rejected(content_version="+1700000000000000")


def test_content_id_compared_ignoring_case():
    PutMeta(CHUNK_ID, put_headers(content_id="a1b2c3"))
    assert "content-id" in rejected(content_id="A1B2C4")


# -- hex and int64 values ------------------------------------------------------------

@pytest.mark.parametrize("name", ["chunk_hash", "metachunk_hash"])
def test_hashes(name):
    put = PutMeta(CHUNK_ID, put_headers(**{name: MD5.lower()}))
    assert getattr(put, name) == MD5
    assert getattr(PutMeta(CHUNK_ID, put_headers(**{name: BLAKE3.lower()})), name) == BLAKE3
    for bad in ("xyz", "A" * 65, "0x12", "12 34", "\xe9"):
        assert name.replace("_", "-") in rejected(**{name: bad})


@pytest.mark.parametrize("name", ["chunk_size", "metachunk_size"])
def test_sizes(name):
    for good in ("0", "1048576", "+7", "9223372036854775807"):
        assert getattr(PutMeta(CHUNK_ID, put_headers(**{name: good})), name) == good
    for bad in ("abc", "1.0", "1e3", " 1", "9223372036854775808", "--1", "\u0661"):
        assert name.replace("_", "-") in rejected(**{name: bad})


@pytest.mark.parametrize("value,expected", [("true", True), ("True", True), ("yes", True),
                                            ("1", True), ("on", True), ("false", False),
                                            ("0", False), ("", False)])
def test_non_optimal_placement(value, expected):
    put = PutMeta(CHUNK_ID, put_headers(non_optimal_placement=value))
    assert put.non_optimal is expected


# -- ext metadata ----------------------------------------------------------------------

def test_ext_headers_become_xattrs():
    put = PutMeta(CHUNK_ID, put_headers(**{"x-oio-ext-color": "dark%20red",
                                          "x-oio-ext-my-key": "v%2Fw+x",
                                          "x-oio-ext-empty": ""}))
    assert put.ext == {"user.oio.ext.Color": b"dark red", "user.oio.ext.My-Key": b"v/w+x",
                       "user.oio.ext.Empty": b""}
    attrs = put.xattrs()
    assert attrs["user.oio.ext.Color"] == b"dark red"
    assert "user.oio.ext.Empty" not in attrs


def test_ext_raw_non_ascii_bytes_kept():
    put = PutMeta(CHUNK_ID, put_headers(**{"x-oio-ext-k": b"caf\xc3\xa9".decode("latin-1")}))
    assert put.ext["user.oio.ext.K"] == b"caf\xc3\xa9"


def test_bare_ext_prefix_ignored():
    assert PutMeta(CHUNK_ID, put_headers(**{"x-oio-ext-": "v"})).ext == {}


@pytest.mark.parametrize("value", ["a%0D%0Ab", "a%0Db", "a%0ab", "%0D%0AX-Injected: 1",
                                   "a%00b", "a%01", "a%7Fb", "a\x01b", "a\x7f"])
def test_ext_values_with_control_characters_are_refused(value):
    """A percent-decoded CR/LF would be written to disk and replayed in GET replies:
    refuse it at PUT time, NUL included (xattr values never hold NUL)."""
    assert "x-oio-ext-k" in rejected(**{"x-oio-ext-k": value}).lower()


def test_ext_values_with_tab_and_high_bytes_accepted():
    put = PutMeta(CHUNK_ID, put_headers(**{"x-oio-ext-k": "a%09b%FF"}))
    assert put.ext["user.oio.ext.K"] == b"a\tb\xff"


# -- end of body ------------------------------------------------------------------------

def finished(trailers=(), computed=MD5, received=11, **changes):
    put = PutMeta(CHUNK_ID, put_headers(**changes))
    return put, put.finish(list(trailers), computed, received)


def test_finish_plain():
    put, attrs = finished()
    assert attrs == {
        meta.XATTR_FULLPATH + CHUNK_ID:
            b"my%20acct/cont/dir%2Fobj%20name/1700000000000000/A1B2C3",
        "user.grid.chunk.hash": MD5.encode(),
        "user.grid.chunk.size": b"11",
        "user.grid.chunk.position": b"0",
        "user.grid.content.chunk_method": b"plain/nb_copy=3,cca=md5",
        "user.grid.content.storage_policy": b"THREECOPIES",
    }
    assert (put.chunk_hash, put.chunk_size) == (MD5, "11")


def test_finish_stores_given_values_verbatim():
    _, attrs = finished(chunk_hash=MD5.lower(), chunk_size="+11",
                        metachunk_hash=BLAKE3.lower(), metachunk_size="33")
    assert attrs["user.grid.chunk.hash"] == MD5.encode()
    assert attrs["user.grid.chunk.size"] == b"+11"
    assert attrs["user.grid.metachunk.hash"] == BLAKE3.encode()
    assert attrs["user.grid.metachunk.size"] == b"33"


def test_chunk_hash_compared_ignoring_case():
    finished(chunk_hash=MD5.lower())
    finished([(P + "chunk-hash", MD5.lower())])
    with pytest.raises(BadRequest, match="chunk-hash"):
        finished(chunk_hash="0" * 32)


def test_trailer_chunk_hash_overrides_header():
    # a wrong header value is fine when the trailer brings the right one
    _, attrs = finished([(P + "chunk-hash", MD5)], chunk_hash="0" * 32)
    assert attrs["user.grid.chunk.hash"] == MD5.encode()
    with pytest.raises(BadRequest, match="chunk-hash"):
        finished([(P + "chunk-hash", "0" * 32)], chunk_hash=MD5)
    with pytest.raises(BadRequest):
        finished([(P + "chunk-hash", "not hex")])


def test_chunk_size_compared_with_bytes_received():
    finished(chunk_size="11")
    with pytest.raises(BadRequest, match="chunk-size"):
        finished(chunk_size="12")
    _, attrs = finished([(P + "chunk-size", "11")], chunk_size="12")
    assert attrs["user.grid.chunk.size"] == b"11"
    with pytest.raises(BadRequest, match="chunk-size"):
        finished([(P + "chunk-size", "10")], chunk_size="11")
    with pytest.raises(BadRequest):
        finished([(P + "chunk-size", "eleven")])
    _, attrs = finished(received=0)
    assert attrs["user.grid.chunk.size"] == b"0"


def test_metachunk_trailers_override_headers():
    _, attrs = finished([(P + "metachunk-hash", MD5.lower()), (P + "metachunk-size", "99")],
                        metachunk_hash=BLAKE3, metachunk_size="1")
    assert attrs["user.grid.metachunk.hash"] == MD5.encode()
    assert attrs["user.grid.metachunk.size"] == b"99"
    with pytest.raises(BadRequest):
        finished([(P + "metachunk-size", "x")])
    with pytest.raises(BadRequest):
        finished([(P + "metachunk-hash", "x")])


EC = "ec/algo=liberasurecode_rs_vand,k=6,m=3"


@pytest.mark.parametrize("headers,trailers", [
    ({"metachunk_hash": MD5, "metachunk_size": "66"}, []),
    ({"metachunk_hash": MD5}, [(P + "metachunk-size", "66")]),
    ({}, [(P + "metachunk-hash", MD5), (P + "metachunk-size", "66")]),
])
def test_ec_with_metachunk_hash_and_size(headers, trailers):
    _, attrs = finished(trailers, content_chunk_method=EC, **headers)
    assert attrs["user.grid.metachunk.hash"] == MD5.encode()
    assert attrs["user.grid.metachunk.size"] == b"66"


@pytest.mark.parametrize("headers,trailers", [
    ({}, []),
    ({"metachunk_hash": MD5}, []),
    ({"metachunk_size": "66"}, []),
    ({}, [(P + "metachunk-hash", MD5)]),
])
def test_ec_without_metachunk_hash_or_size(headers, trailers):
    with pytest.raises(BadRequest, match="metachunk"):
        finished(trailers, content_chunk_method=EC, **headers)


def test_plain_needs_no_metachunk():
    _, attrs = finished(content_chunk_method="plain/nb_copy=1")
    assert "user.grid.metachunk.hash" not in attrs


def test_ext_trailers_merge_in():
    _, attrs = finished([("x-oio-ext-late", "l%20v"), ("x-oio-ext-both", "trailer")],
                        **{"x-oio-ext-early": "e", "x-oio-ext-both": "header"})
    assert attrs["user.oio.ext.Early"] == b"e"
    assert attrs["user.oio.ext.Late"] == b"l v"
    assert attrs["user.oio.ext.Both"] == b"trailer"


def test_ext_trailer_with_control_characters_refused():
    with pytest.raises(BadRequest):
        finished([("x-oio-ext-late", "a%0D%0Ab")])


def test_xattrs_leave_out_empty_values():
    put = PutMeta(CHUNK_ID, put_headers())
    attrs = put.xattrs()
    assert "user.grid.chunk.hash" not in attrs and "user.grid.chunk.size" not in attrs
    assert "user.grid.metachunk.hash" not in attrs
    assert "user.grid.metachunk.size" not in attrs
    assert "user.grid.compression" not in attrs
    assert all(value and b"\0" not in value for value in attrs.values())


# -- stored metadata and reply headers ---------------------------------------------------

def test_reply_headers_of_a_current_chunk():
    _, attrs = finished(metachunk_hash=MD5, metachunk_size="22",
                        **{"x-oio-ext-color": "red", "x-oio-ext-empty": ""})
    stored = StoredMeta(CHUNK_ID, attrs)
    assert stored.reply_headers() == [
        ("X-Oio-Chunk-Meta-Full-Path",
         "my%20acct/cont/dir%2Fobj%20name/1700000000000000/A1B2C3"),
        ("X-Oio-Chunk-Meta-Container-Id", cid(b"my acct", b"cont")),
        ("X-Oio-Chunk-Meta-Content-Path", "dir%2Fobj%20name"),
        ("X-Oio-Chunk-Meta-Content-Version", "1700000000000000"),
        ("X-Oio-Chunk-Meta-Content-Id", "A1B2C3"),
        ("X-Oio-Chunk-Meta-Content-Storage-Policy", "THREECOPIES"),
        ("X-Oio-Chunk-Meta-Content-Chunk-Method", "plain/nb_copy=3,cca=md5"),
        ("X-Oio-Chunk-Meta-Metachunk-Hash", MD5),
        ("X-Oio-Chunk-Meta-Metachunk-Size", "22"),
        ("X-Oio-Chunk-Meta-Chunk-Id", CHUNK_ID),
        ("X-Oio-Chunk-Meta-Chunk-Pos", "0"),
        ("X-Oio-Chunk-Meta-Chunk-Hash", MD5),
        ("X-Oio-Chunk-Meta-Chunk-Size", "11"),
        ("X-Oio-Ext-Color", "red"),
    ]


def test_reply_headers_leave_out_empty_values():
    attrs = {meta.XATTR_FULLPATH + CHUNK_ID: b"a/c/p/1/ABCD",
             "user.grid.chunk.hash": MD5.encode(), "user.grid.chunk.size": b"",
             "user.grid.content.storage_policy": b"SINGLE",
             "user.oio.ext.Blank": b""}
    names = [name for name, _ in StoredMeta(CHUNK_ID, attrs).reply_headers()]
    assert "X-Oio-Chunk-Meta-Chunk-Size" not in names
    assert "X-Oio-Chunk-Meta-Metachunk-Hash" not in names
    assert "X-Oio-Chunk-Meta-Content-Chunk-Method" not in names
    assert "X-Oio-Ext-Blank" not in names
    assert all(value for _, value in StoredMeta(CHUNK_ID, attrs).reply_headers())


def test_reply_headers_of_a_legacy_chunk():
    attrs = {
        "user.grid.chunk.id": CHUNK_ID.encode(),
        "user.grid.content.container": cid(b"AC", b"CT").lower().encode(),
        "user.grid.content.path": b"dir/my obj\xc3\xa9",
        "user.grid.content.version": b"12",
        "user.grid.content.id": b"deadbeef",
        "user.grid.content.storage_policy": b"SINGLE",
        "user.grid.content.chunk_method": b"plain/nb_copy=1",
        "user.grid.chunk.hash": MD5.encode(),
        "user.grid.chunk.size": b"3",
        "user.grid.chunk.position": b"0",
        "user.grid.oio.version": b"4.2",
    }
    stored = StoredMeta(CHUNK_ID, attrs)
    assert stored.fullpath == ""
    assert dict(stored.reply_headers()) == {
        "X-Oio-Chunk-Meta-Container-Id": cid(b"AC", b"CT"),
        "X-Oio-Chunk-Meta-Content-Path": "dir%2Fmy%20obj%C3%A9",
        "X-Oio-Chunk-Meta-Content-Version": "12",
        "X-Oio-Chunk-Meta-Content-Id": "DEADBEEF",
        "X-Oio-Chunk-Meta-Content-Storage-Policy": "SINGLE",
        "X-Oio-Chunk-Meta-Content-Chunk-Method": "plain/nb_copy=1,cca=md5",
        "X-Oio-Chunk-Meta-Chunk-Id": CHUNK_ID,
        "X-Oio-Chunk-Meta-Chunk-Pos": "0",
        "X-Oio-Chunk-Meta-Chunk-Hash": MD5,
        "X-Oio-Chunk-Meta-Chunk-Size": "3",
    }


def test_stored_full_path_with_raw_non_ascii_bytes():
    attrs = {meta.XATTR_FULLPATH + CHUNK_ID: b"acct/caf\xc3\xa9/\xe9t\xe9/1/ABCD",
             "user.grid.chunk.hash": MD5.encode()}
    stored = StoredMeta(CHUNK_ID, attrs)
    assert stored.container_id == cid(b"acct", b"caf\xc3\xa9")
    assert stored.content_path == "%E9t%E9"


@pytest.mark.parametrize("method,chunk_hash,shown", [
    ("plain/nb_copy=1", MD5, "plain/nb_copy=1,cca=md5"),
    ("plain/nb_copy=1", BLAKE3, "plain/nb_copy=1,cca=blake3"),
    ("plain/nb_copy=1", "AB" * 20, "plain/nb_copy=1,cca=blake3"),
    ("plain/", MD5, "plain/cca=md5"),
    ("plain/nb_copy=1,cca=md5", BLAKE3, "plain/nb_copy=1,cca=md5"),
    ("plain/cca=blake3", MD5, "plain/cca=blake3"),
    ("ec/k=6,m=3", MD5, "ec/k=6,m=3,cca=md5"),
])
def test_chunk_method_cca_appended_on_get(method, chunk_hash, shown):
    attrs = {meta.XATTR_FULLPATH + CHUNK_ID: b"a/c/p/1/ABCD",
             "user.grid.content.chunk_method": method.encode(),
             "user.grid.chunk.hash": chunk_hash.encode()}
    stored = StoredMeta(CHUNK_ID, attrs)
    assert stored.chunk_method() == shown
    assert dict(stored.reply_headers())["X-Oio-Chunk-Meta-Content-Chunk-Method"] == shown


def test_event_data_has_every_key():
    _, attrs = finished()
    data = StoredMeta(CHUNK_ID, attrs).event_data("127.0.0.1:6009", "rawx-1")
    assert set(data) == {
        "volume_id", "volume_service_id", "full_path", "container_id", "content_path",
        "content_version", "content_id", "content_storage_policy", "metachunk_hash",
        "metachunk_size", "chunk_id", "content_chunk_method", "chunk_position",
        "chunk_hash", "chunk_size"}
    assert data["metachunk_hash"] == "" and data["chunk_size"] == "11"
    assert data["container_id"] == cid(b"my acct", b"cont")
    assert data["content_chunk_method"] == "plain/nb_copy=3,cca=md5"


# -- helpers ------------------------------------------------------------------------------

SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~$&+:=@"


def test_escape_path_keeps_the_safe_set():
    assert escape_path(SAFE.encode()) == SAFE


@pytest.mark.parametrize("raw,escaped", [
    (b"dir/obj", "dir%2Fobj"), (b"a b", "a%20b"), (b"100%", "100%25"),
    (b"?#[]", "%3F%23%5B%5D"), (b"caf\xc3\xa9", "caf%C3%A9"), (b"\x00\x7f\xff", "%00%7F%FF"),
    (b"!'()*,;", "%21%27%28%29%2A%2C%3B"), (b"", ""),
])
def test_escape_path_escapes_the_rest_upper_case(raw, escaped):
    assert escape_path(raw) == escaped


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_escape_path_round_trip(raw):
    escaped = escape_path(raw)
    assert unquote_to_bytes(escaped) == raw
    escapes = re.findall(r"%(..)", escaped)
    assert len(escapes) == sum(1 for b in raw if chr(b) not in SAFE)
    assert all(re.fullmatch(r"[0-9A-F]{2}", code) for code in escapes)
    assert all(c in SAFE for c in re.sub(r"%..", "", escaped))


@pytest.mark.parametrize("name,canonical", [
    ("x-oio-chunk-meta-chunk-hash", "X-Oio-Chunk-Meta-Chunk-Hash"),
    ("X-OIO-EXT-FOO-BAR", "X-Oio-Ext-Foo-Bar"),
    ("content-length", "Content-Length"),
    ("etag", "Etag"),
    ("x-oio-ext-a1", "X-Oio-Ext-A1"),
])
def test_canonical_header(name, canonical):
    assert canonical_header(name) == canonical


@pytest.mark.parametrize("text,ok", [
    ("A" * 24, True), ("a" * 64, True), (CHUNK_ID, True), ("0" * 23, False),
    ("0" * 65, False), ("G" * 24, False), ("", False), ("A" * 24 + "/", False),
    ("\u0661" * 24, False),
])
def test_valid_chunk_id(text, ok):
    assert valid_chunk_id(text) is ok


def test_full_path_from_stored_is_lenient():
    assert FullPath.from_stored("a/b") is None
    fp = FullPath.from_stored("a/c/p/%C3%A9/abc")
    assert fp.version == "\xc3\xa9" and fp.content_id == "ABC"


def test_unparseable_stored_full_path_falls_back_to_legacy_fields():
    attrs = {meta.XATTR_FULLPATH + CHUNK_ID: b"only/three/parts",
             "user.grid.content.version": b"7", "user.grid.chunk.hash": MD5.encode()}
    headers = dict(StoredMeta(CHUNK_ID, attrs).reply_headers())
    assert headers["X-Oio-Chunk-Meta-Full-Path"] == "only/three/parts"
    assert headers["X-Oio-Chunk-Meta-Content-Version"] == "7"
    assert "X-Oio-Chunk-Meta-Container-Id" not in headers


def test_stored_chunk_method_without_slash_gets_cca_after_a_slash():
    from storage.rawx.meta import StoredMeta
    attrs = {"user.grid.content.chunk_method": b"plain", "user.grid.chunk.hash": b"A" * 32}
    assert StoredMeta("A" * 24, attrs).chunk_method() == "plain/cca=md5"
    attrs["user.grid.content.chunk_method"] = b"plain/"
    assert StoredMeta("A" * 24, attrs).chunk_method() == "plain/cca=md5"
    attrs["user.grid.chunk.hash"] = b"B" * 64
    attrs["user.grid.content.chunk_method"] = b"ec/k=6,m=3"
    assert StoredMeta("A" * 24, attrs).chunk_method() == "ec/k=6,m=3,cca=blake3"
