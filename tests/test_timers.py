"""PeerTimers as a pure state machine: each hook and each expiry rule."""

from __future__ import annotations

from wgpy.constants import KEEPALIVE_TIMEOUT, MAX_TIMER_HANDSHAKES, REKEY_TIMEOUT
from wgpy.timers import PeerTimers, TimerAction


def timers(jitter: float = 0.1) -> PeerTimers:
    return PeerTimers(lambda: jitter)


def test_data_sent_arms_new_handshake_once() -> None:
    t = timers()
    t.data_sent(0.0)
    assert t.new_handshake == KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + 0.1
    t.data_sent(3.0)  # not pushed back by more data
    assert t.new_handshake == 15.1
    t.any_authenticated_packet_received(4.0)
    assert t.new_handshake is None


def test_data_received_arms_keepalive_or_asks_for_another() -> None:
    t = timers()
    t.data_received(0.0)
    assert t.send_keepalive == 10.0 and not t.need_another_keepalive
    t.data_received(1.0)
    assert t.need_another_keepalive and t.send_keepalive == 10.0
    assert t.expire(10.0) == [TimerAction.SEND_KEEPALIVE]
    t.any_authenticated_packet_sent(10.0)  # sending the keepalive
    t.passive_keepalive_sent(10.0)
    assert t.send_keepalive == 20.0 and not t.need_another_keepalive


def test_sending_cancels_passive_keepalive() -> None:
    t = timers()
    t.data_received(0.0)
    t.any_authenticated_packet_sent(1.0)
    assert t.send_keepalive is None and t.expire(100.0) == []


def test_retransmit_counts_then_gives_up_and_arms_erasure() -> None:
    t = timers(0.0)
    t.handshake_started(retry=False)
    t.handshake_initiated(0.0)
    now = 0.0
    retries = 0
    while True:
        now += REKEY_TIMEOUT
        actions = t.expire(now)
        if actions == [TimerAction.GIVE_UP]:
            break
        assert actions == [TimerAction.RETRANSMIT_HANDSHAKE]
        retries += 1
        t.handshake_initiated(now)
    assert retries == MAX_TIMER_HANDSHAKES + 1
    assert t.retransmit_handshake is None
    assert t.zero_key_material == now + 540


def test_give_up_keeps_pending_erasure() -> None:
    t = timers(0.0)
    t.session_derived(0.0)
    t.handshake_attempts = MAX_TIMER_HANDSHAKES + 1
    t.handshake_initiated(10.0)
    assert t.expire(15.0) == [TimerAction.GIVE_UP]
    assert t.zero_key_material == 540.0


def test_handshake_complete_resets() -> None:
    t = timers()
    t.handshake_initiated(0.0)
    t.handshake_attempts = 7
    t.handshake_complete(1.0)
    assert t.retransmit_handshake is None and t.handshake_attempts == 0


def test_fresh_attempt_resets_counter_retry_keeps_it() -> None:
    t = timers()
    t.handshake_attempts = 5
    t.handshake_started(retry=True)
    assert t.handshake_attempts == 5
    t.handshake_started(retry=False)
    assert t.handshake_attempts == 0


def test_persistent_keepalive_follows_traversal() -> None:
    t = timers()
    t.any_authenticated_packet_traversal(0.0)
    assert t.persistent_keepalive is None  # off by default
    t.set_persistent_keepalive(25, 0.0)
    assert t.persistent_keepalive == 25.0
    t.any_authenticated_packet_traversal(10.0)
    assert t.persistent_keepalive == 35.0
    assert t.expire(35.0) == [TimerAction.PERSISTENT_KEEPALIVE]
    t.set_persistent_keepalive(0, 40.0)
    assert t.persistent_keepalive is None


def test_session_derived_rearms_erasure_and_stop_clears_everything() -> None:
    t = timers()
    t.session_derived(0.0)
    t.session_derived(100.0)
    assert t.zero_key_material == 640.0
    assert t.expire(639.9) == []
    assert t.expire(640.0) == [TimerAction.ZERO_KEY_MATERIAL]
    t.data_sent(0.0)
    t.data_received(0.0)
    t.stop()
    assert t.next_deadline() is None


def test_next_deadline_is_the_minimum() -> None:
    t = timers(0.0)
    t.session_derived(0.0)
    t.data_received(3.0)
    t.handshake_initiated(1.0)
    assert t.next_deadline() == 6.0
