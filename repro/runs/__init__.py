"""A table's runs as jobs: planning (folder and scheduler state), job bookkeeping, submission.

``plan`` decides what each run needs (done / running / failed / blocked / to resume / new),
``jobs`` records and queries the scheduler's jobs, ``submit`` and ``local`` hand runs to submitit,
``cost`` estimates GPU-hours, ``checks`` refuses bad input before anything is submitted, ``smoke``
prepares the miniature data. The launch CLI (``repro.launch``) and the table builder
(``repro.report``) both read run folders through this package; it never imports either.
"""
