"""The index on disk read through the trust rules: the one way a node reads its own store.

The server serving it, the origin's writer signing on top of it, ``status``, ``history``,
``audit`` and ``check`` all read ``index.json`` here, so none of them can skip a rule (as
``audit`` once did, checking the signature alone). The rules are ``core.trust``'s, with
the floor ``state.json`` records: an older ``index.json`` put back is a ``rollback``.
Expiry is not a refusal here: an expired index is still the one held (served degraded,
re-signed by the writer); the callers that care report it.
"""

from __future__ import annotations

from collections.abc import Mapping

from codecache.core.signing import PublicKey
from codecache.core.trust import SignedIndex, TrustState, evaluate
from codecache.store.store import Store


def read_trusted_index(store: Store, keys: Mapping[str, PublicKey], *, now: float,
                       document: bytes | None = None,
                       floor: int | None = None) -> SignedIndex:
    """``store``'s index, verified by ``keys`` and not below the serial it accepted before.

    ``document`` is ``index.json``'s bytes where the caller read them already, ``floor``
    the highest serial from ``state.json`` where it loaded the state already.

    Raises:
        NoIndex: the store has no index yet.
        IndexRefused: the index on disk is not acceptable (``core.trust``'s reasons).
        StoreError: the store cannot be read.
    """
    raw = store.require_document() if document is None else document
    if floor is None:
        floor = store.state.load().highest_serial
    _, signed = evaluate(raw, keys, TrustState(floor), now=int(now), fresh_required=False)
    return signed
