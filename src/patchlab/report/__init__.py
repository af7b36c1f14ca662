"""Reports of a run folder: summary.json (`summary`), writing a run and remaking its figures and
report.html (`run`), the reports index (`index`), seaborn figures (`figures`), the HTML pages
(`html`, `transfer_page`). The folder itself is `patchlab.runfolder.RunFolder`."""
from .index import update_index
from .run import load_run, rebuild_report, write_run
from .summary import build_summary

__all__ = ["build_summary", "load_run", "rebuild_report", "update_index", "write_run"]
