"""The admin page, /metrics and /healthz: twisted.web resources over the running proxy."""
