"""The MIME part tree of one message, with exact byte offsets into the raw RFC 5322 octets.

Implementation notes
- Input is the message exactly as stored (for mssgw: CRLF lines, as accepted over SMTP). Nothing is
  normalised: every offset points into `raw`, so FETCH BODY[section] (RFC 3501 §6.4.5) returns
  original octets. Bare LF is accepted as a line end wherever Dovecot accepts it, but sizes are
  octet counts of the raw data (Dovecot reports sizes as if LF were CRLF; mssgw never stores bare LF).
- The algorithm is Dovecot 2.3's message-parser.c and message-header-parser.c (index-mail flags:
  skip the white space after the colon, drop CR from folded values) run over the whole buffer:
  * Header (RFC 5322 §2.2): lines up to the first empty line; a line beginning with SP or HTAB
    continues the previous field; a line without ":" is a field with an empty name. No empty line:
    the header runs to the end of the message, or to a boundary line of an enclosing multipart.
  * A part is MIME when it is a multipart body part or has MIME-Version or Content-Type. Only the
    first Content-Type counts. No Content-Type: text/plain, or message/rfc822 directly inside
    multipart/digest (RFC 2046 §5.1.5).
  * Boundaries (RFC 2046 §5.1.1): a line starting with "--" + boundary, any trailing text allowed;
    the innermost matching boundary wins, then the longest. The CRLF before a boundary line belongs
    to the boundary, also when it ends a header: a part "Content-Type: x CRLF CRLF --b" has a header
    without empty line and an empty body. "--boundary--" closes the multipart; the epilogue runs to the next outer
    boundary or the end. A missing boundary parameter, or a boundary that never occurs, leaves a
    multipart with no children (reported as an empty text/plain part). Text after the last part
    without a closing delimiter belongs to the last part.
  * message/rfc822 (exactly that type, RFC 2046 §5.2.1): its body is parsed as a message, the one
    child part, which inherits the enclosing boundaries.
- Limits as in Dovecot: 100 nested parts, 10 000 parts in total, boundaries cut at 80 octets;
  beyond a limit the rest is body text. Parsing is linear in the message size (lines starting with
  "--" are compared with at most 100 open boundaries) and never raises.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.imap.message.rfc822 import Scanner, parse_parameters

MAX_NESTED_PARTS = 100
MAX_TOTAL_PARTS = 10_000
BOUNDARY_MAX_LEN = 70 + 10  # RFC 2046 §5.1.1 allows 70; Dovecot keeps 80
_BOUNDARY_END_MAX_LEN = BOUNDARY_MAX_LEN + 2 + 2
_HEADER_NAME_MAX_LEN = 1000  # RFC 5322 §2.1.1 line length; longer "names" are values


class PartFlag(enum.IntFlag):
    NONE = 0
    MULTIPART = 0x01
    MULTIPART_DIGEST = 0x02
    MESSAGE_RFC822 = 0x04
    TEXT = 0x08
    IS_MIME = 0x40
    OVERFLOW = 0x100


@dataclass(eq=False)
class HeaderField:
    """One header field: `raw` spans its lines with their line ends (offsets into the message)."""

    name: bytes  # as written, white space before the colon removed; b"" for a line without ":"
    value: bytes  # unfolded by dropping CR (LF kept), leading white space removed
    raw_start: int
    raw_end: int


@dataclass(eq=False)
class MimePart:
    """A node of the part tree; offsets are into the whole message."""

    start: int
    parent: MimePart | None = None
    header_size: int = 0
    body_size: int = 0
    flags: PartFlag = PartFlag.NONE
    children: list[MimePart] = field(default_factory=list)
    fields: list[HeaderField] = field(default_factory=list)
    # The empty line ending the header, as an absolute range; None when the header has none.
    eoh: tuple[int, int] | None = None

    @property
    def body_start(self) -> int:
        return self.start + self.header_size

    @property
    def end(self) -> int:
        return self.start + self.header_size + self.body_size

    def is_multipart(self) -> bool:
        return bool(self.flags & PartFlag.MULTIPART)

    def is_message_rfc822(self) -> bool:
        return bool(self.flags & PartFlag.MESSAGE_RFC822)


@dataclass(eq=False)
class _Boundary:
    part: MimePart
    value: bytes
    epilogue_found: bool = False


_LWSP = (0x20, 0x09)


class _Parser:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.end = len(data)
        self.pos = 0
        self.root = MimePart(start=0)
        self.part = self.root
        self.boundaries: list[_Boundary] = []  # newest first, as Dovecot's linked list
        self.nested = 0
        self.total = 1
        self.last_boundary: bytes | None = None
        self.multipart = False
        # The next step; steps call no other step, so nesting and part counts never grow the stack.
        self.next: Callable[[], None] | None = self._parse_header

    # --- part tree bookkeeping ---

    def _append_child(self) -> MimePart:
        parent = self.part
        child = MimePart(start=parent.start + parent.header_size + parent.body_size, parent=parent)
        parent.children.append(child)
        self.part = child
        self.nested += 1
        self.total += 1
        return child

    def _finish_part(self) -> None:
        part = self.part
        parent = part.parent
        assert parent is not None
        parent.body_size += part.header_size + part.body_size
        self.part = parent
        self.nested -= 1

    def _too_deep(self) -> bool:
        return self.nested + 1 >= MAX_NESTED_PARTS

    def _add_body(self, stop: int) -> None:
        self.part.body_size += stop - self.pos
        self.pos = stop

    # --- boundaries (RFC 2046 §5.1.1) ---

    def _boundary_at(self, p: int) -> _Boundary | None:
        """The boundary whose delimiter line starts at `p` (boundary_line_find + boundary_find)."""
        data, end = self.data, self.end
        if end - p < 2 or data[p] != 0x2D or data[p + 1] != 0x2D:
            return None
        if self.total >= MAX_TOTAL_PARTS:
            self.part.flags |= PartFlag.OVERFLOW
            return None
        q = p + 2
        size = end - q
        lf = data.find(b"\n", q, end)
        trailing_dashes = False
        if lf >= 0:
            find_size = lf - q
            if find_size > 0 and data[q + find_size - 1] == 0x0D:
                find_size -= 1
            trailing_dashes = find_size > 2 and data[q + find_size - 2 : q + find_size] == b"--"
        else:
            find_size = min(size, _BOUNDARY_END_MAX_LEN)
        best: _Boundary | None = None
        for b in self.boundaries:
            n = len(b.value)
            if n <= find_size and data.startswith(b.value, q) and (best is None or len(best.value) < n):
                best = b
                if n == find_size or (n == find_size - 2 and trailing_dashes):
                    break
        if best is None:
            return None
        n = len(best.value)
        best.epilogue_found = size >= n + 2 and data[q + n : q + n + 2] == b"--"
        return best

    def _remove_boundaries_until(self, keep: int) -> None:
        del self.boundaries[:keep]

    # --- header ---

    def _parse_header(self) -> None:
        """Read the current part's header, then set up its body (parse_next_header)."""
        data, end = self.data, self.end
        part = self.part
        seen_content_type = False
        prev_newline = 0
        # The field being read: name, value, raw start; completed when a line does not continue it.
        cur_name = b""
        cur_value = bytearray()
        cur_start = 0
        continued = False
        while True:
            p = self.pos
            if p >= end:
                break  # end of input: the header has no empty line
            # At the empty line of a multipart's header, register its boundary before looking for
            # boundary lines, so a prefix-equal outer boundary cannot be mistaken for ours.
            if (
                self.last_boundary is not None
                and part.flags & PartFlag.IS_MIME
                and (data[p] == 0x0A or data.startswith(b"\r\n", p))
            ):
                if not self._too_deep():
                    self.boundaries.insert(0, _Boundary(part, self.last_boundary))
                    self.last_boundary = None
                    self.multipart = True
                else:
                    part.flags |= PartFlag.OVERFLOW
                    part.flags &= ~PartFlag.MULTIPART
            if self.boundaries:
                b = self._boundary_at(p)
                if b is not None and b.part is not part:
                    # An enclosing boundary ends this header; the line end before it goes with it.
                    if prev_newline:
                        part.header_size -= prev_newline
                        assert part.parent is not None
                        part.parent.body_size += prev_newline
                    break
            lf = data.find(b"\n", p, end)
            if lf < 0:
                line_end = content_end = end
                newline = 0
                continues = False
            else:
                line_end = lf + 1
                content_end = lf - 1 if lf > p and data[lf - 1] == 0x0D else lf
                newline = line_end - content_end
                continues = line_end < end and data[line_end] in _LWSP
            if content_end == p and not continued and newline:
                part.eoh = (p, line_end)  # RFC 5322 §2.1: the empty line
                part.header_size += line_end - p
                self.pos = line_end
                b = self._boundary_at(line_end) if self.boundaries else None
                if b is not None and b.part is not part:
                    # A delimiter right after the empty line: that line end is the delimiter's
                    # CRLF (RFC 2046 §5.1.1), so this header has no empty line of its own.
                    part.eoh = None
                    part.header_size -= newline
                    assert part.parent is not None
                    part.parent.body_size += newline
                break
            if continued:
                value = data[p:content_end]
                if len(value) > 1:
                    cur_value.append(0x0A)
                cur_value += value
            else:
                cur_start = p
                colon = data.find(b":", p, content_end)
                if colon < 0 or colon - p > _HEADER_NAME_MAX_LEN:
                    cur_name = b""
                    cur_value = bytearray(data[p:content_end])
                else:
                    name_end = colon
                    while name_end > p and data[name_end - 1] in _LWSP:
                        name_end -= 1
                    cur_name = data[p:name_end]
                    v = colon + 1
                    while v < content_end and data[v] in _LWSP:
                        v += 1
                    if v == content_end and content_end > colon + 1:
                        v = colon + 2  # only white space: skip just the first one
                    cur_value = bytearray(data[v:content_end])
            part.header_size += line_end - p
            self.pos = line_end
            prev_newline = newline
            continued = continues
            lname = cur_name.lower()
            if lname in (b"mime-version", b"content-type"):  # RFC 2045 §4 (Content-Type alone as well)
                part.flags |= PartFlag.IS_MIME
            if not continues:
                part.fields.append(HeaderField(cur_name, bytes(cur_value), cur_start, line_end))
                if lname == b"content-type" and not seen_content_type:
                    seen_content_type = True
                    self._content_type(bytes(cur_value))
        self._end_of_header(seen_content_type)

    def _content_type(self, value: bytes) -> None:
        part = self.part
        sc = Scanner(value)
        sc.skip_lwsp()
        ct = bytearray()
        ret = sc.parse_content_type(ct)
        lct = bytes(ct).lower()
        if lct == b"message/rfc822":
            part.flags |= PartFlag.MESSAGE_RFC822
        elif lct.startswith(b"text") and (len(lct) == 4 or lct[4:5] == b"/"):
            part.flags |= PartFlag.TEXT
        elif lct.startswith(b"multipart/"):
            part.flags |= PartFlag.MULTIPART
            if lct[10:] == b"digest":
                part.flags |= PartFlag.MULTIPART_DIGEST
        if ret < 0 or not part.flags & PartFlag.MULTIPART or self.last_boundary is not None:
            return
        for key, val in parse_parameters(sc):
            if key.lower() == b"boundary":
                self.last_boundary = val[:BOUNDARY_MAX_LEN]
                break

    def _end_of_header(self, seen_content_type: bool) -> None:
        part = self.part
        if not part.flags & PartFlag.IS_MIME:
            part.flags = PartFlag.NONE  # not MIME: Content-Type meant nothing
        self.last_boundary = None
        if not seen_content_type or not part.flags & PartFlag.IS_MIME:
            if part.parent is not None and part.parent.flags & PartFlag.MULTIPART_DIGEST:
                part.flags |= PartFlag.MESSAGE_RFC822  # RFC 2046 §5.1.5
            else:
                part.flags |= PartFlag.TEXT  # RFC 2045 §5.2
        if self.multipart:
            self.multipart = False
            self.next = self._body_to_boundary
        elif not part.flags & PartFlag.MESSAGE_RFC822:
            self.next = self._body
        elif not self._too_deep() and self.total < MAX_TOTAL_PARTS:
            self._append_child()  # RFC 2046 §5.2.1: the body is a message
            self.next = self._parse_header
        else:
            part.flags |= PartFlag.OVERFLOW
            part.flags &= ~PartFlag.MESSAGE_RFC822
            self.next = self._body

    # --- body ---

    def _body(self) -> None:
        if self.boundaries:
            self._body_to_boundary()
        else:
            self._add_body(self.end)

    def _body_to_boundary(self) -> None:
        """Body octets up to the next boundary line of any enclosing multipart, or the end.

        Called at a line start (after a header or a delimiter line), which is checked first."""
        data, end = self.data, self.end
        b = self._boundary_at(self.pos)
        if b is not None:
            self._part_finish(b, first_line=True)
            return
        i = self.pos
        while True:
            lf = data.find(b"\n--", i, end)  # only lines starting with "--" can be delimiters
            if lf < 0:
                self._add_body(end)
                return
            b = self._boundary_at(lf + 1)
            if b is not None:
                stop = lf - 1 if lf > self.pos and data[lf - 1] == 0x0D else lf
                self._add_body(stop)
                self._part_finish(b, first_line=False)
                return
            i = lf + 1

    def _part_finish(self, b: _Boundary, first_line: bool) -> None:
        """A boundary line: close the parts inside its multipart, then read the delimiter line."""
        while self.part is not b.part:
            self._finish_part()
        epilogue = b.epilogue_found
        idx = next(i for i, x in enumerate(self.boundaries) if x is b)
        self._remove_boundaries_until(idx + 1 if epilogue else idx)
        size = 0 if first_line else (2 if self.data[self.pos] == 0x0D else 1)
        size += 2 + len(b.value) + (2 if epilogue else 0)
        self._add_body(self.pos + size)
        # The rest of the delimiter line (transport padding, RFC 2046 §5.1.1) is the multipart's too.
        lf = self.data.find(b"\n", self.pos, self.end)
        if lf < 0:
            self._add_body(self.end)
            return
        self._add_body(lf + 1)
        if not self.boundaries or self.boundaries[0].part is not self.part:
            self.next = self._body  # the epilogue
        else:
            child = self._append_child()
            child.flags |= PartFlag.IS_MIME  # a body part: Content-* apply (RFC 2046 §5.1.1)
            self.next = self._parse_header

    def run(self) -> MimePart:
        while self.next is not None:
            step, self.next = self.next, None
            step()
        while self.part.parent is not None:
            self._finish_part()
        return self.root


def parse_parts(raw: bytes) -> MimePart:
    """The root part of `raw`, the whole message."""
    return _Parser(raw).run()
