"""Histories: reports over a run's snapshots or an archive of checkpoints, and their index page.

A layer above :mod:`cnnreport.report`: it runs ``build_report`` per snapshot and builds the index
from the reports' JSON views and the checkpoints' tensors (:mod:`.index`, :mod:`.archive`).
"""
