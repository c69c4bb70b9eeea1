"""The run report: one self-contained HTML file with embedded figures, which a mineralogist can mail.

:func:`write_report` renders a :class:`ReportData` (volumes, tables, SEM sections, provenance) into
HTML with inline CSS and PNG figures as ``data:`` URIs: orthogonal slices with phase and particle
overlays, SEM sections with their registration, phase fractions, size distributions and liberation
by size, grain versus particle volume, representativeness and liberation spectra (Figs. 9-12 of the
seed paper), 2D versus 3D liberation, a nano-CT volume across length scales (:class:`CrossScaleReport`),
accuracy against a digital twin's truth, and provenance.
"""

from ._data import CrossScaleReport, ReportData, ReportSection
from ._figure_plan import figure_ids
from ._report import render_report, write_report

__all__ = [
    "CrossScaleReport",
    "ReportData",
    "ReportSection",
    "figure_ids",
    "render_report",
    "write_report",
]
