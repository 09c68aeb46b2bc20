"""The Range header as RAWX reads it (spec rawx.md section 4)."""
import re

_RANGE = re.compile(r"bytes=(\d*)-(\d*)\Z", re.ASCII)
UNSATISFIABLE = "unsatisfiable"


def parse_range(value, size):
    """-> None (serve the whole chunk), UNSATISFIABLE (416), or (offset, length).

    Only ``bytes=A-B``, ``bytes=A-`` and ``bytes=-N`` count; anything else (several
    ranges, spaces, negatives) is ignored. ``A > B`` is ignored too.
    """
    match = _RANGE.match(value)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = int(last)
        if suffix == 0:
            return UNSATISFIABLE
        length = min(suffix, size)
        return size - length, length
    start = int(first)
    if last:
        end = int(last)
        if start > end:
            return None
        if start >= size:
            return UNSATISFIABLE
        return start, min(end, size - 1) - start + 1
    if start >= size:
        return UNSATISFIABLE
    return start, size - start
