"""Every route of the scheduler and every dependency it solves is a coroutine: FastAPI runs a
plain function in a worker thread, two thread hand-offs per request (a fifth of the
scheduler's CPU per request under load, measured by scripts/bench.py --profile)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from scheduler_svc import config as scheduler_config
from scheduler_svc.app import create_app


def calls(dependant: Dependant) -> Iterator[Any]:
    """The callables FastAPI runs to answer a route: the endpoint and every dependency."""
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from calls(sub)


def runs_on_the_loop(call: Any) -> bool:
    if inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call):
        return True
    if inspect.isroutine(call) or inspect.isclass(call):
        return False
    method = type(call).__call__  # an instance used as a dependency
    return inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method)


def test_no_route_or_dependency_runs_in_a_worker_thread() -> None:
    app = create_app(scheduler_config.load([], {}))
    contexts = list(iter_route_contexts(app.routes))
    routes = [c.original_route for c in contexts if isinstance(c.original_route, APIRoute)]
    assert len(routes) > 20
    everywhere = [d.dependency for d in app.router.dependencies]
    assert everywhere
    in_threads = {
        f"{route.path} {getattr(call, '__qualname__', call)!s}"
        for route in routes
        for call in [*calls(route.dependant), *everywhere]
        if not runs_on_the_loop(call)
    }
    assert not in_threads, sorted(in_threads)
