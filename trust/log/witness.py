"""A witness: cosigns a log's checkpoint only if it extends the last one it cosigned for that log.

A client that requires cosignatures from independent witnesses cannot be shown a fork unless the
witnesses were shown it too: a witness that cosigned one history refuses the other (a different
root at the same size, a smaller tree, or a bigger tree without a consistency proof). Each
witness remembers, per origin, the newest checkpoint it cosigned, in a JSON file (client.py's
ClientState, with "cosigned" in its messages).

Crash safety: the witness records a checkpoint *before* it signs it. A kill between the two
leaves a recorded checkpoint without a cosignature, and asking again cosigns it (the same tree is
always consistent with itself); the other order could leave a cosignature the witness forgot,
and it might then cosign a fork of that size.
"""

from __future__ import annotations

import time
from pathlib import Path

from commonforge.errors import InputError
from trust.log import checkpoint as ck
from trust.log.client import ClientState, ConsistencyProofFn
from trust.log.note import ALG_COSIGNATURE_V1, Signer, Verifier


class Witness:
    """A witness with the cosignature/v1 key ``signer`` (type 0x04) and its memory at ``state_path``."""

    def __init__(self, state_path: Path, signer: Signer) -> None:
        if signer.alg != ALG_COSIGNATURE_V1:
            raise InputError(
                f"the witness key {signer.label} is not a cosignature/v1 key (type 0x04)",
                hint="generate it with note.generate_key(name, note.ALG_COSIGNATURE_V1), or use signer.as_cosigner()",
            )
        self.signer = signer
        self.state = ClientState(state_path, verb="cosigned")

    @property
    def verifier(self) -> Verifier:
        """The public key clients list among the witnesses they trust."""
        return self.signer.verifier()

    def cosign(
        self,
        note: bytes,
        log_verifier: Verifier,
        consistency_proof_fn: ConsistencyProofFn | None = None,
        *,
        timestamp: int | None = None,
    ) -> bytes:
        """The cosignature line for the checkpoint ``note``, after checking the log's signature
        and consistency with the last checkpoint cosigned for its origin; a fork or a rollback
        raises (client.ForkError, client.RollbackError) and nothing is signed or remembered."""
        self.state.accept(note, log_verifier, consistency_proof_fn=consistency_proof_fn)
        return ck.cosign(note, self.signer, int(time.time()) if timestamp is None else timestamp, log_verifier=log_verifier)
