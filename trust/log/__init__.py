"""The transparency log (issue 13, being built on this branch).

    merkle.py      RFC 9162 tree hashing, inclusion and consistency proofs
    tiles.py       the C2SP tlog-tiles store (entry bundles, hash tiles, the checkpoint as commit point)
    note.py        C2SP signed notes (Ed25519 keys in note text form)
    checkpoint.py  tlog-checkpoint bodies, the log's signature, cosignature/v1 witness cosignatures
    operator.py    the log operator: append, sign, gather cosignatures, prove
    client.py      a client's newest accepted checkpoint: refuses rollbacks and forks
    witness.py     a witness: cosigns only checkpoints consistent with the last one it cosigned

Not built yet: the CLI, the policy's log and witness keys, publish through the log, the monitor,
the explorer page; partial tiles and bundles are never pruned (benchmarks/log_scale.py shows the
cost of one-entry appends).
"""
