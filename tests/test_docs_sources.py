"""Project docs and code cite public sources (URLs), never files outside the repository:
a reader of a clone cannot open ../shared/reference/facts.md."""

from __future__ import annotations

import re

from conftest import ROOT

# Files outside the repository, and ids of a private search index no reader can open.
OUTSIDE = re.compile(r"facts\.md|shared/reference|\.\./shared|stored ids? \d")
THIS_FILE = "tests/test_docs_sources.py"


def cited_files() -> list[str]:
    paths = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("mvgen/**/*.py")]
    paths += [*ROOT.glob("templates/*"), *ROOT.glob("schema/*.json"), ROOT / "deployments.yaml"]
    paths += [*ROOT.glob("tests/**/*.py"), *ROOT.glob("tests/**/*.md")]
    paths += [*ROOT.glob("benchmarks/*.py"), *ROOT.glob("scripts/*.py")]
    return sorted(p.relative_to(ROOT).as_posix() for p in paths if p.is_file())


def test_no_doc_or_module_cites_a_file_outside_the_repository() -> None:
    offenders = [
        f"{path}: {match.group(0)}"
        for path in cited_files()
        if path != THIS_FILE
        for match in [OUTSIDE.search((ROOT / path).read_text(encoding="utf-8"))]
        if match
    ]
    assert not offenders


def test_the_catalog_cites_its_sources() -> None:
    text = (ROOT / "mvgen" / "catalog.py").read_text()
    for url in ("https://modal.com/docs/guide/gpu", "https://modal.com/pricing"):
        assert url in text
