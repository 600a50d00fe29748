"""The test harness: what every test directory (and ``scripts/bench.py``) shares.

``timing`` (the one deadline factor, ``wait_until``, ``free_port``), ``config`` (TOML rendered
from the product's config dataclasses), ``clients`` (the real curl and wget),
``processes`` (signals restored in children, the end-of-run leak check). It lives under
``tests/`` because it is test support, not product; ``scripts/bench.py`` imports it from
here (it runs from a checkout, with the repository root on ``sys.path``).
"""
