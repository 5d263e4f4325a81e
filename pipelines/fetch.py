"""Fetch: talk to an OpenDataSoft Explore API v2.1 portal over httpx.

Bulk and incremental reads both use the exports endpoint (no row cap), filtered with ODSQL on
`ecrit_le`; the records endpoint is used only for one-row aggregates, never paged. Transient
failures (timeouts, resets, truncated bodies, 429, 5xx) are retried with exponential backoff
and jitter by tenacity; a 429 waits for the portal's announced reset when that is soon enough.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from pipelines import __version__
from pipelines.errors import PortalError
from pipelines.fields import CURSOR, FIELD_TYPES

log = logging.getLogger("spp.fetch")
API_PATH = "/api/explore/v2.1/catalog/datasets"
PROGRESS_EVERY_S = 5.0


class Retryable(Exception):
    """A failure worth another attempt; `wait` is the portal's own hint, in seconds."""

    def __init__(self, message: str, wait: float | None = None):
        super().__init__(message)
        self.wait = wait


def ods_error_text(response: httpx.Response) -> str:
    """The portal's error as one line: both body shapes (error_code/message, errorcode/error)."""
    try:
        body = response.json()
    except ValueError:
        text = " ".join(response.text.split())[:200]
        return f"HTTP {response.status_code}: {text or response.reason_phrase}"
    if isinstance(body, dict):
        code = body.get("error_code") or body.get("errorcode")
        message = body.get("message") or body.get("error")
        if code or message:
            return f"HTTP {response.status_code} {code}: {message}"
    return f"HTTP {response.status_code}"


def _quota_wait(response: httpx.Response) -> float | None:
    """Seconds until the quota resets, from X-RateLimit-Reset (epoch) or the body's reset_time."""
    reset = response.headers.get("X-RateLimit-Reset")
    if reset and reset.strip().isdigit():
        return max(0.0, int(reset) - time.time())
    try:
        reset_time = response.json().get("reset_time")
        when = dt.datetime.fromisoformat(reset_time.replace("Z", "+00:00"))
        return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())
    except (ValueError, AttributeError, TypeError):
        return None


