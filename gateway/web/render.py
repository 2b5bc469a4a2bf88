"""What the web inbox shows of a stored message: headers, text, sanitised HTML, attachments, IHE XDM contents.

Implementation notes
- Messages are untrusted input. They are parsed with the standard library's `email` package (policy
  `default`), never executed: HTML parts go through nh3 (ammonia) with an allow-list of formatting tags;
  no `img`, `style`, `script`, `iframe`, `form` or event attribute survives, links keep only https and
  mailto targets and get `rel="noopener noreferrer"`. The page's Content-Security-Policy (no script, no
  remote image) is the second wall. Nothing remote is ever loaded: a tracking pixel stays a string.
- Attachments are numbered by their order in the MIME tree (`part`), downloaded as
  `application/octet-stream` with `Content-Disposition: attachment` and a sanitised file name (RFC 6266,
  `filename*` for non-ASCII), so no browser renders them inline under our origin.
- An IHE XDM archive (ITI-32: `IHE_XDM/SUBSET01/METADATA.XML`) is listed as its documents: the
  ExtrinsicObjects of the metadata (title, type, file) or, without readable metadata, the files of its
  subsets. The ZIP is read in memory with bounded sizes (entries, metadata bytes); nothing is extracted.
  One message's archives share one budget of inflated metadata (`MAX_METADATA`) and list at most
  `MAX_METADATA_FILES` metadata files and `MAX_DOCUMENTS` documents each: a few KiB of deflate stream
  inflate to megabytes, and the inbox must not spend seconds of CPU on one message.
- The MIME tree is shown to `MAX_DEPTH` levels; deeper parts are neither shown nor downloadable. A message
  the parser cannot read at all (nesting past Python's recursion limit) is shown by its header only
  (`Rendered.unreadable`). The inbox listing reads headers only (`summary`), never the MIME tree.
- The callers run `render`, `summary` and `attachment` in a worker thread: they parse untrusted input,
  and the event loop also serves SMTP and IMAP.
"""

from __future__ import annotations

import io
import re
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from urllib.parse import quote

import nh3
from defusedxml import ElementTree

MAX_XDM_ENTRIES = 1000
MAX_METADATA = 5 * 1024 * 1024  # inflated metadata, all archives of one message together
MAX_METADATA_FILES = 20  # IHE_XDM/<subset>/METADATA.XML read per archive (one per submission set)
MAX_DOCUMENTS = 200  # documents listed per archive
MAX_DEPTH = 50  # MIME nesting shown
ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "cite", "code", "dd", "del", "div", "dl", "dt", "em",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "ins", "kbd", "li", "ol", "p", "pre", "q", "s", "small",
    "span", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan", "scope"}}
_RIM = "{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}"
# What the email package raises on a malformed header field; RecursionError: its parser recurses per
# nested comment, "((((...))))" thousands deep.
_MALFORMED = (ValueError, TypeError, IndexError, RecursionError)


@dataclass(frozen=True)
class Document:
    """One document of an XDM archive."""

    title: str
    mime_type: str
    uri: str


@dataclass(frozen=True)
class Attachment:
    part: int  # index in the MIME walk, stable for a stored message
    filename: str
    content_type: str
    size: int
    documents: tuple[Document, ...] | None = None  # set for an IHE XDM archive


@dataclass
class Rendered:
    from_name: str
    from_address: str
    reply_to: tuple[str, ...]
    to: tuple[str, ...]
    subject: str
    date: datetime | None
    message_id: str | None
    references: str
    text: str | None = None
    html: str | None = None  # sanitised
    attachments: list[Attachment] = field(default_factory=list)
    unreadable: bool = False  # the MIME tree could not be parsed: header only


@dataclass
class _Budget:
    """Inflated metadata bytes one message's XDM archives may still read."""

    left: int = MAX_METADATA


def parse(raw: bytes) -> EmailMessage:
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


def _header(msg: EmailMessage, name: str) -> str:
    try:
        value = msg.get(name)
        return " ".join(str(value).split()) if value is not None else ""
    except _MALFORMED:  # a malformed field is shown as absent, not a crash
        return ""


def _addresses(msg: EmailMessage, name: str) -> list[tuple[str, str]]:
    try:
        values = [str(v) for v in msg.get_all(name, [])]
    except _MALFORMED:
        return []
    return [(n, a.lower()) for n, a in getaddresses(values) if "@" in a]


def _date(msg: EmailMessage) -> datetime | None:
    raw = _header(msg, "date")
    try:
        return parsedate_to_datetime(raw) if raw else None
    except _MALFORMED:
        return None


def sanitise_html(html: str) -> str:
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"https", "mailto"},
        link_rel="noopener noreferrer",
        strip_comments=True,
    )


