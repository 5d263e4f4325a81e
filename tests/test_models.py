"""The SQL models: data tests fail the build, show the offending rows, and leave the marts as they were."""

import datetime as dt

import duckdb

from conftest import query, spp, table_dump


def test_failing_data_test_rolls_back_and_shows_rows(tmp_path, small_data, make_replica):
    replica = make_replica(small_data)
    db = tmp_path / "spp.duckdb"
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    marts_before = {k: v for k, v in table_dump(db).items() if k.startswith("marts.")}
    con = duckdb.connect(str(db))
    victim = con.execute("SELECT min(id_experience) FROM raw.experiences").fetchone()[0]
    con.execute(f"UPDATE raw.experiences SET ressenti_usager = 'Furieux' WHERE id_experience = {victim}")
    con.execute("INSERT INTO raw.experiences__responses (id_experience, slot, intitule_structure) VALUES (42, 1, 'Orphan')")
    con.close()
    out = spp("models", "--db", str(db))
    assert out.returncode == 6
    assert "stg_experiences_sentiment_accepted: 1 offending row(s)" in out.stderr
    assert f"id_experience={victim}" in out.stderr and "'Furieux'" in out.stderr
    assert "stg_responses_have_parent: 1 offending row(s)" in out.stderr
    after = {k: v for k, v in table_dump(db).items() if k.startswith("marts.")}
    assert after == marts_before


def test_models_list_and_rebuild(tmp_path, small_data, make_replica):
    out = spp("models", "--list", check=True).stdout
    assert "marts.experiences_by_structure" in out and "staging.stg_experiences" in out and "test " in out
    replica = make_replica(small_data)
    db = tmp_path / "spp.duckdb"
    spp("sync", "--base-url", replica.url, "--db", str(db), "--no-models", check=True)
    assert query(db, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'marts'") == [(0,)]
    out = spp("models", "--db", str(db), check=True)
    assert "built 13 models and passed 12 data tests" in out.stdout
    assert query(db, "SELECT sum(experiences) FROM marts.sentiment_by_month") == [(600,)]


def test_missing_optional_field_is_no_error(tmp_path, small_data, make_replica):
    from pipelines.replica.generator import read_jsonl, write_jsonl

    rows = read_jsonl(small_data)
    for r in rows:
        del r["pays"], r["tags_metiers"]
    write_jsonl(rows, small_data)
    replica = make_replica(small_data)
    db = tmp_path / "spp.duckdb"
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    assert query(db, "SELECT count(*), count(pays) FROM staging.stg_experiences") == [(600, 0)]


def _dump(db, schemas=("raw", "staging", "intermediate", "marts")) -> dict[str, list[tuple]]:
    """Every table of these schemas, sorted, without the loader's bookkeeping columns."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = con.execute("SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
                             f"AND table_schema IN {tuple(schemas)} AND table_name NOT LIKE '\\_dlt%' ESCAPE '\\' "
                             "ORDER BY 1, 2").fetchall()
        out = {}
        for s, t in tables:
            cols = [c for (c,) in con.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = ? "
                                              "AND table_name = ? ORDER BY ordinal_position", [s, t]).fetchall()
                    if c not in ("_row_hash", "_deleted")]
            out[f"{s}.{t}"] = sorted(con.execute(f'SELECT {", ".join(cols)} FROM "{s}"."{t}"').fetchall(), key=repr)
        return out
    finally:
        con.close()


def test_incremental_build_and_serving_patch_equal_a_full_rebuild(tmp_path, small_data, make_replica):
    import shutil

    from conftest import generated

    replica = make_replica(small_data)
    db = tmp_path / "spp.duckdb"
    spp("sync", "--base-url", replica.url, "--db", str(db), check=True)
    generation = query(db, "SELECT generation FROM ops.model_state")
    rows = replica.rows()
    dated = sorted((r for r in rows if r["ecrit_le"]), key=lambda r: r["ecrit_le"])
    for round_ in range(2):
        # New experiences, edited ones (reply, text quirks, sentiment), a structure moved to
        # another slot and one renamed, and experiences no longer published (old and recent).
        rows += generated(20, seed=50 + round_, start_id=700_000_000 + round_ * 1000,
                          start=dt.date(2024, 12, 20), end=dt.date(2024, 12, 31))
        a, b, c, d = dated[-1 - 4 * round_], dated[-2 - 4 * round_], dated[-3 - 4 * round_], dated[10 + round_]
        a["reponse_structure_1"] = "Bonjour,&nbsp; nous avons\r\n  traité votre demande."
        a["description"] = (a["description"] or "") + "\u00a0 ajouté  après coup"
        b["ressenti_usager"] = "Positif" if b["ressenti_usager"] != "Positif" else "Négatif"
        for f in ("intitule_typologie", "canaux_typologie", "intitule_structure", "reponse_structure"):
            c[f"{f}_2"], c[f"{f}_1"] = c.get(f"{f}_1"), None
        d["intitule_structure_1"] = "Structure renommée"
        d["canaux_typologie_1"] = "Téléphone, Courrier,"
        rows.remove(dated[20 + round_])  # old: only a --full sync sees it gone
        rows.remove(dated[-10 - round_])  # recent: within the lookback window
        replica.write(rows)
        spp("sync", "--base-url", replica.url, "--db", str(db), *(["--full"] if round_ else []), check=True)
        # The sync built incrementally and patched the standby serving file in place…
        assert query(db, "SELECT generation FROM ops.model_state") == generation
        assert query(db, "SELECT mode FROM ops.serving_state") == [("standby",)]
        # …and both equal a full rebuild of the same raw data, table for table.
        rebuilt = tmp_path / f"rebuilt{round_}" / "spp.duckdb"
        rebuilt.parent.mkdir()
        shutil.copyfile(db, rebuilt)
        # Rebuilt a slice of 97 experiences at a time (one slice by default at this size): the
        # per-experience layers must come out the same however they are cut.
        out = spp("models", "--db", str(rebuilt), env={"SPP_MODEL_SLICE_ROWS": "97"}, check=True)
        assert "built 13 models" in out.stdout
        assert query(rebuilt, "SELECT generation FROM ops.model_state") != generation
        assert query(rebuilt, "SELECT mode FROM ops.serving_state") == [("full",)]
        incremental, full = _dump(db), _dump(rebuilt)
        assert set(incremental) == set(full) and len(full) == 15
        for table in full:
            assert incremental[table] == full[table], table
        served, served_full = _dump(tmp_path / "serving" / "spp.duckdb"), _dump(rebuilt.parent / "serving" / "spp.duckdb")
        assert set(served) == set(served_full) == set(full)
        for table in full:
            assert served[table] == served_full[table] == full[table], table
        # The version it replaced is kept as the standby, whole.
        standby = _dump(tmp_path / "serving" / ".spp.standby.duckdb")
        assert set(standby) == set(full)
    # The changes really reached the marts.
    assert query(db, "SELECT experiences FROM marts.experiences_by_structure WHERE intitule_structure = 'Structure renommée'") == [(2,)]
    assert query(db, "SELECT count(*) FROM staging.stg_experiences") == [(len(rows),)]
