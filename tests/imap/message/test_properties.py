"""Property tests: any octets parse, answers are well-formed IMAP, offsets are exact.

Three generators: arbitrary bytes; MIME-flavoured token soup (boundaries, Content-Type fields,
groups, encoded words...) that reaches the malformed-MIME paths; and well-formed MIME trees built
from a description, whose parse must give back exactly that tree and those body octets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.imap.message import (
    MimePart,
    ParsedMessage,
    SectionSpec,
    bodystructure,
    envelope,
    header_fields,
    parse,
    section,
    text_for_search,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Value = bytes | int | list["Value"] | None


def read_imap(data: bytes, i: int = 0) -> tuple[Value, int]:
    """One IMAP value (RFC 3501 §9): NIL, number, quoted, literal or parenthesised list."""
    c = data[i : i + 1]
    if c == b"(":
        items: list[Value] = []
        i += 1
        while data[i : i + 1] != b")":
            if items:
                assert data[i : i + 1] == b" " or data[i - 1 : i] == b")", data[i - 10 : i + 10]
                if data[i : i + 1] == b" ":
                    i += 1
            v, i = read_imap(data, i)
            items.append(v)
        return items, i + 1
    if c == b'"':
        m = re.compile(rb'"((?:[^"\\\r\n\x80-\xff]|\\["\\])*)"').match(data, i)
        assert m, data[i : i + 40]
        return re.sub(rb"\\(.)", rb"\1", m.group(1)), m.end()
    if c == b"{":
        m = re.compile(rb"\{(\d+)\}\r\n").match(data, i)
        assert m, data[i : i + 40]
        n = int(m.group(1))
        assert len(data) >= m.end() + n
        return data[m.end() : m.end() + n], m.end() + n
    if data.startswith(b"NIL", i):
        return None, i + 3
    m = re.compile(rb"\d+").match(data, i)
    assert m, data[i : i + 40]
    return int(m.group()), m.end()


def read_whole(data: bytes) -> list[Value]:
    value, end = read_imap(data)
    assert end == len(data), data[end : end + 40]
    assert isinstance(value, list)
    return value


def rfc_paths(msg: ParsedMessage) -> list[tuple[tuple[int, ...], MimePart]]:
    """Every (part number, part) of the message by RFC 3501 §6.4.5 numbering."""
    out: list[tuple[tuple[int, ...], MimePart]] = []

    def leaf(part: MimePart, path: tuple[int, ...]) -> None:
        out.append((path, part))
        if part.is_multipart():
            kids(part, path)
        elif part.is_message_rfc822():
            inner = part.children[0]
            if inner.is_multipart():
                kids(inner, path)
            else:
                leaf(inner, (*path, 1))

    def kids(part: MimePart, prefix: tuple[int, ...]) -> None:
        for n, child in enumerate(part.children, 1):
            leaf(child, (*prefix, n))

    if msg.root.is_multipart():
        kids(msg.root, ())
    else:
        leaf(msg.root, (1,))
    return out


def check_sizes(node: list[Value], part: MimePart, raw: bytes) -> None:
    """BODYSTRUCTURE sizes are the octet counts of the parts we return."""
    if part.is_multipart():
        if part.children:
            kids = [k for k in node if isinstance(k, list)][: len(part.children)]
            assert len(kids) == len(part.children)
            for k, c in zip(kids, part.children, strict=True):
                check_sizes(k, c, raw)
        return
    assert node[6] == part.body_size == part.end - part.body_start
    if part.is_message_rfc822():
        inner = node[8]
        assert isinstance(inner, list)
        check_sizes(inner, part.children[0], raw)


def check_message(raw: bytes) -> None:
    msg = parse(raw)
    env = read_whole(envelope(msg))
    assert len(env) == 10
    for extensible in (False, True):
        check_sizes(read_whole(bodystructure(msg, extensible)), msg.root, raw)
    # the whole message, and header + text, are the stored octets (RFC 3501 §6.4.5)
    assert section(msg, SectionSpec()) == raw
    assert section(msg, SectionSpec((), "HEADER")) + section(msg, SectionSpec((), "TEXT")) == raw
    for path, part in rfc_paths(msg):
        assert msg.part(path) is part
        mime, body = section(msg, SectionSpec(path, "MIME")), section(msg, SectionSpec(path))
        assert mime + body == raw[part.start : part.end]
        if part.is_message_rfc822():
            inner = part.children[0]
            head, text = section(msg, SectionSpec(path, "HEADER")), section(msg, SectionSpec(path, "TEXT"))
            assert head + text == raw[inner.start : inner.end]
    fields = section(msg, SectionSpec((), "HEADER.FIELDS", ("From", "Subject")))
    others = section(msg, SectionSpec((), "HEADER.FIELDS.NOT", ("From", "Subject")))
    assert fields.endswith(b"\n")
    assert len(fields) + len(others) <= len(section(msg, SectionSpec((), "HEADER"))) + 4
    header_fields(msg)
    text_for_search(msg)


@SETTINGS
@given(st.binary(max_size=3000))
def test_any_octets(raw: bytes) -> None:
    check_message(raw)


TOKENS = [
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b"--",
    b"--b",
    b"--b--",
    b"--c\r\n",
    b":",
    b";",
    b"=",
    b'"',
    b"\\",
    b"(",
    b")",
    b"<",
    b">",
    b"@",
    b",",
    b".",
    b"[",
    b"]",
    b"*",
    b"\x00",
    b"\xc3\xa9",
    b"\xff",
    b"x",
    b"Content-Type: multipart/mixed; boundary=b\r\n",
    b'Content-Type: multipart/alternative; boundary="c"\r\n',
    b"Content-Type: multipart/digest; boundary=b\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Type: text/plain; charset=utf-8; name*0*=utf-8''a; name*1=b\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Disposition: attachment; filename=x\r\n",
    b"Content-Language: fr, en\r\n",
    b"MIME-Version: 1.0\r\n",
    b'From: "A, B" <a@b.fr>, g: c@d, e;\r\n',
    b"Subject: =?utf-8?q?caf=C3=A9?= x\r\n",
    b"Date: Mon, 3 Jun 2024 09:12:00 +0200\r\n",
    b"\r\n\r\n",
]


@SETTINGS
@given(st.lists(st.sampled_from(TOKENS), max_size=120).map(b"".join))
def test_mime_flavoured_octets(raw: bytes) -> None:
    check_message(raw)


# --- well-formed MIME trees: the parse must return exactly what was built ---


@dataclass
class Node:
    kind: str  # "leaf", "multipart" or "message"
    body: bytes = b""
    ctype: bytes | None = None
    children: list[Node] = field(default_factory=list)
    preamble: bytes = b""
    epilogue: bytes = b""


# Lines of these characters never start with "--": bodies cannot contain a delimiter.
text_lines = st.lists(st.text(alphabet="abc xyz019.:é", max_size=30), max_size=4).map(
    lambda lines: "\r\n".join(lines).encode()
)
leaves = st.builds(
    Node,
    kind=st.just("leaf"),
    body=text_lines,
    ctype=st.sampled_from([None, b"text/plain; charset=utf-8", b"application/pdf", b"TEXT/HTML"]),
)
trees = st.recursive(
    leaves,
    lambda sub: st.one_of(
        st.builds(
            Node,
            kind=st.just("multipart"),
            children=st.lists(sub, min_size=1, max_size=4),
            ctype=st.sampled_from([b"multipart/mixed", b"multipart/alternative", b"multipart/signed"]),
            preamble=text_lines,
            epilogue=text_lines,
        ),
        st.builds(Node, kind=st.just("message"), children=st.lists(sub, min_size=1, max_size=1)),
    ),
    max_leaves=12,
)


class Builder:
    def __init__(self) -> None:
        self.n = 0

    def header(self, node: Node) -> tuple[bytes, bytes]:
        """(header fields, body) of a node; boundaries are distinct and of equal length, so none is
        a prefix of another."""
        if node.kind == "leaf":
            return (b"Content-Type: " + node.ctype + b"\r\n" if node.ctype else b""), node.body
        if node.kind == "message":
            fields, body = self.header(node.children[0])
            inner = b"Subject: inner\r\n" + fields + b"\r\n" + body
            return b"Content-Type: message/rfc822\r\n", inner
        self.n += 1
        boundary = b"=_%06d" % self.n
        out = node.preamble + b"\r\n" if node.preamble else b""
        for child in node.children:
            fields, body = self.header(child)
            out += b"--" + boundary + b"\r\n" + fields + b"\r\n" + body + b"\r\n"
        out += b"--" + boundary + b"--\r\n" + node.epilogue
        assert node.ctype is not None
        return b"Content-Type: " + node.ctype + b'; boundary="' + boundary + b'"\r\n', out


def compare(node: Node, part: MimePart, raw: bytes) -> None:
    body = raw[part.body_start : part.end]
    if node.kind == "leaf":
        assert not part.children
        assert not part.is_multipart()
        assert not part.is_message_rfc822()
        assert body == node.body
    elif node.kind == "message":
        assert part.is_message_rfc822()
        assert len(part.children) == 1
        compare(node.children[0], part.children[0], raw)
    else:
        assert part.is_multipart()
        assert len(part.children) == len(node.children)
        for n, p in zip(node.children, part.children, strict=True):
            compare(n, p, raw)


@SETTINGS
@given(trees)
def test_well_formed_mime_parses_back(tree: Node) -> None:
    fields, body = Builder().header(tree)
    raw = b"From: a@example.org\r\nMIME-Version: 1.0\r\n" + fields + b"\r\n" + body
    msg = parse(raw)
    compare(tree, msg.root, raw)
    check_message(raw)