@dataclass
class Portal:
    base_url: str
    dataset: str
    timeout: float = 60.0
    max_attempts: int = 6
    max_quota_wait: float = 900.0  # seconds; a longer quota reset fails the run instead
    backoff_max: float = 60.0
    client: httpx.Client = field(default=None, repr=False)

    def __post_init__(self):
        self.base_url = self.base_url.rstrip("/")
        if self.client is None:
            self.client = httpx.Client(
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 15.0)),
                headers={"User-Agent": f"spp-sync/{__version__}"},
                follow_redirects=True,
            )

    def close(self) -> None:
        self.client.close()

    # -- plumbing
    def url(self, suffix: str = "") -> str:
        return f"{self.base_url}{API_PATH}/{self.dataset}{suffix}"

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        backoff = wait_exponential_jitter(initial=1, max=self.backoff_max)(state)
        if isinstance(exc, Retryable) and exc.wait is not None:
            return max(exc.wait, 0.5)
        return backoff

    def _retrying(self) -> Retrying:
        def log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception()
            log.warning("retrying (attempt %d of %d) in %.1fs: %s", state.attempt_number + 1, self.max_attempts,
                        state.upcoming_sleep, exc)

        return Retrying(retry=retry_if_exception_type(Retryable), stop=stop_after_attempt(self.max_attempts),
                        wait=self._wait, before_sleep=log_retry, reraise=True)

    def _check(self, response: httpx.Response) -> None:
        status = response.status_code
        if status == 429:
            wait = _quota_wait(response)
            if wait is not None and wait > self.max_quota_wait:
                until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=wait)
                raise PortalError(f"the portal's quota is exhausted until {until:%Y-%m-%d %H:%M} UTC "
                                  f"({ods_error_text(response)}); run again after that, or raise --max-quota-wait")
            raise Retryable(f"rate limited ({ods_error_text(response)})", wait)
        if status >= 500:
            raise Retryable(ods_error_text(response))
        if status == 404:
            raise PortalError(f"{ods_error_text(response)}; check --dataset ({self.dataset}) and --base-url ({self.base_url})")
        if status >= 400:
            raise PortalError(f"the portal refused the request: {ods_error_text(response)}")

    def _attempt(self, fn):
        try:
            for attempt in self._retrying():
                with attempt:
                    try:
                        return fn()
                    except httpx.TimeoutException as e:
                        raise Retryable(f"timed out after {self.timeout:g}s ({type(e).__name__})") from e
                    except (httpx.TransportError, httpx.DecodingError) as e:
                        # Resets, refused connections and bodies cut short all land here.
                        raise Retryable(f"{type(e).__name__}: {e}") from e
        except Retryable as e:
            raise PortalError(f"the portal at {self.base_url} kept failing after {self.max_attempts} attempts: {e}; "
                              "check the address and your connection, then run again") from None

    def get_json(self, suffix: str, params: dict | None = None):
        def once():
            r = self.client.get(self.url(suffix), params=params)
            self._check(r)
            try:
                body = r.json()
            except ValueError as e:
                raise Retryable(f"the portal sent a response that is not valid JSON ({e})") from e
            if isinstance(body, dict) and ("error_code" in body or "errorcode" in body) and "results" not in body and "fields" not in body:
                raise Retryable(f"the portal answered 200 with an error: {body.get('error_code') or body.get('errorcode')}: "
                                f"{body.get('message') or body.get('error')}")
            return body

        return self._attempt(once)

    # -- API
    def field_types(self) -> dict[str, str]:
        """Field name → ODS type, from the dataset's metadata; the documented list if it has none."""
        meta = self.get_json("")
        fields = meta.get("fields") if isinstance(meta, dict) else None
        if not fields:
            log.warning("the portal's metadata lists no fields; using the documented field list")
            return dict(FIELD_TYPES)
        return {f["name"]: f.get("type", "text") for f in fields if f.get("name")}

    def bounds(self, where: str | None = None) -> tuple[int, dt.date | None, dt.date | None]:
        """How many experiences match, and their first and last send dates."""
        params = {"select": f"count(*) as n, min({CURSOR}) as first, max({CURSOR}) as last", "limit": 1}
        if where:
            params["where"] = where
        body = self.get_json("/records", params)
        row = (body.get("results") or [{}])[0]

        def day(v):
            return dt.date.fromisoformat(str(v)[:10]) if v else None

        return int(row.get("n") or 0), day(row.get("first")), day(row.get("last"))

    def published(self, ids: list[int]) -> set[int]:
        """Which of these ids the portal still publishes (50 per request, as OR-ed equalities)."""
        found: set[int] = set()
        for i in range(0, len(ids), 50):
            chunk = [int(x) for x in ids[i:i + 50]]
            where = " OR ".join(f"id_experience = {x}" for x in chunk)
            body = self.get_json("/records", {"select": "id_experience", "where": where, "limit": 100})
            found.update(int(r["id_experience"]) for r in body.get("results", []))
        return found

    def download(self, fmt: str, where: str | None, dest: Path, order_by: str | None = None,
                 on_progress=None) -> int:
        """Stream an export to `dest`; returns the byte count. A cut body is retried, never kept."""
        params = {"timezone": "UTC"}
        if where:
            params["where"] = where
        if order_by:
            params["order_by"] = order_by

        def once():
            started = last_report = time.monotonic()
            written = 0
            # iter_bytes() undoes any Content-Encoding; Content-Length counts the encoded bytes.
            with self.client.stream("GET", self.url(f"/exports/{fmt}"), params=params) as r:
                if r.status_code != 200:
                    r.read()
                    self._check(r)
                expected = r.headers.get("Content-Length")
                with open(dest, "wb") as out:
                    for chunk in r.iter_bytes(1 << 20):
                        out.write(chunk)
                        written += len(chunk)
                        if on_progress:
                            on_progress()
                        now = time.monotonic()
                        if now - last_report >= PROGRESS_EVERY_S:
                            last_report = now
                            log.info("downloading: %.1f MB, %.1f MB/s", written / 1e6, written / 1e6 / (now - started))
            if expected is not None and int(expected) != r.num_bytes_downloaded:
                raise Retryable(f"the export was cut short ({r.num_bytes_downloaded} of {expected} bytes)")
            _check_complete(dest, fmt)
            return written

        return self._attempt(once)


def _check_complete(path: Path, fmt: str) -> None:
    """A body sent without Content-Length can still end mid-record: check its last bytes."""
    size = path.stat().st_size
    if size == 0:
        if fmt in ("json", "parquet"):
            raise Retryable("the export is empty")
        return
    with open(path, "rb") as f:
        f.seek(max(0, size - 64))
        tail = f.read()
    if fmt == "jsonl" and not tail.rstrip().endswith(b"}"):
        raise Retryable("the export ends in the middle of a record")
    elif fmt == "json" and not tail.rstrip().endswith(b"]"):
        raise Retryable("the export ends in the middle of the JSON array")
    elif fmt == "parquet" and not tail.endswith(b"PAR1"):
        raise Retryable("the Parquet export is incomplete")
