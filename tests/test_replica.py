"""The local replica behaves like the Explore API v2.1 where the client and the tests rely on it."""

from __future__ import annotations

import csv
import io
import json

import duckdb
import httpx
import pytest

from pipelines.replica.odsql import ODSQLError, compile_where

API = "/api/explore/v2.1/catalog/datasets/export-expa-c-riences"


@pytest.fixture
def api(small_data, make_replica):
    replica = make_replica(small_data)
    with httpx.Client(base_url=replica.url + API, timeout=30) as client:
        yield client, replica.rows()


def test_records_paging_limits_and_real_error_bodies(api):
    client, rows = api
    body = client.get("/records", params={"limit": 100, "offset": 9900}).json()
    assert body["total_count"] == len(rows) and body["results"] == []
    r = client.get("/records", params={"limit": 100, "offset": 9901})
    assert r.status_code == 400 and r.json() == {
        "error_code": "InvalidRESTParameterError",
        "message": "Invalid value for sum of offset + limit API parameter: 10001 was found but <= 10000 is expected."}
    r = client.get("/records", params={"limit": 101})
    assert r.status_code == 400 and "-1 <= limit <= 100 is expected" in r.json()["message"]
    page = client.get("/records", params={"limit": 5, "order_by": "id_experience desc"}).json()["results"]
    assert [p["id_experience"] for p in page] == sorted((r["id_experience"] for r in rows), reverse=True)[:5]


def test_where_select_and_errors(api):
    client, rows = api
    where = "ecrit_le >= date'2024-06-01' AND (ressenti_usager = \"Positif\" OR ecrit_le is null)"
    want = [r for r in rows if (r["ecrit_le"] and r["ecrit_le"] >= "2024-06-01" and r["ressenti_usager"] == "Positif")]
    body = client.get("/records", params={"where": where, "select": "count(*) as n"}).json()
    assert body["results"] == [{"n": len(want)}]
    r = client.get("/records", params={"where": "nope = 1"})
    assert r.status_code == 400 and r.json()["error_code"] == "ODSQLError" and "Unknown field: nope" in r.json()["message"]
    r = client.get("/records", params={"where": "ecrit_le > 'abc'"})
    assert r.status_code == 400 and r.json()["error_code"] == "ODSQLError"
    r = client.get(API.replace("expa-c-riences", "nothing") + "/records", params={})
    assert r.status_code == 404


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "parquet"])
def test_exports_serve_every_row_in_every_format(fmt, api, tmp_path):
    client, rows = api
    r = client.get(f"/exports/{fmt}", params={"where": "ecrit_le is null"})
    assert r.status_code == 200
    undated = sorted(x["id_experience"] for x in rows if x["ecrit_le"] is None)
    if fmt == "json":
        got = [x["id_experience"] for x in r.json()]
    elif fmt == "jsonl":
        got = [json.loads(line)["id_experience"] for line in r.text.splitlines()]
    elif fmt == "csv":
        assert r.content.startswith("\ufeff".encode())  # BOM by default, as the portal
        got = [int(x["id_experience"]) for x in csv.DictReader(io.StringIO(r.content.decode("utf-8-sig")), delimiter=";")]
    else:
        path = tmp_path / "x.parquet"
        path.write_bytes(r.content)
        got = [x for (x,) in duckdb.connect().execute(f"SELECT id_experience FROM '{path}'").fetchall()]
    assert sorted(got) == undated and len(undated) >= 4
    whole = client.get("/exports/jsonl").text.splitlines()
    assert len(whole) == len(rows) and json.loads(whole[0]) == rows[0]  # every field, verbatim


def test_metadata_lists_fields(api):
    client, _ = api
    meta = client.get("").json()
    names = {f["name"]: f["type"] for f in meta["fields"]}
    assert names["id_experience"] == "int" and names["ecrit_le"] == "date" and names["reponse_structure_3"] == "text"


def test_odsql_compiles_to_bound_parameters():
    cols = {"titre": "VARCHAR", "ecrit_le": "DATE"}
    c = compile_where("titre = \"x'); DROP TABLE t; --\" or ecrit_le in [date'2022'..date'2022/06/07']", cols)
    assert "DROP" not in c.sql and c.params[0] == "x'); DROP TABLE t; --" and c.params[1:] == ["2022-01-01", "2022-06-07"]
    with pytest.raises(ODSQLError):
        compile_where("titre = ", cols)
