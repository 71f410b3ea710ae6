"""HTML pages: the preview of every message and the campaign report.

Each page is a pure function of the plan (and the journal's rows), rendered from Jinja2
templates shipped in ``html/`` with autoescape on; the rows go to the page's little script as
JSON that cannot close its ``<script>`` block. The CLI writes the text to disk.
"""

from chertcast.pages.base import size_text, write_page
from chertcast.pages.files import Written, write_preview, write_report
from chertcast.pages.preview import preview_page
from chertcast.pages.report import report_page

__all__ = ["Written", "preview_page", "report_page", "size_text", "write_page", "write_preview", "write_report"]
