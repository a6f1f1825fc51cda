"""How releases travel between forges (issue 14; docs/sharing.md), trusting no peer: every byte is
verified by the client before it lands.

    peer      the read-only HTTP peer (FastAPI + uvicorn): registry files, store blobs by sha256
              (Range, ETag), the transparency log's tiles and checkpoint, the peers it knows
    fetch     the hardened client of that API: bounded sizes and deadlines, no redirects, resumable
              verified downloads, one blob from several peers at once (the liars named)
    logsource a peer's transparency log read as the client's log source
    pull      a release from peers into the user registry: staged, verified (policy, pins, log,
              digests), committed last
    peers     the peers a user added, and those learned from them (never contacted)
    gossip    peers exchange peer lists and checkpoints; equivocation reported with evidence
    mirror    a full replica of another forge, following its log
    torrent   BitTorrent v2 with libtorrent: deterministic torrents, private loopback sessions
    seed      releases over BitTorrent: the torrent beside the release, a signed sharing statement

The HTTP contract between the two sides is peer.py's docstring (API version 1).

Layering: imports trust, registry and the ground floor (commonforge.errors/settings); never torch.
"""
