"""Histories: reports over a run's snapshots or an archive of checkpoints, and their index page.

A layer above :mod:`cnnreport.report`: it runs ``build_report`` per snapshot and builds the index
from the reports' JSON views and the checkpoints' tensors (:mod:`.index`, :mod:`.archive`).
Snapshots taken while training: :class:`.run.Run` (a plain loop) and
:class:`.lightning.ReportCallback`; their records: :mod:`.snapshots`; attaching a report to a
tracker's run: :mod:`.trackers`.
"""
