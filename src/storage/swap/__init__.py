"""SWAP, the binary protocol between nodes (spec/swap.md).

The frame codec is ``_fastpath.swapframe`` (or its twin ``storage.pure.swapframe``
under STORAGE_NODE_PURE=1); this package binds it to the SWAP message table of
``storage.swap.messages``:

    reader = new_reader()            # FrameReader for every SWAP message type
    reader.feed(data); msg = reader.next()   # (type, [record, ...]) or None
    frame = encode(MessageType.PATH_DETAILS, [(group, "a", 0, 12, mtime_ms)])
"""
from storage.fast import load
from storage.swap.messages import (FIELDS, RECORDS, SEGMENTS, FinishType, MessageType,
                                   PathKind, SaslCode, typed)

swapframe = load("swapframe")
ProtocolError = swapframe.ProtocolError
EncodeError = swapframe.EncodeError
FrameWriter = swapframe.FrameWriter
DEFAULT_MAX_FRAME = swapframe.DEFAULT_MAX_FRAME

__all__ = ["ProtocolError", "EncodeError", "FrameWriter", "DEFAULT_MAX_FRAME", "new_reader",
           "encode", "MessageType", "FinishType", "PathKind", "SaslCode", "SEGMENTS",
           "FIELDS", "RECORDS", "typed", "swapframe"]


def new_reader(max_frame=DEFAULT_MAX_FRAME):
    """A FrameReader that knows every SWAP message type; L above max_frame is refused."""
    return swapframe.FrameReader(SEGMENTS, max_frame)


def encode(msg_type, records, max_frame=DEFAULT_MAX_FRAME):
    """One SWAP frame of msg_type holding records (tuples in SEGMENTS order)."""
    return swapframe.encode(SEGMENTS, msg_type, records, max_frame)
