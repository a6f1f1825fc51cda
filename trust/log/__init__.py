"""The transparency log: RFC 9162 Merkle tree (merkle.py) stored as C2SP tlog-tiles (tiles.py)."""
