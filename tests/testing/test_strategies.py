"""Properties over messages drawn from the frame declarations themselves
(mcm_firmware/testing/strategies.py): round trips for every type, nothing but FrameError from the
decoder, every mutation answered with the reason it predicts, compiled and uncompiled parsers in
agreement on whatever the mutations produce."""

from __future__ import annotations

import construct as c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcm_firmware.protocol import FrameError, MsgType, Op, decode, encode, frames
from mcm_firmware.protocol.ops import RESULT_TYPES
from mcm_firmware.testing.strategies import MUTATIONS, fix_crc, malformed, messages

from ..protocol.test_codec import _strip

relaxed = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("msg_type", list(MsgType), ids=lambda t: t.name)
def test_round_trip_for_every_type(msg_type):
    @relaxed
    @given(messages(msg_type))
    def check(msg):
        frame = encode(msg)
        assert decode(frame) == msg
        assert encode(decode(frame)) == frame
        # the whole-frame reference declaration (RawCopy + Checksum) reads the same header
        head = frames.Frame.parse(frame).raw.value.header
        assert (head.type, head.node_id, head.seq, head.flags) == (msg.TYPE, msg.node_id, msg.seq, msg.flags)

    check()


@pytest.mark.slow
def test_the_strategies_reach_every_type_operation_and_result():
    seen: set[object] = set()

    def collect(m):
        seen.add(m.TYPE)
        if m.TYPE is MsgType.COMMAND:
            seen.add(m.op)
        if m.TYPE is MsgType.RESPONSE and m.data is not None:
            seen.add(type(m.data))

    for t in MsgType:
        # an answer with data needs its operation and status OK drawn together: more examples
        examples = 1500 if t is MsgType.RESPONSE else 300
        settings(max_examples=examples, database=None, derandomize=True, suppress_health_check=list(HealthCheck))(
            given(messages(t))(collect)
        )()
    missing = ({*MsgType} | {*Op} | set(RESULT_TYPES.values())) - seen
    assert not missing, missing


@relaxed
@given(malformed())
def test_every_mutation_gets_the_answer_it_predicts(case):
    name, frame = case
    expect = next(m.expect for m in MUTATIONS if m.name == name)
    try:
        decode(frame)
    except FrameError as e:
        assert not e.unforeseen, (name, e)
        assert e.reason in expect, (name, e)
    else:
        assert None in expect, f"{name} left a valid frame"


@relaxed
@given(malformed())
def test_compiled_and_uncompiled_parsers_agree_on_mutated_bodies(case):
    _, frame = case
    if len(frame) < frames.HEADER_SIZE + frames.CRC_SIZE or frame[3] not in {int(t) for t in MsgType}:
        return
    payload = frame[frames.HEADER_SIZE : -frames.CRC_SIZE]
    t = MsgType(frame[3])
    outcomes = []
    for con in (frames.BODIES[t], frames.COMPILED_BODIES[t]):
        try:
            outcomes.append(("ok", _strip(con.parse(payload))))
        except (c.ConstructError, UnicodeDecodeError, ValueError) as e:
            outcomes.append(("error", type(e).__name__ if not isinstance(e, c.ConstructError) else "construct"))
        except Exception as e:  # noqa: BLE001 - compiled code raises plain Python errors
            outcomes.append(
                ("error", "construct" if type(e).__name__ in ("StreamError", "error") else type(e).__name__)
            )
    assert outcomes[0][0] == outcomes[1][0], outcomes
    if outcomes[0][0] == "ok":
        assert outcomes[0] == outcomes[1]


@given(st.binary(max_size=400))
def test_crc_fixed_random_bodies_meet_a_check_of_their_own(data):
    frame = b"MC\x01" + data
    for candidate in (frame, fix_crc(frame + bytes(4))):
        try:
            decode(candidate)
        except FrameError as e:
            assert not e.unforeseen, e
