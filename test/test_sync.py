"""PairSynchronizer driven with plain stamps, no ROS graph (after message_filters' tests)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from tim_fusion_ros.sync import DROP_REASONS, Pair, PairSynchronizer, stamp_to_ns

MS = 1_000_000
T0 = 1_000 * MS  # stamps start at 1 s: 0 means "unset"


def drops(**nonzero: int) -> dict[str, int]:
    """The full drop-counter dict with the given reasons set and all others zero."""
    return {reason: nonzero.get(reason, 0) for reason in DROP_REASONS}


def check_accounting(sync: PairSynchronizer, received: dict[str, int]) -> None:
    """Every received frame is rejected, paired, dropped or still queued, per camera."""
    queued = sync.queued()
    for camera, n in received.items():
        d = sync.drops(camera)
        accounted = sum(v for k, v in d.items() if k != "superseded") + sync.pairs_formed + queued[camera]
        assert accounted == n, (camera, d, sync.pairs_formed, queued)


def test_exact_stamps_pair_one_to_one() -> None:
    sync = PairSynchronizer(slop=0.01, queue_size=5)
    for k in range(10):
        t = T0 + k * 100 * MS
        assert sync.add_ir(t, f"ir{k}") is None
        pair = sync.add_vis(t, f"vis{k}")
        assert pair == Pair(t, t, f"ir{k}", f"vis{k}")
        assert sync.take() is pair
        assert sync.take() is None
    assert sync.pairs_formed == 10
    assert sync.drops() == drops()
    assert sync.queued() == {"ir": 0, "vis": 0}
    assert sync.last_offset_s == 0.0


@pytest.mark.parametrize("jitter_ms", [-9, -4, 0, 3, 10])
def test_jitter_inside_slop_pairs_every_frame(jitter_ms: int) -> None:
    sync = PairSynchronizer(slop=0.010, queue_size=5)
    for k in range(20):
        t = T0 + k * 33 * MS
        sync.add_vis(t, k)
        pair = sync.add_ir(t + jitter_ms * MS, k)
        assert pair is not None and pair.ir == pair.vis == k
        assert pair.offset_s == pytest.approx(jitter_ms / 1000)
        assert sync.take() is pair
    assert sync.pairs_formed == 20
    assert sync.drops() == drops()
    assert sync.last_offset_s == pytest.approx(jitter_ms / 1000)


def test_offset_outside_slop_never_pairs_and_reports_offset() -> None:
    sync = PairSynchronizer(slop=0.010, queue_size=5)
    for k in range(5):
        t = T0 + k * 100 * MS
        assert sync.add_vis(t, k) is None
        assert sync.add_ir(t + 20 * MS, k) is None
    # Each VIS frame is pruned by the IR frame 20 ms after it, each IR frame by the next VIS frame.
    assert sync.pairs_formed == 0
    assert sync.drops("vis") == drops(too_old=5)
    assert sync.drops("ir") == drops(too_old=4)
    assert sync.drops() == drops(too_old=9)
    assert sync.queued() == {"ir": 1, "vis": 0}
    assert sync.last_offset_s == pytest.approx(0.020)
    check_accounting(sync, {"ir": 5, "vis": 5})


def test_slop_boundary_is_inclusive() -> None:
    sync = PairSynchronizer(slop=0.010, queue_size=5)
    sync.add_ir(T0, "a")
    assert sync.add_vis(T0 + 10 * MS, "b") is not None
    sync.add_ir(T0 + 100 * MS, "c")
    assert sync.add_vis(T0 + 110 * MS + 1, "d") is None


def test_nearest_partner_wins_and_newer_wins_a_tie() -> None:
    sync = PairSynchronizer(slop=0.050, queue_size=5)
    sync.add_ir(T0, "ir_early")
    sync.add_ir(T0 + 20 * MS, "ir_late")
    pair = sync.add_vis(T0 + 10 * MS, "vis")
    assert (pair.ir, pair.vis) == ("ir_late", "vis")
    assert sync.drops("ir") == drops(too_old=1)


def test_burst_then_partner_burst_keeps_only_the_newest_pair() -> None:
    sync = PairSynchronizer(slop=0.010, queue_size=10)
    stamps = [T0 + k * 33 * MS for k in range(5)]
    for k, t in enumerate(stamps):
        sync.add_ir(t, k)
    formed = [sync.add_vis(t + 2 * MS, k) for k, t in enumerate(stamps)]
    assert [(p.ir, p.vis) for p in formed] == [(k, k) for k in range(5)]
    assert sync.take() == formed[-1]
    assert sync.take() is None
    assert sync.pairs_formed == 5
    assert sync.drops() == drops(superseded=4)
    check_accounting(sync, {"ir": 5, "vis": 5})


def test_late_partner_drops_older_queued_frames_as_too_old() -> None:
    sync = PairSynchronizer(slop=0.010, queue_size=10)
    for k in range(5):
        sync.add_ir(T0 + k * 33 * MS, k)
    pair = sync.add_vis(T0 + 4 * 33 * MS, "vis")
    assert pair.ir == 4
    assert sync.drops("ir") == drops(too_old=4)
    assert sync.queued() == {"ir": 0, "vis": 0}
    check_accounting(sync, {"ir": 5, "vis": 1})


def test_partner_keeps_newer_frames_of_the_other_camera_queued() -> None:
    sync = PairSynchronizer(slop=0.010, queue_size=10)
    for k in range(4):
        sync.add_vis(T0 + k * 33 * MS, k)
    pair = sync.add_ir(T0 + 33 * MS, "ir")
    assert pair.vis == 1
    assert sync.drops("vis") == drops(too_old=1)
    assert sync.queued() == {"ir": 0, "vis": 2}


def test_one_camera_silent_evicts_as_no_partner() -> None:
    sync = PairSynchronizer(slop=0.010, queue_size=3)
    for k in range(10):
        assert sync.add_ir(T0 + k * 33 * MS, k) is None
    assert sync.drops() == drops(no_partner=7)
    assert sync.queued() == {"ir": 3, "vis": 0}
    assert sync.last_offset_s is None
    assert sync.take() is None
    # The silent camera comes back: the newest queued IR frame pairs at once.
    pair = sync.add_vis(T0 + 9 * 33 * MS, "vis")
    assert pair.ir == 9
    assert sync.drops("ir") == drops(no_partner=7, too_old=2)
    check_accounting(sync, {"ir": 10, "vis": 1})


def test_frame_already_passed_by_the_other_camera_is_dropped_on_arrival() -> None:
    sync = PairSynchronizer(slop=0.010, queue_size=5)
    sync.add_vis(T0 + 500 * MS, "vis")
    assert sync.add_ir(T0, "stale") is None
    assert sync.drops("ir") == drops(too_old=1)
    assert sync.queued() == {"ir": 0, "vis": 1}
    assert sync.last_offset_s == pytest.approx(-0.5)


def test_zero_stamps_are_rejected() -> None:
    sync = PairSynchronizer(slop=0.010, queue_size=5)
    assert sync.add_ir(0, "a") is None
    assert sync.add_vis(0, "b") is None
    assert sync.add_vis(-5, "c") is None
    assert sync.drops("ir") == drops(zero_stamp=1)
    assert sync.drops("vis") == drops(zero_stamp=2)
    assert sync.queued() == {"ir": 0, "vis": 0}
    # A zero stamp does not count as "last seen": the next real frames pair normally.
    sync.add_ir(T0, "ir")
    assert sync.add_vis(T0, "vis") is not None


def test_backwards_and_repeated_stamps_are_rejected_per_camera() -> None:
    sync = PairSynchronizer(slop=0.010, queue_size=5)
    sync.add_ir(T0 + 100 * MS, "a")
    assert sync.add_ir(T0 + 50 * MS, "older") is None
    assert sync.add_ir(T0 + 100 * MS, "repeat") is None
    # The VIS camera has its own history: an older VIS stamp than the IR one is fine.
    sync.add_vis(T0 + 40 * MS, "v0")
    pair = sync.add_vis(T0 + 101 * MS, "v1")
    assert (pair.ir, pair.vis) == ("a", "v1")
    assert sync.drops("ir") == drops(stamp_backwards=2)
    assert sync.drops("vis") == drops(too_old=1)
    check_accounting(sync, {"ir": 3, "vis": 2})


def test_reset_after_clock_jump_accepts_older_stamps_again() -> None:
    sync = PairSynchronizer(slop=0.010, queue_size=5)
    sync.add_ir(T0 + 900 * MS, "a")
    sync.reset()
    assert sync.queued() == {"ir": 0, "vis": 0}
    sync.add_ir(T0, "b")
    assert sync.add_vis(T0, "c") is not None
    assert sync.drops() == drops()


def test_clock_jump_back_beyond_threshold_resets_pairing() -> None:
    sync = PairSynchronizer(slop=0.010, queue_size=5, clock_reset=1.0)
    t = T0 + 200_000 * MS
    sync.add_ir(t, "ir0")
    first = sync.add_vis(t, "vis0")
    sync.add_ir(t + 100 * MS, "queued")  # waits for a partner when the clock jumps
    back = t - 100_000 * MS  # both cameras jump back 100 s
    assert sync.add_vis(back, "vis1") is None
    assert sync.clock_resets == 1 and sync.last_clock_jump == ("vis", pytest.approx(100.0))
    assert sync.take() is first  # the pair formed before the jump is still handed out
    pair = sync.add_ir(back, "ir1")  # the other camera's first stamp of the new timeline: no second reset
    assert pair == Pair(back, back, "ir1", "vis1")
    assert sync.clock_resets == 1
    assert sync.drops() == drops(clock_reset=1)  # the queued IR frame
    assert sync.add_ir(back - 500 * MS, "late") is None  # a step back under the threshold
    assert sync.drops("ir") == drops(clock_reset=1, stamp_backwards=1)
    check_accounting(sync, {"ir": 4, "vis": 2})


def test_without_threshold_every_step_back_is_stamp_backwards() -> None:
    sync = PairSynchronizer(slop=0.010, queue_size=5)
    sync.add_ir(T0 + 200_000 * MS, "a")
    assert sync.add_ir(T0, "b") is None
    assert sync.clock_resets == 0 and sync.drops("ir") == drops(stamp_backwards=1)


def test_slop_changes_live() -> None:
    sync = PairSynchronizer(slop=0.010, queue_size=5)
    sync.add_ir(T0, "a")
    assert sync.add_vis(T0 + 40 * MS, "b") is None
    sync.set_slop(0.050)
    assert sync.add_ir(T0 + 60 * MS, "c") == Pair(T0 + 60 * MS, T0 + 40 * MS, "c", "b")
    with pytest.raises(ValueError, match="sync_slop"):
        sync.set_slop(-1.0)
    with pytest.raises(ValueError, match="clock_reset_threshold"):
        sync.set_clock_reset(0.0)


def test_concurrent_producers_and_consumer_account_for_every_frame() -> None:
    sync = PairSynchronizer(slop=0.005, queue_size=4)
    n = 2000
    taken: list[Pair] = []
    done = threading.Event()

    def produce(add) -> None:
        for k in range(n):
            add(T0 + k * 10 * MS, k)

    def consume() -> None:
        while not done.is_set():
            pair = sync.take()
            if pair is not None:
                taken.append(pair)
        pair = sync.take()
        if pair is not None:
            taken.append(pair)

    consumer = threading.Thread(target=consume)
    producers = [threading.Thread(target=produce, args=(f,)) for f in (sync.add_ir, sync.add_vis)]
    consumer.start()
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    done.set()
    consumer.join()
    assert all(p.ir == p.vis for p in taken)
    assert [p.ir for p in taken] == sorted({p.ir for p in taken})
    assert len(taken) + sync.drops()["superseded"] == sync.pairs_formed
    check_accounting(sync, {"ir": n, "vis": n})


def test_invalid_parameters_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="sync_slop"):
        PairSynchronizer(slop=-0.1, queue_size=5)
    with pytest.raises(ValueError, match="sync_slop"):
        PairSynchronizer(slop=float("nan"), queue_size=5)
    with pytest.raises(ValueError, match="sync_queue_size"):
        PairSynchronizer(slop=0.01, queue_size=0)


def test_stamp_to_ns() -> None:
    assert stamp_to_ns(SimpleNamespace(sec=12, nanosec=345)) == 12_000_000_345
