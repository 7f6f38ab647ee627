"""Read the members of a large top-level JSON object without holding the whole parsed document.

A COCO instances json of train2017's size (455 MB, mostly polygon coordinates) costs over 2 GB as
Python objects. :func:`read_object_members` memory-maps the file, finds its structure with numpy
(the quotes that open and close strings, the brackets outside strings and so the depth, and the
commas and colons at depth 1 and 2), and then parses:

- each top-level member that is not split whole, and
- the array members named in ``split`` (e.g. "images", "annotations") in batches of elements of
  about ``BATCH_BYTES`` each, so that only one batch of Python objects exists at a time.

Parsing uses ``orjson`` when it is installed (2-3 times faster), else (and for text orjson refuses,
such as NaN) the standard ``json``.
Any syntax error raises ValueError naming the file and the byte offset of the batch.
"""
import json
import mmap
import os

import numpy as np

try:
    import orjson

    PARSER = "orjson " + orjson.__version__
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None
    PARSER = "json (stdlib)"


def _loads(text):
    """The JSON value of ``text`` (bytes): orjson when installed; the standard json module when orjson
    is missing or refuses the text, so NaN and Infinity (which json.dump writes) are read as before."""
    if orjson is not None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)

CHUNK_BYTES = 1 << 24  # bytes scanned at once (the scan's temporaries are a few times this)
BATCH_BYTES = 1 << 23  # bytes of array elements parsed at once
_QUOTE, _BACKSLASH, _COMMA, _COLON = 34, 92, 44, 58
_BRACKET = np.zeros(256, np.int8)
_BRACKET[[ord("{"), ord("[")]] = 1
_BRACKET[[ord("}"), ord("]")]] = -1
_WHITESPACE = b" \t\r\n"


class NotAnObject(ValueError):
    """The file's JSON value is not an object (the caller may parse it whole for its own message)."""


def _unescaped_quotes(c):
    """Positions (int64) in the uint8 array ``c`` of the quotes not escaped by a backslash."""
    q = np.flatnonzero(c == _QUOTE)
    after = q[(q > 0)]
    after = after[c[after - 1] == _BACKSLASH]
    escaped = []
    for p in after.tolist():  # rare: quotes right after a backslash; escaped if the run is odd
        run = 0
        while p - run - 1 >= 0 and c[p - run - 1] == _BACKSLASH:
            run += 1
        if run % 2:
            escaped.append(p)
    return np.setdiff1d(q, escaped, assume_unique=True) if escaped else q


def range_positions(starts, ends):
    """All positions of the half-open ranges [starts[i], ends[i]) (int64, ranges in order)."""
    lengths = ends - starts
    if not len(lengths):
        return np.zeros(0, np.int64), lengths
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return offsets + np.arange(int(lengths.sum())), lengths


def _brackets(c):
    """Positions (int64) of the bytes {, }, [ and ] in the uint8 array ``c`` (a few compares are
    several times faster than a lookup table gather)."""
    found = c == ord("{")
    for char in "}[]":
        found |= c == ord(char)
    return np.flatnonzero(found)


class _ScanState:
    """What one chunk's scan hands to the next: quotes seen (parity), depth, what was found."""

    def __init__(self, prune_depth):
        self.quotes, self.depth, self.prune_depth = 0, 0, prune_depth
        self.positions, self.depths, self.chars, self.closes = [], [], [], []
        self.leaf_starts, self.leaf_ends = [], []


def _scan_chunk(c, base, state):
    """Scan the uint8 array ``c`` (file bytes from offset ``base``): append to ``state`` the commas
    and colons outside strings at depth 1 or 2, and the brackets that close depth 1 (depth 0 after)."""
    q = _unescaped_quotes(c)
    b = _brackets(c)
    b = b[((np.searchsorted(q, b) + state.quotes) & 1) == 0]  # outside strings
    depth = state.depth + np.cumsum(_BRACKET[c[b]], dtype=np.int64)  # depth after each bracket
    if len(depth) and depth.min() < 0:
        raise ValueError("unbalanced brackets near byte {}".format(base + int(b[np.argmax(depth < 0)])))
    state.closes.append(base + b[depth == 0])
    starts = np.concatenate([[0], b + 1])
    ends = np.concatenate([b, [len(c)]])
    levels = np.concatenate([[state.depth], depth])
    keep = (levels >= 1) & (levels <= 2) & (ends > starts)
    pos, lengths = range_positions(starts[keep], ends[keep])
    level = np.repeat(levels[keep], lengths)
    ch = c[pos]
    sep = (ch == _COMMA) | (ch == _COLON)
    pos, level, ch = pos[sep], level[sep], ch[sep]
    outside = ((np.searchsorted(q, pos) + state.quotes) & 1) == 0
    state.positions.append(base + pos[outside])
    state.depths.append(level[outside].astype(np.int8))
    state.chars.append(ch[outside])
    state.quotes += len(q)
    _leaves(c, b, depth, base, state)
    if len(depth):
        state.depth = int(depth[-1])


