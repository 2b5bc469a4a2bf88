"""`mssgw trust ...`: manual entries and the national allow-list XML, strictly parsed."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import DOMAIN, NodeDir

NS = "https://listeblanche.mssante.fr/schema"


def trust_list(*domains: str) -> str:
    entries = "".join(f"<Domaine><Nom>{d}</Nom></Domaine>" for d in domains)
    body = f'<ListeBlanche xmlns="{NS}"><Domaines>{entries}</Domaines></ListeBlanche>'
    return f'<?xml version="1.0" encoding="UTF-8"?>{body}'


def listed(node: NodeDir) -> list[tuple[str, str]]:
    return [(r["domain"], r["source"]) for r in node.cli("trust", "list", "--json").json()]  # type: ignore[union-attr]


def test_manual_entries(node: NodeDir) -> None:
    r = node.cli("trust", "add-domain", "Clinique-B.mssante.fr.")
    assert r.out.strip() == "clinique-b.mssante.fr added to the trust list"
    assert node.cli("trust", "add-domain", "clinique-b.mssante.fr").out.strip() == (
        "clinique-b.mssante.fr was already on the trust list"
    )
    assert listed(node) == [(DOMAIN, "local"), (f"patient.{DOMAIN}", "local"), ("clinique-b.mssante.fr", "manual")]
    r = node.cli("trust", "add-domain", "nodot")
    assert (r.code, r.err.strip()) == (2, "mssgw: invalid domain 'nodot': the domain 'nodot' has a single label")
    r = node.cli("trust", "add-domain", DOMAIN)
    assert (r.code, r.err.strip()) == (2, f"mssgw: {DOMAIN} is a domain of this node; it is trusted already")
    assert node.cli("trust", "remove", "clinique-b.mssante.fr").out.strip() == (
        "clinique-b.mssante.fr removed from the trust list"
    )
    r = node.cli("trust", "remove", "clinique-b.mssante.fr")
    assert (r.code, r.err.strip()) == (2, "mssgw: clinique-b.mssante.fr is not on the trust list")


def test_import_replaces_the_national_part_and_keeps_manual_entries(node: NodeDir, tmp_path: Path) -> None:
    node.cli("trust", "add-domain", "labo.example.fr")
    first = tmp_path / "lb1.xml"
    first.write_text(trust_list("a.mssante.fr", "B.mssante.fr", DOMAIN, "a.mssante.fr"))
    r = node.cli("trust", "import", first, "--json")
    assert r.code == 0, r.err
    assert r.json() == {"file": str(first), "domains": 2, "added": ["a.mssante.fr", "b.mssante.fr"], "removed": []}
    second = tmp_path / "lb2.xml"
    second.write_text(trust_list("b.mssante.fr", "c.mssante.fr"))
    r = node.cli("trust", "import", second)
    assert r.out.strip() == f"{second}: 2 domains; added 1, removed 1, kept 1"
    assert listed(node) == [
        (DOMAIN, "local"),
        (f"patient.{DOMAIN}", "local"),
        ("b.mssante.fr", "list"),
        ("c.mssante.fr", "list"),
        ("labo.example.fr", "manual"),
    ]


def test_a_bad_file_is_refused_and_the_last_good_list_stays(node: NodeDir, tmp_path: Path) -> None:
    good = tmp_path / "good.xml"
    good.write_text(trust_list("a.mssante.fr"))
    assert node.cli("trust", "import", good).code == 0
    cases = {
        "truncated.xml": (
            trust_list("b.mssante.fr")[:-12],
            "the trust list is not well-formed XML: unclosed token: line 1, column",
        ),
        "empty.xml": (
            f'<ListeBlanche xmlns="{NS}"/>',
            f"the trust list names no domain (no {{{NS}}}Domaine/Nom element)",
        ),
        "bad-entry.xml": (
            trust_list("b.mssante.fr", "bad_label.fr"),
            "trust list entry 2 ('bad_label.fr') is refused: the domain label 'bad_label' is not letters",
        ),
        "entities.xml": (
            '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            f'<ListeBlanche xmlns="{NS}"><Domaine><Nom>&b;.fr</Nom></Domaine></ListeBlanche>',
            "the trust list uses forbidden XML constructs (EntitiesForbidden)",
        ),
        "xxe.xml": (
            '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            f'<ListeBlanche xmlns="{NS}"><Domaine><Nom>&x;</Nom></Domaine></ListeBlanche>',
            "the trust list uses forbidden XML constructs (EntitiesForbidden)",
        ),
    }
    for name, (content, reason) in cases.items():
        path = tmp_path / name
        path.write_text(content)
        r = node.cli("trust", "import", path)
        assert r.code == 2, name
        assert r.err.strip().startswith(f"mssgw: {reason}"), (name, r.err)
    assert listed(node)[-1] == ("a.mssante.fr", "list")
    assert len(listed(node)) == 3
