"""Every in-page link `(#anchor)` in README.md and llms.txt lands on a heading, by GitHub's slug rules."""

from __future__ import annotations

import re

import pytest

from servers import ROOT

DOCS = ("README.md", "llms.txt")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (links and code marks dropped), lower-cased, every character
    that is not a letter, digit, space, hyphen or underscore removed, spaces made hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = text.replace("`", "").replace("*", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def headings(markdown: str) -> list[str]:
    """The headings outside fenced blocks (a `# comment` in a shell example is no heading)."""
    found, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)):
            found.append(match.group(1))
    return found


def anchors(markdown: str) -> set[str]:
    """Each heading's slug; a repeated one gets -1, -2, ... as GitHub numbers them."""
    seen: dict[str, int] = {}
    out = set()
    for heading in headings(markdown):
        base = slug(heading)
        count = seen.get(base, 0)
        out.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return out


def links(markdown: str) -> list[str]:
    outside = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)
    return re.findall(r"\]\(#([^)\s]+)\)", outside)


def test_slug_follows_githubs_rules():
    assert slug("Jobs: one queue in front of the GPU") == "jobs-one-queue-in-front-of-the-gpu"
    assert slug("RunPod's job API, locally") == "runpods-job-api-locally"
    assert slug("Quick start (a fresh machine with Python 3.11+)") == "quick-start-a-fresh-machine-with-python-311"
    assert slug("The `openai` SDK") == "the-openai-sdk"
    assert slug("Matching ltx-core 1.2.0") == "matching-ltx-core-120"
    assert anchors("# A\n## A\n```bash\n# A\n```\n### A\n") == {"a", "a-1", "a-2"}


@pytest.mark.parametrize("doc", DOCS)
def test_every_in_page_link_resolves(doc):
    markdown = (ROOT / doc).read_text()
    targets = anchors(markdown)
    dead = sorted({link for link in links(markdown) if link not in targets})
    assert not dead, f"{doc}: links to no heading: {dead}"


def test_the_protocol_sections_exist():
    targets = anchors((ROOT / "README.md").read_text())
    assert {"the-openai-videos-api", "the-ltx-api", "runpods-job-api-locally"} <= targets
