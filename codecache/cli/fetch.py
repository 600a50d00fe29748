"""The command line's GET of a file a server publishes (``history --url``, ``audit --url``)."""

from __future__ import annotations

from typing import Any

from codecache.core.config import Config
from codecache.core.errors import (
    ConfigError,
    IndexRefused,
    Refusal,
    UpstreamError,
)


def fetch_index(url: str, config: Config, name: str = "index.json") -> bytes:
    """GET ``URL/index.json`` (or ``URL/{name}``: no proxy from the environment, no
    redirects, size-capped).

    Raises:
        UpstreamError: the server cannot be reached or does not answer 200.
        IndexRefused: the body is larger than ``replica.max_index_size``.
    """
    import urllib.error
    import urllib.request

    target = url.rstrip("/") + "/" + name
    if not target.startswith(("http://", "https://")):
        raise ConfigError(f"--url: expected an http(s) URL, got {url!r}")

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *_: Any, **__: Any) -> None:
            return None

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
    request = urllib.request.Request(target, headers={  # noqa: S310 - scheme checked above
        "Cache-Control": "no-cache", "Accept-Encoding": "identity"})
    limit = config.replica.max_index_size
    try:
        with opener.open(request, timeout=config.replica.timeout * 3) as response:
            data: bytes = response.read(limit + 1)
    except urllib.error.HTTPError as err:
        raise UpstreamError(f"{target}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UpstreamError(f"cannot fetch {target}: {reason}") from None
    if len(data) > limit:
        raise IndexRefused(Refusal.TOO_LARGE, f"{target} is larger than "
                           f"replica.max_index_size ({limit} bytes)")
    return data
