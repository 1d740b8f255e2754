"""The Twisted glue: everything that touches sockets, the reactor or TLS. The device side
(front, front_tls) runs a protocol's front session; the upstream side (upstream_connection,
upstream_tls) signs in to the mail server; the gateway joins them with the token broker, the
relay carries the bytes after login, and listeners builds the running service."""
