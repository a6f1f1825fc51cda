"""The transparency log (issue 13; docs/log.md).

    merkle.py      RFC 9162 tree hashing, inclusion and consistency proofs
    tiles.py       the C2SP tlog-tiles store (entry bundles, hash tiles, the checkpoint as commit point)
    note.py        C2SP signed notes (Ed25519 keys in note text form)
    checkpoint.py  tlog-checkpoint bodies, the log's signature, cosignature/v1 witness cosignatures
    operator.py    the log operator: append, sign, gather cosignatures, prove
    client.py      a client's newest accepted checkpoint: refuses rollbacks and forks
    witness.py     a witness: cosigns only checkpoints consistent with the last one it cosigned
    monitor.py     reads several copies, checks them against each other and the local state, says what is new
    forge.py       the forge's use of it: statements as entries, verified views for trust.status, appends

Not built: HTTP sources (the sharing issue plugs them into monitor.open_source and forge.open_view).
"""