def _leaves(c, b, depth, base, state):
    """Append to ``state`` the byte ranges (inside, brackets excluded) of the innermost arrays and
    objects opened at depth ``state.prune_depth`` or deeper: what :meth:`ObjectMembers.batches` leaves
    out when pruning (e.g. a COCO annotation's polygon coordinates). ``b``: bracket positions in the
    chunk ``c`` outside strings, ``depth``: the depth after each."""
    if state.prune_depth is None or len(b) < 2:
        return
    opening = _BRACKET[c[b[:-1]]] > 0
    closing = _BRACKET[c[b[1:]]] < 0
    leaf = opening & closing & (depth[:-1] >= state.prune_depth) & (b[1:] > b[:-1] + 1)
    state.leaf_starts.append(base + b[:-1][leaf] + 1)
    state.leaf_ends.append(base + b[1:][leaf])


def _scan(data, prune_depth=None):
    """(separator positions, their depths, their chars, position of the closing brace, leaf range
    starts, leaf range ends) of the uint8 array ``data`` (the whole file), scanned in chunks that never
    end inside a backslash run; leaves as :func:`_leaves` finds them with ``prune_depth``."""
    state, start = _ScanState(prune_depth), 0
    while start < len(data):
        end = min(start + CHUNK_BYTES, len(data))
        while end < len(data) and data[end - 1] == _BACKSLASH:
            end += 1
        _scan_chunk(data[start:end], start, state)
        start = end
    closes = np.concatenate(state.closes)
    if state.depth != 0 or len(closes) != 1:
        raise ValueError("unbalanced brackets (depth {} at the end)".format(state.depth))
    leaves = (np.concatenate(state.leaf_starts or [np.zeros(0, np.int64)]),
              np.concatenate(state.leaf_ends or [np.zeros(0, np.int64)]))
    return (np.concatenate(state.positions), np.concatenate(state.depths), np.concatenate(state.chars),
            int(closes[0])) + leaves


def _skip_space(mm, pos, step=1):
    """The first position from ``pos`` (moving by ``step``) that is not JSON whitespace."""
    while 0 <= pos < len(mm) and mm[pos] in _WHITESPACE:
        pos += step
    return pos


def _members(mm, seps, depths, chars, close):
    """{key: (value start, value end)} of the top-level object (byte ranges; the last of repeated keys)."""
    top = depths == 1
    out, key_start, colon = {}, _skip_space(mm, 0) + 1, None
    for p, ch in zip(seps[top].tolist() + [close], chars[top].tolist() + [_COMMA]):
        if ch == _COLON and colon is None:
            colon = p
        elif ch == _COMMA and colon is not None:
            key = _loads(mm[key_start:colon])
            if not isinstance(key, str):
                raise ValueError("object key {!r} near byte {} is not a string".format(key, key_start))
            out[key] = (colon + 1, p)
            key_start, colon = p + 1, None
        elif not (ch == _COMMA and p == close and mm[key_start:close].strip() == b""):
            raise ValueError("misplaced '{}' near byte {}".format(chr(ch), p))
    return out


def _pruned(mm, start, end, leaves):
    """The bytes ``mm[start:end]`` without the leaf ranges ``leaves`` (sorted starts, ends) inside them."""
    starts, ends = leaves
    lo, hi = np.searchsorted(starts, start), np.searchsorted(ends, end, side="right")
    if hi <= lo:
        return mm[start:end]
    cuts = np.empty(2 * (hi - lo) + 2, np.int64)  # kept: [start, s0), [e0, s1), ..., [e_last, end)
    cuts[0], cuts[-1] = start, end
    cuts[1:-1:2], cuts[2:-1:2] = starts[lo:hi], ends[lo:hi]
    cuts = cuts.tolist()
    return b"".join([mm[a:b] for a, b in zip(cuts[0::2], cuts[1::2])])


