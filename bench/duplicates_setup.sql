-- bench/duplicates_setup.sql: dealers and spellings for bench/duplicates.sh (fuzzy duplicates
-- under concurrency, issue 10).  psql variables: n_dealers, n_spellings, action.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE SCHEMA dup;

INSERT INTO allocation.team (id, code, name) VALUES (1, 'dup', 'Duplicates bench');
INSERT INTO allocation.rep (id, code, name, team_id, capacity)
SELECT i, format('d%s', i), format('Duplicates bench rep %s', i), 1, 100000 FROM generate_series(1, 8) i;

-- dealer d sits on a 10 km grid; spelling k of it 100-400 m away
CREATE TABLE dup.customer (
    id        bigint PRIMARY KEY,
    dealer    integer NOT NULL,       -- which dealer this row registers (the bench's truth)
    spelling  integer NOT NULL,
    name      text NOT NULL,
    loc       geometry(Point, 4326),
    owner_id  bigint
);
SELECT allocation.manage('dup.customer', 'id', 'loc', 'owner_id', '{"name": "name"}');
SELECT allocation.set_duplicate_policy('dup.customer', exact => 'off', fuzzy => :'action',
                                       name_similarity => 0.6, within_m => 1000);

-- 150 distinct dealer names: a place and a word
CREATE TABLE dup.task (
    id        bigint PRIMARY KEY,
    dealer    integer NOT NULL,
    spelling  integer NOT NULL,
    name      text NOT NULL,
    lon       double precision NOT NULL,
    lat       double precision NOT NULL
);
INSERT INTO dup.task
SELECT (d - 1) * :n_spellings + k, d, k,
       (ARRAY['湘潭', '株洲', '衡阳', '邵阳', '岳阳', '常德', '益阳', '郴州', '永州', '怀化', '娄底', '吉首', '浏阳', '醴陵', '韶山'])[1 + (d - 1) % 15]
       || (ARRAY['丰收', '惠农', '绿源', '金穗', '兴旺', '田园', '宏达', '民生', '嘉禾', '沃土'])[1 + (d - 1) / 15 % 10]
       || (ARRAY['农资店', '农资商店', '农资有限公司', '农资经营部'])[k],
       112 + ((d - 1) % 15) * 0.1 + k * 0.001, 27 + ((d - 1) / 15) * 0.1 + k * 0.0005
  FROM generate_series(1, :n_dealers) d, generate_series(1, :n_spellings) k;
-- tasks are taken in id order: the spellings of one dealer go to different clients at once
CREATE SEQUENCE dup.next_task;

CREATE UNLOGGED TABLE dup.outcome (task bigint, client_rep integer, outcome text, message text);

-- one registration, as its own transaction (pgbench's), kept open p_sleep after the INSERT
CREATE FUNCTION dup.attempt(p_sleep double precision) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    t dup.task;
    v_rep integer;
    v_outcome text := 'ok';
    v_message text;
BEGIN
    SELECT * INTO t FROM dup.task WHERE id = (SELECT nextval('dup.next_task'));
    IF NOT FOUND THEN
        RETURN 'none';
    END IF;
    v_rep := 1 + t.id % 8;
    BEGIN
        INSERT INTO dup.customer (id, dealer, spelling, name, loc, owner_id)
        VALUES (t.id, t.dealer, t.spelling, t.name, ST_SetSRID(ST_MakePoint(t.lon, t.lat), 4326), v_rep);
    EXCEPTION WHEN OTHERS THEN
        v_outcome := SQLSTATE;
        v_message := SQLERRM;
    END;
    PERFORM pg_sleep(p_sleep);
    INSERT INTO dup.outcome VALUES (t.id, v_rep, v_outcome, v_message);
    RETURN v_outcome;
END $$;
