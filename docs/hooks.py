"""MkDocs hook: the config reference page is generated from keepbest's pydantic schema
when the site is built (``<!-- config-reference -->`` in ``config-reference.md``)."""

from __future__ import annotations

MARK = "<!-- config-reference -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARK not in markdown:
        return markdown
    from keepbest.config.reference import config_reference

    return markdown.replace(MARK, config_reference())
