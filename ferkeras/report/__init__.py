"""`ferkeras report`: the reference's six questions answered from a run, as one HTML page and a
Markdown twin.

tex: the TeX subset of the formulas to HTML; document: the blocks and their HTML and Markdown;
sections: the six answers as blocks; build: loads the run's model and images once, computes
every answer, writes RUN/report.html, RUN/report.md and the figures in RUN/report/.
"""

from ferkeras.report.build import FORMATS, ReportSettings, build_report, report_blocks
from ferkeras.report.document import render_html, render_markdown
from ferkeras.report.tex import tex_to_html

__all__ = ["FORMATS", "ReportSettings", "build_report", "render_html", "render_markdown", "report_blocks",
           "tex_to_html"]
