"""Failed-login throttling: delays, lockouts, cooling-off, and known devices."""

from __future__ import annotations

from proxy.throttle import Allow, LoginThrottle, Refuse, ThrottleSettings

SETTINGS = ThrottleSettings(
    failures_before_delay=3, delay=1.0, max_delay=8.0, failures_before_lockout=6,
    account_failures_before_lockout=10, lockout=900.0, window=900.0,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttle() -> tuple[LoginThrottle, Clock]:
    clock = Clock()
    return LoginThrottle(SETTINGS, clock), clock


def fail(t: LoginThrottle, times: int, source: str = "192.0.2.7", account: str = "alice") -> None:
    for _ in range(times):
        t.failed(source, account)


def test_first_failures_are_free_then_delays_double_up_to_the_cap() -> None:
    """Three wrong passwords cost nothing; then each attempt waits 1, 2, 4, 8, 8 ... seconds."""
    t, _ = throttle()
    delays = []
    for _ in range(5):
        delays.append(t.check("192.0.2.7", "alice"))
        t.failed("192.0.2.7", "alice")
    assert delays == [Allow(), Allow(), Allow(), Allow(1.0), Allow(2.0)]
    t2, _ = throttle()
    fail(t2, 5, account="a")
    assert t2.check("192.0.2.7", "b") == Allow(4.0)  # per address, whatever account


def test_an_address_is_locked_out_then_cooled_off() -> None:
    """Past the lockout threshold the address is refused for the cooling-off period only."""
    t, clock = throttle()
    fail(t, 6)
    verdict = t.check("192.0.2.7", "alice")
    assert isinstance(verdict, Refuse) and verdict.retry_after == 900.0
    assert verdict.message == "Too many failed logins; try again in 15 minutes"
    assert t.check("192.0.2.8", "bob") == Allow()  # other addresses are not affected
    clock.now += 901
    assert t.check("192.0.2.7", "alice") == Allow()


def test_success_resets_the_address_count() -> None:
    """A right password clears that address's failures."""
    t, _ = throttle()
    fail(t, 5)
    t.succeeded("192.0.2.7", "alice")
    assert t.check("192.0.2.7", "alice") == Allow()


def test_failures_outside_the_window_are_forgotten() -> None:
    """Old failures stop counting once the window has passed."""
    t, clock = throttle()
    fail(t, 5)
    clock.now += 901
    assert t.check("192.0.2.7", "alice") == Allow()


def test_distributed_guessing_locks_the_account_but_not_its_known_device() -> None:
    """Failures from many addresses lock the account for unknown addresses, while the device
    that has logged in before keeps working."""
    t, _ = throttle()
    t.succeeded("192.168.1.50", "alice")  # the printer
    for n in range(10):
        t.failed(f"203.0.113.{n}", "alice")
    assert isinstance(t.check("203.0.113.99", "alice"), Refuse)
    assert t.check("192.168.1.50", "alice") == Allow()
    assert t.check("203.0.113.99", "bob") == Allow()


def test_known_device_failures_do_not_lock_its_account() -> None:
    """A known device mistyping is throttled by address only, never locks the account."""
    t, _ = throttle()
    t.succeeded("192.168.1.50", "alice")
    fail(t, 12, source="192.168.1.50")
    assert t.check("198.51.100.1", "alice") == Allow()


def test_memory_stays_bounded_under_many_addresses() -> None:
    """Records of addresses whose failures have aged out are dropped."""
    t, clock = throttle()
    for n in range(3000):
        t.failed(f"10.0.{n // 256}.{n % 256}", "nobody")
    clock.now += 1000
    t.check("10.9.9.9", "nobody")
    assert len(t._sources) < 10


def test_lockouts_lists_what_is_refused_now_and_lift_ends_it() -> None:
    """A locked-out address and a locked-out account are listed with the time left; lifting one
    lets it log in again at once, with its failures forgotten; nothing else is lifted."""
    t, clock = throttle()
    fail(t, 6, source="192.0.2.7", account="alice")
    for i in range(10):
        t.failed(f"198.51.100.{i}", "bob")
    clock.now += 60
    kinds = {(lockout.kind, lockout.key): lockout.seconds_left for lockout in t.lockouts()}
    assert kinds == {("address", "192.0.2.7"): 840.0, ("account", "bob"): 840.0}
    assert t.lift("address", "192.0.2.7")
    assert t.check("192.0.2.7", "alice") == Allow()
    assert not t.lift("address", "192.0.2.7")  # nothing left to lift
    assert not t.lift("nonsense", "bob")
    assert isinstance(t.check("203.0.113.1", "bob"), Refuse)
    assert t.lift("account", "bob")
    assert t.check("203.0.113.1", "bob") == Allow()
    assert t.lockouts() == []
