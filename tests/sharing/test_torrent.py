"""BitTorrent v2 with real libtorrent sessions on loopback: deterministic torrents, private sessions, nothing unverified lands."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import time
from pathlib import Path

import libtorrent as lt
import pytest

from commonforge.errors import FetchError, InputError, VerificationError
from sharing import torrent as tor
from trust import keys as trust_keys
from trust import statements as st

# a small release: ~3 MB over a few files, one nested, one short of a block, one empty
SIZES = {"model.safetensors": 2_600_000, "tokenizer.json": 400_003, "variants/int8/model.safetensors": 9_999,
         "config.json": 0}


def _release(directory: Path, seed: int = 0) -> dict[str, Path]:
    out = {}
    for i, (inner, size) in enumerate(sorted(SIZES.items())):
        path = directory / inner
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(hashlib.shake_256(f"{seed}-{i}".encode()).digest(size) if size else b"")
        out[inner] = path
    return out


def _sha256s(files: dict[str, Path]) -> dict[str, str]:
    return {inner: hashlib.sha256(p.read_bytes()).hexdigest() for inner, p in files.items()}


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, dict[str, Path], bytes]:
    root = tmp_path_factory.mktemp("release") / "forge-small-1.0.0"
    files = _release(root)
    return root, files, tor.make_torrent(list(files.items()), name="forge-small-1.0.0")


def _socket_inodes(pid: int | str = "self") -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def _addr(hexaddr: str) -> tuple[str, int]:
    host, port = hexaddr.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:  # /proc/net/*6 writes four little-endian 32-bit words
        ip = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
    return ip, int(port, 16)


def _sockets(inodes: set[str]) -> list[tuple[str, tuple[str, int], tuple[str, int]]]:
    """(protocol, local, remote) of each of these inodes, read from /proc/net (what `ss -tanup` reads)."""
    out = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        with open(f"/proc/net/{proto}") as f:
            for line in f.read().splitlines()[1:]:
                cols = line.split()
                if cols[9] in inodes:
                    out.append((proto, _addr(cols[1]), _addr(cols[2])))
    return out


def _only_loopback(sockets, peer_ports: set[int], listen_ports: set[int]) -> list:
    """Sockets that are not on 127.0.0.1, or connected elsewhere than to a named peer or into our own listener."""
    bad = []
    for proto, (lip, lport), (rip, rport) in sockets:
        if lip != "127.0.0.1" or rip not in ("127.0.0.1", "0.0.0.0") or (
                rport and rport not in peer_ports and lport not in listen_ports):
            bad.append((proto, lip, lport, rip, rport))
    return bad


def test_the_torrent_is_deterministic_v2_only_and_its_roots_are_the_files(tmp_path):
    a, b = _release(tmp_path / "one" / "x"), _release(tmp_path / "two" / "elsewhere")
    for i, p in enumerate(b.values()):
        os.utime(p, (1_000_000 + i, 1_000_000 + i))  # other mtimes, other directory names, other order
    first = tor.make_torrent(list(a.items()), name="forge-small-1.0.0")
    second = tor.make_torrent(list(reversed(b.items())), name="forge-small-1.0.0")
    assert first == second
    assert tor.info_hash_v2(first) == tor.info_hash_v2(second)
    doc = lt.bdecode(first)
    assert set(doc) == {b"info", b"piece layers"}  # no creation date, no "created by", no trackers
    assert tor.info_hash_v2(first) == hashlib.sha256(lt.bencode(doc[b"info"])).hexdigest()
    assert doc[b"info"][b"meta version"] == 2 and b"pieces" not in doc[b"info"]  # v2 only: no v1 SHA-1 pieces
    assert doc[b"info"][b"piece length"] == tor.piece_size_for(sum(SIZES.values())) == 16 * 1024
    files = tor.torrent_files(first)
    assert [f.path for f in files] == sorted(SIZES)
    for f in files:  # libtorrent's per-file Merkle roots are the ones computed here from the bytes
        assert f.size == SIZES[f.path]
        assert f.pieces_root == tor.pieces_root(a[f.path]) == tor.pieces_root(b[f.path])
    assert tor.magnet(first) == f"magnet:?xt=urn:btmh:1220{tor.info_hash_v2(first)}&dn=forge-small-1.0.0"
    b["tokenizer.json"].write_bytes(b["tokenizer.json"].read_bytes()[:-1] + b"!")
    assert tor.info_hash_v2(tor.make_torrent(list(b.items()), name="forge-small-1.0.0")) != tor.info_hash_v2(first)


def test_the_piece_size_rule_and_bad_input():
    assert [tor.piece_size_for(n) for n in (0, 16 << 20, (16 << 20) + 1, 1 << 40)] == [16 << 10, 16 << 10, 32 << 10,
                                                                                        16 << 20]
    with pytest.raises(InputError, match="leaves its directory"):
        tor.make_torrent([("../x", Path(__file__))], name="r")
    with pytest.raises(InputError, match="twice"):
        tor.make_torrent([("a", Path(__file__)), ("a/b", Path(__file__))], name="r")
    with pytest.raises(InputError, match="not a plain file name"):
        tor.make_torrent([("a", Path(__file__))], name="../r")
    with pytest.raises(VerificationError, match="not a torrent"):
        tor.info_hash_v2(b"d4:infoi1ee")


def test_two_sessions_exchange_a_release_byte_exact_over_loopback_only(release, tmp_path):
    root, files, data = release
    before = _socket_inodes()  # sockets other tests left in this process (their peers, their sessions)
    seeder, client = tor.session(), tor.session()
    seeder_port, client_port = seeder.listen_port(), client.listen_port()
    ours = _sockets(_socket_inodes())
    assert ("tcp", ("127.0.0.1", seeder_port), ("0.0.0.0", 0)) in ours  # listening, on loopback only
    tor.seed(seeder, data, root)
    seen: list[tuple[int, int]] = []
    during: list = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        during.extend(_sockets(_socket_inodes() - before))

    dest = tmp_path / "pulled"
    t0 = time.monotonic()
    assert tor.download(client, data, dest, peers=[("127.0.0.1", seeder_port)], expected=_sha256s(files),
                        timeout=5, progress=progress) == dest
    assert time.monotonic() - t0 < 5
    assert {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()} == set(SIZES)
    for inner, path in files.items():
        assert (dest / inner).read_bytes() == path.read_bytes()
    assert seen and seen[-1] == (sum(SIZES.values()),) * 2
    assert sorted(os.listdir(tmp_path)) == ["pulled"]  # the temporary directory is gone
    # every socket of this process, during the transfer too: on 127.0.0.1, to the named peer or its own listener
    assert during and _only_loopback(during + _sockets(_socket_inodes() - before), {seeder_port},
                                     {seeder_port, client_port}) == []
    assert any(r == ("127.0.0.1", seeder_port) for _, _, r in during)  # the transfer went to the peer named


def test_sessions_have_discovery_and_port_mapping_off():
    s = tor.session()
    got = s.get_settings()
    for key in ("enable_dht", "enable_lsd", "enable_upnp", "enable_natpmp"):
        assert got[key] is False, key
    assert got["anonymous_mode"] is True and got["user_agent"] == "" and got["handshake_client_version"] == ""
    assert got["listen_interfaces"] == "127.0.0.1:0" and got["outgoing_interfaces"] == "127.0.0.1"
    assert not s.is_dht_running()
    # no UDP socket for DHT (a wildcard bind) or LSD (multicast 239.192.152.143:6771): every socket is 127.0.0.1
    socks = _sockets(_socket_inodes())
    assert not [x for x in socks if x[1][0] != "127.0.0.1" or x[1][1] == 6771]
    with pytest.raises(InputError):
        tor.session("localhost")


def test_a_seeder_with_a_file_changed_after_the_torrent_was_made(release, tmp_path):
    root, files, data = release
    copy = tmp_path / "seed"
    shutil.copytree(root, copy)
    with open(copy / "model.safetensors", "r+b") as f:  # one byte, same size
        f.seek(1_000_000)
        f.write(b"\x00\x01")
    # our seed() checks the files first and refuses to serve
    with pytest.raises(VerificationError, match="model.safetensors do not match the torrent"):
        tor.seed(tor.session(), data, copy)
    # a lying seeder (seed mode: no check before serving) gets nowhere either; nothing lands
    liar = tor.session()
    p = lt.add_torrent_params()
    p.ti = lt.torrent_info(lt.bdecode(data))
    p.save_path = str(tmp_path / "lie")
    (tmp_path / "lie").mkdir()
    shutil.copytree(copy, tmp_path / "lie" / "forge-small-1.0.0")
    p.flags = lt.torrent_flags.seed_mode
    liar.add_torrent(p)
    dest = tmp_path / "out" / "pulled"
    t0 = time.monotonic()
    with pytest.raises(FetchError, match=f"did not complete from 127.0.0.1:{liar.listen_port()} within 2 s"):
        tor.download(tor.session(), data, dest, peers=[("127.0.0.1", liar.listen_port())],
                     expected=_sha256s(files), timeout=2)
    assert time.monotonic() - t0 < 4
    assert os.listdir(tmp_path / "out") == []  # neither the destination nor a partial download


def test_a_torrent_of_other_bytes_is_caught_by_the_release_sha256(release, tmp_path):
    """A peer's torrent that is self-consistent but carries another blob under the release's path."""
    root, files, _ = release
    other = tmp_path / "other" / "forge-small-1.0.0"
    shutil.copytree(root, other)
    (other / "tokenizer.json").write_bytes(b"x" * SIZES["tokenizer.json"])
    data = tor.make_torrent([(inner, other / inner) for inner in SIZES], name="forge-small-1.0.0")
    seeder = tor.session()
    tor.seed(seeder, data, other)  # libtorrent is happy: the pieces match this torrent
    dest = tmp_path / "out" / "pulled"
    with pytest.raises(VerificationError, match="tokenizer.json from the torrent has sha256 .*, the release says"):
        tor.download(tor.session(), data, dest, peers=[("127.0.0.1", seeder.listen_port())],
                     expected=_sha256s(files), timeout=5)
    assert os.listdir(tmp_path / "out") == []
    # a torrent naming other files than the release is refused before any connection
    with pytest.raises(VerificationError, match=r"extra: none, missing: \['extra.bin'\]"):
        tor.download(tor.session(), data, dest, peers=[("127.0.0.1", 1)],
                     expected={**_sha256s(files), "extra.bin": "0" * 64}, timeout=1)
    assert os.listdir(tmp_path / "out") == []


def test_a_sharing_statement_signs_the_torrent(release, tmp_path):
    _, files, data = release
    info = trust_keys.generate(tmp_path / "keys", "cat", "cats")
    signer, _ = trust_keys.load_signer(tmp_path / "keys", "cat")
    predicate = tor.sharing_predicate(data, _sha256s(files), signed_at="2026-12-01T00:00:00Z")
    blob = st.sign(signer, "sharing", "model/forge-small@1.0.0", "a" * 64, predicate)
    parsed = st.parse_envelope(blob)
    parsed.verify(info.sslib_key())
    assert parsed.kind == "sharing"
    assert parsed.predicate.info_hash_v2 == tor.info_hash_v2(data)
    assert parsed.predicate.magnet == tor.magnet(data)
    assert {(f.path, f.sha256, f.size) for f in parsed.predicate.files} == {
        (inner, h, SIZES[inner]) for inner, h in _sha256s(files).items()}
    with pytest.raises(ValueError):
        st.SharingPredicate(signed_at="2026-12-01T00:00:00Z", info_hash_v2="A" * 64, magnet="http://x",
                            files=[])
