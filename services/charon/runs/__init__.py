"""v1 async mode: a run's events answered at once, simulated in batches and written to one ROOT file.

``naming`` turns RUN_BEGIN's filename into the run file's path (ChAR0N's suffix rules, confined to
the output directory); ``ledger`` is the sans-IO bookkeeping of open runs that both ``charon serve``
and the router keep (numpy-free); ``writer`` and ``recorder`` run where the engine is (serve's and
the workers' simulation thread) and write the file with uproot.
"""
