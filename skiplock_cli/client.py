"""The scheduler's HTTP API as the CLI uses it: JSON in, JSON out, failures as one-line errors."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from skiplock_cli.config import CliConfig

# Generous for a request; streams (logs -f) wait for as long as the command runs.
REQUEST_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
STREAM_TIMEOUT = httpx.Timeout(30.0, connect=5.0, read=None)
FINISHED = frozenset({"succeeded", "failed", "cancelled"})

Params = Mapping[str, str | int | float | bool | list[str] | None]


class CliError(Exception):
    """A failure to report in one line with exit status 1."""


class Api:
    def __init__(self, config: CliConfig) -> None:
        headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
        self.url = config.url
        self._http = httpx.Client(base_url=config.url, headers=headers, timeout=REQUEST_TIMEOUT)

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: Params | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, headers: Mapping[str, str] | None = None) -> Any:
        return self.request("POST", path, body=body, headers=headers)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """The response's JSON (None for an empty body); CliError for anything but a 2xx."""
        query = _query(params)
        with self._errors_reported():
            response = self._http.request(method, path, params=query, json=body, headers=headers)
        if response.is_error:
            raise CliError(error_message(response))
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError(
                f"{response.url} answered {response.status_code} without JSON: "
                f"is {self.url} a skiplock scheduler?"
            ) from None

    @contextmanager
    def stream(self, path: str, params: Params | None = None) -> Iterator[httpx.Response]:
        """A streamed GET; the caller reads the body with `iter_bytes()`."""
        with (
            self._errors_reported(),
            self._http.stream("GET", path, params=_query(params), timeout=STREAM_TIMEOUT) as resp,
        ):
            if resp.is_error:
                resp.read()
                raise CliError(error_message(resp))
            yield resp

    def wait_finished(
        self, task_id: str, on_change: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        """Poll GET /tasks/{id} until the task has finished; `on_change` sees each new state."""
        interval, seen = 0.1, None
        while True:
            task: dict[str, Any] = self.get(f"/tasks/{task_id}")
            state = (task["status"], task["attempt"])
            if state != seen and on_change is not None:
                on_change(task)
            seen = state
            if task["status"] in FINISHED:
                return task
            time.sleep(interval)
            interval = min(interval * 1.5, 1.0)

    def wait_dispatched(self, task_id: str) -> dict[str, Any]:
        """Poll GET /tasks/{id} until the task has had an attempt (or finished without one)."""
        interval = 0.1
        while True:
            task: dict[str, Any] = self.get(f"/tasks/{task_id}")
            if task["attempt"] > 0 or task["status"] in FINISHED:
                return task
            time.sleep(interval)
            interval = min(interval * 1.5, 1.0)

    @contextmanager
    def _errors_reported(self) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError as exc:
            raise CliError(
                f"cannot reach the scheduler at {self.url} ({exc}); start a cluster "
                "(`make run`) or point --url / SKIPLOCK_URL at one"
            ) from None
        except httpx.TimeoutException:
            raise CliError(f"the scheduler at {self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise CliError(f"talking to the scheduler at {self.url} failed: {exc}") from None


def _query(params: Params | None) -> dict[str, Any]:
    """Query parameters without the unset ones; booleans as the API spells them."""
    query: dict[str, Any] = {}
    for name, value in (params or {}).items():
        if value is None or value == []:
            continue
        query[name] = str(value).lower() if isinstance(value, bool) else value
    return query


def error_message(response: httpx.Response) -> str:
    """'404: no task with id …', with the API's detail; validation errors field by field."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        text = "; ".join(_validation_error(item) for item in detail)
    elif detail is not None:
        text = str(detail)
    else:
        text = " ".join(response.text.split())[:200] or response.reason_phrase
    hint = " (give a token with --token or SKIPLOCK_TOKEN)" if response.status_code == 401 else ""
    return f"{response.status_code}: {text}{hint}"


def _validation_error(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    loc = [str(part) for part in item.get("loc", [])]
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]
    field = ".".join(loc)
    message = str(item.get("msg", item))
    return f"{field}: {message}" if field else message
