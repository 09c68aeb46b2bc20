"""SWAP message types and the segments of their records (spec/swap.md).

``SEGMENTS`` maps each message type to its record layout, written in the frame
codec's segment codes (one character per segment, uppercase a scalar, lowercase
an int16-counted array of it):

    U UUID        u UUID_ARRAY     S STRING      s STRING_ARRAY
    I INT         L LONG           l LONG_ARRAY  B BYTE_ARRAY (int32 length)
    F FINISH_TYPE

This table is the one place the layouts live: ``storage.swap`` hands it to the
codec (``_fastpath.swapframe`` cannot import ``storage``).

``RECORDS`` holds a namedtuple per type with the spec's field names, for code
that prefers ``rec.path`` to ``rec[1]``; the codec itself reads and writes plain
tuples, and a namedtuple is one.
"""
import enum
from collections import namedtuple

__all__ = ["MessageType", "FinishType", "PathKind", "SaslCode", "SEGMENTS", "FIELDS",
           "RECORDS", "typed"]


class MessageType(enum.IntEnum):
    LIST_FG = 1
    SLICE_ONLINE = 2
    CREATE_FG = 3
    FG_LIST = 4
    LIST_PARTITIONS = 5
    PARTITION_DETAILS = 6
    REQUEST_FILE_STREAM = 7
    FILE_SEGMENT = 8
    CLOSE_FILE = 9
    LIST_SLICES = 10
    TRANSMIT_FILE_STREAM = 11
    SLICE_OFFLINE = 12
    GET_PATH_DETAILS = 13
    PATH_DETAILS = 14
    RANDOM_ACCESS_OPEN = 15
    REQUEST_FILE_SEGMENT = 16
    LIST_DIRECTORY = 17
    LIST_DIRECTORY_RESULT = 18
    SASL_REQUEST = 19
    SASL_RESPONSE = 20
    SASL_MECHANISMS = 21
    DELETE_PATH = 22
    DELETE_IMMEDIATE = 23
    LIST_PEERS = 24
    LIST_PEER_RESULT = 25


class FinishType(enum.IntEnum):
    """CLOSE_FILE reasons."""
    USER_REQUESTED = 0
    IO_ERROR = 1
    PERMISSION_DENIED = 2
    NONEXISTENT_GROUP = 3
    DUPLICATE_FID = 4
    WRONG_NODE = 5
    INACTIVE_GROUP = 6
    FILE_DOES_NOT_EXIST = 7
    GROUP_DOES_NOT_EXIST = 8
    FID_NOT_OPEN = 9
    CONNECTION_CLOSED = 10


class PathKind(enum.IntEnum):
    """PATH_DETAILS kind."""
    FILE = 0
    DIRECTORY = 1
    NOT_FOUND = 2
    NOT_LOCAL = 3


class SaslCode(enum.IntEnum):
    """SASL_RESPONSE code."""
    OK = 0
    FAILED = 1
    CONTINUE = 2


_T = MessageType
# type -> ((field name, segment code), ...), in wire order
_LAYOUT = {
    _T.LIST_FG: (),
    _T.SLICE_ONLINE: (("slice", "U"),),
    _T.CREATE_FG: (("partition", "U"), ("group", "U"), ("slices", "u"),
                   ("local_slice", "U"), ("namespace", "s")),
    _T.FG_LIST: (("group", "U"), ("slices", "u"), ("namespace", "s")),
    _T.LIST_PARTITIONS: (),
    _T.PARTITION_DETAILS: (("partition", "U"), ("description", "S"), ("free", "L"),
                           ("total", "L"), ("slices", "u")),
    _T.REQUEST_FILE_STREAM: (("group", "U"), ("path", "S"), ("fid", "L"), ("offset", "L"),
                             ("length", "L")),
    _T.FILE_SEGMENT: (("fid", "L"), ("offset", "L"), ("data", "B")),
    _T.CLOSE_FILE: (("fid", "L"), ("reason", "F"), ("md5", "S")),
    _T.LIST_SLICES: (),
    _T.TRANSMIT_FILE_STREAM: (("group", "U"), ("path", "S"), ("fid", "L")),
    _T.SLICE_OFFLINE: (("slice", "U"),),
    _T.GET_PATH_DETAILS: (("group", "U"), ("paths", "s")),
    _T.PATH_DETAILS: (("group", "U"), ("path", "S"), ("kind", "I"), ("size", "L"),
                      ("mtime", "L")),
    _T.RANDOM_ACCESS_OPEN: (("group", "U"), ("path", "S"), ("fid", "L")),
    _T.REQUEST_FILE_SEGMENT: (("fid", "L"), ("offset", "L"), ("length", "I")),
    _T.LIST_DIRECTORY: (("group", "U"), ("dir", "S")),
    _T.LIST_DIRECTORY_RESULT: (("group", "U"), ("dir", "S"), ("names", "s")),
    _T.SASL_REQUEST: (("mechanism", "S"), ("payload", "B")),
    _T.SASL_RESPONSE: (("code", "I"), ("payload", "B")),
    _T.SASL_MECHANISMS: (("mechanisms", "s"),),
    _T.DELETE_PATH: (("group", "U"), ("path", "S")),
    _T.DELETE_IMMEDIATE: (("group", "U"), ("path", "S")),
    _T.LIST_PEERS: (),
    _T.LIST_PEER_RESULT: (("address", "B"), ("port", "I")),
}

#: message type -> segment codes of one record (see the module docstring)
SEGMENTS = {t: "".join(code for _, code in fields) for t, fields in _LAYOUT.items()}
#: message type -> field names of one record
FIELDS = {t: tuple(name for name, _ in fields) for t, fields in _LAYOUT.items()}
#: message type -> namedtuple class of one record (PathDetails, FileSegment, ...)
RECORDS = {t: namedtuple("".join(w.capitalize() for w in t.name.split("_")), FIELDS[t])
           for t in _LAYOUT}


def typed(msg_type, records):
    """(MessageType, [namedtuple, ...]) for a message as the frame reader returns it."""
    t = MessageType(msg_type)
    make = RECORDS[t]._make
    if not FIELDS[t]:
        return t, [make(()) for _ in records]
    return t, [make(r) for r in records]
