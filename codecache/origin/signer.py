"""The origin's signing keys: per-key release signatures and key rotation.

Owns which keys sign (``signing.secret_key``: one, or several during a rotation, the
primary first), the rule that every release carries exactly one signature per signing key
with ``minisig`` the primary's (DESIGN.md §3, §5), completing the signatures of existing
releases when a key is added (and dropping those of keys no longer configured), and the
date since which the primary signs (``primary_since``). It signs; it neither reads the
store nor decides when to commit (``writer``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence

from codecache.core.errors import ConfigError
from codecache.core.index import Index, Release, minisig_keyid
from codecache.core.signing import PublicKey, SecretKey, normalise_keyid, sign_prehashed
from codecache.core.trust import SignedIndex, sign_index

log = logging.getLogger("codecache.sync")


class Signer:
    """Signs with ``secret`` (or several keys, the primary first); trusts ``trusted`` too."""

    def __init__(self, secret: SecretKey | Sequence[SecretKey],
                 trusted: Mapping[str, PublicKey]) -> None:
        self._secrets = [secret] if isinstance(secret, SecretKey) else list(secret)
        if not self._secrets:
            raise ConfigError("no signing key")
        publics = [s.public for s in self._secrets]   # derived once: a public key costs
        # The keys an index on disk may be signed by: the configured ones and ours.
        self.keys: dict[str, PublicKey] = {**trusted, **{p.keyid: p for p in publics}}
        self._keyids = [p.keyid for p in publics]
        self._keyid_set = frozenset(self._keyids)

    @property
    def keyids(self) -> list[str]:
        """The signing keys' ids, the primary first."""
        return self._keyids

    def sign_release(self, prehash: bytes, comment: str) -> tuple[str, dict[str, str]]:
        """A new release's ``minisig`` (the primary's) and ``signatures`` (empty: one key)."""
        return self._pack({keyid: sign_prehashed(secret, prehash, comment)
                           for keyid, secret in zip(self._keyids, self._secrets, strict=True)})

    def _pack(self, signatures: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        """``minisig`` and ``signatures`` of a release from one signature per signing key:
        ``minisig`` is the primary's; ``signatures`` holds them all, in the keys' order,
        only where there are several (DESIGN.md §3)."""
        ordered = {k: signatures[k] for k in self._keyids}
        return ordered[self._keyids[0]], ordered if len(ordered) > 1 else {}

    def sign_index(self, index: Index) -> SignedIndex:
        return sign_index(self._secrets, index)

    def release_signed(self, release: Release) -> bool:
        """Whether ``release`` carries exactly one signature per signing key, primary first."""
        keyids = self._keyid_set
        if not release.signatures:   # one signature: ``minisig``
            return len(keyids) == 1 and minisig_keyid(release.minisig) in keyids
        return release.signatures.keys() == keyids \
            and release.signatures.get(self._keyids[0]) == release.minisig

    def out_of_date(self, index: Index, held: SignedIndex | None) -> bool:
        """The signing keys changed since ``index`` (installed as ``held``) was signed."""
        if held is None or held.index is not index:
            return True
        return list(held.signed_by) != self._keyids or not all(
            self.release_signed(r) for p in index.packages.values() for r in p.releases.values())

    def complete(self, index: Index, prehash_of: Callable[[Release], bytes]) -> Index:
        """Every release signed by every signing key, ``minisig`` by the primary.

        A key added to ``signing.secret_key`` signs the existing releases here, at the next
        commit; only releases lacking its signature are read (``prehash_of``: Ed25519 needs
        the blob's BLAKE2b). Signatures by keys no longer configured are dropped.

        Raises:
            BlobUnavailable: (from ``prehash_of``) a blob to sign is missing or corrupt.
        """
        packages = dict(index.packages)
        for name, pkg in index.packages.items():
            releases = dict(pkg.releases)
            for version, release in pkg.releases.items():
                if self.release_signed(release):
                    continue
                have = release.all_signatures()
                missing = [(keyid, secret) for keyid, secret
                           in zip(self._keyids, self._secrets, strict=True) if keyid not in have]
                if missing:
                    prehash = prehash_of(release)
                    comment = release.trusted_comment(name)
                    have.update({keyid: sign_prehashed(secret, prehash, comment)
                                 for keyid, secret in missing})
                    log.info("release signed by new key package=%s version=%s keys=%s",
                             name, version, ",".join(keyid for keyid, _ in missing))
                minisig, signatures = self._pack(have)
                releases[version] = dataclasses.replace(release, minisig=minisig,
                                                        signatures=signatures)
            packages[name] = dataclasses.replace(pkg, releases=releases)
        return dataclasses.replace(index, packages=packages)

    def primary_since(self, index: Index, held: SignedIndex | None, now: int) -> int | None:
        """``now`` when this commit changes the primary key (``held`` was signed by another),
        else what ``index`` says.

        Catalogs date every ``.minisig`` no earlier than this, so a client revalidating
        with ``If-Modified-Since`` alone (``wget -N``) fetches the new primary's signature.
        """
        previous = normalise_keyid(held.signed_by[0]) if held and held.signed_by else None
        if previous is not None and previous != self._keyids[0]:
            return now
        return index.primary_since