def safe_filename(name: str, fallback: str) -> str:
    """A file name safe to offer for download: no path, no control characters, at most 150 characters."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip(" .")
    return name[:150] or fallback


def content_disposition(filename: str) -> str:
    """RFC 6266 `attachment` with an ASCII fallback and the UTF-8 name (RFC 8187)."""
    ascii_name = re.sub(r"[^A-Za-z0-9._ -]", "_", filename) or "piece-jointe"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _xdm_documents(data: bytes, budget: _Budget | None = None) -> tuple[Document, ...] | None:
    """The documents of an IHE XDM archive, or None if `data` is not one."""
    budget = budget or _Budget()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()[:MAX_XDM_ENTRIES]
            names = [i.filename for i in infos]
            metadata = [i for i in infos if re.fullmatch(r"IHE_XDM/[^/]+/METADATA\.XML", i.filename, re.IGNORECASE)]
            if not metadata:
                return None
            docs: list[Document] = []
            for info in metadata[:MAX_METADATA_FILES]:
                subset = info.filename.rsplit("/", 1)[0]
                # z.read() would inflate the whole member before cutting it to its declared size (a small
                # file_size over a large deflate stream is a zip bomb): read at most what the budget has
                # left, and only from stored or deflated members (bzip2 and LZMA inflate without a bound).
                if info.file_size <= budget.left and info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    try:
                        with z.open(info) as member:
                            xml = member.read(budget.left)
                    except (zipfile.BadZipFile, zlib.error, EOFError):  # zlib.error: a corrupt deflate stream
                        continue  # unreadable metadata, as when it does not parse
                    budget.left -= len(xml)
                    docs += _metadata_documents(xml, subset)
                if len(docs) >= MAX_DOCUMENTS:
                    break
            docs = docs[:MAX_DOCUMENTS]
            if not docs:  # unreadable metadata: list the subset's files
                docs = [
                    Document(n.rsplit("/", 1)[-1], "", n)
                    for n in names
                    if n.upper().startswith("IHE_XDM/")
                    and not n.endswith("/")
                    and not n.upper().endswith("METADATA.XML")
                ][:MAX_DOCUMENTS]
            return tuple(docs)
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, NotImplementedError, EOFError, zlib.error):
        return None


def _metadata_documents(xml: bytes, subset: str) -> list[Document]:
    try:
        root = ElementTree.fromstring(xml)
    except Exception:  # defusedxml raises several types for hostile or broken XML
        return []
    out = []
    for obj in root.iter(f"{_RIM}ExtrinsicObject"):
        name = obj.find(f"{_RIM}Name/{_RIM}LocalizedString")
        title = name.get("value", "") if name is not None else ""
        uri = ""
        for slot in obj.iter(f"{_RIM}Slot"):
            if slot.get("name") == "URI":
                value = slot.find(f"{_RIM}ValueList/{_RIM}Value")
                uri = (value.text or "") if value is not None else ""
        out.append(
            Document(title or uri or obj.get("id", "document"), obj.get("mimeType", ""), uri and f"{subset}/{uri}")
        )
    return out


def parts(msg: EmailMessage) -> list[EmailMessage]:
    """The MIME tree in walk order, `MAX_DEPTH` levels deep at most; `Attachment.part` indexes it."""
    found: list[EmailMessage] = []
    stack: list[tuple[EmailMessage, int]] = [(msg, 0)]
    while stack:  # iterative, unlike Message.walk(): no recursion on hostile nesting
        part, depth = stack.pop()
        found.append(part)
        if part.is_multipart() and depth < MAX_DEPTH:
            children = part.get_payload()
            assert isinstance(children, list)
            stack += [(c, depth + 1) for c in reversed(children) if isinstance(c, EmailMessage)]
    return found


def _headers(msg: EmailMessage, *, unreadable: bool = False) -> Rendered:
    sender = _addresses(msg, "from")
    name, address = sender[0] if sender else ("", "")
    return Rendered(
        from_name=name,
        from_address=address,
        reply_to=tuple(a for _, a in _addresses(msg, "reply-to")),
        to=tuple(a for _, a in _addresses(msg, "to")),
        subject=_header(msg, "subject"),
        date=_date(msg),
        message_id=_header(msg, "message-id") or None,
        references=_header(msg, "references"),
        unreadable=unreadable,
    )


def summary(raw: bytes) -> Rendered:
    """The header fields only (the inbox listing): the body and its MIME tree are not parsed."""
    return _headers(_header_only(raw))


def _header_only(raw: bytes) -> EmailMessage:
    msg = BytesHeaderParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


def render(raw: bytes) -> Rendered:
    try:
        msg = parse(raw)
    except RecursionError:  # the stdlib parser recurses per MIME level: shown by its header alone
        return _headers(_header_only(raw), unreadable=True)
    out = _headers(msg)
    budget = _Budget()
    for index, part in enumerate(parts(msg)):
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        try:
            disposition = part.get_content_disposition()
            filename = part.get_filename()
        except _MALFORMED:
            disposition, filename = "attachment", None
        body = (ctype == "text/plain" and out.text is None) or (ctype == "text/html" and out.html is None)
        if disposition != "attachment" and not filename and body:  # a later text part is listed, not dropped
            try:
                content = part.get_content()
            except (LookupError, ValueError, UnicodeError):
                payload = part.get_payload(decode=True)
                content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
            if ctype == "text/plain":
                out.text = str(content)
            else:
                out.html = sanitise_html(str(content))
            continue
        data = part.get_payload(decode=True) or b""
        assert isinstance(data, bytes)
        shown = safe_filename(filename or "", f"piece-jointe-{index}")
        xdm = shown.lower().endswith(".zip") or ctype == "application/zip"
        documents = _xdm_documents(data, budget) if xdm else None
        out.attachments.append(Attachment(index, shown, ctype, len(data), documents))
    return out


def attachment(raw: bytes, part: int) -> tuple[str, bytes] | None:
    """(file name, bytes) of the attachment at `part`, or None."""
    try:
        found = parts(parse(raw))
    except RecursionError:
        return None
    if not 0 <= part < len(found) or found[part].is_multipart():
        return None
    p = found[part]
    try:
        filename = p.get_filename()
    except _MALFORMED:
        filename = None
    data = p.get_payload(decode=True) or b""
    assert isinstance(data, bytes)
    return safe_filename(filename or "", f"piece-jointe-{part}"), data


def display_address(name: str, address: str) -> str:
    return str(Address(display_name=name, addr_spec=address)) if name else address
