"""Access tokens for logins: the token broker, and the thread pool its blocking work runs in."""
