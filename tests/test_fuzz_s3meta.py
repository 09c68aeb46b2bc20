"""Reading chunk metadata back from s3backup objects (storage.feeds.s3) over
hypothesis inputs, and smoke runs of fuzz/fuzz_s3meta.py without atheris."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzzutil import load_fuzz_target
from storage.feeds import s3

FUZZ = load_fuzz_target("fuzz_s3meta")
CID = FUZZ.CHUNK_ID


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_target_smoke(data):
    FUZZ.TestOneInput(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(st.characters(min_codepoint=0x09, max_codepoint=0xFF,
                                      blacklist_characters="\x7f\n\x0b\x0c\r"
                                      + "".join(map(chr, range(0x0e, 0x20)))),
                        max_size=600),
                max_size=5))
def test_round_trip_of_any_latin1_values(values):
    FUZZ.TestOneInput(b"\x02" + "\n".join(values).encode("latin-1"))


def sidecar(headers, chunk_id=CID):
    return json.dumps({"format": 1, "chunk_id": chunk_id, "headers": headers}).encode()


@pytest.mark.parametrize("headers, words", [
    ({"Content-Length": "0"}, "not chunk metadata"),
    ({"Host": "elsewhere"}, "not chunk metadata"),
    ({"X-Oio-Chunk-Meta-Chunk-Id": CID, "Transfer-Encoding": "identity"},
     "not chunk metadata"),
    ({"X-Oio-Chunk-Meta-Full-Path": "a\r\nHost: x"}, "control character"),
    ({"X-Oio-Ext-Note": "nul\x00here"}, "control character"),
    ({"X-Oio-Ext-Bad:Name": "v"}, "not chunk metadata"),
])
def test_a_sidecar_never_sets_other_headers(headers, words):
    with pytest.raises(s3.BadBackup, match=words):
        s3.decode_sidecar(sidecar(headers), CID)


@pytest.mark.parametrize("user, words", [
    ({"oio-format": "1", "oio-full-path": "a%0D%0AHost:%20x"}, "control character"),
    ({"oio-format": "1", "oio-ext-x": "%00"}, "control character"),
    ({"oio-format": "1", "oio-chunk id": "v"}, "not chunk metadata"),
])
def test_user_metadata_refusals(user, words):
    with pytest.raises(s3.BadBackup, match=words):
        s3.decode_user_metadata(user)


def test_decoded_metadata_round_trip_both_ways():
    headers = {"X-Oio-Chunk-Meta-Full-Path": "acct/c%2Fo/obj/1/" + "A" * 32,
               "X-Oio-Ext-Color": "bl\xfce 50%", "X-Oio-Ext-A.b_c": "x"}
    user, side = s3.encode_metadata(CID, headers)
    assert side is None and s3.decode_user_metadata(user) == headers
    big = dict(headers, **{f"X-Oio-Ext-K{i}": "v" * 100 for i in range(30)})
    user, side = s3.encode_metadata(CID, big)
    assert user == {"oio-format": "1", "oio-sidecar": "1"}
    assert s3.decode_sidecar(side, CID) == big
