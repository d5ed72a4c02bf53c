"""A browsable, offline HTML report of a run: ``conformer-xai report PATH --out SITE/``.

:func:`build_report` reads an ``explain --save-arrays`` output folder or an ``explain-dataset``
store and writes a static site (see :mod:`conformer_xai.report.site` for its layout) that opens
from ``file://`` with no server and no network.
"""

from .site import REPORT_FORMAT, build_report
from .sources import ExplainFolder, Record, Source, StoreSource, open_source

__all__ = ["build_report", "open_source", "REPORT_FORMAT", "Source", "ExplainFolder",
           "StoreSource", "Record"]
