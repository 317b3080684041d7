"""The benchmark and calibration harness: measurements of lrsearch, outside its core.

:mod:`lrsearch.harness.bench` (``lrsearch bench``) measures that the method pays off;
:mod:`lrsearch.harness.calibration` (``lrsearch calibrate-prior``) measures where the best
one-cycle ``max_lr`` falls and chooses the prior's defaults. Both use lrsearch's public API
only, the way a user's own script would: nothing in the core imports them.
"""
