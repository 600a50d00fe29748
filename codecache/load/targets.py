"""The targets of a load run: the tarball URLs pilots ask for, discovered from the server's
``/index.json`` (channel tarballs, and the newest releases pilots pin to), each downloaded
and verified against the sha256 in its ETag once, before the run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from codecache.core.errors import UpstreamError
from codecache.core.names import sha256_of_etag, version_key
from codecache.load.profile import Profile

PINNED_PER_PACKAGE = 8          # the newest releases pilots pin to


@dataclass
class Target:
    """One tarball URL and what a pilot knows about it after a verified download."""

    url: str
    etag: str
    last_modified: str | None
    body: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


@dataclass
class Targets:
    channels: list[Target]
    releases: list[Target]



async def discover(session: aiohttp.ClientSession, p: Profile) -> Targets:
    """The channel and release tarballs of the server at ``p.url`` (or the one tarball
    it names), each downloaded and verified once.

    Raises:
        UpstreamError: the index or a tarball could not be fetched, or does not verify.
    """
    parts = urlsplit(p.url)
    if parts.path.endswith(".tar.gz"):
        one = await _fetch_target(session, p.url)
        return Targets([one], [one])
    base = p.url.rstrip("/")
    status, body = await _get(session, f"{base}/index.json")
    if status != 200:
        raise UpstreamError(f"loadgen: {base}/index.json answered {status}")
    try:
        packages: dict[str, Any] = json.loads(body)["signed"]["packages"]
    except (ValueError, KeyError, TypeError) as e:
        raise UpstreamError(f"loadgen: {base}/index.json is not a codecache index") from e
    channel_urls, release_urls = [], []
    for name, package in sorted(packages.items()):
        if p.package is not None and name != p.package:
            continue
        for channel in sorted(package.get("channels", {})):
            if p.channel is None or channel == p.channel:
                channel_urls.append(f"{base}/{name}/{channel}.tar.gz")
        versions = sorted((v for v, r in package.get("releases", {}).items()
                           if not r.get("yanked")), key=version_key)
        release_urls += [f"{base}/{name}/releases/{v}.tar.gz"
                         for v in versions[-PINNED_PER_PACKAGE:]]
    if not channel_urls:
        raise UpstreamError(f"loadgen: no channel in {base}/index.json"
                            + (f" for package {p.package}" if p.package else "")
                            + (f" named {p.channel}" if p.channel else ""))
    channels = [await _fetch_target(session, u) for u in channel_urls]
    releases = [await _fetch_target(session, u) for u in release_urls] or channels
    return Targets(channels, releases)

async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    try:
        async with session.get(url, allow_redirects=False) as response:
            return response.status, await response.read()
    except (aiohttp.ClientError, TimeoutError) as e:
        raise UpstreamError(f"loadgen: cannot fetch {url}: {e or type(e).__name__}") from e

async def _fetch_target(session: aiohttp.ClientSession, url: str) -> Target:
    """One verified download before the run: the body a resumed download is checked
    against, and the validators a revalidating pilot sends."""
    try:
        async with session.get(url, allow_redirects=False) as response:
            body = await response.read()
            etag = response.headers.get("ETag", "")
            modified = response.headers.get("Last-Modified")
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as e:
        raise UpstreamError(f"loadgen: cannot fetch {url}: {e or type(e).__name__}") from e
    if status != 200:
        raise UpstreamError(f"loadgen: {url} answered {status}")
    if sha256_of_etag(etag) != hashlib.sha256(body).hexdigest():
        raise UpstreamError(f"loadgen: {url}: the body does not match its ETag {etag!r} "
                            f"(not a codecache tarball, or corrupted)")
    return Target(url, etag, modified, body)

