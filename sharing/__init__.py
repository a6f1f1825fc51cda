"""How releases travel between forges (issue 14), trusting no peer: every byte is verified by the client.

    peer      the read-only HTTP peer (FastAPI + uvicorn): registry files, store blobs by sha256
              (Range, ETag), the transparency log's tiles and checkpoint, the peers it knows

Layering: imports trust, registry and the ground floor (commonforge.errors/settings); never torch.
"""
