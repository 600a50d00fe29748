"""One pilot request of a load run: its headers by kind, reading the body (at a limited
rate for a slow client), and checking the answer: a body that does not match the sha256 in
its ETag is corrupted, a wrong status or validator an error; all counted in the ``Tally``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import time

import aiohttp

from codecache.core.names import sha256_of_etag
from codecache.load.loadstats import Tally
from codecache.load.profile import Kind, Profile
from codecache.load.targets import Target

_CHUNK = 64 * 1024
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


class Requests:
    """Sends the requests of one run and counts their outcomes in ``tally``."""

    def __init__(self, profile: Profile, tally: Tally, rng: random.Random) -> None:
        self.profile = profile
        self.tally = tally
        self.rng = rng

    async def request(self, session: aiohttp.ClientSession, kind: Kind, target: Target,
                       started: float) -> None:
        tally, name = self.tally, kind.value
        headers: dict[str, str] = {}
        offset = 0
        if kind is Kind.INM:
            headers["If-None-Match"] = target.etag
        elif kind is Kind.IMS and target.last_modified:
            headers["If-Modified-Since"] = target.last_modified
        elif kind is Kind.RANGE and len(target.body) > 1:
            offset = self.rng.randrange(1, len(target.body))
            headers["Range"] = f"bytes={offset}-"
            headers["If-Range"] = target.etag
        tally.started()
        try:
            async with session.get(target.url, headers=headers,
                                   allow_redirects=False) as response:
                if kind is Kind.SLOW:
                    tally.slow_open += 1
                    tally.slow_peak_open = max(tally.slow_peak_open, tally.slow_open)
                try:
                    body, digest, length = await self._read(response, kind)
                finally:
                    if kind is Kind.SLOW:
                        tally.slow_open -= 1
                seconds = time.monotonic() - started
                tally.answered(name, response.status, seconds, length)
                self._check(kind, target, response, body, digest, length, offset)
        except TimeoutError:
            tally.error(name, "timeout")
        except aiohttp.ClientConnectorError:
            tally.error(name, "connect")
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                aiohttp.ClientOSError, ConnectionError):
            tally.error(name, "disconnected")
        except aiohttp.ClientError:
            tally.error(name, "protocol")
        except asyncio.CancelledError:
            tally.error(name, "cancelled")
            raise
        finally:
            tally.finished()

    async def _read(self, response: aiohttp.ClientResponse,
                    kind: Kind) -> tuple[bytes, str, int]:
        """The body (kept unless slow), its sha256 and its length."""
        if kind is not Kind.SLOW:
            body = await response.read()
            return body, hashlib.sha256(body).hexdigest(), len(body)
        # A bandwidth-limited reader: a chunk, then the pause that chunk earns at slow_rate;
        # hashed as it arrives, so 10,000 of them do not hold 10,000 bodies.
        rate = self.profile.slow_rate
        chunk = max(1024, min(rate, _CHUNK))
        digest, length = hashlib.sha256(), 0
        while True:
            data = await response.content.read(chunk)
            if not data:
                return b"", digest.hexdigest(), length
            digest.update(data)
            length += len(data)
            await asyncio.sleep(len(data) / rate)

    def _check(self, kind: Kind, target: Target, response: aiohttp.ClientResponse,
               body: bytes, digest: str, length: int, offset: int) -> None:
        """Count a wrong answer: a body that does not match its ETag's sha256 is corrupted."""
        name, status, etag = kind.value, response.status, response.headers.get("ETag", "")
        if status == 200:
            named = sha256_of_etag(etag)
            declared = response.headers.get("Content-Length")
            if named is None:
                self.tally.error(name, "no_sha256_etag")
            elif named != digest or (declared is not None and declared != str(length)):
                self.tally.corrupted(name)
            elif etag != target.etag and kind is not Kind.SLOW:
                # The channel moved: pilots now know the new tarball.
                target.etag, target.body = etag, body
                target.last_modified = response.headers.get("Last-Modified")
        elif status == 304 and kind in (Kind.INM, Kind.IMS):
            if etag and etag != target.etag and kind is Kind.INM:
                self.tally.error(name, "wrong_304")
        elif status == 206 and kind is Kind.RANGE:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if etag == target.etag and (match is None or int(match[1]) != offset
                                        or body != target.body[offset:]):
                self.tally.corrupted(name)
        else:
            self.tally.error(name, f"http_{status}")
