"""Memory errors: SEC-DED and chipkill codes (Hypothesis), counters, scrub, row remapping, storms."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcm_firmware.control.ras import RasConfig, RasController, RasEventKind
from mcm_firmware.hbm import EccStatus, HbmGeometry, Location
from mcm_firmware.plant import ecc
from mcm_firmware.plant.memory import HbmStore
from mcm_firmware.profile import load_profile
from mcm_firmware.protocol import EccMode, RecoveryAction

words = st.integers(0, 2**32 - 1)
bit = st.integers(0, ecc.CODEWORD_BITS - 1)


# --- SEC-DED Hamming (39,32) -------------------------------------------------------------------------


@given(words)
def test_secded_clean_words_decode_ok(data):
    check = ecc.secded_check(data)
    assert check < 128
    assert ecc.secded_decode(data, check) == (EccStatus.OK, data, check, -1)


@given(words, bit)
def test_secded_corrects_every_single_bit_error(data, b):
    check = ecc.secded_check(data)
    d2, c2 = ecc.flip(data, check, b)
    status, fixed, fixed_check, where = ecc.secded_decode(d2, c2)
    assert (status, fixed, fixed_check, where) == (EccStatus.CORRECTED, data, check, b)


@given(words, st.lists(bit, min_size=2, max_size=2, unique=True))
def test_secded_detects_every_double_bit_error(data, bits):
    d, c = data, ecc.secded_check(data)
    for b in bits:
        d, c = ecc.flip(d, c, b)
    assert ecc.secded_decode(d, c)[0] is EccStatus.UNCORRECTABLE


def test_secded_exhaustively_for_one_word():
    data = 0xDEADBEEF
    check = ecc.secded_check(data)
    for a in range(ecc.CODEWORD_BITS):
        assert ecc.secded_decode(*ecc.flip(data, check, a))[1] == data
        for b in range(a + 1, ecc.CODEWORD_BITS):
            assert ecc.secded_decode(*ecc.flip(*ecc.flip(data, check, a), b))[0] is EccStatus.UNCORRECTABLE


def test_secded_check_bits_are_the_hamming_parities():
    # data bit 0 sits at codeword position 3 = 0b11: covered by p1 and p2, and the overall parity
    assert ecc.secded_check(1) == 0b1000011


# --- chipkill RS(20,16) ------------------------------------------------------------------------------

lines = st.binary(min_size=ecc.LINE_BYTES, max_size=ecc.LINE_BYTES)
device = st.integers(0, ecc.DEVICES - 1)
garbage = st.integers(1, 255)  # XOR with a non-zero byte: the symbol is wrong


@given(lines, device, garbage)
def test_chipkill_corrects_any_single_failed_device(line, dev, junk):
    stored = bytearray(ecc.chipkill_encode(line))
    stored[dev] ^= junk
    status, data, devices = ecc.chipkill_decode(bytes(stored))
    assert (status, data, devices) == (EccStatus.CORRECTED, line, [dev])


@given(lines, st.lists(device, min_size=2, max_size=2, unique=True), garbage, garbage)
def test_chipkill_detects_any_two_failed_devices(line, devs, j1, j2):
    stored = bytearray(ecc.chipkill_encode(line))
    stored[devs[0]] ^= j1
    stored[devs[1]] ^= j2
    assert ecc.chipkill_decode(bytes(stored))[0] is EccStatus.UNCORRECTABLE


@given(lines)
def test_chipkill_clean_lines_decode_ok(line):
    assert ecc.chipkill_decode(ecc.chipkill_encode(line)) == (EccStatus.OK, line, [])


# --- the store: addressing, devices, stuck cells ---------------------------------------------------------

GEO = HbmGeometry(stacks=8, channels=16, banks=16, rows=16384, cols=256)


@given(st.integers(0, 7), st.integers(0, 15), st.integers(0, 15), st.integers(0, 16383), st.integers(0, 255))
def test_address_map_round_trips(stack, ch, bank, row, col):
    loc = Location(stack, ch, bank, row, col)
    addr = GEO.encode(loc)
    assert GEO.decode(addr) == loc and GEO.valid(addr)


def test_addresses_outside_the_module_are_refused():
    store = HbmStore(GEO, EccMode.SECDED, random.Random(1))
    with pytest.raises(ValueError, match="outside"):
        store.write(1 << 40, 1)
    with pytest.raises(ValueError, match="outside the 39-bit"):
        store.flip(0, [39])


@pytest.mark.parametrize("mode", list(EccMode))
def test_written_words_read_back(mode):
    store = HbmStore(GEO, mode, random.Random(2))
    rng = random.Random(3)
    values = {GEO.random_address(rng, rng.randrange(8)): rng.getrandbits(32) for _ in range(200)}
    for a, v in values.items():
        store.write(a, v)
    for a, v in values.items():
        res = store.read(a)
        assert (res.status, res.data) == (EccStatus.OK, v)


def test_a_failed_device_is_corrected_by_chipkill_and_not_by_secded():
    rng = random.Random(4)
    addrs = [GEO.random_address(rng, 3) & ~3 for _ in range(100)]
    results = {}
    for mode in EccMode:
        store = HbmStore(GEO, mode, random.Random(5))
        for a in addrs:
            store.write(a, a & 0xFFFFFFFF)
        store.fail_device(3, 2)
        results[mode] = [store.read(a) for a in addrs]
    assert all(r.status is EccStatus.CORRECTED and r.data == r.addr & 0xFFFFFFFF for r in results[EccMode.CHIPKILL])
    # SEC-DED sees 1..4 garbage bits per word: one is corrected, two are detected, three or four
    # are detected or silently miscorrected. Either way most words do not come back right.
    right = [r.status is not EccStatus.UNCORRECTABLE and r.data == r.addr & 0xFFFFFFFF for r in results[EccMode.SECDED]]
    assert sum(right) < 60 and any(r.status is EccStatus.UNCORRECTABLE for r in results[EccMode.SECDED])


def test_a_stuck_cell_comes_back_after_write_back_a_transient_one_does_not():
    store = HbmStore(GEO, EccMode.SECDED, random.Random(6))
    a, b = GEO.encode(Location(1, 2, 3, 4, 5)), GEO.encode(Location(1, 2, 3, 4, 6))
    store.write(a, 7)
    store.write(b, 9)
    store.flip(a, [3])
    store.flip(b, [3], stuck=True)
    assert store.read(a, write_back=True).status is EccStatus.CORRECTED
    assert store.read(a).status is EccStatus.OK
    assert store.read(b, write_back=True).status is EccStatus.CORRECTED
    assert store.read(b).status is EccStatus.CORRECTED  # the cell is still bad
    store.rewrite_row(1, 2, 3, 4)  # a spare row takes over
    assert store.read(b).status is EccStatus.OK and store.read(b).data == 9


# --- the RAS firmware -------------------------------------------------------------------------------------


def controller(profile: str = "colossus-mcm", **over) -> RasController:
    cfg = RasConfig.from_profile(load_profile(profile))
    if over:
        cfg = dataclasses.replace(cfg, **over)
    rng = random.Random(7)
    return RasController(cfg, rng, HbmStore(cfg.geometry, cfg.mode, rng))


def kinds(events) -> list[str]:
    """Event kinds, an XID as ``XID<n>``."""
    return [f"XID{e.xid}" if e.kind is RasEventKind.XID else e.kind.name for e in events]


@pytest.mark.parametrize("profile", ["colossus-mcm", "h100-sxm-class"])
def test_a_transient_upset_is_one_ce_counted_per_stack_and_channel(profile):
    r = controller(profile)
    addr = (
        GEO.encode(Location(2, 5, 1, 100, 8))
        if r.cfg.geometry == GEO
        else r.cfg.geometry.encode(Location(2, 5, 1, 100, 8))
    )
    r.inject(addr, [3])
    res, events = r.read(addr, t=1.0)
    assert res.status is EccStatus.CORRECTED and events == []
    assert r.ce[2, 5] == 1 and r.ce.sum() == 1 and r.ue.sum() == 0
    assert r.read(addr, t=2.0)[0].status is EccStatus.OK  # corrected data was written back
    assert r.recovery_action is RecoveryAction.NONE


def test_two_ces_at_one_address_mark_the_row_pending_until_reset():
    r = controller()
    addr = r.cfg.geometry.encode(Location(1, 3, 7, 4242, 12))
    r.inject(addr, [9], stuck=True)
    assert kinds(r.read(addr, 1.0)[1]) == []
    assert kinds(r.read(addr, 2.0)[1]) == ["REMAP_PENDING", "XID63"]
    # NVML: a pending remap "won't affect future work on the GPU"; it is applied at the next reset
    assert r.remap_pending and r.recovery_action is RecoveryAction.NONE
    assert (1, 3, 7, 4242) in r.pending and r.remapped_rows_by_cause() == (1, 0)
    events = r.reset()
    assert kinds(events) == ["REMAPPED"] and not r.remap_pending
    assert r.recovery_action is RecoveryAction.NONE and len(r.remapped) == 1
    assert r.remapped_rows_by_cause() == (1, 0)  # still counted: the row lives on a spare now
    assert r.read(addr, 3.0)[0].status is EccStatus.OK  # the spare row has no stuck cell


def test_an_uncorrectable_error_is_counted_once_and_marks_the_row():
    r = controller("h100-sxm-class")  # SEC-DED: two bits in one word are a UE
    addr = r.cfg.geometry.encode(Location(0, 1, 2, 3, 4))
    r.inject(addr, [1, 30])
    res, events = r.read(addr, 1.0)
    assert res.status is EccStatus.UNCORRECTABLE
    assert kinds(events) == ["UE", "XID48", "REMAP_PENDING", "XID63", "XID94"] and r.ue[0, 1] == 1
    assert r.recovery_action is RecoveryAction.NONE and r.remapped_rows_by_cause() == (0, 1)
    assert r.read(addr, 2.0)[1] == [] and r.ue.sum() == 1  # poisoned: not counted again
    r.reset()
    assert r.read(addr, 3.0)[0].status is EccStatus.OK


def test_spare_rows_run_out_remap_fails_a_reset_is_asked_and_the_failure_sticks():
    r = controller("h100-sxm-class", spare_rows_per_bank=2)
    g = r.cfg.geometry
    failed = []
    for row in range(1, 4):
        addr = g.encode(Location(4, 0, 9, row, 0))
        r.inject(addr, [0, 1])
        failed += [e for e in r.read(addr, float(row), demand=False)[1] if e.kind is RasEventKind.REMAP_FAILED]
    assert len(r.pending) == 2 and r.remap_failed and len(failed) == 1 and r.last_xid == 64
    assert r.recovery_action is RecoveryAction.GPU_RESET  # the XID catalog's bucket for XID 64
    r.reset()
    assert r.remap_failed and r.recovery_action is RecoveryAction.NONE  # the flag stays: the RMA criterion
    assert r.spare_rows_free == 16 * 16 * 5 * 2 - 2


def test_a_ce_storm_starts_and_ends():
    r = controller(storm_threshold=10, storm_window_s=5.0)
    g = r.cfg.geometry
    events = []
    for i in range(12):
        addr = g.encode(Location(6, i % 16, 0, i, 0))
        r.inject(addr, [i % 8])
        events += r.read(addr, 0.1 * i)[1]
    assert kinds(events) == ["CE_STORM"] and r.storm
    events = r.step(20.0, 0.5, np.zeros(8))
    assert "CE_STORM_END" in kinds(events) and not r.storm


def test_patrol_scrub_walks_the_address_space_and_corrects_latent_errors():
    r = controller(scrub_interval_s=100.0, access_rate_hz=0.0)
    g = r.cfg.geometry
    addrs = [g.encode(Location(s, 0, 0, s, 0)) for s in range(8)]  # one per stack, spread over the map
    for a in addrs:
        r.inject(a, [5])
    assert len(r.latent) == 8
    r.step(50.0, 50.0, np.zeros(8))  # half a pass: the cursor passed the first half of the map
    assert 0 < r.ce.sum() < 8 and r.scrub_passes == 0
    assert 50.0 < r.scrub_due(50.0) <= 100.0  # the next stored word lies in the second half
    r.step(100.0, 50.0, np.zeros(8))
    assert not r.latent and r.ce.sum() == 8 and r.scrub_passes == 1
    assert r.scrubbed == g.words
    assert all(r.store.read(a).status is EccStatus.OK for a in addrs)


def test_demand_reads_find_errors_in_proportion_to_bandwidth():
    found = []
    for util in (0.0, 1.0):
        r = controller(scrub_interval_s=0.0, access_rate_hz=2.0)
        for s in range(8):
            for k in range(25):
                r.inject(r.cfg.geometry.encode(Location(s, k % 16, k, k, 0)), [7])
        for k in range(10):
            r.step(float(k), 0.1, np.full(8, util))
        found.append(int(r.ce.sum()))
    assert found[0] == 0 and found[1] > 50


def test_a_failed_chipkill_device_gives_ces_at_every_read_and_a_storm():
    r = controller(storm_threshold=50, storm_window_s=10.0, access_rate_hz=200.0)
    r.fail_device(5, 11)
    events = []
    for k in range(20):
        events += r.step(k * 0.5, 0.5, np.ones(8))
    assert r.ce[5].sum() > 50 and r.ue.sum() == 0
    assert "CE_STORM" in kinds(events)


def test_error_rates_grow_with_temperature():
    cfg = RasConfig.from_profile(load_profile("colossus-mcm"))
    f = cfg.error_rate_factor(np.array([cfg.rate_ref_c, cfg.rate_ref_c + cfg.rate_doubling_c, np.nan]))
    assert list(f) == [1.0, 2.0, 1.0]


def test_clear_resets_counters_but_not_remap_state():
    r = controller()
    addr = r.cfg.geometry.encode(Location(0, 0, 0, 0, 0))
    r.inject(addr, [2], stuck=True)
    r.read(addr, 1.0)
    r.read(addr, 2.0)
    assert r.ce.sum() == 2 and r.remap_pending
    r.clear()
    assert r.ce.sum() == 0 and r.remap_pending


@given(lines, st.lists(st.tuples(device, garbage), max_size=3, unique_by=lambda x: x[0]), st.integers(0, 3))
def test_store_reads_agree_with_the_decoder(line, corruptions, word):
    """The store computes one- and two-symbol outcomes from the true codeword; they must be what
    the real RS decoder says about the same stored bytes."""
    store = HbmStore(GEO, EccMode.CHIPKILL, random.Random(9))
    addr = GEO.encode(Location(1, 2, 3, 4, 8)) + word
    for k in range(4):
        store.write((addr & ~3) + k, int.from_bytes(line[4 * k : 4 * k + 4], "little"))
    bits = [dev * 8 + (junk.bit_length() - 1) for dev, junk in corruptions]
    store.flip(addr, bits)
    raw = bytes(store._lines[addr >> 2])
    status, data, devices = ecc.chipkill_decode(raw)
    res = store.read(addr)
    assert res.status is status and list(res.detail) == devices
    assert res.data == int.from_bytes(data[4 * word : 4 * word + 4], "little")


def test_scrub_passes_count_from_boot_not_from_the_epoch():
    r = controller(scrub_interval_s=100.0, access_rate_hz=0.0)
    t0 = 1_796_000_000.0  # a real run's clock reads Unix time
    r.step(t0, 0.5, np.zeros(8))
    r.step(t0 + 10.0, 10.0, np.zeros(8))
    assert r.scrub_passes == 0  # ten seconds into a 100 s pass: none completed yet
    r.step(t0 + 250.0, 240.0, np.zeros(8))
    assert r.scrub_passes == 2  # the cursor crossed two pass boundaries since
    r.reboot()
    assert r.scrub_passes == 0 and r.scrubbed == 0


# --- NVML's remapped-row counts and histogram, NVIDIA's recovery actions and XIDs -----------------------


def ue_at(r: RasController, loc: Location, t: float, *, demand: bool = True) -> list[str]:
    addr = r.cfg.geometry.encode(loc)
    r.inject(addr, [0, 1])  # two bits of one SEC-DED word: a UE
    return kinds(r.read(addr, t, demand=demand)[1])


def test_remap_counts_by_cause_count_pending_rows_and_the_histogram_follows_each_bank():
    r = controller("h100-sxm-class")  # 4 spare rows a bank
    g = r.cfg.geometry
    banks = g.stacks * g.channels * g.banks
    assert r.histogram() == (banks, 0, 0, 0, 0) and r.remapped_rows_by_cause() == (0, 0)
    stuck = g.encode(Location(0, 0, 0, 9, 0))
    r.inject(stuck, [4], stuck=True)
    r.read(stuck, 1.0)
    r.read(stuck, 2.0)  # a second CE at one address: a CE-caused remap, pending
    assert r.remapped_rows_by_cause() == (1, 0) and r.histogram() == (banks - 1, 1, 0, 0, 0)
    for k, row in enumerate((10, 11)):
        ue_at(r, Location(0, 0, 0, row, 0), 3.0 + k)
    assert r.remapped_rows_by_cause() == (1, 2) and r.histogram() == (banks - 1, 0, 0, 1, 0)  # 3 of 4 used: low
    ue_at(r, Location(0, 0, 0, 12, 0), 6.0)
    assert r.histogram() == (banks - 1, 0, 0, 0, 1)  # all 4 used: none
    ue_at(r, Location(1, 2, 3, 40, 0), 7.0)
    ue_at(r, Location(1, 2, 3, 41, 0), 8.0)
    assert r.histogram() == (banks - 2, 0, 1, 0, 1)  # two used, two left: partial
    r.reset()  # applied: the counts and the histogram are of recorded remaps, they do not move
    assert r.remapped_rows_by_cause() == (1, 5) and r.histogram() == (banks - 2, 0, 1, 0, 1)
    assert len(r.remapped) == 6 and not r.pending


def test_availability_buckets_are_nvidias():
    from mcm_firmware.control.ras import HISTOGRAM, availability_bucket

    assert [HISTOGRAM[availability_bucket(u, 4)] for u in range(5)] == ["max", "high", "partial", "low", "none"]
    assert [HISTOGRAM[availability_bucket(u, 8)] for u in (0, 1, 2, 6, 7, 8)] == [
        "max",
        "high",
        "partial",
        "partial",
        "low",
        "none",
    ]
    assert HISTOGRAM[availability_bucket(1, 2)] == "low"  # one used and one left: the scarcer reading


def test_a_ue_takes_the_spare_row_of_a_ce_remap_in_a_full_bank():
    r = controller("h100-sxm-class", spare_rows_per_bank=1)
    g = r.cfg.geometry
    stuck = g.encode(Location(2, 1, 1, 5, 0))
    r.inject(stuck, [4], stuck=True)
    r.read(stuck, 1.0)
    r.read(stuck, 2.0)
    assert r.remapped_rows_by_cause() == (1, 0)
    other = g.encode(Location(2, 1, 1, 6, 0))
    r.inject(other, [7], stuck=True)
    r.read(other, 3.0)
    assert kinds(r.read(other, 4.0)[1]) == []  # a CE finds no spare: not remapped, and no failure
    assert r.remapped_rows_by_cause() == (1, 0) and not r.remap_failed
    assert ue_at(r, Location(2, 1, 1, 7, 0), 5.0) == ["UE", "XID48", "REMAP_PENDING", "XID63", "XID94"]
    assert r.remapped_rows_by_cause() == (0, 1) and (2, 1, 1, 5) not in r.pending and not r.remap_failed
    assert "XID64" in ue_at(r, Location(2, 1, 1, 8, 0), 6.0)  # now no spare is left for a UE
    assert r.remap_failed


def test_a_ue_on_a_row_remapped_already_fails_the_remap():
    r = controller("h100-sxm-class")
    loc = Location(3, 0, 2, 77, 1)
    ue_at(r, loc, 1.0)
    r.reset()
    assert r.remapped_rows_by_cause() == (0, 1) and not r.remap_failed
    assert ue_at(r, loc, 2.0) == ["UE", "XID48", "REMAP_FAILED", "XID64", "XID94"]
    assert r.remap_failed and r.recovery_action is RecoveryAction.GPU_RESET


def test_the_513th_ue_remap_fails():
    r = controller("h100-sxm-class")
    g = r.cfg.geometry
    for k in range(512):  # spread over banks so that none runs out of spare rows
        ch, bank = divmod(k, g.banks)
        assert not any(x == "XID64" for x in ue_at(r, Location(k % g.stacks, ch % g.channels, bank, 100, 0), k))
    assert r.remapped_rows_by_cause() == (0, 512) and not r.remap_failed
    assert "XID64" in ue_at(r, Location(4, 15, 15, 200, 0), 600.0) and r.remap_failed


def test_recovery_actions_follow_nvidias_table():
    r = controller("h100-sxm-class")
    # found by the patrol scrubber: no application read it, nothing to contain
    assert ue_at(r, Location(0, 0, 0, 5, 0), 1.0, demand=False) == ["UE", "XID48", "REMAP_PENDING", "XID63"]
    assert r.recovery_action is RecoveryAction.NONE
    # read by the workload: contained to the reader (XID 94), the GPU stays in use
    assert ue_at(r, Location(0, 0, 1, 5, 0), 2.0)[-1] == "XID94"
    assert r.recovery_action is RecoveryAction.NONE and r.remap_pending
    # read by the workload in memory every context shares: uncontained (XID 95), reboot the node
    assert ue_at(r, Location(0, 0, 2, 0, 0), 3.0)[-1] == "XID95"
    assert r.recovery_action is RecoveryAction.NODE_REBOOT and r.last_xid == 95
    r.reset()  # a GPU reset applies the remaps but is not the node reboot asked for
    assert not r.remap_pending and r.recovery_action is RecoveryAction.NODE_REBOOT
    r.reboot(10.0)
    assert r.recovery_action is RecoveryAction.NONE and r.last_xid == 0
    assert r.remapped_rows_by_cause() == (0, 3)  # recorded remaps outlive a reboot, as in the InfoROM


def test_scrub_passes_count_from_the_boot_even_when_the_scrubber_first_reads_later():
    r = controller(scrub_interval_s=100.0, access_rate_hz=0.0)
    t0 = 1_796_000_000.0
    r.booted_at = t0  # the runtime sets this when the controller boots
    assert r.passes_at(t0 + 99.0) == 0 and r.passes_at(t0 + 250.0) == 2  # nothing stored: still counted
    r.inject(r.cfg.geometry.encode(Location(0, 0, 0, 0, 0)), [3])
    r.step(t0 + 300.0, 0.5, np.zeros(8))  # the first scrub, 300 s after boot
    assert r.scrub_passes == 3 and r.passes_at(t0 + 300.0) == 3
    assert r.scrubbed_at(t0 + 300.0) == 3 * r.cfg.geometry.words
    r.reboot(t0 + 1000.0)
    assert r.scrub_passes == 0 and r.passes_at(t0 + 1050.0) == 0 and r.passes_at(t0 + 1100.0) == 1
