"""/metrics (Prometheus text format, through prometheus_client) and /healthz."""

from __future__ import annotations

from prometheus_client.exposition import choose_encoder

from ..glue.runtime import Runtime
from .http import TEXT, Answer
from .overview import gather


async def metrics_answer(runtime: Runtime, accept: str | None) -> Answer:
    """The runtime's own registry, with the gauges of the present set just now."""
    await gather(runtime)
    encoder, content_type = choose_encoder(accept or "")
    return Answer(200, encoder(runtime.metrics.registry), content_type)


def health_answer(runtime: Runtime) -> Answer:
    """200 when every configured listener listens; 503 naming those that do not (or when
    there is none yet, or the proxy is stopping). Needs no token and shows no secret."""
    view = runtime.view()
    lines = [f"up   {listener.name}" for listener in view.listeners]
    lines += [f"DOWN {name}" for name in view.listeners_down]
    if view.stopping:
        lines.append("the proxy is stopping")
    elif not view.listeners and not view.listeners_down:
        lines.append("no listener is configured yet")
    healthy = bool(view.listeners) and not view.listeners_down and not view.stopping
    return Answer(200 if healthy else 503, ("\n".join(lines) + "\n").encode(), TEXT)
