"""Fault injection for the replica: make chosen requests fail the way public portals do.

A fault plan is a list of rules, given as JSON (`spp replica --faults FILE`):

    [{"endpoint": "export", "requests": [1, 2], "fault": "503"},
     {"endpoint": "export", "requests": [3], "fault": "truncate"}]

`endpoint` is one of metadata, records, exports, export, catalog or "*"; `requests` lists which
requests to that endpoint (counted from 1) are hit, or is omitted for every request.
Faults: "429" (quota body and X-RateLimit-* headers), "500", "502", "503", "html" (a proxy's
HTML 502 page), "slow" (waits `seconds` before answering), "reset" (drops the connection after
part of the body), "truncate" (a short body, cut mid-record), "malformed" (200 with broken
JSON), "ods_error" (200 carrying an ODS error body), "404", and on jsonl exports "drift" with
`change`: "new_field", "missing_field" (drops `field`), "id_as_string", "date_format" (DD/MM/YYYY),
"bad_date", "bad_id" or "duplicate_ids".
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path

QUOTA_BODY = {
    "errorcode": 10005,
    "reset_time": None,  # filled per response
    "limit_time_unit": "day",
    "call_limit": 10000,
    "error": "You have exceeded the requests limit for anonymous users.",
}
PROXY_HTML = b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"


class Faults:
    def __init__(self, rules: list[dict] | None = None):
        self.rules = rules or []
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.pending_stream: dict[int, dict] = {}

    @classmethod
    def from_file(cls, path: Path) -> "Faults":
        return cls(json.loads(Path(path).read_text()))

    def _match(self, endpoint: str) -> dict | None:
        with self.lock:
            n = self.counts[endpoint] = self.counts.get(endpoint, 0) + 1
        for rule in self.rules:
            if rule.get("endpoint", "*") in ("*", endpoint) and ("requests" not in rule or n in rule["requests"]):
                return rule
        return None

    def apply(self, handler, endpoint: str) -> bool:
        """Answer the request with a fault if a rule says so; True when the request is handled."""
        rule = self._match(endpoint)
        if rule is None:
            return False
        fault = str(rule["fault"])
        if fault == "slow":
            time.sleep(float(rule.get("seconds", 5)))
            return False
        if fault == "429":
            reset = int(time.time()) + int(rule.get("reset_in", 2))
            body = dict(QUOTA_BODY, reset_time=dt.datetime.fromtimestamp(reset, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
            handler._json(429, body, {"X-RateLimit-Limit": "10000", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)})
            return True
        if fault in ("500", "503"):
            handler._json(int(fault), {"error_code": "InternalServerError", "message": "An unexpected error occurred."})
            return True
        if fault in ("502", "html"):
            handler.send_response(502)
            handler.send_header("Content-Type", "text/html")
            handler.send_header("Content-Length", str(len(PROXY_HTML)))
            handler.end_headers()
            handler.wfile.write(PROXY_HTML)
            return True
        if fault == "404":
            handler._json(404, {"error_code": "DatasetNotFound", "message": "Dataset does not exist or is not accessible."})
            return True
        if fault == "malformed":
            data = b'[{"id_experience": 1, "titre": "cut'
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return True
        if fault == "ods_error":
            handler._json(200, {"error_code": "ODSQLError", "message": "ODSQL query is malformed: internal error."})
            return True
        if fault in ("reset", "truncate", "drift"):
            # The body is cut later, while streaming: remember it for this handler.
            self.pending_stream[id(handler)] = rule
            return False
        raise ValueError(f"unknown fault {fault!r}")

    def transform(self, handler, path: Path) -> bytes | None:
        """For a "drift" rule, the export body rewritten as a drifting portal would send it."""
        rule = self.pending_stream.get(id(handler))
        if not rule or rule["fault"] != "drift":
            return None
        del self.pending_stream[id(handler)]
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        change = rule["change"]
        for i, r in enumerate(rows):
            if change == "new_field":
                r["nouveau_champ"] = f"valeur {i}" if i % 2 else None
            elif change == "missing_field":
                r.pop(rule.get("field", "pays"), None)
            elif change == "id_as_string":
                r["id_experience"] = str(r["id_experience"])
            elif change == "date_format" and r.get("ecrit_le"):
                y, m, d = r["ecrit_le"].split("-")
                r["ecrit_le"] = f"{d}/{m}/{y}"
            elif change == "bad_date" and i == len(rows) // 2:
                r["ecrit_le"] = "bientôt"
            elif change == "bad_id" and i == len(rows) // 2:
                r["id_experience"] = "abc-12"
        if change == "duplicate_ids" and rows:
            dup = dict(rows[0], titre="Titre corrigé (doublon)")
            rows.append(dup)
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()

    def stream(self, handler, path: Path, size: int) -> None:
        rule = self.pending_stream.pop(id(handler), None)
        with open(path, "rb") as f:
            if rule is None:
                while chunk := f.read(1 << 20):
                    handler.wfile.write(chunk)
                return
            # Send about half the body, ending mid-record, then drop the connection.
            cut = max(1, size // 2)
            handler.wfile.write(f.read(cut))
            handler.wfile.flush()
            handler.close_connection = True
            if rule["fault"] == "reset":
                import socket
                import struct
                handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.connection.close()
