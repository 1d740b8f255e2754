"""Real helpers for the test suite: servers on 127.0.0.1 that tests start and stop."""
