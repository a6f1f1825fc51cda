"""The transparency log: the RFC 9162 Merkle tree (merkle.py), its C2SP tlog-tiles storage
(tiles.py), signed notes and checkpoints (note.py, checkpoint.py)."""
