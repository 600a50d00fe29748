"""What a load run does (``Profile``): the kinds of pilot request and their mix, the
schedule (closed loop, open loop, a publish burst, slow clients) and the bounds that make a
run stop by itself. Checked once, before anything is sent (``Profile.validate``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from codecache.core.errors import ConfigError
from codecache.upstream.client import base_url


class Kind(enum.Enum):
    """One kind of pilot request."""

    FULL = "full"          # GET of a channel tarball, the whole body
    INM = "inm"            # revalidation with If-None-Match (expects 304)
    IMS = "ims"            # revalidation with If-Modified-Since (expects 304)
    PINNED = "pinned"      # GET of a release tarball (a pilot pinned to a version)
    RANGE = "range"        # resumed download: Range + If-Range (expects 206)
    SLOW = "slow"          # a full download read at a limited rate


MIX_KINDS = (Kind.FULL, Kind.INM, Kind.IMS, Kind.PINNED, Kind.RANGE)
DEFAULT_MIX = "full=50,inm=25,ims=10,pinned=10,range=5"


def parse_mix(text: str) -> dict[Kind, float]:
    """``full=50,inm=25`` -> weights by kind.

    Raises:
        ConfigError: an unknown kind, a bad or negative weight, or all weights zero.
    """
    names = {k.value: k for k in MIX_KINDS}
    mix: dict[Kind, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        kind = names.get(name.strip())
        if kind is None or not sep:
            raise ConfigError(f"--mix: {part!r} is not KIND=WEIGHT with KIND one of "
                              f"{', '.join(names)}")
        try:
            weight = float(value)
        except ValueError:
            raise ConfigError(f"--mix: weight of {name} is not a number: {value!r}") from None
        if weight < 0 or weight != weight:
            raise ConfigError(f"--mix: weight of {name} must be >= 0")
        mix[kind] = weight
    if not any(mix.values()):
        raise ConfigError("--mix: at least one weight must be positive")
    return mix


@dataclass(frozen=True)
class Profile:
    """What to run. Bounded always: ``requests`` and ``duration`` (seconds) stop the run."""

    url: str
    mix: Mapping[Kind, float] = field(default_factory=lambda: parse_mix(DEFAULT_MIX))
    concurrency: int | None = None      # closed loop: this many pilots, back to back
    rate: float | None = None           # open loop: arrivals per second (Poisson)
    burst: int | None = None            # publish burst: this many pilots ...
    within: float = 1.0                 # ... arriving within this many seconds
    requests: int = 1000
    duration: float = 60.0
    slow: int = 0                       # slow clients, each one full download ...
    slow_rate: int = 20_000             # ... read at this many bytes per second
    ramp: float = 5.0                   # slow clients start spread over this many seconds
    timeout: float = 30.0               # connect / between two reads
    max_in_flight: int = 20_000         # open loop and burst: arrivals beyond are "overload"
    keepalive: bool = False             # pilots open a connection per download (curl, wget)
    package: str | None = None
    channel: str | None = None
    seed: int = 0
    processes: int = 1                  # load generator processes sharing the profile

    def validate(self) -> None:
        """Raises:
        ConfigError: an impossible combination or a value out of range.
        """
        base_url(self.url, "loadgen")
        chosen = [n for n, v in (("--concurrency", self.concurrency), ("--rate", self.rate),
                                 ("--burst", self.burst)) if v is not None]
        if len(chosen) > 1:
            raise ConfigError(f"loadgen: choose one schedule, not {' and '.join(chosen)}")
        checks = [(self.concurrency is None or self.concurrency >= 1, "--concurrency >= 1"),
                  (self.rate is None or self.rate > 0, "--rate > 0"),
                  (self.burst is None or self.burst >= 1, "--burst >= 1"),
                  (self.within > 0, "--within > 0"), (self.requests >= 1, "--requests >= 1"),
                  (0 < self.duration <= 86_400, "0 < --duration <= 86400"),
                  (self.slow >= 0, "--slow >= 0"), (self.slow_rate >= 1, "--slow-rate >= 1"),
                  (self.ramp >= 0, "--ramp >= 0"), (self.timeout > 0, "--timeout > 0"),
                  (self.max_in_flight >= 1, "--max-in-flight >= 1"),
                  (1 <= self.processes <= 64, "1 <= --processes <= 64")]
        for ok, rule in checks:
            if not ok:
                raise ConfigError(f"loadgen: {rule}")

    @property
    def schedule(self) -> str:
        if self.rate is not None:
            return "open"
        if self.burst is not None:
            return "burst"
        if self.concurrency is not None or not self.slow:
            return "closed"
        return "none"          # slow clients only

    def settings(self) -> dict[str, Any]:
        """The profile as the report shows it."""
        return {"url": self.url, "schedule": self.schedule,
                "mix": {k.value: v for k, v in self.mix.items()},
                "concurrency": self.concurrency or (10 if self.schedule == "closed" else None),
                "rate": self.rate, "burst": self.burst,
                "within": self.within if self.burst else None,
                "requests": self.burst or self.requests, "duration": self.duration,
                "slow": self.slow, "slow_rate": self.slow_rate if self.slow else None,
                "timeout": self.timeout, "keepalive": self.keepalive, "seed": self.seed,
                "processes": self.processes}


