"""Frame authentication: golden sealed frames both ways, the replay window, key files and their
rotation (docs/protocol.md, "Frame authentication"; docs/security.md)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from mcm_firmware.keyring import KeyFileError, KeyRing, new_key_line, parse_keys
from mcm_firmware.protocol import FrameFlags, Reason, decode, encode
from mcm_firmware.protocol.auth import WINDOW, AuthError, FrameAuth, ReplayWindow, node_key, seal, trailer
from mcm_firmware.testing.golden import AUTH_FLEET, AUTH_GOLDEN, AUTH_SECRET, GOLDEN, sealed

DOC = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()


def doc_blocks() -> dict[str, bytes]:
    blocks = re.findall(r"<!-- auth-golden: ([\w-]+) -->\s*```hex\n(.*?)```", DOC, re.S)
    return {name: bytes.fromhex(hexs) for name, hexs in blocks}


def fixed_auth(**kw) -> FrameAuth:
    return FrameAuth(AUTH_FLEET, {1: AUTH_SECRET}.get, lambda: 1, **kw)


# --- golden sealed frames --------------------------------------------------------------------------


def test_docs_list_every_sealed_golden_frame_and_the_node_key():
    assert sorted(doc_blocks()) == sorted(AUTH_GOLDEN)
    assert node_key(AUTH_SECRET, AUTH_FLEET, 3).hex() in DOC


@pytest.mark.parametrize("name", sorted(AUTH_GOLDEN))
def test_sealed_golden_frames_both_ways(name):
    data = doc_blocks()[name]
    message, key_id, sender = AUTH_GOLDEN[name]
    assert sealed(name) == data  # sealing gives the documented bytes
    assert trailer(data)[:2] == (key_id, sender)
    msg = decode(data)  # the codec decodes a sealed frame, flags with AUTH
    plain = GOLDEN[message]
    assert msg.flags == plain.flags | FrameFlags.AUTH
    assert encode(msg) == encode(plain)  # AUTH is the sealing's: the message encodes plain
    assert fixed_auth().open(data, None) == sender


def test_a_tag_made_with_another_key_node_or_byte_is_refused():
    data = sealed("command-ping")
    for i in (0, 10, 25, len(data) - 30, len(data) - 1):  # header, payload, crc, trailer, tag
        b = bytearray(data)
        b[i] ^= 0x01
        with pytest.raises(AuthError) as e:
            fixed_auth().open(bytes(b), None)
        assert e.value.reason is Reason.BAD_TAG
    other = FrameAuth(AUTH_FLEET, {1: bytes(32)}.get, lambda: 1)
    with pytest.raises(AuthError, match="tag does not verify"):
        other.open(data, None)
    unknown = FrameAuth(AUTH_FLEET, {2: AUTH_SECRET}.get, lambda: 2)
    with pytest.raises(AuthError, match="key id 1, which this side does not have"):
        unknown.open(data, None)
    with pytest.raises(AuthError) as e:
        fixed_auth().open(encode(GOLDEN["command-ping"]), None)
    assert e.value.reason is Reason.UNAUTHENTICATED


# --- the replay window ----------------------------------------------------------------------------


def frame_with_seq(seq: int, *, sender: int = 7, ts: int | None = None) -> bytes:
    from dataclasses import replace

    msg = replace(GOLDEN["command-ping"], seq=seq, timestamp_ns=time.time_ns() if ts is None else ts)
    return seal(encode(msg), node_key(AUTH_SECRET, AUTH_FLEET, 3), 1, sender)


def test_replays_and_frames_older_than_the_window_are_refused_reordered_ones_accepted_once():
    auth = fixed_auth()
    now = time.time_ns()
    for seq in (100, 102, 101):  # 101 comes late, inside the window: accepted
        auth.open(frame_with_seq(seq), now)
    for seq in (100, 101, 102):  # each again: refused
        with pytest.raises(AuthError, match="seen already") as e:
            auth.open(frame_with_seq(seq), now)
        assert e.value.reason is Reason.REPLAYED
    with pytest.raises(AuthError, match="older than the window"):
        auth.open(frame_with_seq(102 - WINDOW), now)
    auth.open(frame_with_seq(102 - WINDOW + 1), now)  # the oldest the window still holds
    auth.open(frame_with_seq(2**32 - 1, sender=8), now)  # another sender: its own window
    auth.open(frame_with_seq(0, sender=8), now)  # wraps at 2^32
    assert auth.refused == {"UNAUTHENTICATED": 0, "BAD_TAG": 0, "REPLAYED": 4, "STALE": 0}
    assert auth.accepted == 6


def test_a_refused_frame_changes_nothing():
    auth = fixed_auth()
    now = time.time_ns()
    auth.open(frame_with_seq(10), now)
    forged = bytearray(frame_with_seq(10 + 2 * WINDOW))
    forged[-1] ^= 0xFF  # a bad tag on a frame far ahead: had the window moved there, 11 would be too old
    with pytest.raises(AuthError):
        auth.open(bytes(forged), now)
    auth.open(frame_with_seq(11), now)
    assert auth.refused["BAD_TAG"] == 1 and auth.accepted == 2


def test_a_window_by_itself():
    w = ReplayWindow()
    seen = []
    for seq in [5, 7, 6, 6, 70, 7, 8, 69, 69, 2**32 - 2]:
        if w.check(seq) is None:
            w.accept(seq)
            seen.append(seq)
    assert seen == [5, 7, 6, 70, 8, 69]


def test_a_new_sender_must_be_fresh_and_old_sessions_are_forgotten_in_order():
    auth = fixed_auth(senders=2)
    now = time.time_ns()
    with pytest.raises(AuthError) as e:
        auth.open(frame_with_seq(1, sender=1, ts=now - 400 * 10**9), now)
    assert e.value.reason is Reason.STALE and "limit 300 s" in str(e.value)
    for sender in (1, 2, 3):
        auth.open(frame_with_seq(1, sender=sender), now)
    auth.open(frame_with_seq(2, sender=3), now)
    with pytest.raises(AuthError):
        auth.open(frame_with_seq(1, sender=3), now)
    auth.open(frame_with_seq(1, sender=1), now)  # sender 1 was forgotten (2 kept): fresh again
    assert fixed_auth(freshness_s=None).open(frame_with_seq(1, ts=0), now) == 7  # virtual time: unchecked


def test_retained_frames_are_checked_by_their_tag_only():
    auth = fixed_auth()
    now = time.time_ns()
    f = frame_with_seq(5)
    auth.open(f, now)
    assert auth.open(f, now, window=False) == 7  # a retained copy handed out again
    with pytest.raises(AuthError):
        auth.open(f, now)


# --- key files --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("1 00112233445566778899aabbccddeeff\n1 00112233445566778899aabbccddeeff\n", ":2: key id 1 is listed twice"),
        ("x 00112233445566778899aabbccddeeff\n", ":1: key id 'x' is not an integer"),
        ("300 00112233445566778899aabbccddeeff\n", ":1: key id 300 is outside 0..255"),
        ("1 0011\n", ":1: the secret of key 1 has 2 bytes, at least 16"),
        ("1 zz112233445566778899aabbccddeeff\n", ":1: the secret of key 1 is not hex"),
        ("1 00112233445566778899aabbccddeeff later\n", ":1: expected 'KEY_ID SECRET_HEX [next]'"),
        ("# nothing\n", "no key to seal with"),
        ("1 00112233445566778899aabbccddeeff next\n", "no key to seal with"),
    ],
)
def test_bad_key_files_are_named_by_file_and_line(text, says):
    with pytest.raises(KeyFileError, match=re.escape(says)):
        parse_keys(text, "keys.txt")


def test_keys_rotate_under_a_running_ring(tmp_path, monkeypatch):
    import mcm_firmware.keyring as keyring

    monkeypatch.setattr(keyring, "CHECK_INTERVAL_S", 0.0)
    path = tmp_path / "fleet.keys"
    first = new_key_line(path)
    assert first == 1 and oct(os.stat(path).st_mode & 0o777) == "0o600"
    ring = KeyRing(path)
    auth = FrameAuth("f", ring.secret, ring.current)
    old = auth.seal(encode(GOLDEN["command-ping"]), 9)
    second = new_key_line(path, mark_next=True)  # step 1: accepted everywhere, not sealing yet
    assert (ring.current(), ring.key_ids) == (1, [1, 2])
    path.write_text(path.read_text().replace(" next", ""))  # step 2: seal with the new key
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert ring.current() == second
    new = auth.seal(encode(GOLDEN["command-ping"]), 10)
    assert trailer(new)[0] == 2 and trailer(old)[0] == 1
    assert auth.open(old, None) == 9 and auth.open(new, None) == 10  # both keys verify
    path.write_text("garbage\n")  # a broken file keeps the keys read before, and says so
    assert ring.current() == 2 and ring.reload_errors == 1 and "fleet.keys:1" in (ring.error or "")
    path.write_text(f"2 {'ab' * 32}\n")
    assert ring.current() == 2 and ring.key_ids == [2] and ring.error is None  # step 3: the old key is gone
    with pytest.raises(AuthError, match="key id 1"):
        FrameAuth("f", ring.secret, ring.current).open(old, None)


def test_a_node_verifies_with_its_own_key_only():
    data = sealed("command-ping")  # sealed with node 3's key, addressed to node 3
    assert fixed_auth().open(data, None, node=3) == 0x11223344
    with pytest.raises(AuthError) as e:  # node 4 does not take it, whatever the header says
        fixed_auth().open(data, None, node=4)
    assert e.value.reason is Reason.BAD_TAG
