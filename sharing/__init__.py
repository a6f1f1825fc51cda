"""How releases travel between forges (issue 14), trusting no peer: every byte is verified by the client.

    peer      the read-only HTTP peer (FastAPI + uvicorn): registry files, store blobs by sha256
              (Range, ETag), the transparency log's tiles and checkpoint, the peers it knows
    fetch     the client side of that API (pull from several peers, verify before anything lands)
    logsource a peer's transparency log read as the client's log source

The HTTP contract between the two sides is peer.py's docstring (API version 1).

Layering: imports trust, registry and the ground floor (commonforge.errors/settings); never torch.
"""