def _array_batches(mm, start, end, seps, leaves):
    """Lists of the elements of the array in ``mm[start:end]`` (whitespace around it allowed), about
    BATCH_BYTES of text each; ``seps``: the sorted positions of the commas between its elements;
    ``leaves``: (starts, ends) of byte ranges left out (see :func:`_leaves`)."""
    first, last = _skip_space(mm, start), _skip_space(mm, end - 1, -1)
    if mm[first:first + 1] != b"[" or mm[last:last + 1] != b"]" or last <= first:
        yield _loads(mm[start:end])  # not an array: the caller sees what it is
        return
    inner = seps[(seps > first) & (seps < last)]
    bounds = np.concatenate([[first], inner, [last]])  # element i lies between bounds[i] and bounds[i + 1]
    i = 0
    while i < len(bounds) - 1:
        j = max(int(np.searchsorted(bounds, bounds[i] + BATCH_BYTES, side="right")) - 1, i + 1)
        j = min(j, len(bounds) - 1)
        text = _pruned(mm, int(bounds[i]) + 1, int(bounds[j]), leaves)
        try:
            yield _loads(b"[" + text + b"]")
        except ValueError as e:
            raise ValueError("{} (in the array elements from byte {})".format(e, int(bounds[i]) + 1)) from None
        i = j


class ObjectMembers:
    """The members of the top-level JSON object of ``path`` (see the module docstring).

    Use as a context manager; ``keys()`` lists them, ``value(key)`` parses one whole (None if
    absent), ``batches(key)`` yields the elements of an array member in lists of about BATCH_BYTES.
    ``prune_depth`` (int or None): ``batches`` leaves out the contents of the innermost arrays and
    objects opened at this depth or deeper (the top-level object is depth 1, a member array 2, its
    elements 3): with 5, a COCO annotation's "segmentation": [[x1, y1, ...]] is read as [[]] and an
    RLE's "counts": [...] as [], while "bbox" (depth 4) is kept; nothing else changes, so pruned
    fields are the only ones to differ.

    Raises:
        FileNotFoundError; ValueError (with the path) for invalid JSON; NotAnObject when the
        document is valid JSON-like text but not an object.
    """

    def __init__(self, path, prune_depth=None):
        self.path, self.prune_depth = path, prune_depth
        self._file = open(path, "rb")
        size = os.fstat(self._file.fileno()).st_size
        self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        try:
            self._index()
        except NotAnObject:
            self.close()
            raise
        except ValueError as e:
            self.close()
            raise ValueError("{} is not valid JSON: {}".format(path, e)) from None

    def _index(self):
        mm = self._mm
        first = _skip_space(mm, 0)
        if first >= len(mm):
            raise ValueError("the file is empty")
        if mm[first:first + 1] != b"{":
            raise NotAnObject("{} does not hold a JSON object".format(self.path))
        data, error = np.frombuffer(mm, np.uint8), None
        try:
            seps, depths, chars, close, *leaves = _scan(data, self.prune_depth)
        except ValueError as e:
            error = str(e)  # not the exception: its traceback holds views of the map
        del data  # no view may outlive the map
        if error:
            raise ValueError(error)
        if _skip_space(mm, close + 1) < len(mm):
            raise ValueError("extra data after the object, at byte {}".format(close + 1))
        self._inner, self._leaves = seps[depths == 2], leaves
        self._ranges = _members(mm, seps, depths, chars, close)

    def keys(self):
        return list(self._ranges)

    def value(self, key):
        if key not in self._ranges:
            return None
        start, end = self._ranges[key]
        try:
            return _loads(self._mm[start:end])
        except ValueError as e:
            raise ValueError("{} is not valid JSON: {} (in the value of {!r})".format(self.path, e, key)) from None

    def batches(self, key):
        if key not in self._ranges:
            return
        start, end = self._ranges[key]
        try:
            yield from _array_batches(self._mm, start, end, self._inner, self._leaves)
        except ValueError as e:
            raise ValueError("{} is not valid JSON: {} (in the value of {!r})".format(self.path, e, key)) from None

    def close(self):
        if isinstance(self._mm, mmap.mmap):
            self._mm.close()
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
