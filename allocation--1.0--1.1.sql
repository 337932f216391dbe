-- allocation 1.0 -> 1.1 (ALTER EXTENSION allocation UPDATE TO '1.1')
-- Frozen once 1.1 is released; each schema change of 1.1 adds its step here in
-- the same commit as its sql_src/ change.  scripts/upgrade_check.sh proves that
-- 1.0 + this script = a fresh 1.1 (pg_dump --binary-upgrade of both, compared).

\echo Use "ALTER EXTENSION allocation UPDATE TO '1.1'" to load this file. \quit

-------------------------------------------------------------------------------
-- Compiled rule conditions are stamped with the server that compiled them: a
-- pg_upgrade'd cluster compiles them again from their text (issue 12)
-------------------------------------------------------------------------------
ALTER TABLE allocation.rule ADD COLUMN condition_stamp text;
COMMENT ON COLUMN allocation.rule.condition_bin IS 'internal: the compiled condition (node tree), maintained by the engine; a cache of condition, valid only under condition_stamp';
COMMENT ON COLUMN allocation.rule.condition_stamp IS 'internal: server version number and system identifier condition_bin was compiled under; on any other server (pg_upgrade, a copied data directory) the engine compiles condition again from its text and search path';

CREATE OR REPLACE FUNCTION allocation._config_json(p_rel regclass, p_alias text)
RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT pg_catalog.format('jsonb_build_object(%s)', pg_catalog.string_agg(
               CASE WHEN a.attname = 'geom' AND a.atttypid = (SELECT t.oid FROM pg_catalog.pg_type t WHERE t.typname = 'geometry'
                                                                 AND t.typnamespace = g.nsp)
                    THEN pg_catalog.format('''geom_sha256'', encode(sha256(%1$I.st_asbinary(%2$I.geom)), ''hex''), '
                                           '''geom_vertices'', %1$I.st_npoints(%2$I.geom)', g.nspname, p_alias)
                    ELSE pg_catalog.format('%L, %I.%I', a.attname, p_alias, a.attname) END,
               ', ' ORDER BY a.attnum))
      FROM pg_catalog.pg_attribute a,
           (SELECT n.oid AS nsp, n.nspname FROM pg_catalog.pg_extension x
              JOIN pg_catalog.pg_namespace n ON n.oid = x.extnamespace WHERE x.extname = 'postgis') g
     WHERE a.attrelid = p_rel AND a.attnum > 0 AND NOT a.attisdropped
       AND a.attname NOT IN ('updated_at', 'condition_bin', 'condition_stamp')
$$;

CREATE FUNCTION allocation._condition_stamp() RETURNS text
AS 'MODULE_PATHNAME', 'allocation_condition_stamp' LANGUAGE C STRICT STABLE;
COMMENT ON FUNCTION allocation._condition_stamp() IS 'internal: this server''s stamp for compiled rule conditions (server version number / system identifier)';
REVOKE ALL ON FUNCTION allocation._condition_stamp() FROM PUBLIC;

-- Conditions compiled on another server (pg_upgrade, a copied data directory)
-- or under SQL version 1.0 compiled again from their text and stamped: saving
-- a rule's condition unchanged does it (the rule trigger), with no config_change
-- event (nothing recorded changes).  One that no longer compiles gets a WARNING
-- and keeps no stamp: the engine skips its rule until it is fixed.  Returns how
-- many were compiled again.
CREATE FUNCTION allocation._compile_conditions_here() RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN SELECT id, name FROM allocation.rule
              WHERE condition IS NOT NULL AND condition_stamp IS DISTINCT FROM allocation._condition_stamp()
              ORDER BY id LOOP
        BEGIN
            UPDATE allocation.rule SET condition = condition WHERE id = r.id;
            n := n + 1;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'allocation: the condition of rule "%" does not compile on this server: %', r.name, SQLERRM
                USING HINT = 'Fix it with UPDATE allocation.rule SET condition = ... ; until then the rule is skipped.';
        END;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION allocation._compile_conditions_here() IS 'internal: compiles again, and stamps, the rule conditions another server (or SQL version 1.0) compiled';

-- Before an ALTER TABLE: foreign conditions compiled here while the names in
-- their text still resolve; _on_ddl_end and _on_sql_drop then read trees of
-- this server.  Normally there are none and this is one small query.
CREATE FUNCTION allocation._on_ddl_start() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    PERFORM allocation._compile_conditions_here();
END
$$;
COMMENT ON FUNCTION allocation._on_ddl_start() IS 'internal: compiles again, before an ALTER TABLE, the rule conditions another server compiled';
CREATE EVENT TRIGGER allocation_ddl_start ON ddl_command_start WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION allocation._on_ddl_start();
COMMENT ON EVENT TRIGGER allocation_ddl_start IS 'allocation: before ALTER TABLE, rule conditions compiled on another server (pg_upgrade) are compiled again from their text';
REVOKE ALL ON FUNCTION allocation._compile_conditions_here(), allocation._on_ddl_start() FROM PUBLIC;

-- a rule whose condition cannot follow a rename gets a WARNING instead of blocking the ALTER TABLE
CREATE OR REPLACE FUNCTION allocation._on_ddl_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m record;
    l text;
    v_name name;
    v_attnum smallint;
    v_now name;
    v_names jsonb;
    v_attnums jsonb;
    v_table text;
BEGIN
    FOR m IN SELECT mt.* FROM allocation.managed_table mt
              WHERE mt.active
                AND mt.tbl IN (SELECT c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() c) LOOP
        -- logical name -> column name, as stored
        v_names := jsonb_strip_nulls(jsonb_build_object('key', m.key_column, 'location', m.location_column,
                                                        'owner', m.owner_column)) || m.attributes;
        v_attnums := '{}';
        FOR l, v_name IN SELECT key, value #>> '{}' FROM jsonb_each(v_names) LOOP
            SELECT a.attnum INTO v_attnum FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = m.tbl AND a.attname = v_name AND a.attnum > 0 AND NOT a.attisdropped;
            IF v_attnum IS NULL THEN
                -- the name is gone: the column was renamed; follow its number
                SELECT a.attname, a.attnum INTO v_now, v_attnum FROM pg_catalog.pg_attribute a
                 WHERE a.attrelid = m.tbl AND a.attnum = (m.attnums ->> l)::smallint AND NOT a.attisdropped;
                IF v_now IS NOT NULL THEN
                    v_names := jsonb_set(v_names, ARRAY[l], to_jsonb(v_now::text));
                END IF;
            END IF;
            -- numbers follow the names (they shift after a dump and restore)
            IF v_attnum IS NOT NULL THEN
                v_attnums := v_attnums || jsonb_build_object(l, v_attnum);
            END IF;
            v_now := NULL;
            v_attnum := NULL;
        END LOOP;
        -- a mapped column whose type changed would break the engine: refuse the DDL
        IF (SELECT a.atttypid FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = m.tbl AND a.attname = (v_names ->> 'owner') AND NOT a.attisdropped)
           NOT IN ('pg_catalog.int8'::pg_catalog.regtype, 'pg_catalog.int4'::pg_catalog.regtype)
           OR (v_names ? 'location' AND (SELECT a.atttypid FROM pg_catalog.pg_attribute a
                                          WHERE a.attrelid = m.tbl AND a.attname = (v_names ->> 'location')
                                            AND NOT a.attisdropped)
               IS DISTINCT FROM (SELECT t.oid FROM pg_catalog.pg_type t
                                   JOIN pg_catalog.pg_extension e ON e.extnamespace = t.typnamespace
                                  WHERE e.extname = 'postgis' AND t.typname = 'geometry'))
           OR (v_names ? 'tags' AND (SELECT a.atttypid FROM pg_catalog.pg_attribute a
                                      WHERE a.attrelid = m.tbl AND a.attname = (v_names ->> 'tags')
                                        AND NOT a.attisdropped)
               NOT IN ('pg_catalog._text'::pg_catalog.regtype, 'pg_catalog._varchar'::pg_catalog.regtype)) THEN
            RAISE EXCEPTION 'the type of a column used by the allocation engine cannot change'
                USING ERRCODE = 'LA018',
                      DETAIL = format('Table %s is managed: its owner column must stay integer or bigint, its location a PostGIS geometry, its tags a text array.', m.table_name),
                      HINT = 'Call allocation.unmanage() first, change the column, then allocation.manage() again.';
        END IF;
        SELECT format('%I.%I', n.nspname, c.relname) INTO v_table
          FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = m.tbl;
        UPDATE allocation.managed_table mt
           SET key_column = v_names ->> 'key', location_column = v_names ->> 'location',
               owner_column = v_names ->> 'owner',
               attributes = v_names - 'key' - 'location' - 'owner',
               attnums = v_attnums, table_name = v_table
         WHERE mt.id = m.id
           AND (mt.key_column, mt.location_column, mt.owner_column, mt.attributes, mt.attnums, mt.table_name)
               IS DISTINCT FROM (v_names ->> 'key', v_names ->> 'location', v_names ->> 'owner',
                                 v_names - 'key' - 'location' - 'owner', v_attnums, v_table);
    END LOOP;
    -- keep rule condition texts in step with renamed columns
    -- (only when the written text no longer means the stored condition, e.g. after a rename);
    -- a rule whose condition cannot be read any more (it no longer compiles, and is skipped)
    -- does not block the ALTER TABLE: it gets a WARNING
    FOR m IN SELECT r.id, r.name FROM allocation.rule r
              WHERE r.condition_bin IS NOT NULL
                AND r.tbl IN (SELECT c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() c)
                AND NOT allocation._condition_still_means(r.condition, r.condition_bin, r.tbl, r.condition_search_path)
              ORDER BY r.id LOOP
        BEGIN
            UPDATE allocation.rule r SET condition = allocation._condition_deparse(r.condition_bin, r.tbl)
             WHERE r.id = m.id;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'allocation: the condition of rule "%" could not follow this change: %', m.name, SQLERRM
                USING HINT = 'Fix it with UPDATE allocation.rule SET condition = ... ; until then the rule is skipped.';
        END;
    END LOOP;
END
$$;

-- every condition compiled again here, and stamped (keeps updated_at; a condition
-- that no longer compiles gets a WARNING, its rule is skipped until fixed)
SELECT allocation._compile_conditions_here();

-------------------------------------------------------------------------------
-- The trigram index of fuzzy duplicate matching comes back by itself after a
-- restore (issue 12)
-------------------------------------------------------------------------------
CREATE FUNCTION allocation._trgm_index(p_trgm name) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    IF p_trgm IS NULL OR pg_catalog.to_regclass('allocation.identity_name_trgm_idx') IS NOT NULL
       OR NOT EXISTS (SELECT 1 FROM allocation.managed_table mt WHERE mt.duplicate_fuzzy <> 'off') THEN
        RETURN false;
    END IF;
    EXECUTE pg_catalog.format('CREATE INDEX identity_name_trgm_idx ON allocation.identity USING gin (name_norm %I.gin_trgm_ops)', p_trgm);
    RETURN true;
END
$$;
COMMENT ON FUNCTION allocation._trgm_index(name) IS 'internal: creates the trigram index of fuzzy duplicate matching when a table has a fuzzy action and it is missing; true when it did';

CREATE FUNCTION allocation._trgm_index_loaded() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    PERFORM allocation._trgm_index((SELECT n.nspname FROM pg_catalog.pg_extension e
                                      JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
                                     WHERE e.extname = 'pg_trgm'));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION allocation._trgm_index_loaded() IS 'internal: after rows arrive in managed_table (a restore), the trigram index of fuzzy matching is created again';
CREATE TRIGGER trgm_index AFTER INSERT ON allocation.managed_table
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._trgm_index_loaded();
REVOKE ALL ON FUNCTION allocation._trgm_index(name) FROM PUBLIC;
REVOKE ALL ON FUNCTION allocation._trgm_index_loaded() FROM PUBLIC;

CREATE OR REPLACE FUNCTION allocation._apply_duplicate_policy(p_managed integer, exact text, fuzzy text, name_similarity real,
                                                   within_m double precision, p_trgm name)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
    v_n integer;
    v_groups integer;
BEGIN
    SELECT * INTO m FROM allocation.managed_table mt WHERE mt.id = p_managed;
    IF m.id IS NULL OR exact IS NULL OR fuzzy IS NULL OR _apply_duplicate_policy.name_similarity IS NULL THEN
        RAISE EXCEPTION 'no managed table % or no policy', p_managed USING ERRCODE = '22004';
    END IF;
    UPDATE allocation.managed_table mt
       SET duplicate_exact = exact, duplicate_fuzzy = fuzzy,
           name_similarity = _apply_duplicate_policy.name_similarity, duplicate_within_m = within_m
     WHERE mt.id = m.id;
    PERFORM allocation._trgm_index(p_trgm);
    IF exact = 'off' AND fuzzy = 'off' THEN
        DELETE FROM allocation.identity WHERE managed_id = m.id;
        DELETE FROM allocation.identity_key WHERE managed_id = m.id;
        INSERT INTO allocation.event (actor, kind, managed_id, table_name, reason, detail)
        VALUES (allocation._actor(), 'duplicate_policy', m.id, m.table_name, 'duplicate detection turned off',
                jsonb_build_object('before', jsonb_build_object('exact', m.duplicate_exact, 'fuzzy', m.duplicate_fuzzy,
                                                                'name_similarity', m.name_similarity, 'within_m', m.duplicate_within_m),
                                   'exact', exact, 'fuzzy', fuzzy));
        RETURN 0;
    END IF;
    v_n := allocation._identity_rebuild(m.id);
    -- duplicates among the customers already stored go to the queue once
    INSERT INTO allocation.duplicate (managed_id, key, other_key, match, value, action, opened_by)
    SELECT m.id, i.key, k.key, k.kind, k.value, 'existing', allocation._actor()
      FROM allocation.identity i
      JOIN allocation.identity_key k ON k.managed_id = i.managed_id
                                    AND ((k.kind = 'credit_code' AND k.value = i.credit_code)
                                         OR (k.kind = 'phone' AND k.value = i.phone))
     WHERE i.managed_id = m.id AND k.key <> i.key
       AND NOT EXISTS (SELECT 1 FROM allocation.duplicate d
                        WHERE d.managed_id = m.id AND d.key = i.key AND d.other_key = k.key AND d.status = 'open')
       AND NOT allocation._duplicate_decided(m.id, i.key, k.key);
    GET DIAGNOSTICS v_groups = ROW_COUNT;
    IF v_groups > 0 THEN
        RAISE NOTICE '% stored customers of % share a credit code or phone with another one', v_groups, m.table_name
            USING DETAIL = 'They were queued in allocation.dispute_queue with action existing.',
                  HINT = 'Resolve them with allocation.resolve_dispute() or allocation.dismiss_dispute().';
    END IF;
    INSERT INTO allocation.event (actor, kind, managed_id, table_name, reason, detail)
    VALUES (allocation._actor(), 'duplicate_policy', m.id, m.table_name, 'duplicate policy set',
            jsonb_build_object('exact', exact, 'fuzzy', fuzzy, 'name_similarity', _apply_duplicate_policy.name_similarity,
                               'within_m', within_m, 'identities', v_n, 'existing_duplicates', v_groups,
                               'before', jsonb_build_object('exact', m.duplicate_exact, 'fuzzy', m.duplicate_fuzzy,
                                                            'name_similarity', m.name_similarity, 'within_m', m.duplicate_within_m)));
    RETURN v_n;
END
$$;

-- a database restored under 1.0 may lack the index
SELECT allocation._trgm_index((SELECT n.nspname FROM pg_catalog.pg_extension e
                                 JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
                                WHERE e.extname = 'pg_trgm'));

-- comments on the 1.0 event triggers (\dx+ allocation: every member documented)
COMMENT ON EVENT TRIGGER allocation_sql_drop IS 'allocation: a dropped managed table is detached, its history kept; dropping a column the engine uses is refused';
COMMENT ON EVENT TRIGGER allocation_ddl_end IS 'allocation: after ALTER TABLE, renamed columns of managed tables are followed in the mapping and in rule conditions';

-------------------------------------------------------------------------------
-- Transfers (issue 13): sql_src/76_transfers.sql, the ownership source
-- 'transfer', privileges, audit, pg_dump
-------------------------------------------------------------------------------
ALTER TABLE allocation.customer_state DROP CONSTRAINT customer_state_source_check;
ALTER TABLE allocation.customer_state ADD CONSTRAINT customer_state_source_check
    CHECK (source IN ('rule', 'manual', 'suggestion', 'pool', 'reevaluate', 'claim', 'recycle', 'dispute', 'transfer'));
-- a team's manager approves its side of a transfer under approval team_managers
ALTER TABLE allocation.team ADD COLUMN manager_login name;
COMMENT ON COLUMN allocation.team.manager_login IS 'the role that approves for this team and its sub-teams (without one of its own) where a transfer policy asks for team_managers';

-------------------------------------------------------------------------------
-- Transfers: a customer moves from its holder to another rep through a
-- recorded request and, as the transfer policy says, an approval (issue 13)
-------------------------------------------------------------------------------
CREATE TABLE allocation.transfer_policy (
    id             bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    team_id        bigint REFERENCES allocation.team (id) ON DELETE CASCADE,
    tier           text,
    approval       text NOT NULL DEFAULT 'manager' CHECK (approval IN ('none', 'receiver', 'holder', 'manager', 'team_managers')),
    checks         boolean NOT NULL DEFAULT true,
    expires_after  interval NOT NULL DEFAULT interval '7 days' CHECK (expires_after > interval '0'),
    note           text,
    CONSTRAINT transfer_policy_scope_uniq UNIQUE NULLS NOT DISTINCT (team_id, tier)
);
COMMENT ON TABLE allocation.transfer_policy IS 'Who approves a transfer, per team of the holder (and its sub-teams) and/or customer tier; NULL = every team/tier; the most specific row wins (tier and nearest team first); without a row a manager approves, checks apply, requests expire after 7 days';
COMMENT ON COLUMN allocation.transfer_policy.approval IS 'none (done at request), receiver (the receiving rep), holder (the current holder), manager (any manager; a manager can always approve the first three), team_managers (the managers of both reps'' teams, team.manager_login, each for its side)';
COMMENT ON COLUMN allocation.transfer_policy.checks IS 'whether the receiver''s registration protection and daily claim limit apply (capacity, active rep, exclusive territories, locks and disputes always do)';
COMMENT ON COLUMN allocation.transfer_policy.expires_after IS 'a pending request expires this long after it was made (expire_transfers())';

CREATE TABLE allocation.transfer (
    id             bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    managed_id     integer NOT NULL REFERENCES allocation.managed_table (id) ON DELETE CASCADE,
    key            text NOT NULL,
    from_rep       bigint NOT NULL,  -- no foreign key: the history outlives a deleted rep, as the event log does
    to_rep         bigint NOT NULL,
    reason         text NOT NULL,
    approval       text NOT NULL CHECK (approval IN ('none', 'receiver', 'holder', 'manager', 'team_managers')),
    checks         boolean NOT NULL,
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'approved', 'rejected', 'cancelled', 'expired')),
    requested_by   text NOT NULL,
    requested_at   timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    decided_by     text,
    decided_at     timestamptz,
    decision_note  text,
    from_side_approved_by text,    -- team_managers: who approved for the holder's team
    to_side_approved_by   text,    -- ... and for the receiver's team
    CONSTRAINT transfer_other_rep CHECK (from_rep <> to_rep),
    CONSTRAINT transfer_decided CHECK ((status = 'pending') = (decided_at IS NULL))
);
CREATE UNIQUE INDEX transfer_one_pending ON allocation.transfer (managed_id, key) WHERE status = 'pending';
CREATE INDEX transfer_reps_idx ON allocation.transfer (from_rep, to_rep) WHERE status = 'pending';
COMMENT ON TABLE allocation.transfer IS 'Transfer requests and their outcome (written by request_transfer() and its siblings only); at most one pending per customer';
COMMENT ON COLUMN allocation.transfer.approval IS 'who had to approve, from the transfer policy at request time';
COMMENT ON COLUMN allocation.transfer.from_side_approved_by IS 'approval team_managers: the role that approved for the holder''s team (likewise to_side_approved_by for the receiver''s); the transfer is carried out when both sides approved';

-- The policy of a holder's team (nearest team first, then a parent) and a tier
CREATE FUNCTION allocation._transfer_policy(p_holder bigint, p_tier text,
                                            OUT approval text, OUT checks boolean, OUT expires_after interval)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT coalesce(p.approval, 'manager'), coalesce(p.checks, true), coalesce(p.expires_after, interval '7 days')
      FROM (SELECT 1) one
      LEFT JOIN LATERAL (
            SELECT x.approval, x.checks, x.expires_after
              FROM allocation.transfer_policy x
             WHERE (x.tier IS NULL OR x.tier = p_tier)
               AND (x.team_id IS NULL OR allocation._rep_in_team(p_holder, x.team_id))
             ORDER BY x.tier IS NULL,
                      x.team_id IS NULL,
                      (WITH RECURSIVE up(id, depth) AS (
                           SELECT r.team_id, 0 FROM allocation.rep r WHERE r.id = p_holder
                           UNION ALL
                           SELECT t.parent_id, up.depth + 1 FROM allocation.team t JOIN up ON t.id = up.id
                            WHERE t.parent_id IS NOT NULL AND up.depth < 64)
                       SELECT min(up.depth) FROM up WHERE up.id = x.team_id)
             LIMIT 1) p ON true
$$;
COMMENT ON FUNCTION allocation._transfer_policy(bigint, text) IS 'internal: the transfer policy that applies to a holder and a customer tier';

-- Whether a role (by name) makes managers' decisions: it may run allocation.assign()
-- (the engine's definition of a manager, as claims.c's is_manager())
CREATE FUNCTION allocation._is_manager(p_role text)
RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT pg_catalog.has_function_privilege(p_role, 'allocation.assign(regclass, text, bigint, text)', 'EXECUTE')
$$;
COMMENT ON FUNCTION allocation._is_manager(text) IS 'internal: whether a role may make managers'' decisions (it may run allocation.assign())';

-- The manager of a team: its manager_login, else the nearest ancestor team's (public:
-- everyone reads allocation.team; pending_transfer calls it for the reading role)
CREATE FUNCTION allocation.team_manager(p_team bigint)
RETURNS name
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    WITH RECURSIVE up(id, manager, depth) AS (
        SELECT t.id, t.manager_login, 0 FROM allocation.team t WHERE t.id = p_team
        UNION ALL
        SELECT t.id, t.manager_login, up.depth + 1 FROM allocation.team t
          JOIN allocation.team c ON c.parent_id = t.id JOIN up ON up.id = c.id
         WHERE up.manager IS NULL AND up.depth < 64)
    SELECT up.manager FROM up WHERE up.manager IS NOT NULL ORDER BY up.depth LIMIT 1
$$;
COMMENT ON FUNCTION allocation.team_manager(bigint) IS 'The role that manages a team: its manager_login, else the nearest ancestor team''s (NULL = none)';

-- The manager of a rep's team
CREATE FUNCTION allocation._team_manager(p_rep bigint)
RETURNS name
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT allocation.team_manager(r.team_id) FROM allocation.rep r WHERE r.id = p_rep
$$;
COMMENT ON FUNCTION allocation._team_manager(bigint) IS 'internal: the role that manages a rep''s team (team.manager_login of the team or its nearest ancestor with one; NULL = none)';

-- Under approval team_managers, the sides of a transfer a role approves for: the holder's
-- team ('from') and the receiver's ('to'); a side whose teams name no manager, any manager
CREATE FUNCTION allocation._transfer_sides(t allocation.transfer, p_actor text)
RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT array_remove(ARRAY[
               CASE WHEN coalesce(allocation._team_manager(t.from_rep) = p_actor, allocation._is_manager(p_actor))
                    THEN 'from' END,
               CASE WHEN coalesce(allocation._team_manager(t.to_rep) = p_actor, allocation._is_manager(p_actor))
                    THEN 'to' END], NULL)
$$;
COMMENT ON FUNCTION allocation._transfer_sides(allocation.transfer, text) IS 'internal: the sides (from = the holder''s team, to = the receiver''s) a role approves for under approval team_managers';

-- Whether a role (by name) may decide a transfer: a manager, or the rep the policy names;
-- under team_managers, a manager of either side's team
CREATE FUNCTION allocation._may_decide_transfer(t allocation.transfer, p_actor text)
RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT CASE WHEN t.approval = 'team_managers' THEN cardinality(allocation._transfer_sides(t, p_actor)) > 0
                ELSE allocation._is_manager(p_actor)
                     OR (t.approval = 'receiver' AND allocation._rep_of(p_actor) = t.to_rep)
                     OR (t.approval = 'holder' AND allocation._rep_of(p_actor) = t.from_rep) END
$$;

-- Approval team_managers: records the sides a role approves for; true when both sides have
-- approved (the transfer is then carried out), else an event says who approved which side
CREATE FUNCTION allocation._approve_sides(p_id bigint, p_actor text)
RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    t allocation.transfer;
    v_before allocation.transfer;
    v_sides text[];
    complete boolean;
BEGIN
    SELECT * INTO t FROM allocation.transfer x WHERE x.id = p_id;
    v_before := t;
    v_sides := allocation._transfer_sides(t, p_actor);
    UPDATE allocation.transfer x
       SET from_side_approved_by = coalesce(x.from_side_approved_by, CASE WHEN 'from' = ANY (v_sides) THEN p_actor END),
           to_side_approved_by = coalesce(x.to_side_approved_by, CASE WHEN 'to' = ANY (v_sides) THEN p_actor END)
     WHERE x.id = t.id RETURNING * INTO t;
    IF t.from_side_approved_by IS NOT DISTINCT FROM v_before.from_side_approved_by
       AND t.to_side_approved_by IS NOT DISTINCT FROM v_before.to_side_approved_by THEN
        RAISE EXCEPTION 'the side of transfer % that role % approves for is already approved', t.id, p_actor USING ERRCODE = 'LA0T1',
              DETAIL = format('The holder''s team was approved by %s, the receiver''s by %s.',
                              coalesce(t.from_side_approved_by, 'nobody yet'), coalesce(t.to_side_approved_by, 'nobody yet')),
              HINT = 'SELECT approver FROM allocation.pending_transfer;';
    END IF;
    complete := t.from_side_approved_by IS NOT NULL AND t.to_side_approved_by IS NOT NULL;
    IF NOT complete THEN
        PERFORM allocation._transfer_event(t, 'transfer_approval',
                    format('approved for the %s team by %s; waiting for the %s team''s manager (%s)',
                           CASE WHEN t.from_side_approved_by IS NOT NULL THEN 'holder''s' ELSE 'receiver''s' END, p_actor,
                           CASE WHEN t.from_side_approved_by IS NULL THEN 'holder''s' ELSE 'receiver''s' END,
                           coalesce(allocation._team_manager(CASE WHEN t.from_side_approved_by IS NULL THEN t.from_rep ELSE t.to_rep END),
                                    'any manager')));
    END IF;
    RETURN complete;
END
$$;
COMMENT ON FUNCTION allocation._approve_sides(bigint, text) IS 'internal: records a team manager''s approval of its side(s) of a transfer under approval team_managers; complete = both sides approved';
COMMENT ON FUNCTION allocation._may_decide_transfer(allocation.transfer, text) IS 'internal: whether a role may approve or reject a transfer (a manager, or the rep its policy names)';

-- A transfer row locked for a decision; LA0T0 / LA0T1 when there is none pending
CREATE FUNCTION allocation._lock_transfer(p_id bigint)
RETURNS allocation.transfer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    t allocation.transfer;
BEGIN
    IF p_id IS NULL THEN
        RAISE EXCEPTION 'transfer id must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'A transfer decision names the request by its id.', HINT = 'SELECT id FROM allocation.pending_transfer;';
    END IF;
    -- two decisions of one transfer serialize here; a transaction that holds holdings
    -- counters does not wait (55P03), as for a customer's row
    BEGIN
        IF allocation._holds_counters() THEN
            SELECT * INTO t FROM allocation.transfer WHERE id = p_id FOR UPDATE NOWAIT;
        ELSE
            SELECT * INTO t FROM allocation.transfer WHERE id = p_id FOR UPDATE;
        END IF;
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'transfer % is busy', p_id USING ERRCODE = '55P03',
              DETAIL = 'Another open transaction is deciding this transfer, and this transaction already holds holdings counters that it may be waiting for.',
              HINT = 'Retry after the other transaction ends, or decide one transfer per transaction.';
    END;
    IF t.id IS NULL THEN
        RAISE EXCEPTION 'transfer % does not exist', p_id USING ERRCODE = 'LA0T0',
              DETAIL = 'No row of allocation.transfer has this id.', HINT = 'SELECT id FROM allocation.pending_transfer;';
    END IF;
    IF t.status <> 'pending' THEN
        RAISE EXCEPTION 'transfer % is %, not pending', p_id, t.status USING ERRCODE = 'LA0T1',
              DETAIL = format('It was %s by %s at %s.', t.status, t.decided_by, t.decided_at),
              HINT = 'Only a pending transfer can be approved, rejected or cancelled.';
    END IF;
    IF t.expires_at <= now() THEN
        RAISE EXCEPTION 'transfer % expired at %', p_id, t.expires_at USING ERRCODE = 'LA0T1',
              DETAIL = 'It was not decided in time (transfer_policy.expires_after).',
              HINT = 'Request it again if it still applies; allocation.expire_transfers() records the expiry.';
    END IF;
    RETURN t;
END
$$;
COMMENT ON FUNCTION allocation._lock_transfer(bigint) IS 'internal: locks a pending transfer for a decision (two decisions of one transfer serialize here)';

-- Carries out an approved transfer: every check again, under the customer's row lock
CREATE FUNCTION allocation._execute_transfer(t allocation.transfer, p_note text, p_actor text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table := allocation._managed_by_id(t.managed_id);
    v_found boolean;
    v_owner bigint;
    v_other text;
    v_today integer;
    lk allocation.customer_lock;
    pr allocation.protection;
    o allocation.rep;
    a record;
    lim record;
BEGIN
    IF NOT m.active THEN
        RAISE EXCEPTION 'table % is not managed any more', m.table_name USING ERRCODE = 'LA012',
              DETAIL = format('Transfer %s concerns a table that was unmanaged or dropped.', t.id),
              HINT = 'Reject or cancel the transfer.';
    END IF;
    -- the customer's row lock orders a transfer with claims, releases, recycling and other transfers
    SELECT l.row_found, l.row_owner INTO v_found, v_owner FROM allocation._lock_customer_row(m, t.key, false) l;
    IF v_found IS NULL THEN
        RAISE EXCEPTION 'customer % not found in %', t.key, m.table_name USING ERRCODE = 'LA062',
              DETAIL = format('Transfer %s names a customer that is gone.', t.id), HINT = 'Reject or cancel the transfer.';
    END IF;
    SELECT * INTO a FROM allocation._current(m.id, t.key);
    -- the same holder, and still the holding period the request was made in
    IF v_owner IS DISTINCT FROM t.from_rep OR a.valid_from > t.requested_at THEN
        SELECT * INTO o FROM allocation.rep WHERE id = v_owner;
        RAISE EXCEPTION 'customer % changed hands since transfer % was requested', t.key, t.id USING ERRCODE = 'LA0T3',
              DETAIL = CASE WHEN v_owner IS NULL THEN 'It is in the public pool now.'
                            WHEN v_owner = t.from_rep THEN format('Rep %s holds it again, since %s.', o.code, a.valid_from)
                            ELSE format('Rep %s (%s, id %s) holds it now.', o.code, o.name, o.id) END,
              HINT = 'Reject or cancel this transfer; request a new one if it still applies.';
    END IF;
    SELECT * INTO lk FROM allocation.customer_lock WHERE managed_id = m.id AND key = t.key;
    IF lk.key IS NOT NULL THEN
        RAISE EXCEPTION 'customer % is locked', t.key USING ERRCODE = 'LA084',
              DETAIL = format('Locked by %s at %s: %s', lk.locked_by, lk.locked_at, lk.reason),
              HINT = 'A manager can unlock it with allocation.unlock_customer().';
    END IF;
    PERFORM allocation._refuse_if_disputed(m.id, t.key);
    SELECT d.other_key INTO v_other FROM allocation.duplicate d
     WHERE d.managed_id = m.id AND d.key = t.key AND d.status = 'open' AND d.action = 'dispute' ORDER BY d.id LIMIT 1;
    IF v_other IS NOT NULL THEN
        RAISE EXCEPTION 'customer % is in dispute', t.key USING ERRCODE = 'LA087',
              DETAIL = format('It may duplicate customer %s and waits for a manager''s decision.', v_other),
              HINT = 'A manager decides with allocation.resolve_dispute() or allocation.dismiss_dispute() first.';
    END IF;
    IF t.checks THEN
        -- registration protection: a customer protected for a rep moves only to that rep, or at its own request
        SELECT * INTO pr FROM allocation.protection WHERE managed_id = m.id AND key = t.key AND until > now();
        IF pr.key IS NOT NULL AND pr.rep_id <> t.to_rep AND allocation._rep_of(t.requested_by) IS DISTINCT FROM pr.rep_id THEN
            RAISE EXCEPTION 'customer % is protected for the rep that registered it', t.key USING ERRCODE = 'LA085',
                  DETAIL = format('Rep %s registered it at %s; protection ends at %s.',
                                  (SELECT x.code FROM allocation.rep x WHERE x.id = pr.rep_id), pr.since, pr.until),
                  HINT = 'The protected rep can hand it over itself, or wait until the protection ends.';
        END IF;
        -- the receiver's daily limit, counted like a claim, under its holdings counter; both
        -- reps' counters in id order (the engine's ordered-locking rule: the owner change
        -- below takes the holder's too)
        SELECT * INTO lim FROM allocation.claim_limits(t.to_rep, a.tier);
        PERFORM allocation._lock_counter(least(t.from_rep, t.to_rep));
        PERFORM allocation._lock_counter(greatest(t.from_rep, t.to_rep));
        INSERT INTO allocation.claim_day AS d (rep_id, day, claims) VALUES (t.to_rep, allocation.claim_today(), 0)
        ON CONFLICT (rep_id, day) DO UPDATE SET claims = d.claims
        RETURNING d.claims INTO v_today;
        IF lim.daily_claims IS NOT NULL AND v_today >= lim.daily_claims THEN
            RAISE EXCEPTION 'rep % reached its daily limit of % new customers', (SELECT x.code FROM allocation.rep x WHERE x.id = t.to_rep),
                  lim.daily_claims USING ERRCODE = 'LA082',
                  DETAIL = format('It took %s customers today (claims and transfers).', v_today),
                  HINT = 'Approve the transfer tomorrow, or raise claim_policy.daily_claims.';
        END IF;
        UPDATE allocation.claim_day SET claims = claims + 1 WHERE rep_id = t.to_rep AND day = allocation.claim_today();
    END IF;
    -- active rep, capacity and exclusive territories: the managed table's trigger checks them
    PERFORM allocation._owner_update(m.tbl, t.key, t.to_rep, 'transfer',
                                     format('transfer %s (%s): %s', t.id, p_actor, t.reason));
    UPDATE allocation.transfer x SET status = 'approved', decided_by = p_actor, decided_at = now(), decision_note = p_note
     WHERE x.id = t.id;
END
$$;
COMMENT ON FUNCTION allocation._execute_transfer(allocation.transfer, text, text) IS 'internal: carries out an approved transfer after checking everything again under the customer''s row lock';

-- One event per step of a transfer that is not the ownership change itself
CREATE FUNCTION allocation._transfer_event(t allocation.transfer, p_kind text, p_reason text)
RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS
$$
    INSERT INTO allocation.event (actor, kind, managed_id, table_name, key, from_rep, to_rep, reason, detail)
    SELECT allocation._actor(), p_kind, t.managed_id, m.table_name, t.key, t.from_rep, t.to_rep, p_reason,
           pg_catalog.jsonb_build_object('transfer', t.id, 'approval', t.approval, 'status', t.status)
      FROM allocation.managed_table m WHERE m.id = t.managed_id
$$;
COMMENT ON FUNCTION allocation._transfer_event(allocation.transfer, text, text) IS 'internal: the audit event of a transfer step (requested, rejected, cancelled, expired)';

CREATE FUNCTION allocation._request_transfer(tbl regclass, key text, to_rep bigint, reason text)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
    v_actor text := allocation._actor();
    v_me bigint := allocation._rep_of(v_actor);
    v_manager boolean := allocation._is_manager(v_actor);
    v_found boolean;
    v_owner bigint;
    a record;
    p record;
    r allocation.rep;
    t allocation.transfer;
BEGIN
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'a transfer needs a reason' USING ERRCODE = '22004',
              DETAIL = 'The reason is kept with the request and in the audit log.',
              HINT = 'Say why, e.g. ''the dealer moved to the east county''.';
    END IF;
    IF key IS NULL THEN
        RAISE EXCEPTION 'customer key must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.request_transfer() was called with a NULL key.', HINT = 'Pass the customer''s key.';
    END IF;
    IF to_rep IS NULL THEN
        RAISE EXCEPTION 'a transfer needs a receiving rep' USING ERRCODE = '22004',
              DETAIL = 'allocation.request_transfer() was called with a NULL rep.',
              HINT = 'To give a customer back to the public pool, use allocation.release().';
    END IF;
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'table must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.request_transfer() was called with a NULL table.', HINT = 'Pass the customer table, e.g. ''crm.customer''.';
    END IF;
    m := allocation._managed(tbl);
    r := allocation._active_rep(to_rep, 'An inactive rep receives no customers.');
    PERFORM allocation._check_column_types(m.tbl, m.key_column, NULL);
    SELECT l.row_found, l.row_owner INTO v_found, v_owner FROM allocation._lock_customer_row(m, key, false) l;
    -- who may ask, before anything about the customer is said
    IF NOT v_manager AND v_me IS DISTINCT FROM to_rep AND (v_found IS NULL OR v_me IS DISTINCT FROM v_owner) THEN
        RAISE EXCEPTION 'role % may not request a transfer of customer %', v_actor, key USING ERRCODE = 'LA0T2',
              DETAIL = 'A transfer is requested by the holder (to hand it over), by the receiving rep (to ask for it) or by a manager.',
              HINT = 'Ask the holder or a manager.';
    END IF;
    IF v_found IS NULL THEN
        RAISE EXCEPTION 'customer % not found in %', key, tbl USING ERRCODE = 'LA062',
              DETAIL = format('No row of %s has %s = %s.', tbl, m.key_column, key), HINT = 'Check the key.';
    END IF;
    IF v_owner IS NULL THEN
        RAISE EXCEPTION 'customer % is in the public pool', key USING ERRCODE = 'LA0T5',
              DETAIL = 'A transfer moves a customer from its holder to another rep.',
              HINT = 'A rep takes a pool customer with allocation.claim().';
    END IF;
    IF v_owner = to_rep THEN
        RAISE EXCEPTION 'customer % is already held by rep %', key, r.code USING ERRCODE = 'LA0T5',
              DETAIL = 'The receiving rep is the current holder.', HINT = 'Nothing to do.';
    END IF;
    PERFORM allocation._refuse_if_disputed(m.id, key);
    SELECT * INTO a FROM allocation._current(m.id, key);
    -- under the customer's row lock: a pending request whose holder or holding period is
    -- gone is moot, one that ran out of time is expired; either makes way for this one
    FOR t IN UPDATE allocation.transfer x
                SET status = CASE WHEN x.from_rep IS DISTINCT FROM v_owner OR a.valid_from > x.requested_at
                                  THEN 'cancelled' ELSE 'expired' END,
                    decided_by = v_actor, decided_at = now(),
                    decision_note = CASE WHEN x.from_rep IS DISTINCT FROM v_owner OR a.valid_from > x.requested_at
                                         THEN 'the customer changed hands' END
              WHERE x.id IN (SELECT y.id FROM allocation.transfer y
                              WHERE y.managed_id = m.id AND y.key = _request_transfer.key AND y.status = 'pending'
                                AND (y.from_rep IS DISTINCT FROM v_owner OR a.valid_from > y.requested_at OR y.expires_at <= now())
                                -- one an approver holds is being decided: not waited for (the approver
                                -- waits for this customer's row: a deadlock), it counts as pending below
                                FOR UPDATE SKIP LOCKED)
              RETURNING * LOOP
        PERFORM allocation._transfer_event(t, 'transfer_' || t.status,
                                           coalesce(t.decision_note, format('not decided before %s', t.expires_at)));
    END LOOP;
    SELECT * INTO t FROM allocation.transfer x
     WHERE x.managed_id = m.id AND x.key = _request_transfer.key AND x.status = 'pending';
    IF t.id IS NOT NULL THEN
        RAISE EXCEPTION 'customer % already has a pending transfer', key USING ERRCODE = 'LA0T4',
              DETAIL = format('Transfer %s (to rep %s, requested by %s) waits for a decision.',
                              t.id, (SELECT r2.code FROM allocation.rep r2 WHERE r2.id = t.to_rep), t.requested_by),
              HINT = 'Decide or cancel that one first.';
    END IF;
    SELECT * INTO p FROM allocation._transfer_policy(v_owner, a.tier);
    -- a rep asking for another rep's customer needs the holder's (or a manager's) yes, whatever the policy
    -- requested_at is the clock under the customer's row lock, as ownership times are:
    -- a holding period that starts later is a change of hands, also in this transaction
    INSERT INTO allocation.transfer (managed_id, key, from_rep, to_rep, reason, approval, checks, requested_by,
                                     requested_at, expires_at)
    VALUES (m.id, key, v_owner, to_rep, reason,
            CASE WHEN NOT v_manager AND v_me = to_rep AND p.approval IN ('none', 'receiver') THEN 'holder' ELSE p.approval END,
            p.checks, v_actor, pg_catalog.clock_timestamp(), pg_catalog.clock_timestamp() + p.expires_after)
    RETURNING * INTO t;
    PERFORM allocation._transfer_event(t, 'transfer_requested', reason);
    -- no approval needed, or the one who asks is the one who approves: done now (under
    -- team_managers, when the one who asks manages both sides; one side is recorded)
    IF t.approval = 'team_managers' THEN
        IF allocation._may_decide_transfer(t, v_actor) THEN
            IF allocation._approve_sides(t.id, v_actor) THEN
                SELECT * INTO t FROM allocation.transfer x WHERE x.id = t.id;
                PERFORM allocation._execute_transfer(t, NULL, v_actor);
            END IF;
        END IF;
    ELSIF t.approval = 'none' OR allocation._may_decide_transfer(t, v_actor) THEN
        PERFORM allocation._execute_transfer(t, NULL, v_actor);
    END IF;
    RETURN t.id;
END
$$;
COMMENT ON FUNCTION allocation._request_transfer(regclass, text, bigint, text) IS 'internal: implementation of allocation.request_transfer(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.request_transfer(tbl regclass, key text, to_rep bigint, reason text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.request_transfer(regclass, text, bigint, text) IS
'Requests that a held customer move to another rep: by the holder, the receiving rep or a manager; returns the transfer id. Carried out at once when the transfer policy needs no approval or the caller is the approver';

CREATE FUNCTION allocation._approve_transfer(id bigint, note text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    t allocation.transfer := allocation._lock_transfer(id);
    v_actor text := allocation._actor();
BEGIN
    IF NOT allocation._may_decide_transfer(t, v_actor) THEN
        RAISE EXCEPTION 'role % may not approve transfer %', v_actor, t.id USING ERRCODE = 'LA0T2',
              DETAIL = format('Its policy wants the approval of %s.',
                              CASE t.approval WHEN 'receiver' THEN 'the receiving rep' WHEN 'holder' THEN 'the holder'
                                   WHEN 'team_managers' THEN format('the managers of both teams (%s for the holder''s, %s for the receiver''s)',
                                                                    coalesce(allocation._team_manager(t.from_rep), 'any manager'),
                                                                    coalesce(allocation._team_manager(t.to_rep), 'any manager'))
                                   ELSE 'a manager' END),
              HINT = CASE WHEN t.approval = 'team_managers' THEN 'Ask the team managers (allocation.team.manager_login).'
                          ELSE 'A manager can always decide.' END;
    END IF;
    IF t.approval = 'team_managers' THEN
        -- one side recorded (LA0T1 when the role's sides are approved already); both: carried out
        IF NOT allocation._approve_sides(t.id, v_actor) THEN
            RETURN;
        END IF;
        SELECT * INTO t FROM allocation.transfer x WHERE x.id = t.id;
    END IF;
    PERFORM allocation._execute_transfer(t, note, v_actor);
END
$$;
COMMENT ON FUNCTION allocation._approve_transfer(bigint, text) IS 'internal: implementation of allocation.approve_transfer(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.approve_transfer(id bigint, note text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.approve_transfer(bigint, text) IS
'Approves a pending transfer (the approver its policy names, or a manager) and carries it out, checking everything again; the error names the check that failed';

CREATE FUNCTION allocation._reject_transfer(id bigint, reason text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    t allocation.transfer;
    v_actor text := allocation._actor();
BEGIN
    IF _reject_transfer.reason IS NULL OR btrim(_reject_transfer.reason) = '' THEN
        RAISE EXCEPTION 'a rejection needs a reason' USING ERRCODE = '22004',
              DETAIL = 'The reason is kept with the request and in the audit log.', HINT = 'Say why.';
    END IF;
    t := allocation._lock_transfer(id);
    -- the approver, a manager, or the holder of a customer another rep asked for
    IF NOT allocation._may_decide_transfer(t, v_actor)
       AND NOT (allocation._rep_of(v_actor) = t.from_rep AND allocation._rep_of(t.requested_by) = t.to_rep) THEN
        RAISE EXCEPTION 'role % may not reject transfer %', v_actor, t.id USING ERRCODE = 'LA0T2',
              DETAIL = 'The approver its policy names, a manager, or the holder of a customer asked for decides.',
              HINT = 'The requester can cancel it instead.';
    END IF;
    UPDATE allocation.transfer x SET status = 'rejected', decided_by = v_actor, decided_at = now(),
           decision_note = _reject_transfer.reason
     WHERE x.id = t.id RETURNING * INTO t;
    PERFORM allocation._transfer_event(t, 'transfer_rejected', _reject_transfer.reason);
END
$$;
COMMENT ON FUNCTION allocation._reject_transfer(bigint, text) IS 'internal: implementation of allocation.reject_transfer(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.reject_transfer(id bigint, reason text)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.reject_transfer(bigint, text) IS 'Rejects a pending transfer, with a reason (the approver its policy names, or a manager)';

CREATE FUNCTION allocation._cancel_transfer(id bigint)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    t allocation.transfer := allocation._lock_transfer(id);
    v_actor text := allocation._actor();
BEGIN
    IF t.requested_by <> v_actor AND NOT allocation._is_manager(v_actor) THEN
        RAISE EXCEPTION 'role % may not cancel transfer %', v_actor, t.id USING ERRCODE = 'LA0T2',
              DETAIL = format('It was requested by %s; the requester or a manager cancels it.', t.requested_by),
              HINT = 'The approver rejects it instead.';
    END IF;
    UPDATE allocation.transfer x SET status = 'cancelled', decided_by = v_actor, decided_at = now()
     WHERE x.id = t.id RETURNING * INTO t;
    PERFORM allocation._transfer_event(t, 'transfer_cancelled', 'cancelled by ' || v_actor);
END
$$;
COMMENT ON FUNCTION allocation._cancel_transfer(bigint) IS 'internal: implementation of allocation.cancel_transfer(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.cancel_transfer(id bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.cancel_transfer(bigint) IS 'Withdraws a pending transfer (its requester, or a manager)';

CREATE FUNCTION allocation._expire_transfers(at timestamptz)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    t allocation.transfer;
    n integer := 0;
BEGIN
    IF at IS NULL THEN
        RAISE EXCEPTION 'the time must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.expire_transfers() expires the requests older than their policy allows at this time.',
              HINT = 'SELECT allocation.expire_transfers(now());';
    END IF;
    FOR t IN UPDATE allocation.transfer x SET status = 'expired', decided_by = allocation._actor(), decided_at = now()
              WHERE x.status = 'pending' AND x.expires_at <= _expire_transfers.at
              RETURNING * LOOP
        PERFORM allocation._transfer_event(t, 'transfer_expired', format('not decided before %s', t.expires_at));
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION allocation._expire_transfers(timestamptz) IS 'internal: implementation of allocation.expire_transfers(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.expire_transfers(at timestamptz DEFAULT now())
RETURNS integer
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.expire_transfers(timestamptz) IS 'Expires the pending transfers whose time ran out (for a scheduler such as pg_cron); returns how many';

-- Each role sees the pending transfers it has a part in; readers of the whole picture see all
CREATE VIEW allocation.pending_transfer WITH (security_barrier) AS
SELECT t.id, mt.table_name, t.key, t.from_rep, fr.code AS from_rep_code, t.to_rep, tr.code AS to_rep_code,
       t.reason, t.approval,
       CASE t.approval WHEN 'receiver' THEN tr.code WHEN 'holder' THEN fr.code
            WHEN 'team_managers' THEN pg_catalog.concat_ws(' and ',
                CASE WHEN t.from_side_approved_by IS NULL THEN coalesce(allocation.team_manager(fr.team_id)::text, 'a manager') END,
                CASE WHEN t.to_side_approved_by IS NULL THEN coalesce(allocation.team_manager(tr.team_id)::text, 'a manager') END)
            ELSE 'a manager' END AS approver,
       t.requested_by, t.requested_at, t.expires_at
  FROM allocation.transfer t
  JOIN allocation.managed_table mt ON mt.id = t.managed_id
  LEFT JOIN allocation.rep fr ON fr.id = t.from_rep
  LEFT JOIN allocation.rep tr ON tr.id = t.to_rep
 WHERE t.status = 'pending'
   AND (pg_catalog.has_table_privilege('allocation.transfer', 'SELECT')
        OR allocation.current_rep_id() IN (t.from_rep, t.to_rep));
COMMENT ON VIEW allocation.pending_transfer IS 'Pending transfers with the approver their policy names; a rep sees those it gives or receives, managers, analysts and admins all (a security barrier: a rep''s own functions in a query never see other rows)';

-- Moves every customer of a leaving rep: to the reps of a list (least held first, within
-- capacity), or, with no list, to the rep the rules choose today (explain()).  Each move
-- is a manager's transfer with every check; one that is refused leaves that customer where
-- it is and is reported.  dry_run (the default) does each move and rolls it back.
CREATE FUNCTION allocation._transfer_all(from_rep bigint, to_reps bigint[], reason text, dry_run boolean)
RETURNS TABLE (table_name text, key text, to_rep bigint, to_rep_code text, outcome text, code text, message text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
    c record;
    f allocation.rep;
    v_load jsonb := '{}';
    v_id bigint;
    v_state text;
    v_msg text;
BEGIN
    IF from_rep IS NULL OR reason IS NULL OR btrim(reason) = '' OR dry_run IS NULL THEN
        RAISE EXCEPTION 'transfer_all() needs the leaving rep, a reason and dry_run' USING ERRCODE = '22004',
              DETAIL = 'One of them is NULL (or the reason is blank).',
              HINT = 'SELECT * FROM allocation.transfer_all(7, ARRAY[8, 9], ''rep 7 leaves'');  -- a dry run first';
    END IF;
    -- every move, also in a dry run, is a real transfer tried in a subtransaction (a dry
    -- run rolls it back): on a standby each one would come back refused with 25006
    PERFORM allocation._refuse_read_only('allocation.transfer_all()');
    SELECT * INTO f FROM allocation.rep x WHERE x.id = from_rep;
    IF f.id IS NULL THEN
        RAISE EXCEPTION 'rep % does not exist', from_rep USING ERRCODE = 'LA020',
              DETAIL = 'No row of allocation.rep has this id.', HINT = 'SELECT id, code FROM allocation.rep;';
    END IF;
    IF to_reps IS NOT NULL AND (cardinality(to_reps) = 0 OR from_rep = ANY (to_reps)
                                OR EXISTS (SELECT 1 FROM unnest(to_reps) u(id) WHERE u.id IS NULL
                                           OR NOT EXISTS (SELECT 1 FROM allocation.rep x WHERE x.id = u.id AND x.active))) THEN
        RAISE EXCEPTION 'the reps to move to must be active reps other than the leaving one' USING ERRCODE = '22023',
              DETAIL = format('The list is %s.', to_reps),
              HINT = 'Name active reps, or pass NULL to let the rules choose for each customer.';
    END IF;
    -- the current holdings (and slots reserved by pending suggestions) of the list, for "least held first"
    SELECT coalesce(jsonb_object_agg(l.rep_id::text, l.held + l.reserved), '{}') INTO v_load
      FROM allocation.rep_load l WHERE l.rep_id = ANY (coalesce(to_reps, '{}'));
    FOR m IN SELECT * FROM allocation.managed_table mt WHERE mt.active ORDER BY mt.id LOOP
        FOR c IN SELECT u.r[1] AS key
                   FROM allocation._table_rows(m.tbl, ARRAY[m.key_column::text, m.owner_column::text], NULL, '') u(r)
                  WHERE u.r[2] = from_rep::text ORDER BY 1 LOOP
            table_name := m.table_name;
            key := c.key;
            IF to_reps IS NULL THEN
                to_rep := (allocation.explain(m.tbl, c.key) -> 'result' ->> 'rep_id')::bigint;
            ELSE
                SELECT x.id INTO to_rep
                  FROM allocation.rep x
                 WHERE x.id = ANY (to_reps)
                   AND (x.capacity IS NULL OR coalesce((v_load ->> x.id::text)::int, 0) < x.capacity)
                 ORDER BY coalesce((v_load ->> x.id::text)::int, 0), x.id LIMIT 1;
            END IF;
            SELECT x.code INTO to_rep_code FROM allocation.rep x WHERE x.id = to_rep;
            IF to_rep IS NULL OR to_rep = from_rep THEN
                outcome := 'stays'; code := NULL;
                message := CASE WHEN to_reps IS NULL THEN 'the rules choose no other rep today'
                                ELSE 'every rep of the list is at capacity' END;
                RETURN NEXT;
                CONTINUE;
            END IF;
            BEGIN
                v_id := allocation._request_transfer(m.tbl, c.key, to_rep, reason);
                IF (SELECT t.status FROM allocation.transfer t WHERE t.id = v_id) <> 'approved' THEN
                    RAISE EXCEPTION 'transfer % was not carried out', v_id USING ERRCODE = 'LA0T2';
                END IF;
                IF dry_run THEN
                    RAISE EXCEPTION USING ERRCODE = 'LA0TD', MESSAGE = 'dry run';
                END IF;
                outcome := 'moved'; code := NULL; message := format('transfer %s', v_id);
                v_load := jsonb_set(v_load, ARRAY[to_rep::text], to_jsonb(coalesce((v_load ->> to_rep::text)::int, 0) + 1));
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
                IF v_state = 'LA0TD' THEN
                    outcome := 'would move'; code := NULL; message := NULL;
                    v_load := jsonb_set(v_load, ARRAY[to_rep::text], to_jsonb(coalesce((v_load ->> to_rep::text)::int, 0) + 1));
                ELSE
                    outcome := 'refused'; code := v_state; message := v_msg;
                END IF;
            END;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation._transfer_all(bigint, bigint[], text, boolean) IS 'internal: implementation of allocation.transfer_all(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.transfer_all(from_rep bigint, to_reps bigint[], reason text, dry_run boolean DEFAULT true)
RETURNS TABLE (table_name text, key text, to_rep bigint, to_rep_code text, outcome text, code text, message text)
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.transfer_all(bigint, bigint[], text, boolean) IS
'A manager moves every customer of a leaving rep: to the reps of a list (least held first, within capacity) or, with a NULL list, to the rep the rules choose; each move a checked transfer, refusals reported; dry_run (the default) only reports what would happen';

REVOKE ALL ON allocation.transfer_policy, allocation.transfer, allocation.pending_transfer FROM PUBLIC;
REVOKE ALL ON SEQUENCE allocation.transfer_policy_id_seq, allocation.transfer_id_seq FROM PUBLIC;
REVOKE ALL ON FUNCTION allocation._transfer_policy(bigint, text), allocation._may_decide_transfer(allocation.transfer, text),
    allocation._team_manager(bigint), allocation._transfer_sides(allocation.transfer, text), allocation._approve_sides(bigint, text),
    allocation._is_manager(text), allocation._lock_transfer(bigint), allocation._execute_transfer(allocation.transfer, text, text),
    allocation._transfer_event(allocation.transfer, text, text), allocation._request_transfer(regclass, text, bigint, text),
    allocation.request_transfer(regclass, text, bigint, text), allocation._approve_transfer(bigint, text),
    allocation.approve_transfer(bigint, text), allocation._reject_transfer(bigint, text), allocation.reject_transfer(bigint, text),
    allocation._cancel_transfer(bigint), allocation.cancel_transfer(bigint), allocation._expire_transfers(timestamptz),
    allocation.expire_transfers(timestamptz), allocation._transfer_all(bigint, bigint[], text, boolean),
    allocation.transfer_all(bigint, bigint[], text, boolean) FROM PUBLIC;

CREATE TRIGGER config_audit_insert AFTER INSERT ON allocation.transfer_policy
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._config_audit();
CREATE TRIGGER config_audit_update AFTER UPDATE ON allocation.transfer_policy
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._config_audit();
CREATE TRIGGER config_audit_delete AFTER DELETE ON allocation.transfer_policy
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._config_audit();
CREATE TRIGGER config_audit_truncate AFTER TRUNCATE ON allocation.transfer_policy
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._config_audit();

SELECT pg_catalog.pg_extension_config_dump('allocation.transfer_policy', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.transfer', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.transfer_policy_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.transfer_id_seq', '');

-- >>> issue 13 part 2
-------------------------------------------------------------------------------
-- Sharing and dealer networks (issue 13): sql_src/77_sharing.sql,
-- sql_src/79_network.sql; row-level security reads the shares; manage() knows
-- the parent attribute; rule policy follow_parent
-------------------------------------------------------------------------------
ALTER TABLE allocation.rule DROP CONSTRAINT rule_policy_check;
ALTER TABLE allocation.rule ADD CONSTRAINT rule_policy_check
    CHECK (policy IN ('territory_owner', 'round_robin', 'least_loaded', 'weighted', 'skill', 'follow_parent'));
COMMENT ON COLUMN allocation.managed_table.attributes IS 'logical attribute name -> column name (tier, crop, business_type, tags, stage, name, phone, credit_code, last_contact, expected_output, parent)';

CREATE OR REPLACE FUNCTION allocation._manage(
    tbl regclass,
    key_column name,
    location_column name,
    owner_column name,
    attributes jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    known constant text[] := ARRAY['tier', 'crop', 'business_type', 'tags', 'stage', 'name', 'phone',
                                   'credit_code', 'last_contact', 'expected_output', 'parent'];
    v_kind   char;
    v_type   oid;
    v_typmod integer;
    v_attnum smallint;
    v_attnums jsonb := '{}';
    v_logical text;
    v_col    text;
    v_id     integer;
    v_name   text;
    v_bad    text;
    v_count  bigint;
    v_postgis name;
    v_ptype  text;
BEGIN
    IF tbl IS NULL OR key_column IS NULL OR owner_column IS NULL THEN
        RAISE EXCEPTION 'table, key column and owner column are required'
            USING ERRCODE = '22004',
                  DETAIL = 'allocation.manage() was called with a NULL table, key column or owner column.',
                  HINT = 'Call allocation.manage(''crm.customer'', ''id'', ''location'', ''owner_id'').';
    END IF;
    PERFORM allocation._require_owner(tbl, 'manage');
    SELECT c.relkind, format('%I.%I', n.nspname, c.relname) INTO v_kind, v_name
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = tbl AND c.relpersistence = 't') THEN
        RAISE EXCEPTION 'temporary table % cannot be managed', tbl
            USING ERRCODE = 'LA010',
                  DETAIL = 'A temporary table disappears at the end of the session without notice, leaving the registry open.',
                  HINT = 'Manage a permanent table.';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = tbl AND c.relispartition) THEN
        RAISE EXCEPTION 'partition % cannot be managed', tbl
            USING ERRCODE = 'LA010',
                  DETAIL = 'Rows inserted through the partitioned parent would not find the mapping.',
                  HINT = format('Manage the partitioned table: allocation.manage(%L, ...).',
                                (SELECT a::regclass::text FROM pg_catalog.pg_partition_ancestors(tbl) a
                                  WHERE NOT (SELECT c.relispartition FROM pg_catalog.pg_class c WHERE c.oid = a)));
    END IF;
    IF v_kind = 'p' AND EXISTS (SELECT 1 FROM pg_catalog.pg_partition_tree(tbl) t
                                  JOIN pg_catalog.pg_class c ON c.oid = t.relid WHERE c.relkind NOT IN ('r', 'p')) THEN
        RAISE EXCEPTION 'partitioned table % has a partition that is not an ordinary table', tbl
            USING ERRCODE = 'LA010',
                  DETAIL = format('Partition %s has relkind %s; the engine''s triggers need ordinary tables.',
                                  (SELECT min(t.relid::regclass::text) FROM pg_catalog.pg_partition_tree(tbl) t
                                     JOIN pg_catalog.pg_class c ON c.oid = t.relid WHERE c.relkind NOT IN ('r', 'p')),
                                  (SELECT min(c.relkind::text) FROM pg_catalog.pg_partition_tree(tbl) t
                                     JOIN pg_catalog.pg_class c ON c.oid = t.relid WHERE c.relkind NOT IN ('r', 'p'))),
                  HINT = 'Detach the foreign partitions, or manage an ordinary table.';
    END IF;
    IF v_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', tbl
            USING ERRCODE = 'LA010',
                  DETAIL = format('Relation %s has relkind %s; only ordinary tables can be managed.', tbl, v_kind),
                  HINT = 'Manage the base table behind the view.';
    END IF;
    IF v_name LIKE 'allocation.%' THEN
        RAISE EXCEPTION 'the extension''s own tables cannot be managed'
            USING ERRCODE = 'LA010', DETAIL = format('%s belongs to the allocation extension.', v_name),
                  HINT = 'Manage your customer table.';
    END IF;
    -- no writes slip between registering the existing rows and installing the triggers
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', tbl);
    IF EXISTS (SELECT 1 FROM allocation.managed_table m WHERE m.tbl = _manage.tbl AND m.active) THEN
        RAISE EXCEPTION 'table % is already managed', tbl
            USING ERRCODE = 'LA011',
                  DETAIL = 'allocation.manage() was already called for this table.',
                  HINT = 'Call allocation.unmanage() first to change the mapping.';
    END IF;

    -- key: one column with a unique, non-partial index of its own; a partitioned table's
    -- unique index must also hold the partition columns (PRIMARY KEY (id, province)):
    -- then the key comes first and the engine checks it across partitions (partition.c)
    v_attnum := allocation._column_attnum(tbl, key_column, 'key');
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                    WHERE i.indrelid = tbl AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
                      AND (i.indnkeyatts = 1 OR v_kind = 'p') AND i.indkey[0] = v_attnum) THEN
        RAISE EXCEPTION 'key column "%" of % is not unique', key_column, tbl
            USING ERRCODE = 'LA013',
                  DETAIL = CASE WHEN v_kind = 'p'
                                THEN 'The key of a partitioned table must be the first column of a primary key or unique, non-partial index (which also holds the partition columns).'
                                ELSE 'The key must be a single column with a primary key or a unique, non-partial index.' END,
                  HINT = CASE WHEN v_kind = 'p'
                              THEN format('ALTER TABLE %s ADD PRIMARY KEY (%I, <partition columns>);', tbl, key_column)
                              ELSE format('ALTER TABLE %s ADD UNIQUE (%I);', tbl, key_column) END;
    END IF;
    IF v_kind = 'p' THEN
        -- unique with the partition columns only: one row per key in the whole table first
        EXECUTE format('SELECT min(k), count(*) FROM (SELECT c.%1$I::text AS k FROM %2$s c GROUP BY 1 HAVING count(*) > 1) d',
                       key_column, tbl) INTO v_bad, v_count;
        IF v_count > 0 THEN
            RAISE EXCEPTION '% key(s) of % occur in more than one row', v_count, tbl
                USING ERRCODE = 'LA013',
                      DETAIL = format('For example key %s; the engine needs one row per key across all partitions.', v_bad),
                      HINT = 'Merge or renumber those customers first.';
        END IF;
    END IF;
    v_attnums := v_attnums || jsonb_build_object('key', v_attnum);

    -- location: a PostGIS geometry holding points
    IF location_column IS NOT NULL THEN
        v_attnum := allocation._column_attnum(tbl, location_column, 'location');
        SELECT a.atttypid, a.atttypmod INTO v_type, v_typmod FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = tbl AND a.attnum = v_attnum;
        -- (runs as the extension owner: PostGIS is reached by its schema, never by search_path)
        SELECT n.nspname INTO v_postgis FROM pg_catalog.pg_extension e
          JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'postgis';
        IF v_typmod >= 0 AND v_type = (SELECT t.oid FROM pg_catalog.pg_type t
                                        WHERE t.typname = 'geometry' AND t.typnamespace = v_postgis::regnamespace) THEN
            EXECUTE format('SELECT %I.postgis_typmod_type($1)', v_postgis) INTO v_ptype USING v_typmod;
        END IF;
        IF v_type IS DISTINCT FROM (SELECT t.oid FROM pg_catalog.pg_type t
                                     WHERE t.typname = 'geometry' AND t.typnamespace = v_postgis::regnamespace)
           OR (v_typmod >= 0 AND v_ptype NOT IN ('Point', 'Geometry')) THEN
            RAISE EXCEPTION 'location column "%" of % is not a PostGIS point column', location_column, tbl
                USING ERRCODE = 'LA014',
                      DETAIL = format('Its type is %s.', format_type(v_type, v_typmod)),
                      HINT = 'Use a geometry(Point, 4326) column (ALTER TABLE ... ADD COLUMN location geometry(Point, 4326)).';
        END IF;
        v_attnums := v_attnums || jsonb_build_object('location', v_attnum);
    END IF;

    -- owner: holds a rep id
    v_attnum := allocation._column_attnum(tbl, owner_column, 'owner');
    SELECT a.atttypid INTO v_type FROM pg_catalog.pg_attribute a WHERE a.attrelid = tbl AND a.attnum = v_attnum;
    IF v_type NOT IN ('bigint'::regtype, 'integer'::regtype) THEN
        RAISE EXCEPTION 'owner column "%" of % cannot hold a rep id', owner_column, tbl
            USING ERRCODE = 'LA015',
                  DETAIL = format('Its type is %s; rep ids are bigint.', format_type(v_type, NULL)),
                  HINT = format('ALTER TABLE %s ALTER COLUMN %I TYPE bigint USING ...;', tbl, owner_column);
    END IF;
    v_attnums := v_attnums || jsonb_build_object('owner', v_attnum);

    -- attributes: logical name -> column
    IF attributes IS NULL OR jsonb_typeof(attributes) <> 'object' THEN
        RAISE EXCEPTION 'attributes must be a JSON object'
            USING ERRCODE = 'LA016',
                  DETAIL = format('Got %s.', coalesce(attributes::text, 'NULL')),
                  HINT = 'Map logical names to columns, e.g. {"tier": "customer_tier", "crop": "main_crop"}.';
    END IF;
    FOR v_logical, v_col IN SELECT key, value #>> '{}' FROM jsonb_each(attributes) LOOP
        IF NOT v_logical = ANY (known) THEN
            RAISE EXCEPTION 'unknown attribute "%"', v_logical
                USING ERRCODE = 'LA016',
                      DETAIL = format('The attributes object maps "%s", which the engine does not know.', v_logical),
                      HINT = format('Known attributes: %s.', array_to_string(known, ', '));
        END IF;
        IF v_col IS NULL OR jsonb_typeof(attributes -> v_logical) <> 'string' THEN
            RAISE EXCEPTION 'attribute "%" must name a column', v_logical
                USING ERRCODE = 'LA016', DETAIL = format('Got %s.', attributes -> v_logical),
                      HINT = 'Give the column name as a JSON string.';
        END IF;
        v_attnum := allocation._column_attnum(tbl, v_col::name, format('%s attribute', v_logical));
        IF v_logical = 'tags' THEN
            SELECT a.atttypid INTO v_type FROM pg_catalog.pg_attribute a WHERE a.attrelid = tbl AND a.attnum = v_attnum;
            IF v_type NOT IN ('text[]'::regtype, 'varchar[]'::regtype) THEN
                RAISE EXCEPTION 'tags column "%" of % is not a text array', v_col, tbl
                    USING ERRCODE = 'LA016', DETAIL = format('Its type is %s.', format_type(v_type, NULL)),
                          HINT = 'Map tags to a text[] column.';
            END IF;
        END IF;
        IF v_logical = 'parent' THEN
            -- the parent is found by the key's unique index: it must be a value of the key's type
            SELECT a.atttypid INTO v_type FROM pg_catalog.pg_attribute a WHERE a.attrelid = tbl AND a.attnum = v_attnum;
            IF v_type IS DISTINCT FROM (SELECT a.atttypid FROM pg_catalog.pg_attribute a
                                         WHERE a.attrelid = tbl AND a.attname = key_column AND NOT a.attisdropped) THEN
                RAISE EXCEPTION 'parent column "%" of % does not have the key column''s type', v_col, tbl
                    USING ERRCODE = 'LA016',
                          DETAIL = format('Its type is %s; the key column %I is %s.', format_type(v_type, NULL), key_column,
                                          (SELECT format_type(a.atttypid, NULL) FROM pg_catalog.pg_attribute a
                                            WHERE a.attrelid = tbl AND a.attname = key_column AND NOT a.attisdropped)),
                          HINT = 'The parent column holds the key of the parent customer (a county distributor''s id).';
            END IF;
        END IF;
        v_attnums := v_attnums || jsonb_build_object(v_logical, v_attnum);
    END LOOP;

    -- the engine reads these columns with its owner's rights: only built-in types (no user casts)
    PERFORM allocation._check_column_types(tbl, key_column,
                                           (SELECT array_agg(x.value) FROM jsonb_each_text(attributes) x));

    EXECUTE format('SELECT count(*) FROM %s c WHERE c.%I IS NULL', tbl, key_column) INTO v_count;
    IF v_count > 0 THEN
        RAISE EXCEPTION '% row(s) of % have a NULL key', v_count, tbl
            USING ERRCODE = 'LA063',
                  DETAIL = format('Column %I is the key; every customer needs one to be registered.', key_column),
                  HINT = format('Give those rows a key, then ALTER TABLE %s ALTER COLUMN %I SET NOT NULL.', tbl, key_column);
    END IF;

    -- existing owners must be known reps
    EXECUTE format('SELECT min(%1$I)::text, count(*) FROM %2$s c WHERE %1$I IS NOT NULL
                     AND NOT EXISTS (SELECT 1 FROM allocation.rep r WHERE r.id = c.%1$I)', owner_column, tbl)
       INTO v_bad, v_count;
    IF v_count > 0 THEN
        RAISE EXCEPTION '% row(s) of % have an owner that is not a rep', v_count, tbl
            USING ERRCODE = 'LA020',
                  DETAIL = format('For example owner %s does not exist in allocation.rep.', v_bad),
                  HINT = 'Create the missing reps (or clear those owners) before calling allocation.manage().';
    END IF;

    UPDATE allocation.managed_table m
       SET active = true, key_column = _manage.key_column, location_column = _manage.location_column,
           owner_column = _manage.owner_column, attributes = _manage.attributes, attnums = v_attnums,
           managed_since = now(), table_name = v_name, location_datum = 'wgs84'
     WHERE m.tbl = _manage.tbl
    RETURNING m.id INTO v_id;
    IF v_id IS NULL THEN
        INSERT INTO allocation.managed_table (tbl, key_column, location_column, owner_column, attributes, attnums, table_name)
        VALUES (tbl, key_column, location_column, owner_column, attributes, v_attnums, v_name)
        RETURNING id INTO v_id;
    END IF;

    -- rows already in the table get their first ownership period (one event
    -- each: owned rows as pinned manual assignments, the rest in the pool) and,
    -- being no rule's decision, a state row; the event trigger recounts holdings
    EXECUTE format($q$
        WITH rows AS (
            SELECT c.%1$I::text AS key, c.%2$I AS rep_id, %3$s AS tier, %4$s AS crop, %5$s AS business_type,
                   CASE WHEN c.%2$I IS NULL THEN 'no owner when the table was attached'
                        ELSE 'owner when the table was attached' END AS reason
              FROM %6$s c),
        state AS (
            INSERT INTO allocation.customer_state (managed_id, key, rep_id, source, pinned, reason, tier, crop,
                                                   business_type, valid_from)
            SELECT $1, r.key, r.rep_id, CASE WHEN r.rep_id IS NULL THEN 'pool' ELSE 'manual' END,
                   r.rep_id IS NOT NULL, r.reason, r.tier, r.crop, r.business_type, $3
              FROM rows r
            RETURNING 1)
        INSERT INTO allocation.event (at, actor, kind, managed_id, table_name, key, to_rep, reason,
                                      source, pinned, period, tier, crop, business_type)
        SELECT $3, allocation._actor(), 'attach', $1, $2, r.key, r.rep_id, r.reason,
               CASE WHEN r.rep_id IS NULL THEN 'pool' ELSE 'manual' END, r.rep_id IS NOT NULL,
               'open', r.tier, r.crop, r.business_type
          FROM rows r$q$,
        key_column, owner_column,
        CASE WHEN attributes ? 'tier' THEN format('c.%I::text', attributes->>'tier') ELSE 'NULL' END,
        CASE WHEN attributes ? 'crop' THEN format('c.%I::text', attributes->>'crop') ELSE 'NULL' END,
        CASE WHEN attributes ? 'business_type' THEN format('c.%I::text', attributes->>'business_type') ELSE 'NULL' END,
        tbl) USING v_id, v_name, clock_timestamp();
    GET DIAGNOSTICS v_count = ROW_COUNT;
    -- (holdings: the attach events moved them, trigger ownership_loaded)
    PERFORM allocation._warn_over_capacity(v_id, NULL);    -- existing owners are kept, even over capacity

    EXECUTE format('CREATE TRIGGER zz_allocation_before BEFORE INSERT OR UPDATE ON %s
                    FOR EACH ROW EXECUTE FUNCTION allocation._row_trigger()', tbl);
    EXECUTE format('CREATE TRIGGER zz_allocation_after AFTER INSERT OR UPDATE OR DELETE ON %s
                    FOR EACH ROW EXECUTE FUNCTION allocation._row_trigger()', tbl);
    EXECUTE format('CREATE TRIGGER zz_allocation_stmt_before BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION allocation._stmt_trigger()', tbl);
    EXECUTE format('CREATE TRIGGER zz_allocation_stmt_after AFTER INSERT OR UPDATE OR DELETE ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION allocation._stmt_trigger()', tbl);
    IF v_kind = 'p' THEN
        -- row triggers are cloned to every partition; statement triggers are not (30b_partitions.sql)
        PERFORM allocation._partition_triggers(tbl);
    END IF;

    INSERT INTO allocation.event (actor, kind, managed_id, table_name, reason, detail)
    VALUES (allocation._actor(), 'manage', v_id, v_name, 'table attached',
            jsonb_build_object('key_column', key_column, 'location_column', location_column,
                               'owner_column', owner_column, 'attributes', attributes, 'existing_rows', v_count));
END
$$;
COMMENT ON FUNCTION allocation._manage(regclass, name, name, name, jsonb) IS 'internal: implementation of allocation.manage(), run as the extension owner by its gateway';

CREATE OR REPLACE FUNCTION allocation._enable_rep_security(tbl regclass)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
BEGIN
    PERFORM allocation._require_owner(tbl, 'enable row-level security on');
    m := allocation._managed(tbl);
    PERFORM allocation._drop_rep_policies(tbl);
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    -- roles that are no rep's login (the application, managers, analysts) keep seeing every row
    -- ... and the customers shared with it (share_customer()) while the share is valid
    -- (the shared keys are read once per statement: a hashed subplan)
    EXECUTE format('CREATE POLICY allocation_rep_read ON %s FOR SELECT
                    USING (allocation.current_rep_id() IS NULL OR %I = allocation.current_rep_id()
                           OR %I::text IN (SELECT allocation.shared_with_me(%L::regclass, false)))',
                   tbl, m.owner_column, m.key_column, tbl::oid);
    -- a rep may register a customer; the rules decide who gets it
    EXECUTE format('CREATE POLICY allocation_rep_insert ON %s FOR INSERT WITH CHECK (true)', tbl);
    -- a rep may edit its own customers; the owner column itself changes only through
    -- claim()/release() (the engine's trigger refuses it with LA026), while the rules may
    -- still move a customer when an edit re-evaluates it
    -- (and a collaborator the customers shared with it)
    EXECUTE format('CREATE POLICY allocation_rep_update ON %s FOR UPDATE
                    USING (allocation.current_rep_id() IS NULL OR %I = allocation.current_rep_id()
                           OR %I::text IN (SELECT allocation.shared_with_me(%L::regclass, true)))
                    WITH CHECK (true)', tbl, m.owner_column, m.key_column, tbl::oid);
    EXECUTE format('CREATE POLICY allocation_rep_delete ON %s FOR DELETE
                    USING (allocation.current_rep_id() IS NULL OR %I = allocation.current_rep_id())',
                   tbl, m.owner_column);
    EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.current_rep_id() TO PUBLIC');
    EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.shared_with_me(regclass, boolean) TO PUBLIC');
    EXECUTE format('GRANT USAGE ON SCHEMA allocation TO PUBLIC');
END
$$;
COMMENT ON FUNCTION allocation._enable_rep_security(regclass) IS 'internal: implementation of allocation.enable_rep_security(), run as the extension owner by its gateway';
COMMENT ON FUNCTION allocation.enable_rep_security(regclass) IS
'Row-level security on a managed table: a role that is a rep''s login sees, updates and deletes only the customers it owns (and may insert new ones), and sees (viewer) or sees and updates (collaborator) the customers shared with it while the share is valid; other roles are unaffected';

CREATE FUNCTION allocation._active_rep(p_rep bigint, p_inactive text)
RETURNS allocation.rep
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    r allocation.rep;
BEGIN
    SELECT * INTO r FROM allocation.rep x WHERE x.id = p_rep;
    IF r.id IS NULL THEN
        RAISE EXCEPTION 'rep % does not exist', p_rep USING ERRCODE = 'LA020',
              DETAIL = 'No row of allocation.rep has this id.', HINT = 'SELECT id, code FROM allocation.rep;';
    END IF;
    IF NOT r.active THEN
        RAISE EXCEPTION 'rep % is inactive', r.code USING ERRCODE = 'LA021', DETAIL = p_inactive, HINT = 'Choose an active rep.';
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION allocation._active_rep(bigint, text) IS 'internal: an existing active rep, or LA020 (none) / LA021 (inactive, with the given detail)';

-------------------------------------------------------------------------------
-- Ownership disputes (冲突仲裁): a rep contests the holder of a customer; while
-- the dispute is open the customer is frozen; a manager settles it from the
-- evidence of the log (or the presets settle it when they agree); and
-- explain_event() (75a_explain_event.sql) replays a past decision against the configuration then
-- (issue 13).  Not the duplicate-identity disputes of 71_duplicates.sql
-- (allocation.duplicate, resolve_dispute(), dismiss_dispute(), dispute_queue).
-------------------------------------------------------------------------------
CREATE TABLE allocation.ownership_dispute (
    id               bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    managed_id       integer NOT NULL REFERENCES allocation.managed_table (id) ON DELETE CASCADE,
    key              text NOT NULL,
    holder_rep       bigint NOT NULL,   -- no foreign keys: the history outlives a deleted rep, as the event log does
    claimant_rep     bigint NOT NULL,
    claim            text NOT NULL,
    status           text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'settled', 'dismissed')),
    opened_by        text NOT NULL,
    opened_at        timestamptz NOT NULL,
    winner_rep       bigint,
    automatic        boolean NOT NULL DEFAULT false,
    decided_by       text,
    decided_at       timestamptz,
    decision_reason  text,
    followup_cutoff  bigint,            -- the newest follow-up id when it was opened
    CONSTRAINT ownership_dispute_other_rep CHECK (holder_rep <> claimant_rep),
    CONSTRAINT ownership_dispute_decided CHECK ((status = 'open') = (decided_at IS NULL)),
    CONSTRAINT ownership_dispute_winner CHECK ((status = 'settled') = (winner_rep IS NOT NULL)
                                               AND (winner_rep IS NULL OR winner_rep IN (holder_rep, claimant_rep)))
);
-- one open dispute per customer: two concurrent opens cannot both succeed
CREATE UNIQUE INDEX ownership_dispute_one_open ON allocation.ownership_dispute (managed_id, key) WHERE status = 'open';
COMMENT ON TABLE allocation.ownership_dispute IS 'Ownership disputes: a rep (the claimant) contests the rep holding a customer; while open the customer is frozen (no claim, release, transfer, recycle, assign, owner UPDATE or rule re-evaluation moves it). Written by open_dispute(), settle_dispute(), dismiss_ownership_dispute() and auto_settle_disputes() only; at most one open per customer';
COMMENT ON COLUMN allocation.ownership_dispute.holder_rep IS 'the rep holding the customer when the dispute was opened';
COMMENT ON COLUMN allocation.ownership_dispute.claimant_rep IS 'the rep contesting the holder';
COMMENT ON COLUMN allocation.ownership_dispute.winner_rep IS 'settled: the holder or the claimant, who holds the customer after the settlement';
COMMENT ON COLUMN allocation.ownership_dispute.followup_cutoff IS 'the newest follow-up id when the dispute was opened: the first_followup preset and the evidence''s before_dispute count only follow-ups recorded by then (a follow-up logged later with an earlier date does not change the verdict)';
COMMENT ON COLUMN allocation.ownership_dispute.automatic IS 'settled by auto_settle_disputes() because the team''s presets agreed';

CREATE TABLE allocation.ownership_dispute_policy (
    id           bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    team_id      bigint REFERENCES allocation.team (id) ON DELETE CASCADE,
    auto_settle  boolean NOT NULL DEFAULT false,
    presets      text[] NOT NULL DEFAULT '{territory_owner,registration,first_followup}',
    note         text,
    CONSTRAINT ownership_dispute_policy_presets CHECK (cardinality(presets) > 0 AND array_position(presets, NULL) IS NULL
                                                       AND presets <@ ARRAY['territory_owner', 'registration', 'first_followup']),
    CONSTRAINT ownership_dispute_policy_team_uniq UNIQUE NULLS NOT DISTINCT (team_id)
);
COMMENT ON TABLE allocation.ownership_dispute_policy IS 'Automatic settlement of ownership disputes per team of the holder (and its sub-teams; NULL = every team; the nearest team wins): auto_settle_disputes() settles a dispute only when auto_settle is on and every preset listed gives the same winner. Written with allocation.dispute_policy()';
COMMENT ON COLUMN allocation.ownership_dispute_policy.presets IS 'the preset rules that must agree: territory_owner (the owner of the customer''s territory), registration (the rep that registered the customer first), first_followup (the side that followed it up first)';

-- The policy of a holder's team (nearest team first, then a parent, then the global row)
CREATE FUNCTION allocation._ownership_dispute_policy(p_holder bigint, OUT auto_settle boolean, OUT presets text[])
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT coalesce(p.auto_settle, false), coalesce(p.presets, '{territory_owner,registration,first_followup}')
      FROM (SELECT 1) one
      LEFT JOIN LATERAL (
            SELECT x.auto_settle, x.presets
              FROM allocation.ownership_dispute_policy x
             WHERE x.team_id IS NULL OR allocation._rep_in_team(p_holder, x.team_id)
             ORDER BY x.team_id IS NULL,
                      (WITH RECURSIVE up(id, depth) AS (
                           SELECT r.team_id, 0 FROM allocation.rep r WHERE r.id = p_holder
                           UNION ALL
                           SELECT t.parent_id, up.depth + 1 FROM allocation.team t JOIN up ON t.id = up.id
                            WHERE t.parent_id IS NOT NULL AND up.depth < 64)
                       SELECT min(up.depth) FROM up WHERE up.id = x.team_id)
             LIMIT 1) p ON true
$$;
COMMENT ON FUNCTION allocation._ownership_dispute_policy(bigint) IS 'internal: the ownership dispute policy that applies to a holder (nearest team first)';

-- The freeze: LA0D0 when the customer has an open ownership dispute.  Called by claim,
-- release, request/approve transfer and assign next to their lock checks (the C trigger
-- refuses any other owner change of a disputed customer the same way).
CREATE FUNCTION allocation._refuse_if_disputed(p_managed integer, p_key text)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    d allocation.ownership_dispute;
BEGIN
    SELECT * INTO d FROM allocation.ownership_dispute x
     WHERE x.managed_id = p_managed AND x.key = p_key AND x.status = 'open';
    IF d.id IS NOT NULL THEN
        RAISE EXCEPTION 'customer % is under dispute', p_key USING ERRCODE = 'LA0D0',
              DETAIL = format('Ownership dispute %s (rep %s contests rep %s, opened by %s) is open: the owner of the customer cannot change until it is settled or dismissed.',
                              d.id, (SELECT r.code FROM allocation.rep r WHERE r.id = d.claimant_rep),
                              (SELECT r.code FROM allocation.rep r WHERE r.id = d.holder_rep), d.opened_by),
              HINT = 'A manager decides with allocation.settle_dispute() or allocation.dismiss_ownership_dispute().';
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._refuse_if_disputed(integer, text) IS 'internal: refuses (LA0D0) an owner change of a customer with an open ownership dispute';

-- One event per step of a dispute (opened, settled, dismissed)
CREATE FUNCTION allocation._ownership_dispute_event(d allocation.ownership_dispute, p_kind text, p_reason text, p_detail jsonb)
RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS
$$
    INSERT INTO allocation.event (actor, kind, managed_id, table_name, key, from_rep, to_rep, reason, detail)
    SELECT allocation._actor(), p_kind, d.managed_id, m.table_name, d.key, d.holder_rep,
           CASE WHEN p_kind = 'ownership_dispute_opened' THEN d.claimant_rep ELSE d.winner_rep END, p_reason,
           pg_catalog.jsonb_build_object('ownership_dispute', d.id, 'status', d.status, 'holder', d.holder_rep,
                                         'claimant', d.claimant_rep, 'automatic', d.automatic) || coalesce(p_detail, '{}')
      FROM allocation.managed_table m WHERE m.id = d.managed_id
$$;
COMMENT ON FUNCTION allocation._ownership_dispute_event(allocation.ownership_dispute, text, text, jsonb) IS 'internal: the audit event of an ownership dispute step (from_rep = holder, to_rep = claimant when opened, the winner when settled)';

-------------------------------------------------------------------------------
-- Opening
-------------------------------------------------------------------------------
-- Whether a rep has a recorded link with a customer: it held it (an ownership event), it is
-- protected for it (报备), it followed it up, it has it shared now, or it owns the territory of
-- the current ownership
CREATE FUNCTION allocation._dispute_link(p_managed integer, p_key text, p_rep bigint)
RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    RETURN EXISTS (SELECT 1 FROM allocation.event e
                    WHERE e.key = p_key AND e.managed_id = p_managed AND e.period = 'open' AND e.to_rep = p_rep)
        OR EXISTS (SELECT 1 FROM allocation.protection x WHERE x.managed_id = p_managed AND x.key = p_key AND x.rep_id = p_rep)
        OR EXISTS (SELECT 1 FROM allocation.followup f WHERE f.managed_id = p_managed AND f.key = p_key AND f.rep_id = p_rep)
        OR EXISTS (SELECT 1 FROM allocation.customer_share s
                    WHERE s.managed_id = p_managed AND s.key = p_key AND s.rep_id = p_rep AND s.ended_at IS NULL)
        OR EXISTS (SELECT 1 FROM allocation._current(p_managed, p_key) a
                     JOIN allocation.territory t ON t.id = a.territory_id WHERE t.owner_rep_id = p_rep);
END
$$;
COMMENT ON FUNCTION allocation._dispute_link(integer, text, bigint) IS 'internal: whether a rep has a recorded link with a customer (held it, registered it, followed it up, has it shared, owns its territory): a rep may contest only such a customer';

CREATE FUNCTION allocation._open_dispute(tbl regclass, key text, claimant_rep bigint, claim text)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
    v_actor text := allocation._actor();
    v_me bigint := allocation._rep_of(v_actor);
    v_manager boolean := allocation._is_manager(v_actor);
    v_found boolean;
    v_owner bigint;
    r allocation.rep;
    d allocation.ownership_dispute;
BEGIN
    IF claim IS NULL OR btrim(claim) = '' THEN
        RAISE EXCEPTION 'a dispute needs a claim' USING ERRCODE = '22004',
              DETAIL = 'The claim says why the claimant should hold the customer; it is kept with the dispute and in the audit log.',
              HINT = 'Say why, e.g. ''I registered this dealer in March and visited it four times''.';
    END IF;
    IF key IS NULL THEN
        RAISE EXCEPTION 'customer key must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.open_dispute() was called with a NULL key.', HINT = 'Pass the customer''s key.';
    END IF;
    IF claimant_rep IS NULL THEN
        RAISE EXCEPTION 'a dispute needs a claimant rep' USING ERRCODE = '22004',
              DETAIL = 'allocation.open_dispute() was called with a NULL rep.',
              HINT = 'Pass the id of the rep that contests the holder (a rep passes its own).';
    END IF;
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'table must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.open_dispute() was called with a NULL table.', HINT = 'Pass the customer table, e.g. ''crm.customer''.';
    END IF;
    m := allocation._managed(tbl);
    -- who may open, before anything about the customer is said
    IF NOT v_manager AND v_me IS DISTINCT FROM claimant_rep THEN
        RAISE EXCEPTION 'role % may not open a dispute for rep %', v_actor, claimant_rep USING ERRCODE = 'LA0D3',
              DETAIL = 'A rep opens a dispute for itself; a manager opens one on a rep''s behalf.',
              HINT = CASE WHEN v_me IS NULL THEN 'The current role is no rep''s login; ask a manager.'
                          ELSE format('Pass your own rep id (%s).', v_me) END;
    END IF;
    r := allocation._active_rep(claimant_rep, 'An inactive rep cannot claim customers, so it cannot contest one.');
    PERFORM allocation._check_column_types(m.tbl, m.key_column, NULL);
    -- the customer's row lock orders the opening with claims, releases, transfers, recycling
    -- and settlements of this customer
    SELECT l.row_found, l.row_owner INTO v_found, v_owner FROM allocation._lock_customer_row(m, key, false) l;
    IF v_found IS NOT NULL THEN
        -- the key as the engine records it (the key column's own text form: '01' is customer 1)
        SELECT u.r[1] INTO key FROM allocation._table_rows(m.tbl, ARRAY[m.key_column::text], key, '') u(r);
    END IF;
    -- a rep contests only a customer it has a recorded link with (before anything about the
    -- customer is said): it held it, registered it, followed it up, has it shared, or owns the
    -- territory it was decided in; a manager opens for any rep
    IF NOT v_manager AND (v_found IS NULL OR NOT allocation._dispute_link(m.id, key, claimant_rep)) THEN
        RAISE EXCEPTION 'rep % has no recorded link with customer %', r.code, key USING ERRCODE = 'LA0D3',
              DETAIL = 'A rep contests a customer it held, registered, followed up, has shared with it, or whose territory it owns.',
              HINT = 'Ask a manager to open the dispute for you.';
    END IF;
    IF v_found IS NULL THEN
        RAISE EXCEPTION 'customer % not found in %', key, tbl USING ERRCODE = 'LA062',
              DETAIL = format('No row of %s has %s = %s.', tbl, m.key_column, key), HINT = 'Check the key.';
    END IF;
    IF v_owner IS NULL THEN
        RAISE EXCEPTION 'customer % is in the public pool', key USING ERRCODE = 'LA0D5',
              DETAIL = 'A dispute contests the rep holding a customer; nobody holds this one.',
              HINT = 'A rep takes a pool customer with allocation.claim().';
    END IF;
    IF v_owner = claimant_rep THEN
        RAISE EXCEPTION 'customer % is already held by rep %', key, r.code USING ERRCODE = 'LA0D5',
              DETAIL = 'The claimant is the holder.', HINT = 'Nothing to dispute.';
    END IF;
    SELECT * INTO d FROM allocation.ownership_dispute x
     WHERE x.managed_id = m.id AND x.key = _open_dispute.key AND x.status = 'open';
    IF d.id IS NULL THEN
        BEGIN
            INSERT INTO allocation.ownership_dispute (managed_id, key, holder_rep, claimant_rep, claim, opened_by, opened_at,
                                                      followup_cutoff)
            VALUES (m.id, key, v_owner, claimant_rep, claim, v_actor, pg_catalog.clock_timestamp(),
                    coalesce((SELECT max(f.id) FROM allocation.followup f), 0))
            RETURNING * INTO d;
        EXCEPTION WHEN unique_violation THEN
            -- (a backstop: the row lock above already orders two openings)
            SELECT * INTO d FROM allocation.ownership_dispute x
             WHERE x.managed_id = m.id AND x.key = _open_dispute.key AND x.status = 'open';
            d.status := 'taken';
        END;
    ELSE
        d.status := 'taken';
    END IF;
    IF d.status = 'taken' THEN
        RAISE EXCEPTION 'customer % already has an open dispute', key USING ERRCODE = 'LA0D4',
              DETAIL = format('Ownership dispute %s (rep %s contests rep %s, opened by %s) waits for a decision.', d.id,
                              (SELECT x.code FROM allocation.rep x WHERE x.id = d.claimant_rep),
                              (SELECT x.code FROM allocation.rep x WHERE x.id = d.holder_rep), d.opened_by),
              HINT = 'Add your evidence there (follow-ups); a manager settles or dismisses it first.';
    END IF;
    PERFORM allocation._ownership_dispute_event(d, 'ownership_dispute_opened', claim,
                                                pg_catalog.jsonb_build_object('opened_by', v_actor));
    RETURN d.id;
END
$$;
COMMENT ON FUNCTION allocation._open_dispute(regclass, text, bigint, text) IS 'internal: implementation of allocation.open_dispute(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.open_dispute(tbl regclass, key text, claimant_rep bigint, claim text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.open_dispute(regclass, text, bigint, text) IS
'A rep (for itself) or a manager (for a rep) contests the rep holding a customer; returns the dispute id. Until it is settled or dismissed the customer is frozen (LA0D0): no claim, release, transfer, recycle, assign, owner UPDATE or rule re-evaluation moves it';

-------------------------------------------------------------------------------
-- Evidence, from the log only
-------------------------------------------------------------------------------
-- A rep as evidence names it
CREATE FUNCTION allocation._rep_json(p_rep bigint)
RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT CASE WHEN p_rep IS NOT NULL THEN
           pg_catalog.jsonb_build_object('id', p_rep, 'code', r.code, 'name', r.name, 'team_id', r.team_id,
                                         'active', r.active, 'capacity', r.capacity) END
      FROM (SELECT 1) one LEFT JOIN allocation.rep r ON r.id = p_rep
$$;
COMMENT ON FUNCTION allocation._rep_json(bigint) IS 'internal: a rep as dispute evidence names it (id, code, name, team, active, capacity)';

-- The verdict of each preset rule for a dispute (the winner's rep id, NULL = no verdict)
CREATE FUNCTION allocation._dispute_presets(d allocation.ownership_dispute)
RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    a record;
    t allocation.territory;
    pr allocation.protection;
    v_first record;
    v_reg bigint;
    v_reg_why text;
    v_terr bigint;
    v_terr_why text;
    v_fu bigint;
    v_fu_why text;
    f_h timestamptz;
    f_c timestamptz;
    v jsonb;
    v_winners bigint[];
BEGIN
    -- territory owner: the owner of the territory of the current ownership (as recorded)
    SELECT * INTO a FROM allocation._current(d.managed_id, d.key);
    SELECT * INTO t FROM allocation.territory x WHERE x.id = a.territory_id;
    IF t.id IS NULL THEN
        v_terr_why := 'the current ownership records no territory';
    ELSIF t.owner_rep_id IN (d.holder_rep, d.claimant_rep) THEN
        v_terr := t.owner_rep_id;
        v_terr_why := format('territory %s is owned by rep %s', t.code, (SELECT x.code FROM allocation.rep x WHERE x.id = t.owner_rep_id));
    ELSIF t.owner_rep_id IS NOT NULL THEN
        v_terr_why := format('territory %s is owned by rep %s, neither side', t.code, (SELECT x.code FROM allocation.rep x WHERE x.id = t.owner_rep_id));
    ELSIF t.owner_team_id IS NOT NULL THEN
        IF allocation._rep_in_team(d.holder_rep, t.owner_team_id) <> allocation._rep_in_team(d.claimant_rep, t.owner_team_id) THEN
            v_terr := CASE WHEN allocation._rep_in_team(d.holder_rep, t.owner_team_id) THEN d.holder_rep ELSE d.claimant_rep END;
            v_terr_why := format('territory %s is owned by team %s, of which only rep %s is a member', t.code,
                                 (SELECT x.code FROM allocation.team x WHERE x.id = t.owner_team_id),
                                 (SELECT x.code FROM allocation.rep x WHERE x.id = v_terr));
        ELSE
            v_terr_why := format('territory %s is owned by team %s: %s', t.code,
                                 (SELECT x.code FROM allocation.team x WHERE x.id = t.owner_team_id),
                                 CASE WHEN allocation._rep_in_team(d.holder_rep, t.owner_team_id) THEN 'both sides are members'
                                      ELSE 'neither side is a member' END);
        END IF;
    ELSE
        v_terr_why := format('territory %s has no owner', t.code);
    END IF;
    -- registration: the rep that registered the customer (报备): its protection row, else the
    -- rep whose login inserted it (the actor of its first ownership event)
    SELECT * INTO pr FROM allocation.protection x WHERE x.managed_id = d.managed_id AND x.key = d.key;
    SELECT e.id, e.at, e.actor, allocation._rep_of(e.actor) AS rep INTO v_first
      FROM allocation.event e
     WHERE e.key = d.key AND e.managed_id = d.managed_id AND e.period IS NOT NULL
     ORDER BY e.id LIMIT 1;
    v_reg := coalesce(pr.rep_id, v_first.rep);
    IF v_reg IS NULL THEN
        v_reg := NULL;
        v_reg_why := CASE WHEN v_first.id IS NULL THEN 'no ownership event records the registration'
                          ELSE format('it was registered by %s, no rep''s login, at %s', v_first.actor, v_first.at) END;
    ELSE
        v_reg_why := CASE WHEN pr.key IS NOT NULL
                          THEN format('rep %s registered it at %s (protection until %s)',
                                      (SELECT x.code FROM allocation.rep x WHERE x.id = pr.rep_id), pr.since, pr.until)
                          ELSE format('rep %s registered it (inserted it as its login) at %s',
                                      (SELECT x.code FROM allocation.rep x WHERE x.id = v_reg), v_first.at) END;
        IF v_reg NOT IN (d.holder_rep, d.claimant_rep) THEN
            v_reg_why := v_reg_why || ', neither side';
            v_reg := NULL;
        END IF;
    END IF;
    -- first follow-up: the side that followed the customer up first (before the dispute)
    -- (only follow-ups recorded before the opening: one logged later with an earlier date does not count)
    SELECT min(f.at) INTO f_h FROM allocation.followup f
     WHERE f.managed_id = d.managed_id AND f.key = d.key AND f.rep_id = d.holder_rep AND f.at <= d.opened_at
       AND f.id <= coalesce(d.followup_cutoff, 0);
    SELECT min(f.at) INTO f_c FROM allocation.followup f
     WHERE f.managed_id = d.managed_id AND f.key = d.key AND f.rep_id = d.claimant_rep AND f.at <= d.opened_at
       AND f.id <= coalesce(d.followup_cutoff, 0);
    IF f_h IS NULL AND f_c IS NULL THEN
        v_fu_why := 'neither side recorded a follow-up before the dispute';
    ELSIF f_h IS NOT DISTINCT FROM f_c THEN
        v_fu_why := format('both sides followed it up first at %s', f_h);
    ELSE
        v_fu := CASE WHEN f_c IS NULL OR f_h < f_c THEN d.holder_rep ELSE d.claimant_rep END;
        v_fu_why := format('rep %s followed it up first, at %s (the other side: %s)',
                           (SELECT x.code FROM allocation.rep x WHERE x.id = v_fu), least(f_h, f_c),
                           CASE WHEN f_h IS NULL OR f_c IS NULL THEN 'never' ELSE greatest(f_h, f_c)::text END);
    END IF;
    v := pg_catalog.jsonb_build_object(
            'territory_owner', pg_catalog.jsonb_build_object('winner', v_terr, 'why', v_terr_why),
            'registration', pg_catalog.jsonb_build_object('winner', v_reg, 'why', v_reg_why),
            'first_followup', pg_catalog.jsonb_build_object('winner', v_fu, 'why', v_fu_why));
    SELECT pg_catalog.array_agg(DISTINCT w) INTO v_winners FROM unnest(ARRAY[v_terr, v_reg, v_fu]) w WHERE w IS NOT NULL;
    RETURN pg_catalog.jsonb_build_object('verdicts', (SELECT pg_catalog.jsonb_object_agg(k, x.value || pg_catalog.jsonb_build_object(
                                                             'side', CASE (x.value ->> 'winner')::bigint WHEN d.holder_rep THEN 'holder'
                                                                                                         WHEN d.claimant_rep THEN 'claimant' END))
                                                        FROM pg_catalog.jsonb_each(v) x(k, value)),
                                         'agree', coalesce(cardinality(v_winners) = 1 AND v_terr IS NOT NULL AND v_reg IS NOT NULL AND v_fu IS NOT NULL, false),
                                         'winner_if_agreed', CASE WHEN cardinality(v_winners) = 1 AND v_terr IS NOT NULL
                                                                   AND v_reg IS NOT NULL AND v_fu IS NOT NULL THEN v_winners[1] END);
END
$$;
COMMENT ON FUNCTION allocation._dispute_presets(allocation.ownership_dispute) IS 'internal: the verdict of each preset rule (territory owner, registration, first follow-up) for a dispute, and whether all three agree';

-- Configuration events (config_change) about a rule, territory or reps after an event id
CREATE FUNCTION allocation._config_changes_after(p_event bigint, p_rule bigint, p_territory bigint, p_reps bigint[])
RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'event_id', e.id, 'at', e.at, 'actor', e.actor, 'table', e.detail ->> 'table', 'id', (e.detail ->> 'id')::bigint,
               'op', e.detail ->> 'op', 'before', e.detail -> 'before', 'after', e.detail -> 'after') ORDER BY e.id), '[]')
      FROM allocation.event e
     WHERE e.id > p_event AND e.kind = 'config_change'
       AND ((e.detail ->> 'table' = 'rule' AND (e.detail ->> 'id')::bigint = p_rule)
            OR (e.detail ->> 'table' = 'territory' AND (e.detail ->> 'id')::bigint = p_territory)
            OR (e.detail ->> 'table' = 'rep' AND (e.detail ->> 'id')::bigint = ANY (p_reps))
            OR (e.detail ->> 'op' = 'truncate' AND e.detail ->> 'table' IN ('rule', 'territory', 'rep')))
$$;
COMMENT ON FUNCTION allocation._config_changes_after(bigint, bigint, bigint, bigint[]) IS 'internal: the config_change events about a rule, a territory or reps after an event (their before/after row images)';

-- Everything a manager needs to decide a dispute, read from the log and today's configuration
CREATE FUNCTION allocation._dispute_evidence_of(d allocation.ownership_dispute)
RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table := allocation._managed_by_id(d.managed_id);
    a record;
    dec record;
    pr allocation.protection;
    v_terr jsonb;
    v_rule jsonb;
    v_explain jsonb;
    v_first jsonb;
    v_history jsonb;
BEGIN
    SELECT * INTO a FROM allocation._current(d.managed_id, d.key);
    SELECT * INTO pr FROM allocation.protection x WHERE x.managed_id = d.managed_id AND x.key = d.key;
    -- the ownership history (the log's ownership events), oldest first
    SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'event_id', e.id, 'at', e.at, 'kind', e.kind, 'actor', e.actor, 'actor_rep', allocation._rep_of(e.actor),
               'from_rep', e.from_rep, 'to_rep', e.to_rep, 'source', coalesce(e.source, 'rule'), 'pinned', e.pinned,
               'rule_id', e.rule_id, 'territory_id', e.territory_id, 'period', e.period, 'reason', e.reason) ORDER BY e.id), '[]')
      INTO v_history
      FROM allocation.event e WHERE e.key = d.key AND e.managed_id = d.managed_id AND e.period IS NOT NULL;
    SELECT pg_catalog.jsonb_agg(x.value ORDER BY x.ord) INTO v_first
      FROM pg_catalog.jsonb_array_elements(v_history) WITH ORDINALITY x(value, ord) WHERE x.ord <= 3;
    -- the decision that gave the customer to its holder: the newest ownership event
    SELECT e.id, e.at, e.kind, e.actor, e.rule_id, e.territory_id, e.source INTO dec
      FROM allocation.event e
     WHERE e.key = d.key AND e.managed_id = d.managed_id AND e.period = 'open'
     ORDER BY e.id DESC LIMIT 1;
    SELECT pg_catalog.jsonb_build_object('id', r.id, 'name', r.name, 'priority', r.priority, 'enabled', r.enabled, 'mode', r.mode,
                                         'territory_id', r.territory_id, 'tiers', r.tiers, 'crops', r.crops,
                                         'business_types', r.business_types, 'crop_zones', r.crop_zones, 'tags', r.tags,
                                         'condition', r.condition, 'target_kind', r.target_kind, 'target_rep_id', r.target_rep_id,
                                         'target_team_id', r.target_team_id, 'policy', r.policy)
      INTO v_rule FROM allocation.rule r WHERE r.id = coalesce(a.rule_id, dec.rule_id);
    SELECT pg_catalog.jsonb_build_object('id', t.id, 'code', t.code, 'name', t.name, 'owner_rep_id', t.owner_rep_id,
                                         'owner_team_id', t.owner_team_id, 'exclusive', t.exclusive, 'priority', t.priority,
                                         'crop_zones', t.crop_zones)
      INTO v_terr FROM allocation.territory t WHERE t.id = coalesce(a.territory_id, dec.territory_id);
    -- what the rules decide today (no side effects; NULL when the table is gone)
    IF m.active THEN
        BEGIN
            v_explain := allocation.explain(m.tbl, d.key);
        EXCEPTION WHEN OTHERS THEN
            v_explain := pg_catalog.jsonb_build_object('error', SQLERRM, 'sqlstate', SQLSTATE);
        END;
    END IF;
    RETURN pg_catalog.jsonb_build_object(
        'dispute', pg_catalog.jsonb_build_object(
            'id', d.id, 'table', m.table_name, 'key', d.key, 'status', d.status, 'claim', d.claim,
            'opened_by', d.opened_by, 'opened_at', d.opened_at,
            'holder', allocation._rep_json(d.holder_rep), 'claimant', allocation._rep_json(d.claimant_rep),
            'winner_rep', d.winner_rep, 'automatic', d.automatic, 'decided_by', d.decided_by,
            'decided_at', d.decided_at, 'decision_reason', d.decision_reason),
        'current', pg_catalog.jsonb_build_object('rep_id', a.rep_id, 'since', a.valid_from, 'source', a.source,
                                                 'pinned', a.pinned, 'rule_id', a.rule_id, 'territory_id', a.territory_id,
                                                 'tier', a.tier, 'crop', a.crop, 'business_type', a.business_type),
        'registration', pg_catalog.jsonb_build_object(
            'first_events', coalesce(v_first, '[]'),
            'registered_by', v_first -> 0 -> 'actor', 'registered_by_rep', v_first -> 0 -> 'actor_rep',
            'registered_at', v_first -> 0 -> 'at',
            'protection', CASE WHEN pr.key IS NOT NULL THEN
                              pg_catalog.jsonb_build_object('rep_id', pr.rep_id, 'since', pr.since, 'until', pr.until,
                                                            'in_force_at_opening', pr.until > d.opened_at) END),
        'ownership_history', v_history,
        'followups', (SELECT pg_catalog.jsonb_build_object(
                          'holder', coalesce(pg_catalog.jsonb_agg(f.j ORDER BY f.at, f.id) FILTER (WHERE f.rep_id = d.holder_rep), '[]'),
                          'claimant', coalesce(pg_catalog.jsonb_agg(f.j ORDER BY f.at, f.id) FILTER (WHERE f.rep_id = d.claimant_rep), '[]'),
                          'others', count(*) FILTER (WHERE f.rep_id IS DISTINCT FROM d.holder_rep AND f.rep_id IS DISTINCT FROM d.claimant_rep))
                        FROM (SELECT x.id, x.at, x.rep_id,
                                     pg_catalog.jsonb_build_object('id', x.id, 'at', x.at, 'kind', x.kind, 'outcome', x.outcome,
                                                                   'progress', x.progress, 'note', x.note, 'recorded_by', x.recorded_by,
                                                                   'before_dispute', x.at <= d.opened_at AND x.id <= coalesce(d.followup_cutoff, 0)) AS j
                                FROM allocation.followup x WHERE x.managed_id = d.managed_id AND x.key = d.key) f),
        'deals', (SELECT pg_catalog.jsonb_build_object(
                      'source', 'allocation.deal (record_deal()) with the amount credited to each side by its frozen split; follow-ups of kind deal are under followups',
                      'holder', coalesce(pg_catalog.jsonb_agg(x.j ORDER BY x.at, x.id) FILTER (WHERE x.rep_id = d.holder_rep), '[]'),
                      'claimant', coalesce(pg_catalog.jsonb_agg(x.j ORDER BY x.at, x.id) FILTER (WHERE x.rep_id = d.claimant_rep), '[]'),
                      'total', coalesce((SELECT sum(y.amount) FROM allocation.deal y WHERE y.managed_id = d.managed_id AND y.key = d.key), 0))
                    FROM (SELECT dl.id, dl.at, sp.rep_id,
                                 pg_catalog.jsonb_build_object('deal', dl.id, 'at', dl.at, 'ref', dl.ref, 'amount', dl.amount,
                                                               'credited', sp.amount, 'share', sp.share,
                                                               'before_dispute', dl.at <= d.opened_at) AS j
                            FROM allocation.deal dl JOIN allocation.deal_split sp ON sp.deal_id = dl.id
                           WHERE dl.managed_id = d.managed_id AND dl.key = d.key) x),
        'decision', pg_catalog.jsonb_build_object(
            'event_id', dec.id, 'at', dec.at, 'kind', dec.kind, 'actor', dec.actor, 'source', coalesce(dec.source, 'rule'),
            'rule', v_rule, 'territory', v_terr,
            'changed_since', allocation._config_changes_after(coalesce(dec.id, 0), coalesce(a.rule_id, dec.rule_id),
                                                              coalesce(a.territory_id, dec.territory_id),
                                                              ARRAY[d.holder_rep, d.claimant_rep]),
            'explain_event', 'allocation.explain_event(event_id) replays this decision against the configuration then'),
        'explain_today', v_explain,
        'presets', allocation._dispute_presets(d));
END
$$;
COMMENT ON FUNCTION allocation._dispute_evidence_of(allocation.ownership_dispute) IS 'internal: the evidence of an ownership dispute (registration, ownership history, each side''s follow-ups and deals, the deciding rule and territory and their changes since, explain() today, the presets'' verdicts)';

-- The evidence as one side (a rep) reads it: the other side's follow-ups and deals as dates and kinds
CREATE FUNCTION allocation._dispute_evidence_redacted(ev jsonb, p_other text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT pg_catalog.jsonb_set(pg_catalog.jsonb_set(ev - 'explain_today', ARRAY['followups', p_other],
               coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('at', x -> 'at', 'kind', x -> 'kind',
                                                                                  'before_dispute', x -> 'before_dispute'))
                           FROM pg_catalog.jsonb_array_elements(ev -> 'followups' -> p_other) x), '[]')),
               ARRAY['deals', p_other],
               coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('at', x -> 'at', 'before_dispute', x -> 'before_dispute'))
                           FROM pg_catalog.jsonb_array_elements(ev -> 'deals' -> p_other) x), '[]'))
           - 'current'
           || pg_catalog.jsonb_build_object('redacted', format('the %s''s notes, outcomes and amounts, the customer''s current attributes and what explain() decides today are for managers and analysts', p_other))
$$;
COMMENT ON FUNCTION allocation._dispute_evidence_redacted(jsonb, text) IS 'internal: the evidence of a dispute as one of its sides (a rep) reads it: the other side''s follow-ups and deals as dates only, no explain() of today, no current attributes';

CREATE FUNCTION allocation._dispute_evidence(dispute_id bigint)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    d allocation.ownership_dispute;
    v_actor text := allocation._actor();
BEGIN
    IF dispute_id IS NULL THEN
        RAISE EXCEPTION 'dispute id must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.dispute_evidence() names the dispute by its id.',
              HINT = 'SELECT id FROM allocation.ownership_dispute WHERE status = ''open'';';
    END IF;
    SELECT * INTO d FROM allocation.ownership_dispute x WHERE x.id = dispute_id;
    -- managers and readers of the whole picture; a rep for the disputes it is a side of
    IF NOT allocation._is_manager(v_actor) AND NOT pg_catalog.has_table_privilege(v_actor, 'allocation.ownership_dispute', 'SELECT')
       AND (d.id IS NULL OR allocation._rep_of(v_actor) IS DISTINCT FROM d.holder_rep)
       AND (d.id IS NULL OR allocation._rep_of(v_actor) IS DISTINCT FROM d.claimant_rep) THEN
        RAISE EXCEPTION 'role % may not read the evidence of dispute %', v_actor, dispute_id USING ERRCODE = 'LA0D3',
              DETAIL = 'The evidence of a dispute is for managers, analysts and the two reps it is between.',
              HINT = 'Ask a manager.';
    END IF;
    IF d.id IS NULL THEN
        RAISE EXCEPTION 'ownership dispute % does not exist', dispute_id USING ERRCODE = 'LA0D1',
              DETAIL = 'No row of allocation.ownership_dispute has this id.',
              HINT = 'SELECT id FROM allocation.ownership_dispute WHERE status = ''open'';';
    END IF;
    IF allocation._is_manager(v_actor) OR pg_catalog.has_table_privilege(v_actor, 'allocation.ownership_dispute', 'SELECT') THEN
        RETURN allocation._dispute_evidence_of(d);
    END IF;
    -- a side reads its own follow-ups and deals in full, the other side's as dates and kinds only,
    -- and not what explain() decides today (the customer's row, which its row-level security may hide)
    RETURN allocation._dispute_evidence_redacted(allocation._dispute_evidence_of(d),
                                                 CASE WHEN allocation._rep_of(v_actor) = d.holder_rep THEN 'claimant' ELSE 'holder' END);
END
$$;
COMMENT ON FUNCTION allocation._dispute_evidence(bigint) IS 'internal: implementation of allocation.dispute_evidence(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.dispute_evidence(dispute_id bigint)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.dispute_evidence(bigint) IS
'Everything a manager needs to decide an ownership dispute, from the log: who registered the customer first, its ownership history, each side''s follow-ups and deals, the rule and territory that decided it and their configuration changes since, what explain() decides today, and the verdict of each preset (territory owner, registration, first follow-up) with whether they agree';

-------------------------------------------------------------------------------
-- Deciding
-------------------------------------------------------------------------------
-- A dispute locked for a decision, after its customer's row (the order of open_dispute()):
-- LA0D1 when there is none, LA0D2 when it is decided
CREATE FUNCTION allocation._lock_ownership_dispute(p_id bigint, OUT d allocation.ownership_dispute, OUT m allocation.managed_table,
                                                   OUT row_found boolean, OUT row_owner bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    SELECT * INTO d FROM allocation.ownership_dispute x WHERE x.id = p_id;
    IF d.id IS NULL THEN
        RAISE EXCEPTION 'ownership dispute % does not exist', p_id USING ERRCODE = 'LA0D1',
              DETAIL = 'No row of allocation.ownership_dispute has this id.',
              HINT = 'SELECT id FROM allocation.ownership_dispute WHERE status = ''open'';';
    END IF;
    m := allocation._managed_by_id(d.managed_id);
    IF m.active THEN
        SELECT l.row_found, l.row_owner INTO row_found, row_owner FROM allocation._lock_customer_row(m, d.key, false) l;
    END IF;
    SELECT * INTO d FROM allocation.ownership_dispute x WHERE x.id = p_id FOR UPDATE;
    IF d.status <> 'open' THEN
        RAISE EXCEPTION 'ownership dispute % is %, not open', p_id, d.status USING ERRCODE = 'LA0D2',
              DETAIL = format('It was %s by %s at %s.', d.status, d.decided_by, d.decided_at),
              HINT = 'Only an open dispute can be settled or dismissed; open a new one if the question comes up again.';
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._lock_ownership_dispute(bigint) IS 'internal: locks an open ownership dispute for a decision, after its customer''s row (two decisions of one dispute serialize here)';

-- Settles a locked dispute: the winner holds the customer, moved through the transfer machinery
CREATE FUNCTION allocation._settle_locked(d allocation.ownership_dispute, m allocation.managed_table, p_owner bigint,
                                          p_winner bigint, p_reason text, p_automatic boolean)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_actor text := allocation._actor();
    v_evidence jsonb := allocation._dispute_evidence_of(d);
BEGIN
    UPDATE allocation.ownership_dispute x
       SET status = 'settled', winner_rep = p_winner, automatic = p_automatic, decided_by = v_actor,
           decided_at = now(), decision_reason = p_reason
     WHERE x.id = d.id RETURNING * INTO d;
    PERFORM allocation._ownership_dispute_event(d, 'ownership_dispute_settled', p_reason,
                                                pg_catalog.jsonb_build_object('winner_side', CASE p_winner WHEN d.holder_rep THEN 'holder' ELSE 'claimant' END,
                                                                              'evidence', v_evidence));
    IF p_owner IS DISTINCT FROM p_winner THEN
        -- as a transfer: both reps' holdings counters in id order, then the owner change through
        -- the managed table (its trigger checks the winner: active, capacity, exclusive territory)
        PERFORM allocation._lock_counter(least(p_owner, p_winner));
        IF p_owner IS NOT NULL THEN
            PERFORM allocation._lock_counter(greatest(p_owner, p_winner));
        END IF;
        PERFORM allocation._owner_update(m.tbl, d.key, p_winner, 'transfer',
                                         format('ownership dispute %s settled by %s: %s', d.id, v_actor, p_reason));
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._settle_locked(allocation.ownership_dispute, allocation.managed_table, bigint, bigint, text, boolean) IS 'internal: settles a locked ownership dispute (event with the evidence snapshot; a claimant that wins gets the customer as by a transfer)';

CREATE FUNCTION allocation._settle_dispute(id bigint, winner_rep bigint, reason text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_actor text := allocation._actor();
    l record;
BEGIN
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'a settlement needs a reason' USING ERRCODE = '22004',
              DETAIL = 'The reason is kept with the dispute and in the audit log.',
              HINT = 'Say why, e.g. ''B registered the dealer first and visited it twice''.';
    END IF;
    IF id IS NULL THEN
        RAISE EXCEPTION 'dispute id must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.settle_dispute() names the dispute by its id.',
              HINT = 'SELECT id FROM allocation.ownership_dispute WHERE status = ''open'';';
    END IF;
    IF winner_rep IS NULL THEN
        RAISE EXCEPTION 'a settlement needs a winner' USING ERRCODE = '22004',
              DETAIL = 'allocation.settle_dispute() was called with a NULL rep.',
              HINT = 'Name the holder or the claimant; to reject the dispute without a winner use allocation.dismiss_ownership_dispute().';
    END IF;
    IF NOT allocation._is_manager(v_actor) THEN
        RAISE EXCEPTION 'role % may not settle dispute %', v_actor, id USING ERRCODE = 'LA0D3',
              DETAIL = 'A manager settles ownership disputes.', HINT = 'Ask a manager.';
    END IF;
    SELECT * INTO l FROM allocation._lock_ownership_dispute(id) x;
    IF winner_rep NOT IN ((l.d).holder_rep, (l.d).claimant_rep) THEN
        RAISE EXCEPTION 'rep % is no side of dispute %', winner_rep, id USING ERRCODE = 'LA0D6',
              DETAIL = format('The dispute is between rep %s (holder) and rep %s (claimant).',
                              (SELECT x.code FROM allocation.rep x WHERE x.id = (l.d).holder_rep),
                              (SELECT x.code FROM allocation.rep x WHERE x.id = (l.d).claimant_rep)),
              HINT = 'The winner is the holder or the claimant; a manager can assign() the customer to anyone after the dispute is decided.';
    END IF;
    IF NOT (l.m).active THEN
        RAISE EXCEPTION 'table % is not managed any more', (l.m).table_name USING ERRCODE = 'LA012',
              DETAIL = format('Dispute %s concerns a table that was unmanaged or dropped.', id),
              HINT = 'Dismiss the dispute.';
    END IF;
    IF l.row_found IS NULL THEN
        RAISE EXCEPTION 'customer % not found in %', (l.d).key, (l.m).table_name USING ERRCODE = 'LA062',
              DETAIL = format('Dispute %s names a customer that is gone.', id), HINT = 'Dismiss the dispute.';
    END IF;
    PERFORM allocation._settle_locked(l.d, l.m, l.row_owner, winner_rep, reason, false);
END
$$;
COMMENT ON FUNCTION allocation._settle_dispute(bigint, bigint, text) IS 'internal: implementation of allocation.settle_dispute(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.settle_dispute(id bigint, winner_rep bigint, reason text)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.settle_dispute(bigint, bigint, text) IS
'A manager settles an open ownership dispute for the holder or the claimant, with a reason; a claimant that wins gets the customer as by a transfer (its capacity, activity and exclusive territories are checked). The event stores the evidence snapshot; the freeze ends';

CREATE FUNCTION allocation._dismiss_ownership_dispute(id bigint, reason text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_actor text := allocation._actor();
    l record;
    d allocation.ownership_dispute;
BEGIN
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'a dismissal needs a reason' USING ERRCODE = '22004',
              DETAIL = 'The reason is kept with the dispute and in the audit log.',
              HINT = 'Say why, e.g. ''no evidence the claimant ever visited the dealer''.';
    END IF;
    IF id IS NULL THEN
        RAISE EXCEPTION 'dispute id must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.dismiss_ownership_dispute() names the dispute by its id.',
              HINT = 'SELECT id FROM allocation.ownership_dispute WHERE status = ''open'';';
    END IF;
    SELECT * INTO d FROM allocation.ownership_dispute x WHERE x.id = _dismiss_ownership_dispute.id;
    -- a manager, or the claimant's own rep withdrawing its claim
    IF NOT allocation._is_manager(v_actor)
       AND (d.id IS NULL OR allocation._rep_of(v_actor) IS DISTINCT FROM d.claimant_rep) THEN
        RAISE EXCEPTION 'role % may not dismiss dispute %', v_actor, id USING ERRCODE = 'LA0D3',
              DETAIL = 'A manager dismisses an ownership dispute; the claimant can withdraw its own.',
              HINT = 'Ask a manager.';
    END IF;
    SELECT * INTO l FROM allocation._lock_ownership_dispute(id) x;
    d := l.d;
    UPDATE allocation.ownership_dispute x
       SET status = 'dismissed', decided_by = v_actor, decided_at = now(), decision_reason = reason
     WHERE x.id = d.id RETURNING * INTO d;
    PERFORM allocation._ownership_dispute_event(d, 'ownership_dispute_dismissed', reason,
                                                pg_catalog.jsonb_build_object('withdrawn', NOT allocation._is_manager(v_actor),
                                                                              'evidence', allocation._dispute_evidence_of(d)));
END
$$;
COMMENT ON FUNCTION allocation._dismiss_ownership_dispute(bigint, text) IS 'internal: implementation of allocation.dismiss_ownership_dispute(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.dismiss_ownership_dispute(id bigint, reason text)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.dismiss_ownership_dispute(bigint, text) IS
'Closes an open ownership dispute without a winner (a manager; the claimant can withdraw its own), with a reason: the holder keeps the customer, the freeze ends, the event stores the evidence snapshot. (allocation.dismiss_dispute() is about duplicate identities)';

-------------------------------------------------------------------------------
-- Automatic settlement by the presets
-------------------------------------------------------------------------------
CREATE FUNCTION allocation._dispute_policy(team_id bigint, auto_settle boolean, presets text[])
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_id bigint;
    v_bad text;
BEGIN
    IF auto_settle IS NULL THEN
        RAISE EXCEPTION 'auto_settle must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.dispute_policy() sets whether the presets settle a team''s disputes when they agree.',
              HINT = 'SELECT allocation.dispute_policy(NULL, true, ARRAY[''territory_owner'', ''registration'']);';
    END IF;
    IF team_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM allocation.team t WHERE t.id = _dispute_policy.team_id) THEN
        RAISE EXCEPTION 'team % does not exist', team_id USING ERRCODE = 'LA0D8',
              DETAIL = 'No row of allocation.team has this id.', HINT = 'SELECT id, code FROM allocation.team; NULL means every team.';
    END IF;
    SELECT string_agg(coalesce(quote_literal(p), 'NULL'), ', ') INTO v_bad FROM unnest(presets) p
     WHERE p IS NULL OR p NOT IN ('territory_owner', 'registration', 'first_followup');
    IF v_bad IS NOT NULL OR cardinality(presets) = 0 THEN
        RAISE EXCEPTION 'unknown dispute presets: %', coalesce(v_bad, 'an empty list') USING ERRCODE = 'LA0D8',
              DETAIL = 'The presets are territory_owner, registration and first_followup.',
              HINT = 'Pass NULL for all three.';
    END IF;
    INSERT INTO allocation.ownership_dispute_policy AS p (team_id, auto_settle, presets)
    VALUES (team_id, auto_settle, coalesce(presets, '{territory_owner,registration,first_followup}'))
    ON CONFLICT ON CONSTRAINT ownership_dispute_policy_team_uniq DO UPDATE SET auto_settle = EXCLUDED.auto_settle, presets = EXCLUDED.presets
    RETURNING p.id INTO v_id;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION allocation._dispute_policy(bigint, boolean, text[]) IS 'internal: implementation of allocation.dispute_policy(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.dispute_policy(team_id bigint, auto_settle boolean, presets text[] DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.dispute_policy(bigint, boolean, text[]) IS
'Sets the ownership dispute policy of a team (NULL = every team): whether auto_settle_disputes() settles its disputes, and which presets must agree (NULL = territory_owner, registration, first_followup); returns the policy id';

CREATE FUNCTION allocation._auto_settle_disputes(now timestamptz)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    d allocation.ownership_dispute;
    l record;
    p record;
    v_presets jsonb;
    v_winners bigint[];
    v_all boolean;
    v_n integer := 0;
BEGIN
    PERFORM allocation._refuse_read_only('allocation.auto_settle_disputes()');   -- 25006 on a standby, before anything else
    IF _auto_settle_disputes.now IS NULL THEN
        RAISE EXCEPTION 'the time must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.auto_settle_disputes() settles the disputes opened up to this time.',
              HINT = 'SELECT allocation.auto_settle_disputes();';
    END IF;
    FOR d IN SELECT * FROM allocation.ownership_dispute x
              WHERE x.status = 'open' AND x.opened_at <= _auto_settle_disputes.now ORDER BY x.id LOOP
        SELECT * INTO p FROM allocation._ownership_dispute_policy(d.holder_rep);
        CONTINUE WHEN NOT p.auto_settle;
        -- each dispute on its own: one that cannot be settled (decided meanwhile, the winner at
        -- capacity, its customer busy) is left for a manager and the others go on
        BEGIN
            SELECT * INTO l FROM allocation._lock_ownership_dispute(d.id) x;
            CONTINUE WHEN NOT (l.m).active OR l.row_found IS NULL;
            v_presets := (allocation._dispute_presets(l.d)) -> 'verdicts';
            SELECT array_agg(DISTINCT (v_presets -> k ->> 'winner')::bigint), bool_and(v_presets -> k ->> 'winner' IS NOT NULL)
              INTO v_winners, v_all
              FROM unnest(p.presets) k;
            CONTINUE WHEN NOT v_all OR cardinality(v_winners) <> 1;
            PERFORM allocation._settle_locked(l.d, l.m, l.row_owner, v_winners[1],
                                              format('automatic: the presets %s agree', array_to_string(p.presets, ', ')), true);
            v_n := v_n + 1;
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE 'ownership dispute % is left for a manager: %', d.id, SQLERRM;
        END;
    END LOOP;
    RETURN v_n;
END
$$;
COMMENT ON FUNCTION allocation._auto_settle_disputes(timestamptz) IS 'internal: implementation of allocation.auto_settle_disputes(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.auto_settle_disputes(now timestamptz DEFAULT now())
RETURNS integer
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.auto_settle_disputes(timestamptz) IS
'Settles the open ownership disputes (opened up to the given time) whose holder''s team policy has auto_settle on and whose configured presets all give the same winner (for a scheduler such as pg_cron); returns how many';

SELECT pg_catalog.pg_extension_config_dump('allocation.ownership_dispute', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.ownership_dispute_policy', '');

-------------------------------------------------------------------------------
-- Why a past decision happened: replayed against the configuration then
-------------------------------------------------------------------------------
-- A configuration row (rule, territory, rep, ...) as it was just before an event: today's
-- row, with every config_change after the event undone from its before image (an insert
-- after it: the row did not exist; a delete after it: its before image).  NULL = no row then.
CREATE FUNCTION allocation._config_at(p_table text, p_id bigint, p_event bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v jsonb;
    e record;
BEGIN
    IF p_id IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT %s FROM allocation.%I n WHERE n.id = $1',
                   allocation._config_json(format('allocation.%I', p_table)::regclass, 'n'), p_table)
       INTO v USING p_id;
    FOR e IN SELECT x.detail FROM allocation.event x
              WHERE x.id > p_event AND x.kind = 'config_change'
                AND x.detail ->> 'table' = p_table AND (x.detail ->> 'id')::bigint = p_id
              ORDER BY x.id DESC LOOP
        v := CASE e.detail ->> 'op' WHEN 'insert' THEN NULL
                                    WHEN 'delete' THEN e.detail -> 'before'
                                    ELSE coalesce(v, '{}') || coalesce(e.detail -> 'before', '{}') END;
    END LOOP;
    RETURN v;
END
$$;
COMMENT ON FUNCTION allocation._config_at(text, bigint, bigint) IS 'internal: a configuration row as it was at an event, rebuilt from today''s row and the before images of the config_change events since';

-- The keys whose values differ between two row images
CREATE FUNCTION allocation._json_changed(p_then jsonb, p_now jsonb)
RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT coalesce(pg_catalog.array_agg(k ORDER BY k), '{}')
      FROM (SELECT pg_catalog.jsonb_object_keys(coalesce(p_then, '{}') || coalesce(p_now, '{}')) k) x
     WHERE (p_then -> x.k) IS DISTINCT FROM (p_now -> x.k)
$$;
COMMENT ON FUNCTION allocation._json_changed(jsonb, jsonb) IS 'internal: the keys whose values differ between two jsonb row images';

-- Whether a json array of text (a rule's filter) holds a value
CREATE FUNCTION allocation._json_has(p_list jsonb, p_value text)
RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT p_value IS NOT NULL AND EXISTS (SELECT 1 FROM pg_catalog.jsonb_array_elements_text(p_list) x WHERE x = p_value)
$$;
COMMENT ON FUNCTION allocation._json_has(jsonb, text) IS 'internal: whether a jsonb array of text holds a value';

-- One rule image replayed over an event's recorded attributes: no match (and why), match,
-- or unknown (what cannot be replayed from the log)
CREATE FUNCTION allocation._replay_rule(p_rule jsonb, e allocation.event, p_tbl regclass, p_terr jsonb, p_at_event bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_no text[] := '{}';
    v_unknown text[] := '{}';
    v_t bigint := e.territory_id;
    v_inside boolean := false;
    v_depth integer := 0;
BEGIN
    IF NOT coalesce((p_rule ->> 'enabled')::boolean, true) THEN
        v_no := v_no || 'disabled'::text;
    END IF;
    IF jsonb_typeof(p_rule -> 'tbl') = 'string'
       AND to_regclass(p_rule ->> 'tbl') IS DISTINCT FROM p_tbl AND p_rule ->> 'tbl' <> e.table_name THEN
        v_no := v_no || format('for table %s only', p_rule ->> 'tbl');
    END IF;
    IF jsonb_typeof(p_rule -> 'tiers') = 'array' AND NOT allocation._json_has(p_rule -> 'tiers', e.tier) THEN
        v_no := v_no || format('tier %s not in %s', coalesce(e.tier, '(none)'), p_rule -> 'tiers');
    END IF;
    IF jsonb_typeof(p_rule -> 'business_types') = 'array' AND NOT allocation._json_has(p_rule -> 'business_types', e.business_type) THEN
        v_no := v_no || format('business type %s not in %s', coalesce(e.business_type, '(none)'), p_rule -> 'business_types');
    END IF;
    IF jsonb_typeof(p_rule -> 'crops') = 'array' AND NOT allocation._json_has(p_rule -> 'crops', e.crop) THEN
        v_no := v_no || format('crop %s not in %s', coalesce(e.crop, '(none)'), p_rule -> 'crops');
    END IF;
    IF jsonb_typeof(p_rule -> 'crop_zones') = 'array' THEN
        IF p_terr IS NULL THEN
            v_no := v_no || 'crop zone filter: no territory was recorded'::text;
        ELSIF NOT EXISTS (SELECT 1 FROM jsonb_array_elements_text(p_terr -> 'crop_zones') z
                           WHERE allocation._json_has(p_rule -> 'crop_zones', z)) THEN
            v_no := v_no || format('crop zones %s of territory %s (then) not in %s', p_terr -> 'crop_zones',
                                   p_terr ->> 'code', p_rule -> 'crop_zones');
        END IF;
    END IF;
    IF jsonb_typeof(p_rule -> 'territory_id') = 'number' THEN
        -- the recorded territory or one of its ancestors, as the hierarchy was then
        WHILE v_t IS NOT NULL AND v_depth < 64 AND NOT v_inside LOOP
            v_inside := v_t = (p_rule ->> 'territory_id')::bigint;
            v_t := (allocation._config_at('territory', v_t, p_at_event) ->> 'parent_id')::bigint;
            v_depth := v_depth + 1;
        END LOOP;
        IF NOT v_inside THEN
            v_no := v_no || format('recorded territory %s is not inside territory %s (then) or its descendants; the other territories covering the customer are not recorded',
                                   coalesce(p_terr ->> 'code', '(none)'), p_rule ->> 'territory_id');
        END IF;
    END IF;
    IF jsonb_typeof(p_rule -> 'tags') = 'array' THEN
        v_unknown := v_unknown || 'tags: the customer''s tags are not recorded in the event'::text;
    END IF;
    IF p_rule ->> 'condition' IS NOT NULL THEN
        v_unknown := v_unknown || format('condition %s: conditions cannot be replayed without the row at that time', p_rule ->> 'condition');
    END IF;
    RETURN pg_catalog.jsonb_build_object(
        'rule_id', (p_rule ->> 'id')::bigint, 'name', p_rule ->> 'name', 'priority', (p_rule ->> 'priority')::integer,
        'mode', p_rule ->> 'mode', 'target_kind', p_rule ->> 'target_kind', 'target_rep_id', p_rule -> 'target_rep_id',
        'target_team_id', p_rule -> 'target_team_id', 'policy', p_rule -> 'policy',
        'verdict', CASE WHEN cardinality(v_no) > 0 THEN 'no match' WHEN cardinality(v_unknown) > 0 THEN 'unknown' ELSE 'match' END,
        'why_not', to_jsonb(v_no), 'not_replayable', to_jsonb(v_unknown));
END
$$;
COMMENT ON FUNCTION allocation._replay_rule(jsonb, allocation.event, regclass, jsonb, bigint) IS 'internal: a rule as it was then, matched against an event''s recorded tier, crop, business type and territory (match, no match and why, or unknown: tags and conditions)';

CREATE FUNCTION allocation._explain_event(event_id bigint)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    e allocation.event;
    m allocation.managed_table;
    v_actor text := allocation._actor();
    v_rule_then jsonb;
    v_rule_now jsonb;
    v_terr_then jsonb;
    v_terr_now jsonb;
    v_owner_then jsonb;
    v_replay jsonb := '[]';
    v_rules jsonb;
    r jsonb;
    v_step jsonb;
    v_earlier jsonb := '[]';
    v_recorded jsonb;
    v_reps jsonb := '{}';
    v_rep bigint;
BEGIN
    IF event_id IS NULL THEN
        RAISE EXCEPTION 'event id must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.explain_event() names an event of allocation.event by its id.',
              HINT = 'SELECT id, kind, key FROM allocation.event ORDER BY id DESC LIMIT 10;';
    END IF;
    IF NOT pg_catalog.has_table_privilege(v_actor, 'allocation.event', 'SELECT') THEN
        RAISE EXCEPTION 'role % may not read the audit log', v_actor USING ERRCODE = 'LA0D3',
              DETAIL = 'explain_event() explains entries of allocation.event, which managers, analysts and admins read.',
              HINT = 'Ask a manager.';
    END IF;
    SELECT * INTO e FROM allocation.event x WHERE x.id = event_id;
    IF e.id IS NULL THEN
        RAISE EXCEPTION 'event % does not exist', event_id USING ERRCODE = 'LA0D7',
              DETAIL = 'No row of allocation.event has this id.',
              HINT = 'SELECT id, kind, key FROM allocation.event ORDER BY id DESC LIMIT 10;';
    END IF;
    m := allocation._managed_by_id(e.managed_id);
    -- the recorded rule, then and now
    v_rule_then := allocation._config_at('rule', e.rule_id, e.id) - 'created_at';
    v_rule_now := allocation._config_at('rule', e.rule_id, 9223372036854775807) - 'created_at';
    -- the recorded territory then and now (its polygon as its SHA-256), and its owner then
    v_terr_then := allocation._config_at('territory', e.territory_id, e.id);
    v_terr_now := allocation._config_at('territory', e.territory_id, 9223372036854775807);
    IF v_terr_then IS NOT NULL THEN
        v_owner_then := pg_catalog.jsonb_build_object(
            'owner_rep_id', v_terr_then -> 'owner_rep_id', 'owner_team_id', v_terr_then -> 'owner_team_id',
            'owner_rep_then', CASE WHEN v_terr_then ->> 'owner_rep_id' IS NOT NULL
                                   THEN allocation._config_at('rep', (v_terr_then ->> 'owner_rep_id')::bigint, e.id) - 'created_at' END);
    END IF;
    -- the reps the decision names, as they were then (active, capacity, team) and now
    FOREACH v_rep IN ARRAY ARRAY[e.from_rep, e.to_rep, (v_terr_then ->> 'owner_rep_id')::bigint] LOOP
        CONTINUE WHEN v_rep IS NULL OR v_reps ? v_rep::text;
        v_reps := v_reps || pg_catalog.jsonb_build_object(v_rep::text, pg_catalog.jsonb_build_object(
                      'then', allocation._config_at('rep', v_rep, e.id) - 'created_at',
                      'now', allocation._config_at('rep', v_rep, 9223372036854775807) - 'created_at',
                      'changed_since', to_jsonb(allocation._json_changed(allocation._config_at('rep', v_rep, e.id) - 'created_at',
                                                                         allocation._config_at('rep', v_rep, 9223372036854775807) - 'created_at'))));
    END LOOP;
    -- the rule order then: every rule that existed at the event (today's rules and those
    -- deleted since), by priority then id, replayed up to the recorded rule
    SELECT coalesce(jsonb_agg(x.img ORDER BY (x.img ->> 'priority')::integer DESC, (x.img ->> 'id')::bigint), '[]') INTO v_rules
      FROM (SELECT allocation._config_at('rule', i.id, e.id) AS img
              FROM (SELECT x.id FROM allocation.rule x
                    UNION
                    SELECT (x.detail ->> 'id')::bigint FROM allocation.event x
                     WHERE x.id > e.id AND x.kind = 'config_change' AND x.detail ->> 'table' = 'rule' AND x.detail ? 'id') i) x
     WHERE x.img IS NOT NULL;
    IF e.period IS NOT NULL OR e.rule_id IS NOT NULL THEN
        FOR r IN SELECT x.value FROM jsonb_array_elements(v_rules) x LOOP
            v_step := allocation._replay_rule(r, e, m.tbl, v_terr_then, e.id);
            v_replay := v_replay || jsonb_build_array(v_step || pg_catalog.jsonb_build_object('recorded', coalesce((r ->> 'id')::bigint = e.rule_id, false)));
            IF (r ->> 'id')::bigint = e.rule_id THEN
                v_recorded := v_step;
                EXIT;
            END IF;
            IF v_step ->> 'verdict' <> 'no match' THEN
                v_earlier := v_earlier || to_jsonb((r ->> 'id')::bigint);
            END IF;
        END LOOP;
    END IF;
    RETURN pg_catalog.jsonb_build_object(
        'event', pg_catalog.jsonb_build_object(
            'id', e.id, 'at', e.at, 'kind', e.kind, 'actor', e.actor, 'table', e.table_name, 'key', e.key,
            'from_rep', e.from_rep, 'to_rep', e.to_rep, 'rule_id', e.rule_id, 'territory_id', e.territory_id,
            'team_id', e.team_id, 'source', e.source, 'pinned', e.pinned, 'tier', e.tier, 'crop', e.crop,
            'business_type', e.business_type, 'reason', e.reason, 'period', e.period),
        'recorded', to_jsonb(ARRAY['the event itself: its rule, territory, reps, source, reason and the customer''s tier, crop and business type at the decision',
                                   'the customer''s location, tags and other columns are not recorded: the territories covering it other than the recorded one, tag filters and SQL conditions are not replayed',
                                   'candidate loads and capacity checks at the time (which rep a team policy chose) are only recorded as the outcome']),
        'replayed', to_jsonb(ARRAY['the rules, territories and reps as they were at the event, rebuilt from today''s rows and the before images of the config_change events since',
                                   'the rule order then (priority, then id) over the recorded tier, crop, business type and territory, up to the recorded rule',
                                   'a territory''s polygon is compared by its SHA-256 only']),
        'rule', CASE WHEN e.rule_id IS NOT NULL THEN pg_catalog.jsonb_build_object(
                    'id', e.rule_id, 'then', v_rule_then, 'now', v_rule_now,
                    'exists_now', v_rule_now IS NOT NULL,
                    'changed_since', to_jsonb(allocation._json_changed(v_rule_then, v_rule_now))) END,
        'replay', pg_catalog.jsonb_build_object(
            'rules_then', jsonb_array_length(v_rules),
            'steps', v_replay,
            'recorded_rule_verdict', v_recorded -> 'verdict',
            'earlier_possible_matches', v_earlier,
            'consistent', CASE WHEN e.rule_id IS NULL THEN NULL
                               ELSE coalesce(v_recorded ->> 'verdict' <> 'no match', false)
                                    AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(v_replay) s
                                                     WHERE s.value ->> 'verdict' = 'match'
                                                       AND (s.value ->> 'rule_id')::bigint IS DISTINCT FROM e.rule_id) END,
            'note', CASE WHEN e.rule_id IS NULL AND e.period IS NOT NULL
                         THEN format('no rule decided this event (source %s): the replay shows the rules that could have matched', coalesce(e.source, 'rule'))
                         WHEN e.rule_id IS NOT NULL AND v_recorded IS NULL
                         THEN 'the recorded rule did not exist at the event time according to the configuration events'
                         ELSE 'earlier rules with verdict unknown (tags, conditions) did not match or were passed over; one with verdict match was passed over only when its target had no available rep then (loads are not replayed)' END),
        'territory', CASE WHEN e.territory_id IS NOT NULL THEN pg_catalog.jsonb_build_object(
                    'id', e.territory_id, 'then', v_terr_then, 'now', v_terr_now,
                    'changed_since', to_jsonb(allocation._json_changed(v_terr_then, v_terr_now))) END,
        'territory_owner_then', v_owner_then,
        'reps', v_reps,
        'changed_since', allocation._config_changes_after(e.id, e.rule_id, e.territory_id,
                                                          ARRAY[e.from_rep, e.to_rep, (v_terr_then ->> 'owner_rep_id')::bigint]));
END
$$;
COMMENT ON FUNCTION allocation._explain_event(bigint) IS 'internal: implementation of allocation.explain_event(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.explain_event(event_id bigint)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.explain_event(bigint) IS
'Why a past decision happened: the recorded rule and its definition then, the rule order then replayed over the recorded tier, crop, business type and territory (which earlier rules did not match and why; tags and conditions are not replayable), the territory and its owner then, the reps then, and the configuration changes since; says what is replayed and what is only recorded';

CREATE TRIGGER config_audit_insert AFTER INSERT ON allocation.ownership_dispute_policy
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._config_audit();
CREATE TRIGGER config_audit_update AFTER UPDATE ON allocation.ownership_dispute_policy
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._config_audit();
CREATE TRIGGER config_audit_delete AFTER DELETE ON allocation.ownership_dispute_policy
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._config_audit();
CREATE TRIGGER config_audit_truncate AFTER TRUNCATE ON allocation.ownership_dispute_policy
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._config_audit();

-- the freeze of a disputed customer (LA0D0) in claims, releases, manual decisions and recycling
CREATE OR REPLACE FUNCTION allocation._claim(p_tbl regclass, p_key text, p_rep bigint, p_actor text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
    v_found boolean;
    v_today integer;
    c record;
BEGIN
    m := allocation._managed(p_tbl);
    PERFORM allocation._check_column_types(m.tbl, m.key_column, NULL);
    -- the customer's row lock orders claim, release and recycle of one customer
    SELECT l.row_found INTO v_found FROM allocation._lock_customer_row(m, p_key, false) l;
    IF v_found IS NULL THEN
        RAISE EXCEPTION 'customer % not found in %', p_key, p_tbl
            USING ERRCODE = 'LA062', DETAIL = format('No row of %s has %s = %s.', p_tbl, m.key_column, p_key),
                  HINT = 'Check the key.';
    END IF;
    PERFORM allocation._refuse_if_disputed(m.id, p_key);
    -- the rep's holdings counter orders one rep's claims (limits hold under concurrency,
    -- whatever the day), under the engine's ordered-locking rule (55P03 instead of a deadlock)
    PERFORM allocation._lock_counter(p_rep);
    INSERT INTO allocation.claim_day AS d (rep_id, day, claims) VALUES (p_rep, allocation.claim_today(), 0)
    ON CONFLICT (rep_id, day) DO UPDATE SET claims = d.claims
    RETURNING d.claims INTO v_today;
    -- from here on every statement sees what committed before the two locks
    FOR c IN SELECT * FROM allocation._claim_checks(m.id, p_key, p_rep, now(), v_today) ORDER BY ord LOOP
        IF NOT c.ok THEN
            RAISE EXCEPTION USING MESSAGE = c.message, ERRCODE = c.sqlstate,
                  DETAIL = coalesce(c.detail, format('Claim check "%s" failed.', c."check")),
                  HINT = coalesce(c.hint, 'See allocation.explain_claim() for every check.');
        END IF;
    END LOOP;
    UPDATE allocation.claim_day SET claims = claims + 1 WHERE rep_id = p_rep AND day = allocation.claim_today();
    PERFORM allocation._owner_update(p_tbl, p_key, p_rep, 'claim', format('claimed from the public pool by %s', p_actor));
END
$$;
COMMENT ON FUNCTION allocation._claim(regclass, text, bigint, text) IS 'internal: the checks and counters of claim(), run as the extension owner';
CREATE OR REPLACE FUNCTION allocation._release(p_tbl regclass, p_key text, p_reason text, p_rep bigint, p_actor text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
    v_owner bigint;
    v_found boolean;
    lk allocation.customer_lock;
    o allocation.rep;
BEGIN
    IF p_reason IS NULL OR btrim(p_reason) = '' THEN
        RAISE EXCEPTION 'a release needs a reason'
            USING ERRCODE = '22004', DETAIL = 'The reason is kept in the audit log with the release.',
                  HINT = 'Say why, e.g. ''dealer moved to another county''.';
    END IF;
    m := allocation._managed(p_tbl);
    PERFORM allocation._check_column_types(m.tbl, m.key_column, NULL);
    SELECT l.row_found, l.row_owner INTO v_found, v_owner FROM allocation._lock_customer_row(m, p_key, false) l;
    IF v_found IS NULL THEN
        RAISE EXCEPTION 'customer % not found in %', p_key, p_tbl
            USING ERRCODE = 'LA062', DETAIL = format('No row of %s has %s = %s.', p_tbl, m.key_column, p_key),
                  HINT = 'Check the key.';
    END IF;
    IF v_owner IS NULL THEN
        RAISE EXCEPTION 'customer % is already in the public pool', p_key
            USING ERRCODE = 'LA086', DETAIL = 'Only a held customer can be released.', HINT = 'Nothing to do.';
    END IF;
    IF p_rep IS NOT NULL AND v_owner <> p_rep THEN
        SELECT * INTO o FROM allocation.rep WHERE id = v_owner;
        RAISE EXCEPTION 'customer % is not yours', p_key
            USING ERRCODE = 'LA086', DETAIL = format('It is held by rep %s (%s).', o.code, o.name),
                  HINT = 'A rep releases only its own customers; a manager can release any.';
    END IF;
    SELECT * INTO lk FROM allocation.customer_lock WHERE managed_id = m.id AND key = p_key;
    IF lk.key IS NOT NULL THEN
        RAISE EXCEPTION 'customer % is locked', p_key
            USING ERRCODE = 'LA084', DETAIL = format('Locked by %s at %s: %s', lk.locked_by, lk.locked_at, lk.reason),
                  HINT = 'A manager can unlock it with allocation.unlock_customer().';
    END IF;
    PERFORM allocation._refuse_if_disputed(m.id, p_key);
    PERFORM allocation._owner_update(p_tbl, p_key, NULL, 'release', p_reason);
END
$$;
COMMENT ON FUNCTION allocation._release(regclass, text, text, bigint, text) IS 'internal: the checks of release(), run as the extension owner';
CREATE OR REPLACE FUNCTION allocation._set_owner(p_tbl regclass, p_key text, p_rep bigint, p_source text, p_reason text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
    v_keytype text;
BEGIN
    m := allocation._managed(p_tbl);
    SELECT format_type(a.atttypid, a.atttypmod) INTO v_keytype FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = p_tbl AND a.attname = m.key_column;
    -- the key is cast to the key column's type as the table's owner (a domain's CHECK is its code)
    BEGIN
        PERFORM 1 FROM allocation._table_rows(p_tbl, ARRAY[m.key_column::text], p_key, '') LIMIT 1;
    EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'customer % not found in %', p_key, p_tbl
            USING ERRCODE = 'LA062',
                  DETAIL = format('%s is not a valid %s, the type of key column %s.', quote_literal(p_key), v_keytype, m.key_column),
                  HINT = 'Check the key.';
    END;
    PERFORM allocation._refuse_if_disputed(m.id, p_key);
    -- the UPDATE runs as the table's owner; source and reason travel in C (no setting)
    IF NOT allocation._owner_update(p_tbl, p_key, p_rep, p_source, p_reason) THEN
        RAISE EXCEPTION 'customer % not found in %', p_key, p_tbl
            USING ERRCODE = 'LA062',
                  DETAIL = format('No row of %s has %s = %s.', p_tbl, m.key_column, p_key),
                  HINT = 'Check the key; it is compared with the key column''s own type.';
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._set_owner(regclass, text, bigint, text, text) IS 'internal: owner change through the managed table with a recorded source and reason';
CREATE OR REPLACE FUNCTION allocation._recycle_status(p_managed integer, p_at timestamptz, p_key text DEFAULT NULL)
RETURNS TABLE (managed_id integer, key text, rep_id bigint, policy_id bigint, last_followup timestamptz,
               last_progress timestamptz, due_at timestamptz, warn_at timestamptz, why text, exempt text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
BEGIN
    SELECT * INTO m FROM allocation.managed_table mt WHERE mt.id = p_managed AND mt.active;
    IF m.id IS NULL OR NOT EXISTS (SELECT 1 FROM allocation.recycle_policy p WHERE p.enabled) THEN
        RETURN;
    END IF;
    -- the customer table is read as its owner (allocation._table_rows), never as the extension owner
    RETURN QUERY EXECUTE $q$
        WITH t AS MATERIALIZED (
            SELECT u.r[1] AS key, u.r[2]::timestamptz AS last_contact, u.r[3] AS stage
              FROM allocation._table_rows($3, ARRAY[$5, $6, $7], $4, '') AS u(r)),
        held AS (
            SELECT a.managed_id, a.key, a.rep_id, a.tier, a.territory_id, a.valid_from, a.stage_since,
                   t.last_contact, t.stage
              FROM allocation.assignment a
              JOIN t ON t.key = a.key
             WHERE a.managed_id = $1 AND a.valid_to IS NULL AND a.rep_id IS NOT NULL
               AND ($4::text IS NULL OR a.key = $4)),
        pol AS (
            SELECT h.key, (SELECT p.id FROM allocation.recycle_policy p
                             LEFT JOIN LATERAL (
                                 WITH RECURSIVE up AS (
                                     SELECT tt.id, tt.parent_id, 0 AS depth FROM allocation.territory tt WHERE tt.id = h.territory_id
                                     UNION ALL
                                     SELECT tt.id, tt.parent_id, up.depth + 1 FROM allocation.territory tt JOIN up ON tt.id = up.parent_id
                                      WHERE up.depth < 64)
                                 SELECT up.depth FROM up WHERE up.id = p.territory_id) d ON true
                            WHERE p.enabled AND (p.tbl IS NULL OR p.tbl = $3)
                              AND (p.tier IS NULL OR p.tier = h.tier)
                              AND (p.territory_id IS NULL OR d.depth IS NOT NULL)
                            ORDER BY d.depth NULLS LAST, (p.tier IS NOT NULL) DESC, (p.tbl IS NOT NULL) DESC, p.id
                            LIMIT 1) AS policy_id
              FROM held h),
        clocks AS (
            SELECT h.*, p.id AS policy_id, p.no_followup, p.no_progress, p.warn_before, p.exempt_stages,
                   greatest(h.valid_from, h.last_contact,
                            (SELECT max(f.at) FROM allocation.followup f
                              WHERE f.managed_id = h.managed_id AND f.key = h.key AND f.at <= $2)) AS last_followup,
                   greatest(h.valid_from, h.stage_since,
                            (SELECT max(f.at) FROM allocation.followup f
                              WHERE f.managed_id = h.managed_id AND f.key = h.key AND f.progress AND f.at <= $2)) AS last_progress
              FROM held h JOIN pol ON pol.key = h.key JOIN allocation.recycle_policy p ON p.id = pol.policy_id),
        due AS (
            SELECT c.*, least(c.last_followup + c.no_followup, c.last_progress + c.no_progress) AS due_at
              FROM clocks c),
        -- exempt for a reason of its own (locked, disputed, an exempt stage), and the
        -- registration protection that pushes the due time back, read once
        flagged AS (
            SELECT d.*, pr.until AS protected_until,
                   CASE WHEN lk.key IS NOT NULL THEN 'locked'
                        WHEN EXISTS (SELECT 1 FROM allocation.ownership_dispute od
                                      WHERE od.managed_id = d.managed_id AND od.key = d.key AND od.status = 'open') THEN 'disputed'
                        WHEN d.stage = ANY (d.exempt_stages) THEN format('stage %s is exempt', d.stage) END AS exempt
              FROM due d
              LEFT JOIN allocation.customer_lock lk ON lk.managed_id = d.managed_id AND lk.key = d.key
              LEFT JOIN allocation.protection pr ON pr.managed_id = d.managed_id AND pr.key = d.key
                                               AND pr.rep_id = d.rep_id AND pr.until > $2),
        -- new reps in their ramp-up: how many more customers recycling may take away from them
        -- (those due first go first; the rest are exempt); customers exempt for another reason
        -- or protected use none of the quota
        ramp AS (
            SELECT f.key, nr.max_recycled,
                   (SELECT count(*) FROM allocation.event e
                     WHERE e.kind = 'recycle' AND e.from_rep = f.rep_id AND e.at >= r.created_at)
                   + row_number() OVER (PARTITION BY f.rep_id ORDER BY least(f.due_at, 'infinity'), f.key) AS nth
              FROM flagged f
              JOIN allocation.rep r ON r.id = f.rep_id
             CROSS JOIN LATERAL allocation._new_rep_ramp(f.rep_id, $2) nr
             WHERE nr.max_recycled IS NOT NULL AND f.due_at <= $2 AND f.exempt IS NULL AND f.protected_until IS NULL)
        SELECT f.managed_id, f.key, f.rep_id, f.policy_id, f.last_followup, f.last_progress,
               greatest(f.due_at, f.protected_until) AS due_at, greatest(f.due_at, f.protected_until) - f.warn_before AS warn_at,
               CASE WHEN f.last_followup + f.no_followup <= coalesce(f.last_progress + f.no_progress, 'infinity')
                    THEN format('no follow-up since %s (policy: %s)', f.last_followup, f.no_followup)
                    ELSE format('no stage progress or deal since %s (policy: %s)', f.last_progress, f.no_progress) END,
               coalesce(f.exempt,
                        CASE WHEN ramp.nth > ramp.max_recycled
                             THEN format('new rep in its ramp-up: at most %s customers recycled away', ramp.max_recycled) END)
          FROM flagged f
          LEFT JOIN ramp ON ramp.key = f.key
        $q$
    USING p_managed, p_at, m.tbl, p_key, m.key_column::text, m.attributes->>'last_contact', m.attributes->>'stage';
END
$$;
COMMENT ON FUNCTION allocation._recycle_status(integer, timestamptz, text) IS 'internal: recycle policy, clocks and due time of every held customer of a managed table';

-------------------------------------------------------------------------------
-- Virtual teams (虚拟团队) and the revenue split (业绩分成) (issue 13)
--
-- A virtual team is a temporary, cross-department group of reps around one or
-- more customers (a provincial distributor's annual program: the key-account
-- rep, the county rep, a crop specialist).  Its members' shares are
-- percentages that sum to exactly 100 at every instant of the team's history
-- (a deferred constraint trigger refuses to commit anything else); a share
-- change closes the current versions and opens new ones, so the shares at any
-- past time can be read back.  A customer is in at most one virtual team at a
-- time (a unique index on the open links; the time ranges of closed links
-- never overlap an open one, see _vt_open_link()).  Deals recorded through
-- record_deal() are split among the members valid at the deal's time -- or
-- credited 100 % to the customer's holder then -- and the split lines are
-- stored with the deal: a later share change does not rewrite them.
--
-- Times.  Every boundary (a link opening or closing, a share version opening
-- or closing) is the clock taken under the lock that orders it with
-- record_deal(): the customer's lock (an advisory lock) for links, the team's
-- row lock for shares.  So a deal recorded at time t is split with exactly the
-- shares an as-of query at t shows afterwards.
-------------------------------------------------------------------------------
CREATE TABLE allocation.virtual_team (
    id              bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name            text NOT NULL CHECK (btrim(name) <> ''),
    purpose         text,
    valid           tstzrange NOT NULL CHECK (NOT isempty(valid) AND NOT lower_inf(valid)
                                              AND lower_inc(valid) AND NOT upper_inc(valid)),
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    dissolved_at    timestamptz,
    dissolved_by    text,
    dissolve_reason text,
    CONSTRAINT virtual_team_dissolved CHECK ((dissolved_at IS NULL) = (dissolved_by IS NULL))
);
COMMENT ON TABLE allocation.virtual_team IS 'Virtual teams (虚拟团队): temporary cross-department groups of reps around customers, whose members share the customers'' revenue; written by create_virtual_team() and its siblings only';
COMMENT ON COLUMN allocation.virtual_team.valid IS 'the team''s period, [from, to); upper NULL = until dissolved; a team dissolved early ends when it was dissolved';
COMMENT ON COLUMN allocation.virtual_team.dissolved_at IS 'when the team was dissolved (dissolve_virtual_team(), or dissolve_virtual_teams() after its period ended); NULL = not yet';

CREATE TABLE allocation.virtual_team_member (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    team_id     bigint NOT NULL REFERENCES allocation.virtual_team (id) ON DELETE CASCADE,
    rep_id      bigint NOT NULL,  -- no foreign key: the history outlives a deleted rep, as the event log does
    role        text,
    share       numeric(5,2) NOT NULL CHECK (share > 0 AND share <= 100),
    valid_from  timestamptz NOT NULL,
    valid_to    timestamptz,
    changed_by  text NOT NULL,
    CONSTRAINT virtual_team_member_period CHECK (valid_to IS NULL OR valid_to >= valid_from)
);
-- one current version per rep and team
CREATE UNIQUE INDEX virtual_team_member_current ON allocation.virtual_team_member (team_id, rep_id) WHERE valid_to IS NULL;
CREATE INDEX virtual_team_member_rep_idx ON allocation.virtual_team_member (rep_id);
COMMENT ON TABLE allocation.virtual_team_member IS 'Versions of virtual team members and their revenue shares (percent); a version is valid over [valid_from, valid_to), valid_to NULL = current; the versions valid at any instant sum to 100 (checked at commit)';
COMMENT ON COLUMN allocation.virtual_team_member.role IS 'the member''s part in the team, free text (e.g. key account, county rep, crop specialist)';
COMMENT ON COLUMN allocation.virtual_team_member.valid_to IS 'when a share change (or the member''s removal) closed this version; a version closed before it started is zero-length and never applied';

CREATE TABLE allocation.virtual_team_customer (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    team_id     bigint NOT NULL REFERENCES allocation.virtual_team (id) ON DELETE CASCADE,
    managed_id  integer NOT NULL REFERENCES allocation.managed_table (id) ON DELETE CASCADE,
    tbl         regclass NOT NULL,
    key         text NOT NULL,
    valid_from  timestamptz NOT NULL,
    valid_to    timestamptz,
    added_by    text NOT NULL,
    removed_by  text,
    CONSTRAINT virtual_team_customer_period CHECK (valid_to IS NULL OR valid_to >= valid_from)
);
-- a customer is in at most one virtual team at a time: one open link per customer
CREATE UNIQUE INDEX virtual_team_customer_open ON allocation.virtual_team_customer (managed_id, key) WHERE valid_to IS NULL;
CREATE INDEX virtual_team_customer_team_idx ON allocation.virtual_team_customer (team_id);
CREATE INDEX virtual_team_customer_key_idx ON allocation.virtual_team_customer (managed_id, key);
COMMENT ON TABLE allocation.virtual_team_customer IS 'The customers of virtual teams over time: a link applies over [valid_from, valid_to), valid_to NULL = until the team''s period ends; at most one open link per customer';

CREATE TABLE allocation.deal (
    id           bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    managed_id   integer NOT NULL REFERENCES allocation.managed_table (id) ON DELETE CASCADE,
    key          text NOT NULL,
    amount       numeric NOT NULL CHECK (amount > 0 AND amount = round(amount, 2)),
    at           timestamptz NOT NULL,
    source       text NOT NULL DEFAULT 'record_deal',
    ref          text NOT NULL CHECK (btrim(ref) <> ''),
    team_id      bigint REFERENCES allocation.virtual_team (id),
    recorded_by  text NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT deal_ref_uniq UNIQUE (managed_id, source, ref)
);
CREATE INDEX deal_at_idx ON allocation.deal USING brin (at);
CREATE INDEX deal_key_idx ON allocation.deal (managed_id, key);
COMMENT ON TABLE allocation.deal IS 'Deals (revenue) of managed customers with the split frozen when recorded (deal_split); written by record_deal() only';
COMMENT ON COLUMN allocation.deal.source IS 'where the deal comes from: record_deal (the API); a later version adds deals read from the CRM''s own tables with their own source; ref is unique per table and source';
COMMENT ON COLUMN allocation.deal.team_id IS 'the virtual team whose members shared the deal; NULL = credited to the holder at the deal''s time';

CREATE TABLE allocation.deal_split (
    deal_id  bigint NOT NULL REFERENCES allocation.deal (id) ON DELETE CASCADE,
    rep_id   bigint,
    share    numeric(5,2) NOT NULL,
    amount   numeric NOT NULL,
    CONSTRAINT deal_split_uniq UNIQUE NULLS NOT DISTINCT (deal_id, rep_id)
);
COMMENT ON TABLE allocation.deal_split IS 'The lines of each deal''s revenue split as of the deal''s time (rep_id NULL = nobody held the customer: unattributed); the amounts of a deal sum exactly to it';

-------------------------------------------------------------------------------
-- Shares balance: the deferred check
-------------------------------------------------------------------------------
-- The first instant of a team's history at which its valid versions do not sum to
-- 100 (the boundaries of every version; 'infinity' stands for the current versions)
CREATE FUNCTION allocation._team_unbalanced(p_team bigint, OUT at timestamptz, OUT total numeric)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT b.at, coalesce((SELECT sum(m.share) FROM allocation.virtual_team_member m
                            WHERE m.team_id = p_team AND m.valid_from <= b.at
                              AND (m.valid_to IS NULL OR m.valid_to > b.at)
                              AND (b.at < 'infinity' OR m.valid_to IS NULL)), 0)
      FROM (SELECT m.valid_from AS at FROM allocation.virtual_team_member m WHERE m.team_id = p_team
            UNION SELECT m.valid_to FROM allocation.virtual_team_member m WHERE m.team_id = p_team AND m.valid_to IS NOT NULL
            UNION SELECT 'infinity'::timestamptz) b
     WHERE EXISTS (SELECT 1 FROM allocation.virtual_team t WHERE t.id = p_team)
       AND coalesce((SELECT sum(m.share) FROM allocation.virtual_team_member m
                      WHERE m.team_id = p_team AND m.valid_from <= b.at
                        AND (m.valid_to IS NULL OR m.valid_to > b.at)
                        AND (b.at < 'infinity' OR m.valid_to IS NULL)), 0) <> 100
     ORDER BY b.at
     LIMIT 1
$$;
COMMENT ON FUNCTION allocation._team_unbalanced(bigint) IS 'internal: the first instant at which a virtual team''s valid share versions do not sum to 100 (infinity = the current versions); no row = balanced';

-- (SECURITY DEFINER: a deferred trigger runs as whoever commits, not as the engine)
CREATE FUNCTION allocation._virtual_team_balanced() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_team bigint := CASE WHEN TG_OP = 'DELETE' THEN OLD.team_id ELSE NEW.team_id END;
    b record;
BEGIN
    SELECT * INTO b FROM allocation._team_unbalanced(v_team);
    IF b.at IS NOT NULL THEN
        RAISE EXCEPTION 'the shares of virtual team % sum to %, not 100', v_team, b.total USING ERRCODE = 'LA0V3',
              DETAIL = CASE WHEN b.at = 'infinity' THEN 'The current member versions are unbalanced.'
                            ELSE format('The member versions valid at %s are unbalanced.', b.at) END,
              HINT = 'Give the whole member list with allocation.set_team_shares(); the shares must sum to exactly 100.';
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION allocation._virtual_team_balanced() IS 'internal: deferred constraint trigger: a virtual team''s shares sum to 100 at every instant of its history when the transaction commits (LA0V3)';
CREATE CONSTRAINT TRIGGER virtual_team_member_balanced
    AFTER INSERT OR UPDATE OR DELETE ON allocation.virtual_team_member
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION allocation._virtual_team_balanced();

-------------------------------------------------------------------------------
-- Internals
-------------------------------------------------------------------------------
-- The manager check of every team change (LA0V2)
CREATE FUNCTION allocation._vt_require_manager(p_what text)
RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_actor text := allocation._actor();
BEGIN
    IF NOT allocation._is_manager(v_actor) THEN
        RAISE EXCEPTION 'role % may not %', v_actor, p_what USING ERRCODE = 'LA0V2',
              DETAIL = 'Virtual teams are formed, changed and dissolved by managers.',
              HINT = 'Ask a sales manager.';
    END IF;
    RETURN v_actor;
END
$$;
COMMENT ON FUNCTION allocation._vt_require_manager(text) IS 'internal: the calling role, when it is a manager (LA0V2 otherwise)';

-- A team's row, locked (FOR UPDATE for changes of the team or its shares, FOR SHARE
-- for a change of its customers); LA0V0 when there is none, LA0V1 when it is over
CREATE FUNCTION allocation._vt_lock(p_team bigint, p_exclusive boolean)
RETURNS allocation.virtual_team
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    t allocation.virtual_team;
BEGIN
    IF p_team IS NULL THEN
        RAISE EXCEPTION 'virtual team id must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'A team change names the team by its id.', HINT = 'SELECT id, name FROM allocation.virtual_team;';
    END IF;
    IF p_exclusive THEN
        SELECT * INTO t FROM allocation.virtual_team x WHERE x.id = p_team FOR UPDATE;
    ELSE
        SELECT * INTO t FROM allocation.virtual_team x WHERE x.id = p_team FOR SHARE;
    END IF;
    IF t.id IS NULL THEN
        RAISE EXCEPTION 'virtual team % does not exist', p_team USING ERRCODE = 'LA0V0',
              DETAIL = 'No row of allocation.virtual_team has this id.', HINT = 'SELECT id, name FROM allocation.virtual_team;';
    END IF;
    IF t.dissolved_at IS NOT NULL OR upper(t.valid) <= pg_catalog.clock_timestamp() THEN
        RAISE EXCEPTION 'virtual team % is over', t.name USING ERRCODE = 'LA0V1',
              DETAIL = CASE WHEN t.dissolved_at IS NOT NULL
                            THEN format('It was dissolved by %s at %s: %s', t.dissolved_by, t.dissolved_at, coalesce(t.dissolve_reason, 'its period ended'))
                            ELSE format('Its period ended at %s.', upper(t.valid)) END,
              HINT = 'Its history stays readable; form a new team with allocation.create_virtual_team().';
    END IF;
    RETURN t;
END
$$;
COMMENT ON FUNCTION allocation._vt_lock(bigint, boolean) IS 'internal: locks a virtual team that is not over (LA0V0 unknown, LA0V1 dissolved or ended)';

-- The member list of create_virtual_team() and set_team_shares(), checked:
-- [{"rep_id": 7, "share": 50, "role": "key account"}, ...]
CREATE FUNCTION allocation._vt_members(p_members jsonb)
RETURNS TABLE (rep_id bigint, role text, share numeric)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    e jsonb;
    r allocation.rep;
    v_sum numeric := 0;
    v_seen bigint[] := '{}';
BEGIN
    IF p_members IS NULL THEN
        RAISE EXCEPTION 'the member list must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'A virtual team needs its members and their shares.',
              HINT = 'Pass ''[{"rep_id": 1, "share": 60, "role": "key account"}, {"rep_id": 2, "share": 40}]''.';
    END IF;
    IF jsonb_typeof(p_members) <> 'array' OR jsonb_array_length(p_members) = 0 THEN
        RAISE EXCEPTION 'the member list must be a non-empty JSON array' USING ERRCODE = 'LA0V4',
              DETAIL = format('It is %s.', p_members),
              HINT = 'Pass ''[{"rep_id": 1, "share": 60, "role": "key account"}, {"rep_id": 2, "share": 40}]''.';
    END IF;
    FOR e IN SELECT x FROM jsonb_array_elements(p_members) x LOOP
        IF jsonb_typeof(e) <> 'object' OR jsonb_typeof(e -> 'rep_id') IS DISTINCT FROM 'number'
           OR jsonb_typeof(e -> 'share') IS DISTINCT FROM 'number'
           OR (e ? 'role' AND jsonb_typeof(e -> 'role') NOT IN ('string', 'null'))
           OR (e -> 'rep_id')::numeric <> trunc((e -> 'rep_id')::numeric)
           OR EXISTS (SELECT 1 FROM jsonb_object_keys(e) k WHERE k NOT IN ('rep_id', 'share', 'role')) THEN
            RAISE EXCEPTION 'member % is malformed', e USING ERRCODE = 'LA0V4',
                  DETAIL = 'Each member is an object with a whole number rep_id, a number share and an optional text role.',
                  HINT = 'For example {"rep_id": 1, "share": 60, "role": "key account"}.';
        END IF;
        rep_id := (e ->> 'rep_id')::bigint;
        share := (e ->> 'share')::numeric;
        role := e ->> 'role';
        IF share <= 0 OR share > 100 OR share <> round(share, 2) THEN
            RAISE EXCEPTION 'share % of rep % is not valid', share, rep_id USING ERRCODE = 'LA0V4',
                  DETAIL = 'A share is a percentage above 0 and at most 100, with at most two decimals.',
                  HINT = 'Split 100 as for example 33.33, 33.33 and 33.34.';
        END IF;
        IF rep_id = ANY (v_seen) THEN
            RAISE EXCEPTION 'rep % is listed twice', rep_id USING ERRCODE = 'LA0V4',
                  DETAIL = 'A rep has one share in a team.', HINT = 'List each member once.';
        END IF;
        v_seen := v_seen || rep_id;
        r := allocation._active_rep(_vt_members.rep_id, 'Only active reps join a virtual team.');
        v_sum := v_sum + share;
        RETURN NEXT;
    END LOOP;
    IF v_sum <> 100 THEN
        RAISE EXCEPTION 'the shares sum to %, not 100', v_sum USING ERRCODE = 'LA0V3',
              DETAIL = format('The member list is %s.', p_members),
              HINT = 'The shares of a virtual team are percentages that sum to exactly 100.';
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._vt_members(jsonb) IS 'internal: parses and checks a virtual team''s member list (LA0V4 malformed, LA020/LA021 unknown or inactive rep, LA0V3 not summing to 100)';

-- One event per step of a virtual team
CREATE FUNCTION allocation._vt_event(p_kind text, p_team bigint, p_managed integer, p_key text, p_reason text, p_detail jsonb)
RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS
$$
    INSERT INTO allocation.event (actor, kind, managed_id, table_name, key, reason, detail)
    VALUES (allocation._actor(), p_kind, p_managed,
            (SELECT m.table_name FROM allocation.managed_table m WHERE m.id = p_managed), p_key, p_reason,
            pg_catalog.jsonb_build_object('virtual_team', p_team) || coalesce(p_detail, '{}'))
$$;
COMMENT ON FUNCTION allocation._vt_event(text, bigint, integer, text, text, jsonb) IS 'internal: the audit event of a virtual team step (detail.virtual_team = the team''s id)';

-- The lock that orders a customer's team links with each other and with the deals
-- recorded for it: a transaction-level advisory lock on (managed table, key);
-- exclusive for a link change, shared for record_deal()
CREATE FUNCTION allocation._vt_lock_customer(p_managed integer, p_key text, p_exclusive boolean)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    k bigint := (pg_catalog.hashtext('allocation.virtual_team_customer')::bigint << 32)
                | (pg_catalog.hashtext(p_managed::text || '/' || p_key)::bigint & 4294967295);
BEGIN
    IF p_exclusive THEN
        PERFORM pg_catalog.pg_advisory_xact_lock(k);
    ELSE
        PERFORM pg_catalog.pg_advisory_xact_lock_shared(k);
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._vt_lock_customer(integer, text, boolean) IS 'internal: the advisory lock ordering a customer''s virtual team links and deals (exclusive: link change, shared: record_deal)';

-- Opens a link of a customer to a (locked) team, after every check, under the
-- customer's lock; the link starts at the clock (or when the team starts), so it
-- never overlaps an earlier link of the customer, whose ends all lie behind the clock
CREATE FUNCTION allocation._vt_open_link(t allocation.virtual_team, m allocation.managed_table, p_key text, p_actor text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    o allocation.virtual_team_customer;
    v_other text;
BEGIN
    IF p_key IS NULL THEN
        RAISE EXCEPTION 'customer key must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'A virtual team''s customers are named by their keys.', HINT = 'Pass the customer''s key.';
    END IF;
    IF NOT allocation._customer_exists(m.id, p_key) THEN
        RAISE EXCEPTION 'customer % not found in %', p_key, m.table_name USING ERRCODE = 'LA062',
              DETAIL = 'The customer has no ownership record.', HINT = 'Check the key.';
    END IF;
    PERFORM allocation._vt_lock_customer(m.id, p_key, true);
    SELECT * INTO o FROM allocation.virtual_team_customer x
     WHERE x.managed_id = m.id AND x.key = p_key AND x.valid_to IS NULL;
    IF o.id IS NOT NULL THEN
        SELECT x.name INTO v_other FROM allocation.virtual_team x WHERE x.id = o.team_id;
        IF o.team_id = t.id THEN
            RAISE EXCEPTION 'customer % is already in virtual team %', p_key, t.name USING ERRCODE = 'LA0V6',
                  DETAIL = format('It was added by %s at %s.', o.added_by, o.valid_from), HINT = 'Nothing to do.';
        END IF;
        RAISE EXCEPTION 'customer % is in another virtual team', p_key USING ERRCODE = 'LA0V5',
              DETAIL = format('It is in virtual team %s (%s) since %s; a customer is in one virtual team at a time.',
                              o.team_id, v_other, o.valid_from),
              HINT = 'Remove it from that team first (allocation.remove_team_customer()); a team whose period ended lets go of its customers when allocation.dissolve_virtual_teams() runs.';
    END IF;
    BEGIN
        INSERT INTO allocation.virtual_team_customer (team_id, managed_id, tbl, key, valid_from, added_by)
        VALUES (t.id, m.id, m.tbl, p_key, greatest(pg_catalog.clock_timestamp(), lower(t.valid)), p_actor);
    EXCEPTION WHEN unique_violation THEN
        -- another isolation level than read committed did not see a concurrent link
        RAISE EXCEPTION 'customer % is in another virtual team', p_key USING ERRCODE = 'LA0V5',
              DETAIL = 'A concurrent transaction put it into a virtual team; a customer is in one virtual team at a time.',
              HINT = 'Retry to see which team holds it.';
    END;
    PERFORM allocation._vt_event('virtual_team_customer_added', t.id, m.id, p_key, NULL, '{}');
END
$$;
COMMENT ON FUNCTION allocation._vt_open_link(allocation.virtual_team, allocation.managed_table, text, text) IS 'internal: adds a customer to a virtual team (LA062 unknown customer, LA0V6 already in it, LA0V5 in another team)';

-------------------------------------------------------------------------------
-- Forming and changing teams (managers)
-------------------------------------------------------------------------------
CREATE FUNCTION allocation._create_virtual_team(name text, purpose text, valid tstzrange, members jsonb,
                                                tbl regclass, keys text[])
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_actor text := allocation._vt_require_manager('form a virtual team');
    m allocation.managed_table;
    t allocation.virtual_team;
    v_key text;
BEGIN
    IF name IS NULL OR btrim(name) = '' THEN
        RAISE EXCEPTION 'a virtual team needs a name' USING ERRCODE = '22004',
              DETAIL = 'The name is NULL or blank.', HINT = 'Name it after its program, e.g. ''Provincial distributor 2027''.';
    END IF;
    IF valid IS NULL THEN
        RAISE EXCEPTION 'a virtual team needs a period' USING ERRCODE = '22004',
              DETAIL = 'The period is NULL.', HINT = 'Pass tstzrange(now(), ''2028-01-01'') (upper NULL: until dissolved).';
    END IF;
    IF isempty(valid) OR lower(valid) IS NULL OR lower(valid) < now() OR upper(valid) <= pg_catalog.clock_timestamp() THEN
        RAISE EXCEPTION 'the period of virtual team % is not valid', name USING ERRCODE = 'LA0V8',
              DETAIL = format('The period is %s; it must have a start, not earlier than now (the transaction''s start), and must not be over.', valid),
              HINT = 'Pass tstzrange(now(), ''2028-01-01'') (upper NULL: until dissolved).';
    END IF;
    IF (tbl IS NULL) <> (keys IS NULL) THEN
        RAISE EXCEPTION 'the customers need both a table and keys' USING ERRCODE = '22004',
              DETAIL = 'One of tbl and keys is NULL.', HINT = 'Pass both, or neither to add customers later.';
    END IF;
    IF tbl IS NOT NULL THEN
        m := allocation._managed(tbl);
    END IF;
    INSERT INTO allocation.virtual_team (name, purpose, valid, created_by)
    VALUES (btrim(name), purpose, tstzrange(lower(valid), upper(valid), '[)'), v_actor)
    RETURNING * INTO t;
    INSERT INTO allocation.virtual_team_member (team_id, rep_id, role, share, valid_from, changed_by)
    SELECT t.id, x.rep_id, x.role, x.share, lower(t.valid), v_actor FROM allocation._vt_members(members) x;
    PERFORM allocation._vt_event('virtual_team_created', t.id, NULL, NULL, purpose,
                                 jsonb_build_object('name', t.name, 'valid', t.valid::text, 'members', members));
    -- in key order: two teams formed around the same customers lock them in the same
    -- order (a NULL key comes last and is refused)
    FOR v_key IN SELECT DISTINCT k FROM unnest(keys) k ORDER BY 1 LOOP
        PERFORM allocation._vt_open_link(t, m, v_key, v_actor);
    END LOOP;
    RETURN t.id;
END
$$;
COMMENT ON FUNCTION allocation._create_virtual_team(text, text, tstzrange, jsonb, regclass, text[]) IS 'internal: implementation of allocation.create_virtual_team(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.create_virtual_team(name text, purpose text, valid tstzrange, members jsonb,
                                               tbl regclass DEFAULT NULL, keys text[] DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.create_virtual_team(text, text, tstzrange, jsonb, regclass, text[]) IS
'A manager forms a virtual team (虚拟团队) for a period around customers of a managed table: members [{"rep_id", "share", "role"}] with shares summing to 100; returns its id';

CREATE FUNCTION allocation._set_team_shares(team_id bigint, shares jsonb)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_actor text := allocation._vt_require_manager('change a virtual team''s shares');
    t allocation.virtual_team := allocation._vt_lock(team_id, true);
    v_at timestamptz := pg_catalog.clock_timestamp();   -- under the team's row lock
    v_new timestamptz := greatest(v_at, lower(t.valid));
BEGIN
    -- one statement: the current versions close where the new ones open (also when
    -- the deferred check is made immediate); the join with the count of closed rows
    -- makes the UPDATE finish before the first new version is inserted (one current
    -- version per rep: a unique index)
    WITH closed AS (
        UPDATE allocation.virtual_team_member x SET valid_to = greatest(x.valid_from, v_new)
         WHERE x.team_id = t.id AND x.valid_to IS NULL
        RETURNING x.id)
    INSERT INTO allocation.virtual_team_member (team_id, rep_id, role, share, valid_from, changed_by)
    SELECT t.id, s.rep_id, s.role, s.share, v_new, v_actor
      FROM allocation._vt_members(shares) s, (SELECT count(*) FROM closed) c;
    PERFORM allocation._vt_event('virtual_team_shares_set', t.id, NULL, NULL, NULL,
                                 jsonb_build_object('members', shares, 'valid_from', v_new));
END
$$;
COMMENT ON FUNCTION allocation._set_team_shares(bigint, jsonb) IS 'internal: implementation of allocation.set_team_shares(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.set_team_shares(team_id bigint, shares jsonb)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.set_team_shares(bigint, jsonb) IS
'A manager replaces a virtual team''s members and shares (the whole list, summing to 100) from now on; the previous versions are closed and kept (as-of queries: allocation.team_shares_at())';

CREATE FUNCTION allocation._add_team_customer(team_id bigint, tbl regclass, key text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_actor text := allocation._vt_require_manager('change a virtual team''s customers');
    m allocation.managed_table;
    t allocation.virtual_team;
BEGIN
    IF tbl IS NULL OR key IS NULL THEN
        RAISE EXCEPTION 'table and customer key must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.add_team_customer() names the customer by its table and key.', HINT = 'Pass both.';
    END IF;
    m := allocation._managed(tbl);
    -- the customer's lock first, then the team's row (the order of record_deal())
    PERFORM allocation._vt_lock_customer(m.id, key, true);
    t := allocation._vt_lock(team_id, false);
    PERFORM allocation._vt_open_link(t, m, key, v_actor);
END
$$;
COMMENT ON FUNCTION allocation._add_team_customer(bigint, regclass, text) IS 'internal: implementation of allocation.add_team_customer(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.add_team_customer(team_id bigint, tbl regclass, key text)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.add_team_customer(bigint, regclass, text) IS
'A manager adds a customer to a virtual team from now on (a customer is in one virtual team at a time: LA0V5)';

CREATE FUNCTION allocation._remove_team_customer(team_id bigint, tbl regclass, key text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_actor text := allocation._vt_require_manager('change a virtual team''s customers');
    m allocation.managed_table;
    t allocation.virtual_team;
    l allocation.virtual_team_customer;
BEGIN
    IF tbl IS NULL OR key IS NULL THEN
        RAISE EXCEPTION 'table and customer key must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.remove_team_customer() names the customer by its table and key.', HINT = 'Pass both.';
    END IF;
    m := allocation._managed(tbl);
    PERFORM allocation._vt_lock_customer(m.id, key, true);
    t := allocation._vt_lock(team_id, false);
    UPDATE allocation.virtual_team_customer x
       SET valid_to = greatest(x.valid_from, pg_catalog.clock_timestamp()), removed_by = v_actor
     WHERE x.team_id = t.id AND x.managed_id = m.id AND x.key = _remove_team_customer.key AND x.valid_to IS NULL
    RETURNING * INTO l;
    IF l.id IS NULL THEN
        RAISE EXCEPTION 'customer % is not in virtual team %', key, t.name USING ERRCODE = 'LA0V6',
              DETAIL = 'The team has no current link to this customer.',
              HINT = 'SELECT * FROM allocation.virtual_team_customer WHERE team_id = ' || t.id || ';';
    END IF;
    PERFORM allocation._vt_event('virtual_team_customer_removed', t.id, m.id, key, NULL, '{}');
END
$$;
COMMENT ON FUNCTION allocation._remove_team_customer(bigint, regclass, text) IS 'internal: implementation of allocation.remove_team_customer(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.remove_team_customer(team_id bigint, tbl regclass, key text)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.remove_team_customer(bigint, regclass, text) IS
'A manager takes a customer out of a virtual team from now on (its deals go to its holder again); the link''s history is kept';

-- Ends a (locked) team at p_end: closes its open links there, records the dissolution
CREATE FUNCTION allocation._vt_dissolve(t allocation.virtual_team, p_end timestamptz, p_reason text, p_actor text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    n integer;
BEGIN
    UPDATE allocation.virtual_team_customer x SET valid_to = greatest(x.valid_from, p_end), removed_by = p_actor
     WHERE x.team_id = t.id AND x.valid_to IS NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    -- a team dissolved before its period ends ends then (one dissolved before it
    -- started keeps its planned period: its links are zero-length)
    UPDATE allocation.virtual_team x
       SET valid = CASE WHEN lower(x.valid) < p_end AND (upper(x.valid) IS NULL OR upper(x.valid) > p_end)
                        THEN tstzrange(lower(x.valid), p_end, '[)') ELSE x.valid END,
           dissolved_at = pg_catalog.clock_timestamp(), dissolved_by = p_actor, dissolve_reason = p_reason
     WHERE x.id = t.id;
    PERFORM allocation._vt_event('virtual_team_dissolved', t.id, NULL, NULL, p_reason,
                                 jsonb_build_object('name', t.name, 'ended', p_end, 'customers_released', n));
END
$$;
COMMENT ON FUNCTION allocation._vt_dissolve(allocation.virtual_team, timestamptz, text, text) IS 'internal: dissolves a locked virtual team at a time (its links close there; one virtual_team_dissolved event)';

CREATE FUNCTION allocation._dissolve_virtual_team(team_id bigint, reason text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_actor text := allocation._vt_require_manager('dissolve a virtual team');
    t allocation.virtual_team;
BEGIN
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'dissolving a virtual team needs a reason' USING ERRCODE = '22004',
              DETAIL = 'The reason is kept with the team and in the audit log.', HINT = 'Say why, e.g. ''program cancelled''.';
    END IF;
    t := allocation._vt_lock(team_id, true);
    PERFORM allocation._vt_dissolve(t, pg_catalog.clock_timestamp(), reason, v_actor);
END
$$;
COMMENT ON FUNCTION allocation._dissolve_virtual_team(bigint, text) IS 'internal: implementation of allocation.dissolve_virtual_team(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.dissolve_virtual_team(team_id bigint, reason text)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.dissolve_virtual_team(bigint, text) IS
'A manager dissolves a virtual team now, before its period ends, with a reason; its customers'' deals go to their holders from now on';

CREATE FUNCTION allocation._dissolve_virtual_teams(now timestamptz)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_actor text := allocation._vt_require_manager('dissolve virtual teams');
    t allocation.virtual_team;
    n integer := 0;
BEGIN
    IF _dissolve_virtual_teams.now IS NULL THEN
        RAISE EXCEPTION 'the time must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.dissolve_virtual_teams() dissolves the teams whose period ended by this time.',
              HINT = 'SELECT allocation.dissolve_virtual_teams(now());';
    END IF;
    -- teams being changed are skipped, not waited for: the next run takes them
    FOR t IN SELECT * FROM allocation.virtual_team x
              WHERE x.dissolved_at IS NULL AND upper(x.valid) <= _dissolve_virtual_teams.now
              ORDER BY x.id FOR UPDATE SKIP LOCKED LOOP
        -- a time ahead of the clock (a simulation) ends the team at the clock: no
        -- link ever closes in the future
        PERFORM allocation._vt_dissolve(t, least(upper(t.valid), pg_catalog.clock_timestamp()), NULL, v_actor);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION allocation._dissolve_virtual_teams(timestamptz) IS 'internal: implementation of allocation.dissolve_virtual_teams(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.dissolve_virtual_teams(now timestamptz DEFAULT now())
RETURNS integer
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.dissolve_virtual_teams(timestamptz) IS
'Dissolves the virtual teams whose period ended by a time (for a scheduler such as pg_cron): one virtual_team_dissolved event each; returns how many; idempotent';

-------------------------------------------------------------------------------
-- Reading teams
-------------------------------------------------------------------------------
CREATE FUNCTION allocation._team_member_of(managed_id integer, key text, rep bigint, at timestamptz DEFAULT now())
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
    SELECT EXISTS (
        SELECT 1
          FROM allocation.virtual_team_customer l
          JOIN allocation.virtual_team t ON t.id = l.team_id
          JOIN allocation.virtual_team_member m ON m.team_id = l.team_id
         WHERE l.managed_id = $1 AND l.key = $2 AND m.rep_id = $3
           AND l.valid_from <= $4 AND $4 < coalesce(l.valid_to, upper(t.valid), 'infinity')
           AND m.valid_from <= $4 AND (m.valid_to IS NULL OR $4 < m.valid_to))
$$;
COMMENT ON FUNCTION allocation._team_member_of(integer, text, bigint, timestamptz) IS 'internal: whether a rep is a member of the virtual team a customer is in at a time (for row-level security and resource views)';

CREATE FUNCTION allocation.team_shares_at(team_id bigint, at timestamptz DEFAULT now())
RETURNS TABLE (rep_id bigint, rep_code text, role text, share numeric, valid_from timestamptz, valid_to timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    IF team_shares_at.team_id IS NULL OR team_shares_at.at IS NULL THEN
        RAISE EXCEPTION 'team id and time must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.team_shares_at() reads a team''s shares at a time.', HINT = 'SELECT * FROM allocation.team_shares_at(1, now());';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM allocation.virtual_team t WHERE t.id = team_shares_at.team_id) THEN
        RAISE EXCEPTION 'virtual team % does not exist', team_shares_at.team_id USING ERRCODE = 'LA0V0',
              DETAIL = 'No row of allocation.virtual_team has this id.', HINT = 'SELECT id, name FROM allocation.virtual_team;';
    END IF;
    RETURN QUERY
    SELECT m.rep_id, r.code, m.role, m.share, m.valid_from, m.valid_to
      FROM allocation.virtual_team_member m LEFT JOIN allocation.rep r ON r.id = m.rep_id
     WHERE m.team_id = team_shares_at.team_id AND m.valid_from <= team_shares_at.at
       AND (m.valid_to IS NULL OR team_shares_at.at < m.valid_to)
     ORDER BY m.share DESC, m.rep_id;
END
$$;
COMMENT ON FUNCTION allocation.team_shares_at(bigint, timestamptz) IS 'The members of a virtual team and their shares at a time (default now), largest share first: the as-of view of the share history';

-------------------------------------------------------------------------------
-- The revenue split (业绩分成)
-------------------------------------------------------------------------------
-- The split of an amount of a customer as of a time: the members of the customer's
-- virtual team then, or 100 % to its holder then (NULL: the pool, unattributed).
-- Cents by largest remainder: each line gets its exact part cut to the cent, and the
-- cents left go one each to the largest cut-off remainders, ties to the larger share,
-- then to the lower rep id -- the lines always sum to the amount.
CREATE FUNCTION allocation._split(p_m allocation.managed_table, p_key text, p_amount numeric, p_at timestamptz)
RETURNS TABLE (rep_id bigint, share numeric, amount numeric, team_id bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    WITH team AS (
        SELECT l.team_id
          FROM allocation.virtual_team_customer l JOIN allocation.virtual_team t ON t.id = l.team_id
         WHERE l.managed_id = (p_m).id AND l.key = p_key
           AND l.valid_from <= p_at AND p_at < coalesce(l.valid_to, upper(t.valid), 'infinity')
         ORDER BY l.valid_from DESC LIMIT 1),
    members AS (
        SELECT m.rep_id, m.share, team.team_id
          FROM allocation.virtual_team_member m JOIN team ON team.team_id = m.team_id
         WHERE m.valid_from <= p_at AND (m.valid_to IS NULL OR p_at < m.valid_to)),
    lines AS (
        SELECT members.rep_id, members.share, members.team_id FROM members
        UNION ALL
        SELECT allocation.owner_at((p_m).tbl, p_key, p_at), 100::numeric(5,2), NULL::bigint
         WHERE NOT EXISTS (SELECT 1 FROM members)),
    cut AS (
        SELECT lines.*, p_amount * lines.share / 100 AS exact, trunc(p_amount * lines.share / 100, 2) AS cents_down
          FROM lines),
    ranked AS (
        SELECT cut.*,
               row_number() OVER (ORDER BY cut.exact - cut.cents_down DESC, cut.share DESC, cut.rep_id NULLS LAST) AS pos,
               ((p_amount - sum(cut.cents_down) OVER ()) * 100)::integer AS cents_left
          FROM cut)
    SELECT ranked.rep_id, ranked.share,
           ranked.cents_down + CASE WHEN ranked.pos <= ranked.cents_left THEN 0.01 ELSE 0.00 END,
           ranked.team_id
      FROM ranked
     ORDER BY ranked.rep_id NULLS LAST
$$;
COMMENT ON FUNCTION allocation._split(allocation.managed_table, text, numeric, timestamptz) IS 'internal: the revenue split of an amount of a customer as of a time (largest remainder to the cent; team members, else the holder)';

-- The checks of an amount and a customer that split_revenue() and record_deal() share
CREATE FUNCTION allocation._split_checks(p_tbl regclass, p_key text, p_amount numeric, p_at timestamptz)
RETURNS allocation.managed_table
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
BEGIN
    IF p_tbl IS NULL OR p_key IS NULL OR p_amount IS NULL OR p_at IS NULL THEN
        RAISE EXCEPTION 'table, key, amount and time must not be NULL' USING ERRCODE = '22004',
              DETAIL = format('Got table %s, key %s, amount %s, time %s.', coalesce(p_tbl::text, 'NULL'),
                              coalesce(p_key, 'NULL'), coalesce(p_amount::text, 'NULL'), coalesce(p_at::text, 'NULL')),
              HINT = 'SELECT * FROM allocation.split_revenue(''crm.customer'', ''D-1'', 1000.00);';
    END IF;
    IF p_amount IN ('NaN'::numeric, 'Infinity'::numeric) THEN
        RAISE EXCEPTION 'amount % is not a number of money', p_amount USING ERRCODE = 'LA0V7',
              DETAIL = 'A deal''s revenue is split among reps to the cent.',
              HINT = 'Pass the deal''s amount, e.g. 1000.00.';
    END IF;
    IF p_amount <= 0 THEN
        RAISE EXCEPTION 'amount % is not positive', p_amount USING ERRCODE = 'LA0V7',
              DETAIL = 'A deal''s revenue is split among reps; refunds are not split (yet).',
              HINT = 'Pass the deal''s amount, e.g. 1000.00.';
    END IF;
    IF p_amount <> round(p_amount, 2) THEN
        RAISE EXCEPTION 'amount % has more than two decimals', p_amount USING ERRCODE = 'LA0V7',
              DETAIL = 'Amounts are money: the split is to the cent, and a fraction of a cent is refused rather than rounded away.',
              HINT = format('Round it first, e.g. round(%s, 2).', p_amount);
    END IF;
    m := allocation._managed(p_tbl);
    IF NOT allocation._customer_exists(m.id, p_key) THEN
        RAISE EXCEPTION 'customer % not found in %', p_key, p_tbl USING ERRCODE = 'LA062',
              DETAIL = 'The customer has no ownership record.', HINT = 'Check the key.';
    END IF;
    RETURN m;
END
$$;
COMMENT ON FUNCTION allocation._split_checks(regclass, text, numeric, timestamptz) IS 'internal: the argument checks of split_revenue() and record_deal() (22004 NULL, LA0V7 amount, LA012 table, LA062 customer)';

CREATE FUNCTION allocation._split_revenue(p_tbl regclass, p_key text, p_amount numeric, p_at timestamptz)
RETURNS TABLE (rep_id bigint, share numeric, amount numeric)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    RETURN QUERY SELECT s.rep_id, s.share, s.amount
                   FROM allocation._split(allocation._split_checks(p_tbl, p_key, p_amount, p_at), p_key, p_amount, p_at) s;
END
$$;
COMMENT ON FUNCTION allocation._split_revenue(regclass, text, numeric, timestamptz) IS 'internal: implementation of allocation.split_revenue()';

-- (SQL, not PL/pgSQL: the contract names an argument and a result column "amount")
CREATE FUNCTION allocation.split_revenue(tbl regclass, key text, amount numeric, at timestamptz DEFAULT now())
RETURNS TABLE (rep_id bigint, share numeric, amount numeric)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
    SELECT * FROM allocation._split_revenue($1, $2, $3, $4)
$$;
COMMENT ON FUNCTION allocation.split_revenue(regclass, text, numeric, timestamptz) IS
'How a deal amount of a customer is credited at a time (default now): to the members of its virtual team by their shares then, or 100 % to its holder then (rep_id NULL: nobody held it); to the cent, summing exactly to the amount (largest remainder, ties to the larger share, then the lower rep id)';

-- The checks of a deal's transaction and time (record_deal() and outcome tables)
CREATE FUNCTION allocation._deal_checks(p_at timestamptz, p_source text)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    -- the split must see the team changes committed while this waited for their locks
    -- (a new snapshot per statement); a REPEATABLE READ snapshot would not
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION '%', CASE WHEN p_source = 'record_deal'
                                  THEN 'allocation.record_deal() runs in READ COMMITTED transactions only'
                                  ELSE format('deals of %s are recorded in READ COMMITTED transactions only', p_source) END
              USING ERRCODE = '0A000',
              DETAIL = format('This transaction is %s; its snapshot could miss a team change ordered before the deal.',
                              pg_catalog.current_setting('transaction_isolation')),
              HINT = 'Record deals in a READ COMMITTED transaction (the default).';
    END IF;
    IF p_at > now() AND NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = allocation._actor()) THEN
        RAISE EXCEPTION 'a deal cannot be dated in the future' USING ERRCODE = '22008',
              DETAIL = format('It is dated %s; its split would be frozen before the shares of that time are known.', p_at),
              HINT = 'Record deals when they are made (split_revenue() previews a split at any time; only a superuser may date one ahead, to simulate).';
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._deal_checks(timestamptz, text) IS 'internal: a deal is recorded in a READ COMMITTED transaction (0A000) and not dated in the future (22008)';

-- Lands a deal of a customer with its split as of the deal's time, frozen: the
-- one implementation for record_deal() and the deals read from the CRM's own
-- order tables (manage_outcomes(), source = the table's name).  Returns the deal,
-- NULL when (source, ref) is already recorded.  The caller checked the customer
-- and the amount (_split_checks).
CREATE FUNCTION allocation._land_deal(m allocation.managed_table, p_key text, p_amount numeric, p_at timestamptz,
                                      p_source text, p_ref text, p_actor text, p_detail jsonb DEFAULT '{}')
RETURNS allocation.deal
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    d allocation.deal;
    v_team bigint;
    v_lines jsonb;
BEGIN
    PERFORM allocation._deal_checks(p_at, p_source);
    -- the customer's lock (shared: deals of one customer do not wait for each other),
    -- then the row of its team at the deal's time: a link or share change either
    -- happened before (and is in the split, read after the locks) or starts after
    -- this deal's time
    PERFORM allocation._vt_lock_customer(m.id, p_key, false);
    SELECT l.team_id INTO v_team
      FROM allocation.virtual_team_customer l JOIN allocation.virtual_team t ON t.id = l.team_id
     WHERE l.managed_id = m.id AND l.key = p_key
       AND l.valid_from <= p_at AND p_at < coalesce(l.valid_to, upper(t.valid), 'infinity');
    IF v_team IS NOT NULL THEN
        PERFORM 1 FROM allocation.virtual_team t WHERE t.id = v_team FOR SHARE;
    END IF;
    IF EXISTS (SELECT 1 FROM allocation.deal x WHERE x.managed_id = m.id AND x.source = p_source AND x.ref = p_ref) THEN
        RETURN NULL;
    END IF;
    -- the split as of the deal's time, read after the locks, frozen with the deal
    SELECT jsonb_agg(jsonb_build_object('rep_id', s.rep_id, 'share', s.share, 'amount', s.amount) ORDER BY s.rep_id),
           min(s.team_id)
      INTO v_lines, v_team
      FROM allocation._split(m, p_key, round(p_amount, 2), p_at) s;
    BEGIN
        INSERT INTO allocation.deal (managed_id, key, amount, at, source, ref, team_id, recorded_by)
        VALUES (m.id, p_key, round(p_amount, 2), p_at, p_source, p_ref, v_team, p_actor)
        RETURNING * INTO d;
    EXCEPTION WHEN unique_violation THEN
        RETURN NULL;    -- recorded by a concurrent transaction
    END;
    INSERT INTO allocation.deal_split (deal_id, rep_id, share, amount)
    SELECT d.id, (l ->> 'rep_id')::bigint, (l ->> 'share')::numeric, (l ->> 'amount')::numeric
      FROM jsonb_array_elements(v_lines) l;
    PERFORM allocation._vt_event('deal_recorded', v_team, m.id, p_key, p_ref,
                                 jsonb_build_object('deal', d.id, 'amount', d.amount, 'at', p_at, 'split', v_lines)
                                 || CASE WHEN p_source <> 'record_deal' THEN jsonb_build_object('source', p_source) ELSE '{}' END
                                 || coalesce(p_detail, '{}'));
    RETURN d;
END
$$;
COMMENT ON FUNCTION allocation._land_deal(allocation.managed_table, text, numeric, timestamptz, text, text, text, jsonb) IS 'internal: records a deal with its split as of its time, frozen, and its deal_recorded event (record_deal() and outcome tables); NULL when the ref of that source is already recorded';

CREATE FUNCTION allocation._record_deal(tbl regclass, key text, amount numeric, at timestamptz, ref text)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_actor text := allocation._actor();
    v_me bigint := allocation._rep_of(v_actor);
    m allocation.managed_table := allocation._split_checks(tbl, key, amount, at);
    d allocation.deal;
BEGIN
    IF ref IS NULL OR btrim(ref) = '' THEN
        RAISE EXCEPTION 'a deal needs a ref' USING ERRCODE = '22004',
              DETAIL = 'The ref (e.g. the order or invoice number) makes recording a deal idempotent: it is unique per table.',
              HINT = 'SELECT allocation.record_deal(''crm.customer'', ''D-1'', 1000.00, ref => ''SO-2027-0001'');';
    END IF;
    PERFORM allocation._deal_checks(at, 'record_deal');
    -- a rep records deals of the customers it holds or shares in a team; managers and
    -- the application (no rep's login) any
    IF v_me IS NOT NULL AND NOT allocation._is_manager(v_actor)
       AND v_me IS DISTINCT FROM allocation.owner_at(m.tbl, key, at)
       AND NOT allocation._team_member_of(m.id, key, v_me, at) THEN
        RAISE EXCEPTION 'role % may not record a deal of customer %', v_actor, key USING ERRCODE = 'LA0V2',
              DETAIL = 'A rep records deals of customers it held, or shared in a virtual team, at the deal''s time.',
              HINT = 'Ask the holder or a manager.';
    END IF;
    d := allocation._land_deal(m, key, amount, at, 'record_deal', ref, v_actor);
    IF d.id IS NOT NULL THEN
        RETURN d.id;
    END IF;
    SELECT * INTO d FROM allocation.deal x
     WHERE x.managed_id = m.id AND x.source = 'record_deal' AND x.ref = _record_deal.ref;
    RAISE EXCEPTION 'deal % of % is already recorded', ref, m.table_name USING ERRCODE = 'LA0V9',
          DETAIL = format('Deal %s (customer %s, amount %s, at %s) has this ref; recording is not repeated.',
                          d.id, d.key, d.amount, d.at),
          HINT = 'A retry can treat LA0V9 as done: SELECT id FROM allocation.deal WHERE ref = ' || quote_literal(ref) || ';';
END
$$;
COMMENT ON FUNCTION allocation._record_deal(regclass, text, numeric, timestamptz, text) IS 'internal: implementation of allocation.record_deal(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.record_deal(tbl regclass, key text, amount numeric, at timestamptz DEFAULT now(), ref text DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.record_deal(regclass, text, numeric, timestamptz, text) IS
'Records a deal of a customer with its revenue split as of the deal''s time, frozen (later share changes do not rewrite it); ref (required, e.g. the order number) is unique per table: recording it again is refused with LA0V9; returns the deal id';

-- Revenue credited per month, rep, virtual team (NULL = as the holder) and table.  A rep
-- sees its own lines; readers of the whole picture see all.
CREATE VIEW allocation.revenue_credit WITH (security_barrier) AS
SELECT (date_trunc('month', d.at))::date AS month, s.rep_id, r.code AS rep_code, d.team_id, t.name AS team_name,
       mt.table_name, d.source, count(*) AS deals, sum(s.amount) AS credited
  FROM allocation.deal_split s
  JOIN allocation.deal d ON d.id = s.deal_id
  JOIN allocation.managed_table mt ON mt.id = d.managed_id
  LEFT JOIN allocation.rep r ON r.id = s.rep_id
  LEFT JOIN allocation.virtual_team t ON t.id = d.team_id
 WHERE pg_catalog.has_table_privilege('allocation.deal', 'SELECT')
    OR s.rep_id = allocation.current_rep_id()
 GROUP BY 1, s.rep_id, r.code, d.team_id, t.name, mt.table_name, d.source;
COMMENT ON VIEW allocation.revenue_credit IS 'Revenue credited per month (of the deal time, in the session''s time zone), rep (NULL: unattributed, nobody held the customer), virtual team (NULL: credited as the holder), table and source: deals and the credited sum; a rep sees its own rows, managers, analysts and admins all';

-- pg_dump: teams, their history and the deals are user data
SELECT pg_catalog.pg_extension_config_dump('allocation.virtual_team', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.virtual_team_member', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.virtual_team_customer', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.deal', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.deal_split', '');

-------------------------------------------------------------------------------
-- Sharing: a customer keeps one accountable owner and can be shared with other
-- reps for a while, as collaborator (read and write) or viewer (read) (issue 13)
-------------------------------------------------------------------------------
CREATE TABLE allocation.customer_share (
    id           bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    managed_id   integer NOT NULL REFERENCES allocation.managed_table (id) ON DELETE CASCADE,
    key          text NOT NULL,
    rep_id       bigint NOT NULL,  -- no foreign key: the history outlives a deleted rep, as the event log does
    role         text NOT NULL CHECK (role IN ('collaborator', 'viewer')),
    valid        tstzrange NOT NULL CHECK (NOT isempty(valid) AND NOT lower_inf(valid)),
    shared_by    text NOT NULL,
    shared_at    timestamptz NOT NULL DEFAULT now(),
    reason       text,
    ended_by     text,
    ended_at     timestamptz,
    end_reason   text,
    CONSTRAINT customer_share_ended CHECK ((ended_at IS NULL) = (ended_by IS NULL))
);
-- one share of a customer per rep that has not been taken back (its validity may lie ahead)
CREATE UNIQUE INDEX customer_share_one ON allocation.customer_share (managed_id, key, rep_id) WHERE ended_at IS NULL;
-- row-level security asks "which customers are shared with me": by rep
CREATE INDEX customer_share_rep_idx ON allocation.customer_share (rep_id, managed_id) WHERE ended_at IS NULL;
COMMENT ON TABLE allocation.customer_share IS 'Customers shared with reps other than their holder (written by share_customer() and unshare_customer() only); a share counts while it is not ended and now() is inside valid';
COMMENT ON COLUMN allocation.customer_share.role IS 'collaborator: reads and edits the customer''s row (not its owner); viewer: reads it';
COMMENT ON COLUMN allocation.customer_share.valid IS 'when the share counts (a bounded range ends by itself; unshare_customer() ends it early)';
COMMENT ON COLUMN allocation.customer_share.ended_at IS 'when the share was taken back, or replaced by a new share of the same customer with the same rep';

-- The keys of a table's customers shared with the current rep now (write: as collaborator).
-- Row-level security asks it once per statement (a hashed subplan), not per row.  Public:
-- it only tells a rep its own shares (and nothing to a role that is no rep's login).
CREATE FUNCTION allocation.shared_with_me(tbl regclass, write boolean DEFAULT false)
RETURNS SETOF text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
    SELECT s.key FROM allocation.customer_share s
      JOIN allocation.managed_table m ON m.id = s.managed_id AND m.tbl = shared_with_me.tbl
     WHERE s.rep_id = allocation.current_rep_id() AND s.ended_at IS NULL
       AND s.valid @> pg_catalog.now() AND (NOT coalesce(shared_with_me.write, false) OR s.role = 'collaborator')
    UNION
    -- the customers of the virtual teams the rep is a member of now (read)
    SELECT c.key FROM allocation.virtual_team_customer c
      JOIN allocation.managed_table m ON m.id = c.managed_id AND m.tbl = shared_with_me.tbl
      JOIN allocation.virtual_team t ON t.id = c.team_id
      JOIN allocation.virtual_team_member vm ON vm.team_id = c.team_id AND vm.rep_id = allocation.current_rep_id()
     WHERE NOT coalesce(shared_with_me.write, false)
       AND c.valid_from <= pg_catalog.now() AND (c.valid_to IS NULL OR c.valid_to > pg_catalog.now())
       AND vm.valid_from <= pg_catalog.now() AND (vm.valid_to IS NULL OR vm.valid_to > pg_catalog.now())
       AND t.dissolved_at IS NULL AND t.valid @> pg_catalog.now()
$$;
COMMENT ON FUNCTION allocation.shared_with_me(regclass, boolean) IS 'Keys of the table''s customers shared with the current rep now (write = true: as collaborator only), and, for reading, those of the virtual teams it is a member of now; the row-level security of enable_rep_security() reads it';

CREATE FUNCTION allocation._share_event(s allocation.customer_share, p_kind text, p_reason text)
RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS
$$
    INSERT INTO allocation.event (actor, kind, managed_id, table_name, key, to_rep, reason, detail)
    SELECT allocation._actor(), p_kind, s.managed_id, m.table_name, s.key, s.rep_id, p_reason,
           pg_catalog.jsonb_build_object('share', s.id, 'role', s.role, 'valid', s.valid::text)
      FROM allocation.managed_table m WHERE m.id = s.managed_id
$$;
COMMENT ON FUNCTION allocation._share_event(allocation.customer_share, text, text) IS 'internal: the audit event of a share (customer_shared, customer_unshared)';

CREATE FUNCTION allocation._share_customer(tbl regclass, key text, rep bigint, role text, valid tstzrange)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
    v_actor text := allocation._actor();
    v_found boolean;
    v_owner bigint;
    r allocation.rep;
    s allocation.customer_share;
BEGIN
    IF tbl IS NULL OR key IS NULL OR rep IS NULL OR role IS NULL OR valid IS NULL THEN
        RAISE EXCEPTION 'share_customer() needs a table, a key, a rep, a role and a validity' USING ERRCODE = '22004',
              DETAIL = 'One of them is NULL.',
              HINT = 'SELECT allocation.share_customer(''crm.customer'', ''C-1'', 7, ''collaborator'');';
    END IF;
    IF role NOT IN ('collaborator', 'viewer') THEN
        RAISE EXCEPTION 'unknown share role "%"', role USING ERRCODE = 'LA0S0',
              DETAIL = 'A shared rep is a collaborator (reads and edits the customer) or a viewer (reads it).',
              HINT = 'Use ''collaborator'' or ''viewer''.';
    END IF;
    IF isempty(valid) OR lower_inf(valid) OR (NOT upper_inf(valid) AND upper(valid) <= now()) THEN
        RAISE EXCEPTION 'share validity must start at a time and end in the future' USING ERRCODE = 'LA0S0',
              DETAIL = format('Got %s; a share counts from a start time until its end (or until it is taken back).', valid),
              HINT = 'Use e.g. tstzrange(now(), now() + interval ''90 days'') or tstzrange(now(), NULL).';
    END IF;
    m := allocation._managed(tbl);
    r := allocation._active_rep(rep, 'A customer is shared only with active reps.');
    PERFORM allocation._check_column_types(m.tbl, m.key_column, NULL);
    -- under the customer's row lock: the holder cannot change meanwhile
    SELECT l.row_found, l.row_owner INTO v_found, v_owner FROM allocation._lock_customer_row(m, key, false) l;
    IF v_found IS NOT NULL THEN
        -- the key as the engine records it (the key column's own text form: '02' is customer 2)
        SELECT u.r[1] INTO key FROM allocation._table_rows(m.tbl, ARRAY[m.key_column::text], key, '') u(r);
    END IF;
    IF NOT allocation._is_manager(v_actor)
       AND (v_found IS NULL OR v_owner IS NULL OR allocation._rep_of(v_actor) IS DISTINCT FROM v_owner) THEN
        RAISE EXCEPTION 'role % may not share customer %', v_actor, key USING ERRCODE = 'LA0S1',
              DETAIL = 'A customer is shared by its holder or by a manager.',
              HINT = 'Ask the holder or a manager.';
    END IF;
    IF v_found IS NULL THEN
        RAISE EXCEPTION 'customer % not found in %', key, tbl USING ERRCODE = 'LA062',
              DETAIL = format('No row of %s has %s = %s.', tbl, m.key_column, key), HINT = 'Check the key.';
    END IF;
    IF v_owner = rep THEN
        RAISE EXCEPTION 'rep % holds customer %', r.code, key USING ERRCODE = 'LA0S2',
              DETAIL = 'The holder already sees and edits its customer.', HINT = 'Share it with another rep.';
    END IF;
    -- a new share of the same customer with the same rep replaces the old one (kept as history)
    FOR s IN UPDATE allocation.customer_share x
                SET ended_by = v_actor, ended_at = now(), end_reason = 'replaced by a new share'
              WHERE x.managed_id = m.id AND x.key = _share_customer.key AND x.rep_id = rep AND x.ended_at IS NULL
              RETURNING * LOOP
        PERFORM allocation._share_event(s, 'customer_unshared', 'replaced by a new share');
    END LOOP;
    INSERT INTO allocation.customer_share (managed_id, key, rep_id, role, valid, shared_by)
    VALUES (m.id, key, rep, role, valid, v_actor)
    RETURNING * INTO s;
    PERFORM allocation._share_event(s, 'customer_shared', format('shared as %s by %s', role, v_actor));
    RETURN s.id;
END
$$;
COMMENT ON FUNCTION allocation._share_customer(regclass, text, bigint, text, tstzrange) IS 'internal: implementation of allocation.share_customer(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.share_customer(tbl regclass, key text, rep bigint, role text,
                                          valid tstzrange DEFAULT tstzrange(now(), NULL))
RETURNS bigint
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.share_customer(regclass, text, bigint, text, tstzrange) IS
'Shares a customer with another rep while valid (collaborator: reads and edits its row, viewer: reads it, under enable_rep_security()); the holder stays the accountable owner. By the holder or a manager; returns the share id';

CREATE FUNCTION allocation._unshare_customer(tbl regclass, key text, rep bigint, reason text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
    v_actor text := allocation._actor();
    v_me bigint := allocation._rep_of(v_actor);
    s allocation.customer_share;
BEGIN
    IF tbl IS NULL OR key IS NULL OR rep IS NULL THEN
        RAISE EXCEPTION 'unshare_customer() needs a table, a key and a rep' USING ERRCODE = '22004',
              DETAIL = 'One of them is NULL.', HINT = 'SELECT allocation.unshare_customer(''crm.customer'', ''C-1'', 7);';
    END IF;
    m := allocation._managed(tbl);
    -- the key as the engine records it, when the customer is still there
    SELECT coalesce((SELECT u.r[1] FROM allocation._table_rows(m.tbl, ARRAY[m.key_column::text], key, '') u(r)), key)
      INTO key;
    SELECT * INTO s FROM allocation.customer_share x
     WHERE x.managed_id = m.id AND x.key = _unshare_customer.key AND x.rep_id = rep AND x.ended_at IS NULL
       FOR UPDATE;
    -- who may take it back: a manager, the holder, or the shared rep itself (leaving)
    IF NOT allocation._is_manager(v_actor) AND v_me IS DISTINCT FROM rep
       AND (v_me IS NULL OR v_me IS DISTINCT FROM allocation._customer_holder(m.id, key)) THEN
        RAISE EXCEPTION 'role % may not take back a share of customer %', v_actor, key USING ERRCODE = 'LA0S1',
              DETAIL = 'A share is taken back by the holder, by a manager or by the shared rep itself.',
              HINT = 'Ask the holder or a manager.';
    END IF;
    IF s.id IS NULL THEN
        RAISE EXCEPTION 'customer % is not shared with rep %', key, rep USING ERRCODE = 'LA0S3',
              DETAIL = 'There is no share of this customer with this rep that has not ended.',
              HINT = 'SELECT * FROM allocation.active_share;';
    END IF;
    UPDATE allocation.customer_share x SET ended_by = v_actor, ended_at = now(), end_reason = _unshare_customer.reason
     WHERE x.id = s.id RETURNING * INTO s;
    PERFORM allocation._share_event(s, 'customer_unshared', coalesce(reason, format('taken back by %s', v_actor)));
END
$$;
COMMENT ON FUNCTION allocation._unshare_customer(regclass, text, bigint, text) IS 'internal: implementation of allocation.unshare_customer(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.unshare_customer(tbl regclass, key text, rep bigint, reason text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.unshare_customer(regclass, text, bigint, text) IS
'Ends a share of a customer with a rep now (by the holder, a manager or the shared rep itself); the share stays in the history';

-- The shares that have not ended; a rep sees those given to it and those of the customers it holds
CREATE VIEW allocation.active_share WITH (security_barrier) AS
SELECT s.id, mt.table_name, s.key, s.rep_id, r.code AS rep_code, s.role, s.valid,
       s.valid @> now() AS in_force, s.shared_by, s.shared_at
  FROM allocation.customer_share s
  JOIN allocation.managed_table mt ON mt.id = s.managed_id
  LEFT JOIN allocation.rep r ON r.id = s.rep_id
 WHERE s.ended_at IS NULL AND (upper_inf(s.valid) OR upper(s.valid) > now())
   AND (pg_catalog.has_table_privilege('allocation.customer_share', 'SELECT')
        OR s.rep_id = allocation.current_rep_id()
        OR EXISTS (SELECT 1 FROM allocation.assignment a
                    WHERE a.managed_id = s.managed_id AND a.key = s.key AND a.valid_to IS NULL
                      AND a.rep_id = allocation.current_rep_id()));
COMMENT ON VIEW allocation.active_share IS 'Shares not ended and not run out (in_force: valid now); a rep sees those given to it and those of its own customers, managers, analysts and admins all';

-------------------------------------------------------------------------------
-- Dealer networks (立体客户网络): a customer's parent customer (a county
-- distributor's township retailers, the growers they serve), mapped with
-- manage(..., attributes => '{"parent": "parent_id"}').  The rule policy
-- follow_parent (in C, src/assign.c) gives a new retailer to its distributor's
-- owner.  These functions read the tree with the caller's own rights (and
-- row-level security): a rep sees the part of a network it may see.
-------------------------------------------------------------------------------

-- The mapping of a table with a parent attribute: its key, parent, owner and name
-- columns; with tbl NULL, of every managed table that maps a parent (public: the
-- functions below run with the caller's rights and read it)
CREATE FUNCTION allocation.network_mapping(tbl regclass DEFAULT NULL)
RETURNS TABLE (m allocation.managed_table, parent_column name, key_type text, name_expr text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    r allocation.managed_table;
BEGIN
    IF tbl IS NOT NULL THEN
        r := allocation._managed(tbl);
        IF NOT r.attributes ? 'parent' THEN
            RAISE EXCEPTION 'table % maps no parent attribute', tbl USING ERRCODE = 'LA0N0',
                  DETAIL = 'A dealer network needs the column that holds each customer''s parent customer key.',
                  HINT = format('SELECT allocation.manage(%L, %L, %L, %L, %L::jsonb || ''{"parent": "parent_id"}'');',
                                tbl::text, r.key_column, r.location_column, r.owner_column, r.attributes::text);
        END IF;
    END IF;
    FOR r IN SELECT * FROM allocation.managed_table x
              WHERE x.active AND x.attributes ? 'parent' AND (network_mapping.tbl IS NULL OR x.tbl = network_mapping.tbl)
              ORDER BY x.id LOOP
        m := r;
        parent_column := r.attributes ->> 'parent';
        key_type := (SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a
                      WHERE a.attrelid = r.tbl AND a.attname = r.key_column AND NOT a.attisdropped);
        name_expr := CASE WHEN r.attributes ? 'name' THEN pg_catalog.format('c.%I::text', r.attributes ->> 'name')
                          ELSE 'NULL::text' END;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation.network_mapping(regclass) IS 'The registration and the key, parent and name columns of a managed table''s dealer network (LA0N0 when it maps no parent attribute); with NULL, of every managed table that maps a parent';

CREATE FUNCTION allocation.customer_network(tbl regclass, key text)
RETURNS TABLE (customer_key text, parent_key text, depth integer, path text[], name text, rep_id bigint,
               rep_code text, is_asked boolean)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    x record;
    v_root text;
BEGIN
    IF tbl IS NULL OR customer_network.key IS NULL THEN
        RAISE EXCEPTION 'customer_network() needs a table and a key' USING ERRCODE = '22004',
              DETAIL = 'One of them is NULL.', HINT = 'SELECT * FROM allocation.customer_network(''crm.customer'', ''C-1'');';
    END IF;
    SELECT * INTO x FROM allocation.network_mapping(tbl);
    -- up to the top-level customer (a cycle or a missing parent ends the walk)
    EXECUTE pg_catalog.format($q$
        WITH RECURSIVE up AS (
            SELECT c.%1$I AS k, c.%2$I AS p, 0 AS d, ARRAY[c.%1$I::text] AS path FROM %3$s c WHERE c.%1$I = $1::%4$s
            UNION ALL
            SELECT c.%1$I, c.%2$I, up.d + 1, up.path || c.%1$I::text
              FROM %3$s c JOIN up ON c.%1$I = up.p
             WHERE NOT c.%1$I::text = ANY (up.path) AND up.d < 64)
        SELECT up.k::text FROM up ORDER BY up.d DESC LIMIT 1$q$,
        (x.m).key_column, x.parent_column, tbl, x.key_type) INTO v_root USING customer_network.key;
    IF v_root IS NULL THEN
        RAISE EXCEPTION 'customer % not found in %', customer_network.key, tbl USING ERRCODE = 'LA062',
              DETAIL = format('No row of %s that you may read has %s = %s.', tbl, (x.m).key_column, customer_network.key),
              HINT = 'Check the key.';
    END IF;
    -- and down the whole tree from there, with each customer's owner
    RETURN QUERY EXECUTE pg_catalog.format($q$
        WITH RECURSIVE down AS (
            SELECT c.%1$I AS k, c.%2$I AS p, 0 AS d, ARRAY[c.%1$I::text] AS path, %5$s AS name, c.%3$I::bigint AS owner
              FROM %4$s c WHERE c.%1$I = $1::%6$s
            UNION ALL
            SELECT c.%1$I, c.%2$I, down.d + 1, down.path || c.%1$I::text, %5$s, c.%3$I::bigint
              FROM %4$s c JOIN down ON c.%2$I = down.k
             WHERE NOT c.%1$I::text = ANY (down.path) AND down.d < 64)
        SELECT down.k::text, CASE WHEN down.d > 0 THEN down.p::text END, down.d, down.path, down.name,
               down.owner, r.code, down.k::text = $2
          FROM down LEFT JOIN allocation.rep r ON r.id = down.owner
         ORDER BY down.path$q$,
        (x.m).key_column, x.parent_column, (x.m).owner_column, tbl, x.name_expr, x.key_type)
        USING v_root, customer_network.key;
END
$$;
COMMENT ON FUNCTION allocation.customer_network(regclass, text) IS
'The dealer network a customer belongs to: from its top-level customer down, each customer with its parent, depth, path and owner (read with the caller''s rights; index the parent column for large tables)';

-- Every top-level customer with a network below it, per managed table mapping a parent
CREATE FUNCTION allocation.network_summary(tbl regclass DEFAULT NULL)
RETURNS TABLE (table_name text, root_key text, root_name text, rep_id bigint, rep_code text,
               customers bigint, levels integer, retailers_other_owner bigint, revenue numeric)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    t regclass;
    x record;
BEGIN
    FOR x IN SELECT * FROM allocation.network_mapping(network_summary.tbl) LOOP
        t := (x.m).tbl;
        -- with no table named, the tables the caller may not read are left out (not an error)
        CONTINUE WHEN network_summary.tbl IS NULL AND NOT pg_catalog.has_table_privilege(t, 'SELECT');
        RETURN QUERY EXECUTE pg_catalog.format($q$
            WITH RECURSIVE down AS (
                SELECT c.%1$I AS root, c.%1$I AS k, 0 AS d, ARRAY[c.%1$I::text] AS path, c.%3$I::bigint AS owner
                  FROM %4$s c
                 WHERE c.%2$I IS NULL OR NOT EXISTS (SELECT 1 FROM %4$s p WHERE p.%1$I = c.%2$I)
                UNION ALL
                SELECT down.root, c.%1$I, down.d + 1, down.path || c.%1$I::text, c.%3$I::bigint
                  FROM %4$s c JOIN down ON c.%2$I = down.k
                 WHERE NOT c.%1$I::text = ANY (down.path) AND down.d < 64)
            SELECT $1, down.root::text, (SELECT %5$s FROM %4$s c WHERE c.%1$I = down.root),
                   min(down.owner) FILTER (WHERE down.d = 0), min(r.code) FILTER (WHERE down.d = 0),
                   count(*), max(down.d),
                   count(*) FILTER (WHERE down.d > 0 AND down.owner IS DISTINCT FROM
                                    (SELECT c.%3$I::bigint FROM %4$s c WHERE c.%1$I = down.root)),
                   %6$s
              FROM down LEFT JOIN allocation.rep r ON r.id = down.owner
             GROUP BY down.root
            HAVING count(*) > 1
             ORDER BY count(*) DESC, down.root::text$q$,
            (x.m).key_column, x.parent_column, (x.m).owner_column, t, x.name_expr,
            -- the deals of the network's customers, for the roles that read deals (not reps)
            CASE WHEN pg_catalog.has_table_privilege('allocation.deal', 'SELECT')
                 THEN pg_catalog.format('coalesce((SELECT sum(dl.amount) FROM allocation.deal dl
                                                    WHERE dl.managed_id = %s AND dl.key IN (SELECT x.k::text FROM down x
                                                                                            WHERE x.root = down.root)), 0)',
                                        (x.m).id)
                 ELSE 'NULL::numeric' END)
            USING (x.m).table_name;
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation.network_summary(regclass) IS
'Per top-level customer with a network below it (a distributor and its retailers): owner, size, depth, how many of its network another rep holds, and the revenue of its deals (NULL for roles that do not read deals, such as reps); read with the caller''s rights';

CREATE VIEW allocation.dealer_network AS
SELECT * FROM allocation.network_summary();
COMMENT ON VIEW allocation.dealer_network IS 'BI: every dealer network (a top-level customer with customers below it) of every managed table that maps a parent: owner, size, depth, retailers held by another rep, revenue of its deals (allocation.network_summary())';
-- <<< issue 13 part 2
-- >>> issue 14
-------------------------------------------------------------------------------
-- The allocation loop (issue 14): outcomes from the CRM's tables, potential,
-- measures and scorecards, rewards, new reps, alerts, run_maintenance
-------------------------------------------------------------------------------
-- Rewards (issue 14): rules that turn a period's measure into an effect for the next period,
-- and the rewards given.  Here, with the claim tables, because claim_limits() reads them.
CREATE TABLE allocation.reward_rule (
    id             bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name           text NOT NULL UNIQUE,
    measure        text NOT NULL CHECK (measure IN ('conversion_pct', 'revenue', 'satisfaction_avg', 'touched_pct')),
    threshold      numeric NOT NULL,
    min_customers  integer NOT NULL DEFAULT 1 CHECK (min_customers >= 0),
    team_id        bigint REFERENCES allocation.team (id) ON DELETE CASCADE,
    effect         text NOT NULL CHECK (effect IN ('capacity_bonus', 'daily_claims_bonus', 'tier_access', 'resource_priority')),
    amount         integer NOT NULL CHECK (amount > 0),
    tier           text,
    pool_id        bigint,
    enabled        boolean NOT NULL DEFAULT true,
    note           text,
    CONSTRAINT reward_rule_tier CHECK ((effect = 'tier_access') = (tier IS NOT NULL)),
    CONSTRAINT reward_rule_pool CHECK ((effect = 'resource_priority') = (pool_id IS NOT NULL))
);
COMMENT ON TABLE allocation.reward_rule IS 'Rewards by rule: reps of a team (NULL = all, sub-teams included) whose measure over a period reaches the threshold (with at least min_customers customers in it) get the effect for the next period of the same length (evaluate_performance())';
COMMENT ON COLUMN allocation.reward_rule.measure IS 'conversion_pct, revenue, satisfaction_avg or touched_pct, as allocation.rep_measures() computes them';
COMMENT ON COLUMN allocation.reward_rule.min_customers IS 'the measure counts only with at least this many customers behind it (conversion: its base; touched: held at the end; satisfaction: responses; revenue: customers held at the end)';
COMMENT ON COLUMN allocation.reward_rule.effect IS 'capacity_bonus (+amount customers), daily_claims_bonus (+amount claims a day), tier_access (+amount on the claim policy''s max_held of tier: may claim a tier otherwise reserved), resource_priority (+amount on the per-rep cap of resource pool pool_id)';

CREATE TABLE allocation.reward (
    id             bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    rule_id        bigint NOT NULL,   -- no foreign keys: the history outlives a deleted rule or rep
    rep_id         bigint NOT NULL,
    earned_in      tstzrange NOT NULL,
    effective      tstzrange NOT NULL,
    effect         text NOT NULL,
    amount         integer NOT NULL,
    tier           text,
    pool_id        bigint,
    measure        text NOT NULL,
    measure_value  numeric,
    applied_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    capacity_added integer NOT NULL DEFAULT 0,   -- capacity_bonus: what was added to rep.capacity (0 when unlimited)
    CONSTRAINT reward_once UNIQUE (rule_id, rep_id, earned_in)
);
CREATE INDEX reward_active_idx ON allocation.reward (rep_id, effect) WHERE revoked_at IS NULL;
COMMENT ON TABLE allocation.reward IS 'Rewards given by evaluate_performance(): effective for the period after the one they were earned in, revoked by the evaluation of that period (written by the engine only)';

-- The active bonus of a rep for an effect at a time (tier_access: of a tier; resource_priority: of a pool)
CREATE FUNCTION allocation._reward_bonus(p_rep bigint, p_effect text, p_tier text DEFAULT NULL, p_pool bigint DEFAULT NULL,
                                         p_at timestamptz DEFAULT now())
RETURNS integer
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT coalesce(sum(w.amount), 0)::integer FROM allocation.reward w
     WHERE w.rep_id = p_rep AND w.effect = p_effect AND w.revoked_at IS NULL AND w.effective @> p_at
       AND (p_tier IS NULL OR w.tier = p_tier) AND (p_pool IS NULL OR w.pool_id = p_pool)
$$;
COMMENT ON FUNCTION allocation._reward_bonus(bigint, text, text, bigint, timestamptz) IS 'internal: the sum of a rep''s active rewards of an effect at a time';

-- Why a limit is higher: the rep's active rewards of an effect, as a note for explain_claim()
CREATE FUNCTION allocation._reward_note(p_rep bigint, p_effect text, p_tier text DEFAULT NULL)
RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT coalesce(' (' || string_agg(pg_catalog.format('+%s from reward rule "%s" until %s',
                                                         CASE WHEN p_effect = 'capacity_bonus' THEN w.capacity_added ELSE w.amount END,
                                                         coalesce(rr.name, w.rule_id::text), upper(w.effective)),
                                       ', ' ORDER BY w.id) || ')', '')
      FROM allocation.reward w LEFT JOIN allocation.reward_rule rr ON rr.id = w.rule_id
     WHERE w.rep_id = p_rep AND w.effect = p_effect AND w.revoked_at IS NULL
       -- a capacity bonus is in rep.capacity from its award to its revocation; the others count while effective
       AND CASE WHEN p_effect = 'capacity_bonus' THEN w.capacity_added > 0 ELSE w.effective @> now() END
       AND (p_tier IS NULL OR w.tier = p_tier)
$$;
COMMENT ON FUNCTION allocation._reward_note(bigint, text, text) IS 'internal: the active rewards that raise a rep''s limit, as a note ('''' when none)';

-- New reps (issue 14): during a ramp-up period after a rep is created, recycling takes at
-- most max_recycled of its customers away, and round-robin rules give it at least min_share
-- of their fresh leads, so the strongest do not take everything
CREATE TABLE allocation.new_rep_policy (
    id            bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    team_id       bigint REFERENCES allocation.team (id) ON DELETE CASCADE,
    ramp_up       interval NOT NULL CHECK (ramp_up > interval '0'),
    max_recycled  integer CHECK (max_recycled >= 0),
    note          text,
    min_share     numeric CHECK (min_share > 0 AND min_share <= 1),
    CONSTRAINT new_rep_policy_team_uniq UNIQUE NULLS NOT DISTINCT (team_id),
    CONSTRAINT new_rep_policy_effect CHECK (max_recycled IS NOT NULL OR min_share IS NOT NULL)
);
COMMENT ON TABLE allocation.new_rep_policy IS 'Protection of new reps: for ramp_up after rep.created_at, recycle() takes at most max_recycled customers away from the rep (the others are exempt, reported as such); per team (and its sub-teams, a team''s own row first) or NULL = every team';
COMMENT ON COLUMN allocation.new_rep_policy.max_recycled IS 'during the ramp-up, recycle() takes at most this many customers away from the rep (NULL = no limit)';
COMMENT ON COLUMN allocation.new_rep_policy.min_share IS 'during the ramp-up, the rep''s minimum share (0..1] of the fresh leads a round-robin rule of a team it belongs to hands out while it is a candidate: when below it, the rep is served first (NULL = none)';
CREATE TRIGGER zz_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON allocation.new_rep_policy
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._invalidate();

-- Round-robin shares of new reps: counted only while a policy with min_share exists
CREATE TABLE allocation.rr_share (
    team_id             bigint NOT NULL REFERENCES allocation.team (id) ON DELETE CASCADE,
    rep_id              bigint NOT NULL REFERENCES allocation.rep (id) ON DELETE CASCADE,
    served              bigint NOT NULL DEFAULT 0 CHECK (served >= 0),
    team_served_before  bigint NOT NULL CHECK (team_served_before >= 0),
    PRIMARY KEY (team_id, rep_id)
);
COMMENT ON TABLE allocation.rr_share IS 'Fresh leads a team''s round-robin rules gave a new rep (served) since its first turn as a candidate, when the team had given team_served_before (engine-maintained while a new_rep_policy has a min_share)';

-- round-robin counts for new reps' minimum share (new column last)
-- (filled by an UPDATE, not a column default, so no "missing value" stays in the catalog)
ALTER TABLE allocation.rr_cursor ADD COLUMN served bigint;
UPDATE allocation.rr_cursor SET served = 0;
ALTER TABLE allocation.rr_cursor ALTER COLUMN served SET DEFAULT 0, ALTER COLUMN served SET NOT NULL;
SELECT pg_catalog.pg_extension_config_dump('allocation.rr_share', '');
CREATE TRIGGER config_audit_insert AFTER INSERT ON allocation.reward_rule
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._config_audit();
CREATE TRIGGER config_audit_update AFTER UPDATE ON allocation.reward_rule
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._config_audit();
CREATE TRIGGER config_audit_delete AFTER DELETE ON allocation.reward_rule
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._config_audit();
CREATE TRIGGER config_audit_truncate AFTER TRUNCATE ON allocation.reward_rule
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._config_audit();
CREATE TRIGGER config_audit_insert AFTER INSERT ON allocation.new_rep_policy
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._config_audit();
CREATE TRIGGER config_audit_update AFTER UPDATE ON allocation.new_rep_policy
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._config_audit();
CREATE TRIGGER config_audit_delete AFTER DELETE ON allocation.new_rep_policy
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._config_audit();
CREATE TRIGGER config_audit_truncate AFTER TRUNCATE ON allocation.new_rep_policy
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._config_audit();
SELECT pg_catalog.pg_extension_config_dump('allocation.reward_rule', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.reward', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.new_rep_policy', '');

CREATE OR REPLACE FUNCTION allocation.claim_limits(rep bigint, tier text DEFAULT NULL)
RETURNS TABLE (max_held integer, max_held_tier text, daily_claims integer, cooldown interval, protection interval)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
    WITH RECURSIVE up AS (
        SELECT t.id, t.parent_id, 0 AS depth
          FROM allocation.rep r JOIN allocation.team t ON t.id = r.team_id WHERE r.id = claim_limits.rep
        UNION ALL
        SELECT t.id, t.parent_id, up.depth + 1 FROM allocation.team t JOIN up ON t.id = up.parent_id
         WHERE up.depth < 64),
    p AS (
        SELECT cp.*, coalesce(up.depth, 1000) AS depth
          FROM allocation.claim_policy cp LEFT JOIN up ON up.id = cp.team_id
         WHERE (cp.team_id IS NULL OR up.id IS NOT NULL)
           AND (cp.tier IS NULL OR cp.tier = claim_limits.tier)),
    mh AS (SELECT p.max_held, p.tier FROM p WHERE p.max_held IS NOT NULL
            ORDER BY (p.tier IS NOT NULL) DESC, p.depth LIMIT 1)
    -- rewards (issue 14): tier_access raises the tier's max_held, daily_claims_bonus the daily limit
    SELECT (SELECT mh.max_held + CASE WHEN mh.tier IS NOT NULL
                                      THEN allocation._reward_bonus(claim_limits.rep, 'tier_access', mh.tier) ELSE 0 END FROM mh),
           (SELECT mh.tier FROM mh),
           (SELECT p.daily_claims + allocation._reward_bonus(claim_limits.rep, 'daily_claims_bonus')
              FROM p WHERE p.daily_claims IS NOT NULL ORDER BY (p.tier IS NOT NULL) DESC, p.depth LIMIT 1),
           (SELECT p.cooldown FROM p WHERE p.cooldown IS NOT NULL ORDER BY (p.tier IS NOT NULL) DESC, p.depth LIMIT 1),
           (SELECT p.protection FROM p WHERE p.protection IS NOT NULL ORDER BY (p.tier IS NOT NULL) DESC, p.depth LIMIT 1)
$$;
COMMENT ON FUNCTION allocation.claim_limits(bigint, text) IS 'The claim limits that apply to a rep for a customer tier (NULL = no limit), resolved from allocation.claim_policy, with the rep''s active rewards added (tier_access to its tier''s max_held, daily_claims_bonus to the daily limit)';
CREATE OR REPLACE FUNCTION allocation._rep_claim_checks(p_rep bigint, p_tier text, p_claims_today integer DEFAULT NULL)
RETURNS TABLE (ord integer, "check" text, ok boolean, sqlstate text, message text, detail text, hint text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    r allocation.rep;
    lim record;
    v_held integer;
    v_today integer;
    v_reserved integer;
BEGIN
    SELECT * INTO r FROM allocation.rep WHERE id = p_rep;
    SELECT * INTO lim FROM allocation.claim_limits(p_rep, p_tier);

    ord := 1; "check" := 'rep';
    ok := r.id IS NOT NULL AND r.active;
    sqlstate := CASE WHEN p_rep IS NULL THEN 'LA081' WHEN r.id IS NULL THEN 'LA020' WHEN NOT r.active THEN 'LA021' END;
    message := CASE WHEN p_rep IS NULL THEN 'no rep: the current role is no rep''s login'
                    WHEN r.id IS NULL THEN format('rep %s does not exist', p_rep)
                    WHEN NOT r.active THEN format('rep %s is inactive', r.code) ELSE format('rep %s is active', r.code) END;
    detail := NULL; hint := CASE WHEN NOT ok THEN 'Claims are made for an active rep.' END;
    RETURN NEXT;

    ord := 9; "check" := 'capacity';
    -- slots reserved by pending suggestions naming the rep count (accepting them must not fail)
    SELECT l.held, l.reserved INTO v_held, v_reserved FROM allocation.rep_load l WHERE l.rep_id = p_rep;
    v_held := coalesce(v_held, 0);
    v_reserved := coalesce(v_reserved, 0);
    ok := r.capacity IS NULL OR v_held + v_reserved < r.capacity;
    sqlstate := CASE WHEN NOT ok THEN 'LA022' END;
    message := CASE WHEN r.capacity IS NULL THEN format('holds %s, no capacity limit', v_held)
                    WHEN ok THEN format('holds %s%s of capacity %s%s', v_held,
                                        CASE WHEN v_reserved > 0 THEN format(' (and %s reserved by pending suggestions)', v_reserved) ELSE '' END,
                                        r.capacity, allocation._reward_note(p_rep, 'capacity_bonus'))
                    WHEN v_held > r.capacity OR v_held + v_reserved > r.capacity THEN format('rep %s is over capacity', r.code)
                    ELSE format('rep %s is at capacity', r.code) END;
    detail := CASE WHEN ok THEN NULL
                   WHEN v_reserved = 0 AND v_held = r.capacity THEN format('Rep %s holds %s customers, its capacity.', r.code, v_held)
                   ELSE format('Rep %s holds %s customers%s; its capacity is %s.', r.code, v_held,
                               CASE WHEN v_reserved > 0 THEN format(' and %s pending suggestions reserve %s more', v_reserved, v_reserved) ELSE '' END,
                               r.capacity) END;
    hint := CASE WHEN ok THEN NULL
                 WHEN v_reserved = 0 THEN 'Release a customer first, or ask a manager to raise the capacity.'
                 ELSE 'Release a customer first, or ask a manager to decide the pending suggestions or raise the capacity.' END;
    RETURN NEXT;

    ord := 10; "check" := 'max_held';
    IF lim.max_held IS NOT NULL THEN
        v_held := allocation._rep_held(p_rep, lim.max_held_tier);
    END IF;
    ok := lim.max_held IS NULL OR v_held < lim.max_held;
    sqlstate := CASE WHEN NOT ok THEN 'LA022' END;
    message := CASE WHEN lim.max_held IS NULL THEN 'no claim policy limits holdings'
                    WHEN ok THEN format('holds %s of %s%s allowed by the claim policy%s', v_held, lim.max_held,
                                        coalesce(' tier ' || lim.max_held_tier || ' customers', ''),
                                        CASE WHEN lim.max_held_tier IS NOT NULL
                                             THEN allocation._reward_note(p_rep, 'tier_access', lim.max_held_tier) ELSE '' END)
                    ELSE format('rep %s holds the %s%s customers its claim policy allows', r.code, lim.max_held,
                                coalesce(' tier ' || lim.max_held_tier, '')) END;
    detail := CASE WHEN NOT ok THEN format('allocation.claim_policy limits claims to reps holding fewer than %s%s customers; rep %s holds %s.',
                                           lim.max_held, coalesce(' tier ' || lim.max_held_tier, ''), r.code, v_held) END; hint := CASE WHEN NOT ok THEN 'Release a customer first, or ask an admin to change allocation.claim_policy.' END;
    RETURN NEXT;

    ord := 11; "check" := 'daily_limit';
    v_today := coalesce(p_claims_today,
                        (SELECT d.claims FROM allocation.claim_day d WHERE d.rep_id = p_rep AND d.day = allocation.claim_today()), 0);
    ok := lim.daily_claims IS NULL OR v_today < lim.daily_claims;
    sqlstate := CASE WHEN NOT ok THEN 'LA082' END;
    message := CASE WHEN lim.daily_claims IS NULL THEN format('%s claims today, no daily limit', v_today)
                    WHEN ok THEN format('%s of %s claims today%s', v_today, lim.daily_claims,
                                        allocation._reward_note(p_rep, 'daily_claims_bonus'))
                    ELSE format('rep %s reached its daily claim limit', r.code) END;
    detail := CASE WHEN NOT ok THEN format('Rep %s made %s claims today; the claim policy allows %s per day.', r.code, v_today, lim.daily_claims) END; hint := CASE WHEN NOT ok THEN 'Try again tomorrow.' END;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION allocation._rep_claim_checks(bigint, text, integer) IS 'internal: the claim checks that depend on the rep and the customer''s tier only (active, capacity, max_held, daily limit)';
CREATE OR REPLACE FUNCTION allocation._take_units(r allocation.resource_request, p allocation.resource_pool)
RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    UPDATE allocation.resource_pool x SET remaining = x.remaining - r.qty
     WHERE x.id = p.id AND x.remaining >= r.qty;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO allocation.resource_customer_use AS u (pool_id, managed_id, key, used)
    VALUES (p.id, r.managed_id, r.key, r.qty)
    ON CONFLICT (pool_id, managed_id, key) DO UPDATE SET used = u.used + EXCLUDED.used
     WHERE p.per_customer_cap IS NULL OR u.used + EXCLUDED.used <= p.per_customer_cap;
    IF NOT FOUND OR (p.per_customer_cap IS NOT NULL AND r.qty > p.per_customer_cap) THEN
        RAISE EXCEPTION 'customer % would exceed the per-customer cap of pool %', r.key, p.code
            USING ERRCODE = 'LA093',
                  DETAIL = format('The pool allows %s %s per customer.', p.per_customer_cap, p.unit),
                  HINT = 'Request less, or release an earlier grant of this customer.';
    END IF;
    IF r.rep_id IS NOT NULL THEN
        INSERT INTO allocation.resource_rep_use AS u (pool_id, rep_id, used)
        VALUES (p.id, r.rep_id, r.qty)
        ON CONFLICT (pool_id, rep_id) DO UPDATE SET used = u.used + EXCLUDED.used
         WHERE p.per_rep_cap IS NULL
            OR u.used + EXCLUDED.used <= p.per_rep_cap + allocation._reward_bonus(r.rep_id, 'resource_priority', NULL, p.id);
        IF NOT FOUND OR (p.per_rep_cap IS NOT NULL
                         AND r.qty > p.per_rep_cap + allocation._reward_bonus(r.rep_id, 'resource_priority', NULL, p.id)) THEN
            RAISE EXCEPTION 'the customers of rep % would exceed the per-rep cap of pool %', r.rep_id, p.code
                USING ERRCODE = 'LA094',
                      DETAIL = format('The pool allows %s %s per rep%s.', p.per_rep_cap, p.unit,
                                      allocation._reward_note(r.rep_id, 'resource_priority')),
                      HINT = 'Request less, or release an earlier grant of this rep''s customers.';
        END IF;
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION allocation._take_units(allocation.resource_request, allocation.resource_pool) IS 'internal: takes a request''s units from the pool and the customer and rep caps (conditional updates)';
CREATE OR REPLACE FUNCTION allocation._check_caps(r allocation.resource_request, p allocation.resource_pool)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    -- granted plus already waitlisted units count, so the waitlist holds only what the caps allow
    IF p.per_customer_cap IS NOT NULL
       AND r.qty + coalesce((SELECT u.used FROM allocation.resource_customer_use u
                              WHERE u.pool_id = p.id AND u.managed_id = r.managed_id AND u.key = r.key), 0)
                 + coalesce((SELECT sum(q.qty) FROM allocation.resource_request q
                              WHERE q.managed_id = r.managed_id AND q.key = r.key AND q.pool_id = p.id
                                AND q.status = 'waitlisted' AND q.id <> r.id), 0)
           > p.per_customer_cap THEN
        RAISE EXCEPTION 'customer % would exceed the per-customer cap of pool %', r.key, p.code
            USING ERRCODE = 'LA093', DETAIL = format('The pool allows %s %s per customer.', p.per_customer_cap, p.unit),
                  HINT = 'Request less, or release an earlier grant of this customer.';
    END IF;
    IF p.per_rep_cap IS NOT NULL AND r.rep_id IS NOT NULL
       AND r.qty + coalesce((SELECT u.used FROM allocation.resource_rep_use u WHERE u.pool_id = p.id AND u.rep_id = r.rep_id), 0)
                 + coalesce((SELECT sum(q.qty) FROM allocation.resource_request q
                              WHERE q.pool_id = p.id AND q.status = 'waitlisted' AND q.rep_id = r.rep_id AND q.id <> r.id), 0)
           > p.per_rep_cap + allocation._reward_bonus(r.rep_id, 'resource_priority', NULL, p.id) THEN
        RAISE EXCEPTION 'the customers of rep % would exceed the per-rep cap of pool %', r.rep_id, p.code
            USING ERRCODE = 'LA094', DETAIL = format('The pool allows %s %s per rep%s.', p.per_rep_cap, p.unit,
                                                     allocation._reward_note(r.rep_id, 'resource_priority')),
                  HINT = 'Request less, or release an earlier grant of this rep''s customers.';
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._check_caps(allocation.resource_request, allocation.resource_pool) IS 'internal: refuses a request its caps could never allow (so the waitlist holds only requests that can be served)';
CREATE FUNCTION allocation._new_rep_ramp(p_rep bigint, p_at timestamptz)
RETURNS SETOF allocation.new_rep_policy
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT x.* FROM allocation.rep r
      JOIN LATERAL (SELECT x.* FROM allocation.new_rep_policy x
                     WHERE x.team_id IS NULL OR allocation._rep_in_team(r.id, x.team_id)
                     ORDER BY x.team_id = r.team_id DESC NULLS LAST, x.team_id IS NULL, x.id LIMIT 1) x
        ON r.created_at + x.ramp_up > p_at
     WHERE r.id = p_rep
$$;
COMMENT ON FUNCTION allocation._new_rep_ramp(bigint, timestamptz) IS 'internal: the new_rep_policy row protecting a rep at a time (its team''s own row first, then the nearest enclosing team''s, then the NULL one), none once its ramp-up is over';
CREATE FUNCTION allocation._rr_behind(p_team bigint, p_candidates bigint[], p_at timestamptz, p_record boolean)
RETURNS TABLE (rep_id bigint, served bigint, team_served bigint, min_share numeric)
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS
$$
    WITH cur AS (SELECT coalesce((SELECT c.served FROM allocation.rr_cursor c WHERE c.team_id = p_team), 0) AS served),
    fresh AS (
        SELECT c.id, nr.min_share FROM unnest(p_candidates) AS c(id)
          CROSS JOIN LATERAL allocation._new_rep_ramp(c.id, p_at) nr
         WHERE nr.min_share IS NOT NULL),
    made AS (
        INSERT INTO allocation.rr_share AS s (team_id, rep_id, served, team_served_before)
        SELECT p_team, f.id, 0, cur.served FROM fresh f, cur WHERE p_record
        ON CONFLICT (team_id, rep_id) DO NOTHING
        RETURNING s.rep_id, s.team_served_before),
    shares AS (
        SELECT f.id, f.min_share, coalesce(s.served, 0) AS served,
               cur.served - coalesce(s.team_served_before, m.team_served_before, cur.served) AS team_served
          FROM fresh f CROSS JOIN cur
          LEFT JOIN allocation.rr_share s ON s.team_id = p_team AND s.rep_id = f.id
          LEFT JOIN made m ON m.rep_id = f.id)
    SELECT sh.id, sh.served, sh.team_served, sh.min_share FROM shares sh
     WHERE sh.served < sh.min_share * (sh.team_served + 1)
     ORDER BY sh.min_share * (sh.team_served + 1) - sh.served DESC, sh.id
     LIMIT 1
$$;
COMMENT ON FUNCTION allocation._rr_behind(bigint, bigint[], timestamptz, boolean) IS 'internal: the new rep in its ramp-up that a team''s round robin serves first because its share of the fresh leads given since its first turn would fall below the policy''s min_share';
CREATE OR REPLACE FUNCTION allocation._recycle_status(p_managed integer, p_at timestamptz, p_key text DEFAULT NULL)
RETURNS TABLE (managed_id integer, key text, rep_id bigint, policy_id bigint, last_followup timestamptz,
               last_progress timestamptz, due_at timestamptz, warn_at timestamptz, why text, exempt text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
BEGIN
    SELECT * INTO m FROM allocation.managed_table mt WHERE mt.id = p_managed AND mt.active;
    IF m.id IS NULL OR NOT EXISTS (SELECT 1 FROM allocation.recycle_policy p WHERE p.enabled) THEN
        RETURN;
    END IF;
    -- the customer table is read as its owner (allocation._table_rows), never as the extension owner
    RETURN QUERY EXECUTE $q$
        WITH t AS MATERIALIZED (
            SELECT u.r[1] AS key, u.r[2]::timestamptz AS last_contact, u.r[3] AS stage
              FROM allocation._table_rows($3, ARRAY[$5, $6, $7], $4, '') AS u(r)),
        held AS (
            SELECT a.managed_id, a.key, a.rep_id, a.tier, a.territory_id, a.valid_from, a.stage_since,
                   t.last_contact, t.stage
              FROM allocation.assignment a
              JOIN t ON t.key = a.key
             WHERE a.managed_id = $1 AND a.valid_to IS NULL AND a.rep_id IS NOT NULL
               AND ($4::text IS NULL OR a.key = $4)),
        pol AS (
            SELECT h.key, (SELECT p.id FROM allocation.recycle_policy p
                             LEFT JOIN LATERAL (
                                 WITH RECURSIVE up AS (
                                     SELECT tt.id, tt.parent_id, 0 AS depth FROM allocation.territory tt WHERE tt.id = h.territory_id
                                     UNION ALL
                                     SELECT tt.id, tt.parent_id, up.depth + 1 FROM allocation.territory tt JOIN up ON tt.id = up.parent_id
                                      WHERE up.depth < 64)
                                 SELECT up.depth FROM up WHERE up.id = p.territory_id) d ON true
                            WHERE p.enabled AND (p.tbl IS NULL OR p.tbl = $3)
                              AND (p.tier IS NULL OR p.tier = h.tier)
                              AND (p.territory_id IS NULL OR d.depth IS NOT NULL)
                            ORDER BY d.depth NULLS LAST, (p.tier IS NOT NULL) DESC, (p.tbl IS NOT NULL) DESC, p.id
                            LIMIT 1) AS policy_id
              FROM held h),
        clocks AS (
            SELECT h.*, p.id AS policy_id, p.no_followup, p.no_progress, p.warn_before, p.exempt_stages,
                   greatest(h.valid_from, h.last_contact,
                            (SELECT max(f.at) FROM allocation.followup f
                              WHERE f.managed_id = h.managed_id AND f.key = h.key AND f.at <= $2)) AS last_followup,
                   greatest(h.valid_from, h.stage_since,
                            (SELECT max(f.at) FROM allocation.followup f
                              WHERE f.managed_id = h.managed_id AND f.key = h.key AND f.progress AND f.at <= $2)) AS last_progress
              FROM held h JOIN pol ON pol.key = h.key JOIN allocation.recycle_policy p ON p.id = pol.policy_id),
        due AS (
            SELECT c.*, least(c.last_followup + c.no_followup, c.last_progress + c.no_progress) AS due_at
              FROM clocks c),
        -- exempt for a reason of its own (locked, disputed, an exempt stage), and the
        -- registration protection that pushes the due time back, read once
        flagged AS (
            SELECT d.*, pr.until AS protected_until,
                   CASE WHEN lk.key IS NOT NULL THEN 'locked'
                        WHEN EXISTS (SELECT 1 FROM allocation.ownership_dispute od
                                      WHERE od.managed_id = d.managed_id AND od.key = d.key AND od.status = 'open') THEN 'disputed'
                        WHEN d.stage = ANY (d.exempt_stages) THEN format('stage %s is exempt', d.stage) END AS exempt
              FROM due d
              LEFT JOIN allocation.customer_lock lk ON lk.managed_id = d.managed_id AND lk.key = d.key
              LEFT JOIN allocation.protection pr ON pr.managed_id = d.managed_id AND pr.key = d.key
                                               AND pr.rep_id = d.rep_id AND pr.until > $2),
        -- new reps in their ramp-up: how many more customers recycling may take away from them
        -- (those due first go first; the rest are exempt); customers exempt for another reason
        -- or protected use none of the quota
        ramp AS (
            SELECT f.key, nr.max_recycled,
                   (SELECT count(*) FROM allocation.event e
                     WHERE e.kind = 'recycle' AND e.from_rep = f.rep_id AND e.at >= r.created_at)
                   + row_number() OVER (PARTITION BY f.rep_id ORDER BY least(f.due_at, 'infinity'), f.key) AS nth
              FROM flagged f
              JOIN allocation.rep r ON r.id = f.rep_id
             CROSS JOIN LATERAL allocation._new_rep_ramp(f.rep_id, $2) nr
             WHERE nr.max_recycled IS NOT NULL AND f.due_at <= $2 AND f.exempt IS NULL AND f.protected_until IS NULL)
        SELECT f.managed_id, f.key, f.rep_id, f.policy_id, f.last_followup, f.last_progress,
               greatest(f.due_at, f.protected_until) AS due_at, greatest(f.due_at, f.protected_until) - f.warn_before AS warn_at,
               CASE WHEN f.last_followup + f.no_followup <= coalesce(f.last_progress + f.no_progress, 'infinity')
                    THEN format('no follow-up since %s (policy: %s)', f.last_followup, f.no_followup)
                    ELSE format('no stage progress or deal since %s (policy: %s)', f.last_progress, f.no_progress) END,
               coalesce(f.exempt,
                        CASE WHEN ramp.nth > ramp.max_recycled
                             THEN format('new rep in its ramp-up: at most %s customers recycled away', ramp.max_recycled) END)
          FROM flagged f
          LEFT JOIN ramp ON ramp.key = f.key
        $q$
    USING p_managed, p_at, m.tbl, p_key, m.key_column::text, m.attributes->>'last_contact', m.attributes->>'stage';
END
$$;
COMMENT ON FUNCTION allocation._recycle_status(integer, timestamptz, text) IS 'internal: recycle policy, clocks and due time of every held customer of a managed table';
CREATE OR REPLACE FUNCTION allocation._followup_before() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_rep bigint := allocation.current_rep_id();
    v_holder bigint;
BEGIN
    NEW.recorded_by := allocation._actor();
    -- a follow-up read from the CRM's own table (manage_outcomes()): the engine
    -- checked it and credited the rep; only the engine itself lands those
    IF NEW.source_id IS NOT NULL OR NEW.source_ref IS NOT NULL THEN
        IF current_user = (SELECT r.rolname FROM pg_catalog.pg_roles r JOIN pg_catalog.pg_namespace n ON n.nspowner = r.oid
                            WHERE n.nspname = 'allocation') THEN
            RETURN NEW;
        END IF;
        NEW.source_id := NULL;
        NEW.source_ref := NULL;
    END IF;
    IF v_rep IS NOT NULL THEN
        NEW.rep_id := v_rep;
    END IF;
    IF NOT allocation._customer_exists(NEW.managed_id, NEW.key) THEN
        RAISE EXCEPTION 'customer % not found', NEW.key USING ERRCODE = 'LA062',
              DETAIL = format('Managed table %s has no customer with this key.', NEW.managed_id),
              HINT = 'Record follow-ups of managed customers only.';
    END IF;
    -- a follow-up resets the holder's recycle clock: a rep records them for its own
    -- customers only (a manager, who is no rep's login, for any)
    IF v_rep IS NOT NULL THEN
        v_holder := allocation._customer_holder(NEW.managed_id, NEW.key);
        IF v_holder IS DISTINCT FROM v_rep THEN
            RAISE EXCEPTION 'customer % is not yours', NEW.key USING ERRCODE = 'LA08A',
                  DETAIL = CASE WHEN v_holder IS NULL THEN 'It is in the public pool; a follow-up would count for nobody''s recycle clock.'
                                ELSE format('It is held by rep %s; its follow-ups reset that rep''s recycle clock.',
                                            (SELECT x.code FROM allocation.rep x WHERE x.id = v_holder)) END,
                  HINT = 'Log follow-ups of your own customers; claim a pool customer first, or ask its holder or a manager.';
        END IF;
    END IF;
    IF NEW.at > now() + interval '1 hour'
       AND NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = allocation._actor()) THEN
        RAISE EXCEPTION 'a follow-up cannot be dated in the future'
            USING ERRCODE = '22008', DETAIL = format('It is dated %s.', NEW.at),
                  HINT = 'Record follow-ups when they happened (only a superuser may date one ahead, to simulate).';
    END IF;
    IF NEW.kind = 'deal' THEN
        NEW.progress := true;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION allocation._followup_before() IS 'internal: a follow-up is recorded for the current rep, for a managed customer it holds (LA08A otherwise; roles that are no rep''s login, e.g. managers, for any)';

-------------------------------------------------------------------------------
-- Outcomes from the CRM's own tables, and customer potential (issue 14)
--
-- manage_outcomes() attaches the engine to a CRM's visit, order or survey table
-- the way manage() attaches it to the customer table: it validates a mapping
-- (logical name -> column), lands the rows already there, and installs a C row
-- trigger (plus one for TRUNCATE) that keeps the landed rows in step.  Rows
-- land in the engine's tables every measure reads: follow-ups in
-- allocation.followup, deals in allocation.deal + deal_split (split as of the
-- deal's time and frozen, by the same _land_deal() record_deal() uses),
-- satisfaction answers in allocation.satisfaction.  The trigger reads only the
-- mapped columns, of built-in types, and never runs user code with the engine's
-- rights (src/outcomes.c); the landing itself is _outcome_apply().
--
-- A row lands when its customer key, its time and (deal, satisfaction) its
-- amount or score are all set; a row missing one of them is not an outcome yet
-- (a planned visit, a draft order, an unanswered survey) and lands when an
-- UPDATE completes it.  A row naming a customer the engine does not know is
-- refused (LA0O8): the CRM learns at write time, and no measure silently
-- misses it.
--
-- The potential of a customer is a numeric SQL expression over the customer
-- row (a column name is one), checked and evaluated as the customer table's
-- owner only (src/outcomes.c), with tiers by threshold.
-------------------------------------------------------------------------------
ALTER TABLE allocation.followup ADD COLUMN source_id integer, ADD COLUMN source_ref text;
CREATE INDEX followup_source_idx ON allocation.followup (source_id, source_ref) WHERE source_id IS NOT NULL;
COMMENT ON COLUMN allocation.followup.source_id IS 'the outcome table (allocation.outcome_source) this follow-up was read from; NULL = logged with log_followup() or written directly';
COMMENT ON COLUMN allocation.followup.source_ref IS 'the key (ref column, default the primary key) of the row of the outcome table it was read from';

CREATE TABLE allocation.outcome_source (
    id                  integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tbl                 regclass,
    table_name          text NOT NULL,
    kind                text NOT NULL CHECK (kind IN ('followup', 'deal', 'satisfaction')),
    managed_id          integer NOT NULL REFERENCES allocation.managed_table (id) ON DELETE CASCADE,
    customer_key_column name NOT NULL,
    mapping             jsonb NOT NULL,
    columns             jsonb NOT NULL,
    trigger_columns     name[] NOT NULL CHECK (cardinality(trigger_columns) = 6),
    scale               text CHECK (scale IN ('1-5', 'nps')),
    active              boolean NOT NULL DEFAULT true,
    managed_since       timestamptz NOT NULL DEFAULT now(),
    managed_by          text NOT NULL,
    unmanaged_at        timestamptz,
    CONSTRAINT outcome_source_scale CHECK ((kind = 'satisfaction') = (scale IS NOT NULL))
);
CREATE UNIQUE INDEX outcome_source_active ON allocation.outcome_source (tbl) WHERE active;
COMMENT ON TABLE allocation.outcome_source IS 'The CRM''s own visit, order and survey tables attached with manage_outcomes(): kind, the managed customer table their key refers to, the mapping; written by manage_outcomes() and unmanage_outcomes() only';
COMMENT ON COLUMN allocation.outcome_source.tbl IS 'the outcome table; NULL once it was dropped';
COMMENT ON COLUMN allocation.outcome_source.table_name IS 'the outcome table''s qualified name when attached; the source of its deals in allocation.deal';
COMMENT ON COLUMN allocation.outcome_source.columns IS 'logical name -> column, as validated (customer, at, rep, channel/amount/score, note/product, ref)';
COMMENT ON COLUMN allocation.outcome_source.trigger_columns IS 'the columns the trigger reads, in its order: customer key, at, rep, value (channel, amount, score), second value (note, product), ref; NULL = not mapped';
COMMENT ON COLUMN allocation.outcome_source.scale IS 'satisfaction only: 1-5 (score 1..5) or nps (0..10)';

CREATE TABLE allocation.satisfaction (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    managed_id  integer NOT NULL REFERENCES allocation.managed_table (id) ON DELETE CASCADE,
    key         text NOT NULL,
    at          timestamptz NOT NULL,
    score       numeric NOT NULL,
    scale       text NOT NULL CHECK (scale IN ('1-5', 'nps')),
    score_pct   numeric NOT NULL CHECK (score_pct BETWEEN 0 AND 100),
    rep_id      bigint,
    source_id   integer,
    source_ref  text,
    recorded_by text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT satisfaction_score CHECK (CASE scale WHEN '1-5' THEN score BETWEEN 1 AND 5 ELSE score BETWEEN 0 AND 10 END)
);
CREATE INDEX satisfaction_key_idx ON allocation.satisfaction (managed_id, key, at);
CREATE INDEX satisfaction_source_idx ON allocation.satisfaction (source_id, source_ref);
CREATE INDEX satisfaction_at_idx ON allocation.satisfaction USING brin (at);
COMMENT ON TABLE allocation.satisfaction IS 'Satisfaction answers of customers (surveys read from the CRM''s own tables with manage_outcomes()), credited to the holder at the answer''s time';
COMMENT ON COLUMN allocation.satisfaction.score_pct IS 'the score on 0..100: (score - 1) * 25 on the 1-5 scale, score * 10 on NPS';
COMMENT ON COLUMN allocation.satisfaction.rep_id IS 'the rep that held the customer at the answer''s time (NULL: the pool)';

CREATE TABLE allocation.potential (
    managed_id  integer PRIMARY KEY REFERENCES allocation.managed_table (id) ON DELETE CASCADE,
    expression  text NOT NULL,
    tiers       jsonb NOT NULL DEFAULT '{}',
    set_by      text NOT NULL,
    set_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE allocation.potential IS 'The potential of the customers of a managed table: a numeric SQL expression over the customer row (evaluated as the table''s owner) and its tiers; written by set_potential() only';
COMMENT ON COLUMN allocation.potential.tiers IS 'tier name -> threshold; a customer''s tier is the one with the highest threshold its value reaches, else low';

-------------------------------------------------------------------------------
-- C parts (src/outcomes.c)
-------------------------------------------------------------------------------
CREATE FUNCTION allocation._outcome_trigger() RETURNS trigger
AS 'MODULE_PATHNAME', 'allocation_outcome_trigger' LANGUAGE C;
COMMENT ON FUNCTION allocation._outcome_trigger() IS 'internal: the trigger of an outcome table: reads the mapped columns (built-in types only) and runs _outcome_apply() as the engine for the writer';

CREATE FUNCTION allocation._outcome_rows(tbl regclass, columns name[])
RETURNS SETOF text[]
AS 'MODULE_PATHNAME', 'allocation_outcome_rows' LANGUAGE C;
COMMENT ON FUNCTION allocation._outcome_rows(regclass, name[]) IS 'internal: the mapped values of every row of an outcome table, read as the table''s owner';

CREATE FUNCTION allocation._potential_check(tbl regclass, expression text)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_potential_check' LANGUAGE C;
COMMENT ON FUNCTION allocation._potential_check(regclass, text) IS 'internal: checks a potential expression as the table''s owner (LA0O7 not one numeric, non-volatile expression without subqueries; 42501 a function the owner may not execute)';

CREATE FUNCTION allocation._potential_values(tbl regclass, key_column name, expression text, key text)
RETURNS TABLE (key text, value numeric)
AS 'MODULE_PATHNAME', 'allocation_potential_values' LANGUAGE C STABLE;
COMMENT ON FUNCTION allocation._potential_values(regclass, name, text, text) IS 'internal: the potential of every customer (key NULL) or one, evaluated as the table''s owner';

-------------------------------------------------------------------------------
-- Landing rows
-------------------------------------------------------------------------------
-- Lands one row of an outcome table (its mapped values: key, at, rep, value,
-- second value, ref)
CREATE FUNCTION allocation._outcome_land(s allocation.outcome_source, m allocation.managed_table, v text[])
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_at timestamptz;
    v_open boolean;
    v_holder bigint;
    v_rep bigint;
    v_kind text;
    v_num numeric;
    d allocation.deal;
BEGIN
    -- not an outcome (yet): no customer, no time, no amount or score
    IF v[1] IS NULL OR v[2] IS NULL OR (s.kind <> 'followup' AND v[4] IS NULL) THEN
        RETURN;
    END IF;
    v_at := v[2]::timestamptz;
    -- registered (an open ownership period), and the holder at the row's time (owner_at()'s
    -- reading): one read of the history, whose plan this function keeps
    SELECT coalesce(bool_or(a.valid_to IS NULL), false),
           (array_agg(a.rep_id ORDER BY a.valid_from DESC, a.id DESC)
                FILTER (WHERE a.valid_from <= v_at AND (a.valid_to IS NULL OR a.valid_to > v_at)))[1]
      INTO v_open, v_holder
      FROM allocation.assignment a
     WHERE a.managed_id = m.id AND a.key = v[1];
    IF NOT v_open THEN
        RAISE EXCEPTION 'customer % of % not found in %', v[1], s.table_name, m.table_name USING ERRCODE = 'LA0O8',
              DETAIL = format('Row %s of %s names a customer the allocation engine does not know.', v[6], s.table_name),
              HINT = format('Insert the customer into %s first (or fix the key).', m.table_name);
    END IF;
    IF s.kind = 'followup' THEN
        v_rep := v[3]::bigint;
        -- the visiting rep when it held the customer or shared it in a virtual team
        -- then, else the holder
        IF v_rep IS NULL OR (v_rep IS DISTINCT FROM v_holder
                              AND NOT coalesce(allocation._team_member_of(m.id, v[1], v_rep, v_at), false)) THEN
            v_rep := v_holder;
        END IF;
        v_kind := CASE WHEN lower(btrim(v[4])) IN ('visit', 'call', 'message', 'meeting', 'demo', 'sample', 'deal', 'other')
                       THEN lower(btrim(v[4])) ELSE 'other' END;
        INSERT INTO allocation.followup (managed_id, key, rep_id, at, kind, outcome, progress, note, recorded_by,
                                         source_id, source_ref)
        VALUES (m.id, v[1], v_rep, v_at, v_kind,
                CASE WHEN v_kind = 'other' AND lower(btrim(v[4])) IS DISTINCT FROM 'other' THEN v[4] END,
                v_kind = 'deal', v[5], allocation._actor(), s.id, v[6]);
    ELSIF s.kind = 'deal' THEN
        v_num := v[4]::numeric;
        PERFORM allocation._split_checks(m.tbl, v[1], v_num, v_at);
        d := allocation._land_deal(m, v[1], v_num, v_at, s.table_name, v[6], allocation._actor(),
                                   jsonb_strip_nulls(jsonb_build_object('outcome_source', s.id, 'product', v[5],
                                                                        'rep', v[3]::bigint)));
        IF d.id IS NULL THEN
            RAISE EXCEPTION 'deal % of % is already recorded', v[6], s.table_name USING ERRCODE = 'LA0V9',
                  DETAIL = 'A deal of this outcome table with this ref exists.',
                  HINT = 'Each row of the order table is one deal, named by its ref column.';
        END IF;
    ELSE
        v_num := v[4]::numeric;
        IF (s.scale = '1-5' AND v_num NOT BETWEEN 1 AND 5) OR (s.scale = 'nps' AND v_num NOT BETWEEN 0 AND 10) THEN
            RAISE EXCEPTION 'score % is outside the % scale', v_num, s.scale USING ERRCODE = 'LA0O9',
                  DETAIL = format('Row %s of %s has a score the scale does not allow (%s).', v[6], s.table_name,
                                  CASE s.scale WHEN '1-5' THEN '1 to 5' ELSE '0 to 10' END),
                  HINT = 'Fix the score, or attach the table again with the right "scale".';
        END IF;
        INSERT INTO allocation.satisfaction (managed_id, key, at, score, scale, score_pct, rep_id, source_id, source_ref,
                                             recorded_by)
        VALUES (m.id, v[1], v_at, v_num, s.scale,
                CASE s.scale WHEN '1-5' THEN (v_num - 1) * 25 ELSE v_num * 10 END,
                v_holder, s.id, v[6], allocation._actor());
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._outcome_land(allocation.outcome_source, allocation.managed_table, text[]) IS 'internal: lands one row of an outcome table (follow-up, deal with its frozen split, satisfaction answer); LA0O8 unknown customer, LA0O9 score off the scale, LA0V7 bad amount';

-- Removes what one row of an outcome table landed (a deal: with a deal_removed event)
CREATE FUNCTION allocation._outcome_unland(s allocation.outcome_source, p_ref text, p_why text)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    d allocation.deal;
    n integer := 0;
BEGIN
    IF s.kind = 'followup' THEN
        DELETE FROM allocation.followup f WHERE f.source_id = s.id AND (p_ref IS NULL OR f.source_ref = p_ref);
        GET DIAGNOSTICS n = ROW_COUNT;
    ELSIF s.kind = 'satisfaction' THEN
        DELETE FROM allocation.satisfaction x WHERE x.source_id = s.id AND (p_ref IS NULL OR x.source_ref = p_ref);
        GET DIAGNOSTICS n = ROW_COUNT;
    ELSE
        FOR d IN DELETE FROM allocation.deal x
                  WHERE x.managed_id = s.managed_id AND x.source = s.table_name AND (p_ref IS NULL OR x.ref = p_ref)
                 RETURNING * LOOP
            INSERT INTO allocation.event (actor, kind, managed_id, table_name, key, reason, detail)
            SELECT allocation._actor(), 'deal_removed', d.managed_id, m.table_name, d.key, p_why,
                   jsonb_build_object('deal', d.id, 'source', d.source, 'ref', d.ref, 'amount', d.amount, 'at', d.at,
                                      'virtual_team', d.team_id, 'outcome_source', s.id)
              FROM allocation.managed_table m WHERE m.id = d.managed_id;
            n := n + 1;
        END LOOP;
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION allocation._outcome_unland(allocation.outcome_source, text, text) IS 'internal: removes what a row (ref; NULL = every row) of an outcome table landed; a removed deal (its split with it) gets a deal_removed event';

-- The one implementation behind the outcome trigger: op INSERT, UPDATE, DELETE
-- or TRUNCATE; old and new are the mapped values (_outcome_trigger)
CREATE FUNCTION allocation._outcome_apply(p_source integer, p_op text, p_old text[], p_new text[])
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    s allocation.outcome_source;
    m allocation.managed_table;
    n integer;
BEGIN
    SELECT * INTO s FROM allocation.outcome_source x WHERE x.id = p_source;
    SELECT * INTO m FROM allocation.managed_table x WHERE x.id = s.managed_id;
    -- detached (the outcome table or its customer table): the trigger does nothing
    IF NOT coalesce(s.active AND m.active, false) THEN
        RETURN;
    END IF;
    IF p_op = 'TRUNCATE' THEN
        n := allocation._outcome_unland(s, NULL, 'outcome table truncated');
        INSERT INTO allocation.event (actor, kind, managed_id, table_name, reason, detail)
        VALUES (allocation._actor(), 'outcomes_truncated', m.id, m.table_name, format('%s truncated', s.table_name),
                jsonb_build_object('outcome_source', s.id, 'kind', s.kind, 'removed', n));
        RETURN;
    END IF;
    -- a deal whose customer, time, amount and ref are unchanged keeps its frozen split
    IF p_op = 'UPDATE' AND s.kind = 'deal'
       AND (p_old[1], p_old[2], p_old[4], p_old[6]) IS NOT DISTINCT FROM (p_new[1], p_new[2], p_new[4], p_new[6]) THEN
        RETURN;
    END IF;
    IF p_op IN ('UPDATE', 'DELETE') THEN
        PERFORM allocation._outcome_unland(s, p_old[6], CASE p_op WHEN 'DELETE' THEN 'order deleted' ELSE 'order changed' END);
    END IF;
    IF p_op IN ('INSERT', 'UPDATE') THEN
        PERFORM allocation._outcome_land(s, m, p_new);
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._outcome_apply(integer, text, text[], text[]) IS 'internal: keeps what an outcome table landed in step with an INSERT, UPDATE, DELETE or TRUNCATE of it (run as the engine by _outcome_trigger)';

-------------------------------------------------------------------------------
-- Attaching and detaching
-------------------------------------------------------------------------------
-- A mapped column of an outcome table: exists (42703), of one of the types (LA0O3)
CREATE FUNCTION allocation._outcome_column(tbl regclass, col name, logical text, types regtype[], type_words text)
RETURNS smallint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    n smallint := allocation._column_attnum(tbl, col, format('%s (outcome)', logical));
    t oid;
    b oid;
BEGIN
    SELECT a.atttypid INTO t FROM pg_catalog.pg_attribute a WHERE a.attrelid = tbl AND a.attnum = n;
    b := t;
    WHILE (SELECT ty.typtype = 'd' FROM pg_catalog.pg_type ty WHERE ty.oid = b) LOOP
        SELECT ty.typbasetype INTO b FROM pg_catalog.pg_type ty WHERE ty.oid = b;
    END LOOP;
    IF b >= 16384 OR (types IS NOT NULL AND NOT b::regtype = ANY (types)) THEN
        RAISE EXCEPTION '% column "%" of % has the type %', logical, col, tbl, format_type(t, NULL) USING ERRCODE = 'LA0O3',
              DETAIL = format('The %s column must be %s.', logical,
                              coalesce(type_words, 'of a built-in type (text, integer, numeric, timestamptz, ...)')),
              HINT = 'Map a column of such a type (a view or a generated column can convert it).';
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION allocation._outcome_column(regclass, name, text, regtype[], text) IS 'internal: attnum of a mapped outcome column, checked (42703 missing, LA0O3 wrong or non-built-in type)';

-- The mapped columns of an outcome table, checked (manage_outcomes(), and after
-- every ALTER TABLE of an attached table): their attribute numbers in the
-- trigger's order (customer key, at, rep, value, second value, ref; 0 = none)
CREATE FUNCTION allocation._outcome_columns(tbl regclass, kind text, customer_key_column name, mapping jsonb,
                                            m allocation.managed_table)
RETURNS smallint[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_att smallint[] := '{0,0,0,0,0,0}';
    v_keytype oid;
    v_type oid;
    v_ref name;
    v_int constant regtype[] := ARRAY['smallint', 'integer', 'bigint']::regtype[];
    v_str constant regtype[] := ARRAY['text', 'character varying', 'character']::regtype[];
BEGIN
    -- the columns
    SELECT allocation._base_type(a.atttypid) INTO v_keytype FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = m.tbl AND a.attname = m.key_column AND NOT a.attisdropped;
    v_att[1] := allocation._outcome_column(tbl, customer_key_column, 'customer key', NULL, NULL);
    SELECT allocation._base_type(a.atttypid) INTO v_type FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = tbl AND a.attnum = v_att[1];
    -- keys are compared in their text form: the same type, or both integers, or both strings
    IF NOT (v_type = v_keytype OR (v_type::regtype = ANY (v_int) AND v_keytype::regtype = ANY (v_int))
            OR (v_type::regtype = ANY (v_str) AND v_keytype::regtype = ANY (v_str))) THEN
        RAISE EXCEPTION 'customer key column "%" of % does not match the key of %', customer_key_column, tbl, m.table_name
              USING ERRCODE = 'LA0O4',
              DETAIL = format('It is %s; the key %I of %s is %s.', format_type(v_type, NULL), m.key_column, m.table_name,
                              format_type(v_keytype, NULL)),
              HINT = 'Map the column holding the customer table''s key (of the same type, or both integers, or both text).';
    END IF;
    v_att[2] := allocation._outcome_column(tbl, (mapping ->> 'at')::name, 'time', ARRAY['timestamptz', 'timestamp', 'date']::regtype[],
                                           'timestamptz, timestamp or date');
    IF mapping ? 'rep' THEN
        v_att[3] := allocation._outcome_column(tbl, (mapping ->> 'rep')::name, 'rep', ARRAY['integer', 'bigint']::regtype[],
                                               'integer or bigint (a rep id)');
    END IF;
    IF kind = 'followup' AND mapping ? 'channel' THEN
        v_att[4] := allocation._outcome_column(tbl, (mapping ->> 'channel')::name, 'channel', v_str, 'text, varchar or char');
    ELSIF kind = 'deal' THEN
        v_att[4] := allocation._outcome_column(tbl, (mapping ->> 'amount')::name, 'amount',
                                               ARRAY['numeric', 'smallint', 'integer', 'bigint', 'real', 'double precision']::regtype[],
                                               'numeric, an integer or a floating point number');
    ELSIF kind = 'satisfaction' THEN
        v_att[4] := allocation._outcome_column(tbl, (mapping ->> 'score')::name, 'score',
                                               ARRAY['numeric', 'smallint', 'integer', 'bigint', 'real', 'double precision']::regtype[],
                                               'numeric, an integer or a floating point number');
    END IF;
    IF kind = 'followup' AND mapping ? 'note' THEN
        v_att[5] := allocation._outcome_column(tbl, (mapping ->> 'note')::name, 'note', v_str, 'text, varchar or char');
    ELSIF kind = 'deal' AND mapping ? 'product' THEN
        v_att[5] := allocation._outcome_column(tbl, (mapping ->> 'product')::name, 'product', NULL, NULL);
    END IF;
    -- the ref: names a row (a deal's ref), the primary key by default
    IF mapping ? 'ref' THEN
        v_ref := (mapping ->> 'ref')::name;
    ELSE
        SELECT a.attname INTO v_ref FROM pg_catalog.pg_index i
          JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
         WHERE i.indrelid = tbl AND i.indisprimary AND i.indnkeyatts = 1;
    END IF;
    IF v_ref IS NULL THEN
        RAISE EXCEPTION 'outcome table % has no single-column primary key', tbl USING ERRCODE = 'LA0O5',
              DETAIL = 'Each row is named by its ref (the primary key by default), so that an UPDATE or DELETE finds what it landed.',
              HINT = 'Add a primary key, or map "ref" to a unique, NOT NULL column.';
    END IF;
    v_att[6] := allocation._outcome_column(tbl, v_ref, 'ref', NULL, NULL);
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                    WHERE i.indrelid = tbl AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
                      AND i.indnkeyatts = 1 AND i.indkey[0] = v_att[6])
       OR NOT (SELECT a.attnotnull FROM pg_catalog.pg_attribute a WHERE a.attrelid = tbl AND a.attnum = v_att[6]) THEN
        RAISE EXCEPTION 'ref column "%" of % is not a unique, NOT NULL column', v_ref, tbl USING ERRCODE = 'LA0O5',
              DETAIL = 'Each row is named by its ref, so that an UPDATE or DELETE finds what it landed.',
              HINT = format('ALTER TABLE %s ADD PRIMARY KEY (%I);', tbl, v_ref);
    END IF;
    RETURN v_att;
END
$$;
COMMENT ON FUNCTION allocation._outcome_columns(regclass, text, name, jsonb, allocation.managed_table) IS 'internal: checks the mapped columns of an outcome table (42703, LA0O3, LA0O4, LA0O5) and returns their attribute numbers in the trigger''s order';

CREATE FUNCTION allocation._manage_outcomes(tbl regclass, kind text, customer_key_column name, mapping jsonb)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_actor text := allocation._actor();
    v_known text[];
    v_required text[];
    v_logical text;
    v_rk char;
    v_name text;
    m allocation.managed_table;
    s allocation.outcome_source;
    v_cands integer[];
    v_cols jsonb := '{}';
    v_att smallint[] := '{0,0,0,0,0,0}';
    v_tcols name[];
    v_ref name;
    v_rows bigint := 0;
    v_replaced integer := 0;
    r text[];
    o allocation.outcome_source;
BEGIN
    IF tbl IS NULL OR kind IS NULL OR customer_key_column IS NULL OR mapping IS NULL THEN
        RAISE EXCEPTION 'table, kind, customer key column and mapping are required' USING ERRCODE = '22004',
              DETAIL = 'allocation.manage_outcomes() was called with a NULL argument.',
              HINT = 'Call allocation.manage_outcomes(''crm.visit'', ''followup'', ''customer_id'', ''{"at": "visited_at"}'').';
    END IF;
    IF NOT coalesce(allocation._caller_owns(tbl), false) THEN
        RAISE EXCEPTION 'must be owner of table % to attach it as outcomes', tbl USING ERRCODE = '42501',
              DETAIL = format('Role %s does not own %s (nor is it a member of its owner).', v_actor, tbl),
              HINT = 'Run it as the table''s owner, like ALTER TABLE.';
    END IF;
    -- the mapping: logical names of the kind, each naming a column
    v_known := CASE kind WHEN 'followup' THEN ARRAY['customers', 'at', 'rep', 'channel', 'note', 'ref']
                         WHEN 'deal' THEN ARRAY['customers', 'at', 'amount', 'product', 'rep', 'ref']
                         WHEN 'satisfaction' THEN ARRAY['customers', 'at', 'score', 'scale', 'ref'] END;
    v_required := CASE kind WHEN 'followup' THEN ARRAY['at'] WHEN 'deal' THEN ARRAY['at', 'amount']
                            ELSE ARRAY['at', 'score', 'scale'] END;
    IF v_known IS NULL THEN
        RAISE EXCEPTION 'unknown outcome kind "%"', kind USING ERRCODE = 'LA0O0',
              DETAIL = 'The kinds are followup (visits, calls), deal (orders) and satisfaction (surveys).',
              HINT = 'Pass ''followup'', ''deal'' or ''satisfaction''.';
    END IF;
    IF jsonb_typeof(mapping) <> 'object' THEN
        RAISE EXCEPTION 'mapping must be a JSON object' USING ERRCODE = 'LA0O0',
              DETAIL = format('Got %s.', mapping),
              HINT = 'Map logical names to columns, e.g. {"at": "visited_at", "rep": "rep_id", "channel": "channel"}.';
    END IF;
    FOR v_logical IN SELECT x FROM jsonb_object_keys(mapping) x ORDER BY x LOOP
        IF NOT v_logical = ANY (v_known) THEN
            RAISE EXCEPTION 'unknown % mapping "%"', kind, v_logical USING ERRCODE = 'LA0O0',
                  DETAIL = format('The mapping names "%s", which a %s table does not have.', v_logical, kind),
                  HINT = format('Known names for %s: %s.', kind, array_to_string(v_known, ', '));
        END IF;
        IF jsonb_typeof(mapping -> v_logical) <> 'string' OR btrim(mapping ->> v_logical) = '' THEN
            RAISE EXCEPTION 'mapping "%" must name a column', v_logical USING ERRCODE = 'LA0O0',
                  DETAIL = format('Got %s.', mapping -> v_logical),
                  HINT = 'Give the column name as a JSON string.';
        END IF;
    END LOOP;
    FOREACH v_logical IN ARRAY v_required LOOP
        IF NOT mapping ? v_logical THEN
            RAISE EXCEPTION 'the % mapping needs "%"', kind, v_logical USING ERRCODE = 'LA0O0',
                  DETAIL = format('Required for %s: %s.', kind, array_to_string(v_required, ', ')),
                  HINT = CASE v_logical WHEN 'scale' THEN 'Add "scale": "1-5" (scores 1..5) or "scale": "nps" (0..10).'
                                        ELSE format('Add "%s": "<column>".', v_logical) END;
        END IF;
    END LOOP;
    IF mapping ? 'scale' AND mapping ->> 'scale' NOT IN ('1-5', 'nps') THEN
        RAISE EXCEPTION 'unknown satisfaction scale "%"', mapping ->> 'scale' USING ERRCODE = 'LA0O0',
              DETAIL = '"scale" is a constant, not a column: 1-5 (scores 1..5) or nps (0..10).',
              HINT = 'Pass "scale": "1-5" or "scale": "nps".';
    END IF;

    -- the table: an ordinary permanent table that is not the engine's nor a customer table
    SELECT c.relkind, format('%I.%I', n.nspname, c.relname) INTO v_rk, v_name
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl;
    IF v_rk <> 'r' OR EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = tbl AND (c.relpersistence = 't' OR c.relispartition))
       OR v_name LIKE 'allocation.%' OR EXISTS (SELECT 1 FROM allocation.managed_table x WHERE x.tbl = _manage_outcomes.tbl AND x.active) THEN
        RAISE EXCEPTION '% cannot be attached as an outcome table', tbl USING ERRCODE = 'LA0O1',
              DETAIL = CASE WHEN v_name LIKE 'allocation.%' THEN format('%s belongs to the allocation extension.', v_name)
                            WHEN EXISTS (SELECT 1 FROM allocation.managed_table x WHERE x.tbl = _manage_outcomes.tbl AND x.active)
                            THEN 'It is a managed customer table.'
                            WHEN v_rk <> 'r' THEN format('Relation %s has relkind %s; only ordinary tables can be attached.', tbl, v_rk)
                            ELSE 'Temporary tables and partitions cannot be attached.' END,
              HINT = 'Attach the CRM''s own permanent visit, order or survey table.';
    END IF;

    -- the customers: the managed table the key refers to
    SELECT array_agg(x.id ORDER BY x.id) INTO v_cands FROM allocation.managed_table x JOIN pg_catalog.pg_class c ON c.oid = x.tbl
     WHERE x.active AND (NOT mapping ? 'customers' OR x.table_name = mapping ->> 'customers' OR x.tbl::text = mapping ->> 'customers'
                         OR c.relname = mapping ->> 'customers');
    IF coalesce(cardinality(v_cands), 0) <> 1 THEN
        RAISE EXCEPTION '%', CASE WHEN mapping ? 'customers' AND v_cands IS NULL
                                  THEN format('customer table %s is not managed', mapping ->> 'customers')
                                  WHEN v_cands IS NULL THEN 'no customer table is managed'
                                  ELSE 'which managed customer table the outcomes refer to is ambiguous' END
              USING ERRCODE = 'LA0O4',
              DETAIL = format('Managed customer tables: %s.', coalesce((SELECT string_agg(x.table_name, ', ' ORDER BY x.id)
                                                                          FROM allocation.managed_table x WHERE x.active), 'none')),
              HINT = 'Name it in the mapping, e.g. "customers": "crm.customer" (allocation.manage() it first).';
    END IF;
    m := allocation._managed_by_id(v_cands[1]);
    IF NOT coalesce(allocation._caller_owns(m.tbl), false) THEN
        RAISE EXCEPTION 'must be owner of table % to attach outcomes to its customers', m.table_name USING ERRCODE = '42501',
              DETAIL = format('Role %s does not own %s; outcomes credit its reps.', v_actor, m.table_name),
              HINT = 'Run it as the owner of both tables.';
    END IF;

    -- no writes slip between landing the existing rows and installing the triggers
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', tbl);
    IF EXISTS (SELECT 1 FROM allocation.outcome_source x WHERE x.tbl = _manage_outcomes.tbl AND x.active) THEN
        RAISE EXCEPTION 'table % is already attached as outcomes', tbl USING ERRCODE = 'LA0O2',
              DETAIL = format('It is attached as %s.', (SELECT x.kind FROM allocation.outcome_source x
                                                       WHERE x.tbl = _manage_outcomes.tbl AND x.active)),
              HINT = 'Call allocation.unmanage_outcomes() first to change the mapping.';
    END IF;

    -- the columns
    v_att := allocation._outcome_columns(tbl, kind, customer_key_column, mapping, m);
    SELECT a.attname INTO v_ref FROM pg_catalog.pg_attribute a WHERE a.attrelid = tbl AND a.attnum = v_att[6];
    v_cols := jsonb_build_object('customer', customer_key_column);
    SELECT v_cols || jsonb_object_agg(k, mapping -> k) INTO v_cols
      FROM unnest(v_known) k WHERE mapping ? k AND k NOT IN ('customers', 'scale');
    v_cols := v_cols || jsonb_build_object('ref', v_ref);

    -- rows an earlier attachment of this table landed are replaced
    FOR o IN SELECT * FROM allocation.outcome_source x WHERE x.tbl = _manage_outcomes.tbl AND NOT x.active ORDER BY x.id LOOP
        v_replaced := v_replaced + allocation._outcome_unland(o, NULL, 'outcome table attached again');
    END LOOP;

    -- the trigger reads the columns by name (numbers shift in a dump and restore)
    SELECT array_agg(a.attname ORDER BY u.ord) INTO v_tcols
      FROM unnest(v_att) WITH ORDINALITY u(n, ord)
      LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = tbl AND a.attnum = u.n AND u.n > 0;
    INSERT INTO allocation.outcome_source (tbl, table_name, kind, managed_id, customer_key_column, mapping, columns,
                                           trigger_columns, scale, managed_by)
    VALUES (tbl, v_name, kind, m.id, customer_key_column, mapping, v_cols, v_tcols, mapping ->> 'scale', v_actor)
    RETURNING * INTO s;

    -- the rows already there (read as the table's owner)
    FOR r IN SELECT x FROM allocation._outcome_rows(tbl, v_tcols) x LOOP
        PERFORM allocation._outcome_land(s, m, r);
        v_rows := v_rows + 1;
    END LOOP;

    EXECUTE format('CREATE TRIGGER zz_allocation_outcome AFTER INSERT OR UPDATE OR DELETE ON %s
                    FOR EACH ROW EXECUTE FUNCTION allocation._outcome_trigger(%s, %s)', tbl, s.id,
                   (SELECT string_agg(quote_literal(coalesce(x.col, '')), ', ' ORDER BY x.pos) FROM unnest(v_tcols) WITH ORDINALITY x(col, pos)));
    EXECUTE format('CREATE TRIGGER zz_allocation_outcome_truncate AFTER TRUNCATE ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION allocation._outcome_trigger(%s, %s)', tbl, s.id,
                   (SELECT string_agg(quote_literal(coalesce(x.col, '')), ', ' ORDER BY x.pos) FROM unnest(v_tcols) WITH ORDINALITY x(col, pos)));

    INSERT INTO allocation.event (actor, kind, managed_id, table_name, reason, detail)
    VALUES (v_actor, 'outcomes_managed', m.id, m.table_name, format('%s attached as %s outcomes', v_name, kind),
            jsonb_build_object('outcome_source', s.id, 'table', v_name, 'kind', kind, 'customer_key_column', customer_key_column,
                               'mapping', mapping, 'existing_rows', v_rows, 'replaced', v_replaced));
    RETURN s.id;
END
$$;
COMMENT ON FUNCTION allocation._manage_outcomes(regclass, text, name, jsonb) IS 'internal: implementation of allocation.manage_outcomes(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.manage_outcomes(tbl regclass, kind text, customer_key_column name, mapping jsonb)
RETURNS integer
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.manage_outcomes(regclass, text, name, jsonb) IS
'Attaches the engine to the CRM''s own visit (followup), order (deal) or survey (satisfaction) table: validates the mapping, lands the existing rows and installs the trigger that keeps them in step; returns the outcome source id';

CREATE FUNCTION allocation._unmanage_outcomes(tbl regclass)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    s allocation.outcome_source;
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'table must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.unmanage_outcomes() was called with a NULL table.', HINT = 'Pass the outcome table, e.g. ''crm.visit''.';
    END IF;
    IF NOT coalesce(allocation._caller_owns(tbl), false) THEN
        RAISE EXCEPTION 'must be owner of table % to detach it', tbl USING ERRCODE = '42501',
              DETAIL = format('Role %s does not own %s (nor is it a member of its owner).', allocation._actor(), tbl),
              HINT = 'Run it as the table''s owner, like ALTER TABLE.';
    END IF;
    SELECT * INTO s FROM allocation.outcome_source x WHERE x.tbl = _unmanage_outcomes.tbl AND x.active FOR UPDATE;
    IF s.id IS NULL THEN
        RAISE EXCEPTION 'table % is not attached as outcomes', tbl USING ERRCODE = 'LA0O6',
              DETAIL = 'There is no active allocation.manage_outcomes() registration for this table.',
              HINT = 'See SELECT table_name, kind FROM allocation.outcome_source WHERE active.';
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS zz_allocation_outcome ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS zz_allocation_outcome_truncate ON %s', tbl);
    PERFORM allocation._outcome_detach(s, 'outcome table detached');
END
$$;
COMMENT ON FUNCTION allocation._unmanage_outcomes(regclass) IS 'internal: implementation of allocation.unmanage_outcomes(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.unmanage_outcomes(tbl regclass)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.unmanage_outcomes(regclass) IS
'Detaches an outcome table: removes its trigger; what it landed stays (measures of past periods do not change); attaching it again replaces those rows';

CREATE FUNCTION allocation._outcome_detach(s allocation.outcome_source, p_why text)
RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS
$$
    UPDATE allocation.outcome_source SET active = false, unmanaged_at = now() WHERE id = s.id;
    INSERT INTO allocation.event (actor, kind, managed_id, table_name, reason, detail)
    SELECT allocation._actor(), 'outcomes_unmanaged', m.id, m.table_name, p_why,
           jsonb_build_object('outcome_source', s.id, 'table', s.table_name, 'kind', s.kind)
      FROM allocation.managed_table m WHERE m.id = s.managed_id;
$$;
COMMENT ON FUNCTION allocation._outcome_detach(allocation.outcome_source, text) IS 'internal: marks an outcome source detached, with its outcomes_unmanaged event';

-- Drops: a dropped outcome table is detached; a dropped customer table detaches
-- its outcome tables (their triggers go); dropping a mapped column is refused
CREATE FUNCTION allocation._outcomes_on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    o record;
    s allocation.outcome_source;
BEGIN
    FOR o IN SELECT * FROM pg_catalog.pg_event_trigger_dropped_objects() LOOP
        IF o.object_type = 'table' THEN
            FOR s IN SELECT * FROM allocation.outcome_source x WHERE x.tbl = o.objid AND x.active LOOP
                PERFORM allocation._outcome_detach(s, 'outcome table dropped');
            END LOOP;
            UPDATE allocation.outcome_source SET tbl = NULL WHERE tbl = o.objid;
            FOR s IN SELECT x.* FROM allocation.outcome_source x JOIN allocation.managed_table m ON m.id = x.managed_id
                      WHERE x.active AND m.tbl IS NULL LOOP
                -- (unless the outcome table goes in the same statement)
                IF EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = s.tbl) THEN
                    EXECUTE format('DROP TRIGGER IF EXISTS zz_allocation_outcome ON %s', s.tbl);
                    EXECUTE format('DROP TRIGGER IF EXISTS zz_allocation_outcome_truncate ON %s', s.tbl);
                END IF;
                PERFORM allocation._outcome_detach(s, 'customer table dropped');
            END LOOP;
        ELSIF o.object_type = 'table column' THEN
            SELECT * INTO s FROM allocation.outcome_source x
             WHERE x.tbl = o.objid AND x.active AND o.address_names[3] = ANY (x.trigger_columns::text[]);
            IF s.id IS NOT NULL THEN
                RAISE EXCEPTION 'column % is used by the allocation engine', o.object_identity USING ERRCODE = 'LA018',
                      DETAIL = format('Table %s is attached as %s outcomes and maps this column.', s.table_name, s.kind),
                      HINT = 'Call allocation.unmanage_outcomes() first (then manage_outcomes() again without this column).';
            END IF;
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation._outcomes_on_sql_drop() IS 'internal: detaches dropped outcome tables and those of dropped customer tables; refuses to drop a mapped column';
CREATE EVENT TRIGGER allocation_sql_drop_outcomes ON sql_drop EXECUTE FUNCTION allocation._outcomes_on_sql_drop();
COMMENT ON EVENT TRIGGER allocation_sql_drop_outcomes IS 'allocation: dropped outcome tables (and those of dropped customer tables) are detached, their landed rows kept; dropping a mapped column is refused';

-- After ALTER TABLE: a mapped column of an outcome table must keep its name (the
-- trigger reads it by name); a rename is refused
CREATE FUNCTION allocation._outcomes_on_ddl_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    s allocation.outcome_source;
    c name;
BEGIN
    FOR s IN SELECT x.* FROM allocation.outcome_source x
              WHERE x.active AND x.tbl IN (SELECT d.objid FROM pg_catalog.pg_event_trigger_ddl_commands() d) LOOP
        FOREACH c IN ARRAY s.trigger_columns LOOP
            CONTINUE WHEN c IS NULL;
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                            WHERE a.attrelid = s.tbl AND a.attname = c AND a.attnum > 0 AND NOT a.attisdropped) THEN
                RAISE EXCEPTION 'column % of % is mapped by the allocation engine and cannot be renamed', c, s.table_name
                      USING ERRCODE = 'LA018',
                      DETAIL = format('Table %s is attached as %s outcomes; its trigger reads the column by name.', s.table_name, s.kind),
                      HINT = 'Call allocation.unmanage_outcomes() first (then manage_outcomes() again with the new name).';
            END IF;
        END LOOP;
        -- types, the customer key's type, the ref's uniqueness: as manage_outcomes() checked them
        PERFORM allocation._outcome_columns(s.tbl, s.kind, s.customer_key_column, s.mapping, m)
           FROM allocation.managed_table m WHERE m.id = s.managed_id AND m.active;
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation._outcomes_on_ddl_end() IS 'internal: after ALTER TABLE of an outcome table, refuses renamed (LA018) or no longer fitting (LA0O3, LA0O4, LA0O5) mapped columns';
CREATE EVENT TRIGGER allocation_ddl_end_outcomes ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION allocation._outcomes_on_ddl_end();
COMMENT ON EVENT TRIGGER allocation_ddl_end_outcomes IS 'allocation: renaming a column an outcome table''s mapping uses, or changing it so that the mapping no longer fits, is refused';

CREATE FUNCTION allocation._base_type(p_type oid)
RETURNS oid
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    WITH RECURSIVE d(t, base) AS (
        SELECT ty.oid, ty.typbasetype FROM pg_catalog.pg_type ty WHERE ty.oid = p_type
        UNION ALL
        SELECT ty.oid, ty.typbasetype FROM pg_catalog.pg_type ty JOIN d ON ty.oid = d.base WHERE d.base <> 0)
    SELECT d.t FROM d WHERE d.base = 0
$$;
COMMENT ON FUNCTION allocation._base_type(oid) IS 'internal: a type, domains down to their base type';

-------------------------------------------------------------------------------
-- Potential
-------------------------------------------------------------------------------
-- The tier of a value: the name of the highest threshold it reaches, else low
CREATE FUNCTION allocation._potential_tier(p_value numeric, p_tiers jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT CASE WHEN p_value IS NOT NULL THEN
           coalesce((SELECT t.key FROM pg_catalog.jsonb_each(p_tiers) t
                      WHERE p_value >= (t.value #>> '{}')::numeric
                      ORDER BY (t.value #>> '{}')::numeric DESC, t.key LIMIT 1), 'low') END
$$;
COMMENT ON FUNCTION allocation._potential_tier(numeric, jsonb) IS 'internal: the potential tier of a value (the highest threshold reached, else low; NULL value: NULL)';

CREATE FUNCTION allocation._set_potential(tbl regclass, expression text, tiers jsonb)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_actor text := allocation._actor();
    m allocation.managed_table;
    p allocation.potential;
    v_bad text;
BEGIN
    PERFORM allocation._require_owner(tbl, 'set the potential of');
    m := allocation._managed(tbl);
    SELECT * INTO p FROM allocation.potential x WHERE x.managed_id = m.id FOR UPDATE;
    IF expression IS NULL THEN
        DELETE FROM allocation.potential x WHERE x.managed_id = m.id;
        INSERT INTO allocation.event (actor, kind, managed_id, table_name, reason, detail)
        VALUES (v_actor, 'potential_set', m.id, m.table_name, 'potential cleared',
                jsonb_build_object('expression', NULL, 'previous', to_jsonb(p) - 'managed_id'));
        RETURN;
    END IF;
    IF btrim(expression) = '' THEN
        RAISE EXCEPTION 'potential expression is empty' USING ERRCODE = 'LA0O7',
              DETAIL = 'The expression is made only of blanks.',
              HINT = 'Pass a column name or a numeric expression; NULL clears the potential.';
    END IF;
    tiers := coalesce(tiers, '{}');
    IF jsonb_typeof(tiers) <> 'object' THEN
        RAISE EXCEPTION 'tiers must be a JSON object' USING ERRCODE = 'LA0OA',
              DETAIL = format('Got %s.', tiers),
              HINT = 'Map tier names to thresholds, e.g. {"high": 500000, "medium": 100000}.';
    END IF;
    SELECT t.key INTO v_bad FROM jsonb_each(tiers) t
     WHERE jsonb_typeof(t.value) <> 'number' OR btrim(t.key) = '' OR t.key = 'low' LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'tier "%" is malformed', v_bad USING ERRCODE = 'LA0OA',
              DETAIL = 'Each tier is a non-blank name other than low (the tier below every threshold) with a number threshold.',
              HINT = 'For example {"high": 500000, "medium": 100000}.';
    END IF;
    -- checked as the table's owner (src/outcomes.c)
    PERFORM allocation._potential_check(m.tbl, expression);
    INSERT INTO allocation.potential AS x (managed_id, expression, tiers, set_by)
    VALUES (m.id, expression, tiers, v_actor)
    ON CONFLICT (managed_id) DO UPDATE SET expression = EXCLUDED.expression, tiers = EXCLUDED.tiers,
                                           set_by = EXCLUDED.set_by, set_at = now();
    INSERT INTO allocation.event (actor, kind, managed_id, table_name, reason, detail)
    VALUES (v_actor, 'potential_set', m.id, m.table_name, 'potential set',
            jsonb_build_object('expression', expression, 'tiers', tiers, 'previous', to_jsonb(p) - 'managed_id'));
END
$$;
COMMENT ON FUNCTION allocation._set_potential(regclass, text, jsonb) IS 'internal: implementation of allocation.set_potential(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.set_potential(tbl regclass, expression text, tiers jsonb)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.set_potential(regclass, text, jsonb) IS
'Sets the potential of a managed table''s customers: a column name or a numeric SQL expression over the customer row, checked and evaluated as the table''s owner only, and tiers {"name": threshold, ...} (below every threshold: low); NULL expression clears it; only the table''s owner';

CREATE FUNCTION allocation._potentials(p_managed integer)
RETURNS TABLE (key text, value numeric, tier text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT v.key, v.value, allocation._potential_tier(v.value, p.tiers)
      FROM allocation.potential p
      JOIN allocation.managed_table m ON m.id = p.managed_id AND m.active
     CROSS JOIN LATERAL allocation._potential_values(m.tbl, m.key_column, p.expression, NULL) v
     WHERE p.managed_id = p_managed
$$;
COMMENT ON FUNCTION allocation._potentials(integer) IS 'internal: every customer''s potential value and tier of a managed table (none when no potential is set), evaluated as the table''s owner';

CREATE FUNCTION allocation._customer_potential(tbl regclass, key text)
RETURNS TABLE (value numeric, tier text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table := allocation._managed(tbl);
    p allocation.potential;
BEGIN
    IF _customer_potential.key IS NULL THEN
        RAISE EXCEPTION 'customer key must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.customer_potential() reads one customer''s potential.', HINT = 'Pass the customer''s key.';
    END IF;
    SELECT * INTO p FROM allocation.potential x WHERE x.managed_id = m.id;
    IF p.managed_id IS NULL THEN
        RAISE EXCEPTION 'no potential is set for %', m.table_name USING ERRCODE = 'LA0OB',
              DETAIL = 'The potential of customers is an expression the table''s owner sets.',
              HINT = 'SELECT allocation.set_potential(''crm.customer'', ''expected_volume'', ''{"high": 500000}'');';
    END IF;
    IF NOT allocation._customer_exists(m.id, _customer_potential.key) THEN
        RAISE EXCEPTION 'customer % not found in %', _customer_potential.key, m.table_name USING ERRCODE = 'LA062',
              DETAIL = 'The customer has no ownership record.', HINT = 'Check the key.';
    END IF;
    RETURN QUERY SELECT v.value, allocation._potential_tier(v.value, p.tiers)
                   FROM allocation._potential_values(m.tbl, m.key_column, p.expression, _customer_potential.key) v;
END
$$;
COMMENT ON FUNCTION allocation._customer_potential(regclass, text) IS 'internal: implementation of allocation.customer_potential(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.customer_potential(tbl regclass, key text)
RETURNS TABLE (value numeric, tier text)
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C STABLE;
COMMENT ON FUNCTION allocation.customer_potential(regclass, text) IS
'The potential value and tier of one customer, computed by the table''s expression as the table''s owner (LA0OB: none set)';

-- pg_dump: attachments, potentials and landed satisfaction answers are user data
SELECT pg_catalog.pg_extension_config_dump('allocation.outcome_source', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.satisfaction', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.potential', '');

-------------------------------------------------------------------------------
-- The allocation loop, measured (issue 14): per holding period the outcome facts,
-- aggregated into scorecards (per rep, team, territory) and strategy
-- effectiveness (per rule, policy, territory, tier, crop); monthly snapshots
-- materialised by refresh_scorecards() for BI
-------------------------------------------------------------------------------

-- Who may read everyone's measures: managers, analysts and admins (they read the log);
-- a rep reads its own only
CREATE FUNCTION allocation._reads_all_measures()
RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT pg_catalog.has_table_privilege(allocation._actor(), 'allocation.event', 'SELECT')
$$;
COMMENT ON FUNCTION allocation._reads_all_measures() IS 'internal: whether the caller reads every rep''s measures (it may read the audit log), else only its own';

-- The period argument of the measures: bounded, not empty
CREATE FUNCTION allocation._check_period(p_period tstzrange, p_touch_days integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    IF p_period IS NULL OR p_touch_days IS NULL THEN
        RAISE EXCEPTION 'the period and touch_days must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'Measures are taken over a period, e.g. a month.',
              HINT = 'SELECT * FROM allocation.scorecard(tstzrange(''2027-03-01'', ''2027-04-01''));';
    END IF;
    IF isempty(p_period) OR lower_inf(p_period) OR upper_inf(p_period) THEN
        RAISE EXCEPTION 'period % is empty or unbounded', p_period USING ERRCODE = 'LA0M0',
              DETAIL = 'Measures need a start and an end (held at the end, touched before the end, per day held).',
              HINT = 'Use e.g. tstzrange(''2027-03-01'', ''2027-04-01'') or allocation.month_of(now()).';
    END IF;
    IF NOT lower_inc(p_period) OR upper_inc(p_period) THEN
        RAISE EXCEPTION 'period % is not half-open', p_period USING ERRCODE = 'LA0M0',
              DETAIL = 'Measures are taken over [start, end): the start belongs to the period, the end to the next one, so consecutive periods neither overlap nor leave a gap.',
              HINT = 'Use tstzrange(start, end), whose bounds are [) by default, or allocation.month_of(now()).';
    END IF;
    IF p_touch_days < 1 THEN
        RAISE EXCEPTION 'touch_days must be at least 1, not %', p_touch_days USING ERRCODE = 'LA0M0',
              DETAIL = 'A customer counts as touched when it had a follow-up within this many days before the end of the period.',
              HINT = 'The default is 30.';
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._check_period(tstzrange, integer) IS 'internal: 22004 / LA0M0 for a NULL, empty, unbounded or not half-open period or a touch_days below 1';

-- The loop's evaluations take a lock so that one runs at a time, then read what the one
-- before wrote: that needs a snapshot taken after the lock, i.e. READ COMMITTED
CREATE FUNCTION allocation._require_read_committed(p_function text)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'allocation.%() needs a READ COMMITTED transaction', p_function USING ERRCODE = 'LA0M2',
              DETAIL = pg_catalog.format('This transaction is %s: its snapshot could predate a concurrent run that it waits for, and it would miss what that run wrote.',
                                         pg_catalog.upper(pg_catalog.current_setting('transaction_isolation'))),
              HINT = 'Call it in its own READ COMMITTED transaction (pg_cron jobs and autocommit statements are, unless default_transaction_isolation is changed).';
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._require_read_committed(text) IS 'internal: LA0M2 unless the transaction is READ COMMITTED (the loop''s evaluations wait for each other, then read what the one before wrote)';

-- The calendar month (in the session's time zone) that contains a time
CREATE FUNCTION allocation.month_of(at timestamptz DEFAULT now())
RETURNS tstzrange
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    -- in allocation.claim_timezone (a superuser setting, default Asia/Shanghai), never the
    -- session's TimeZone: runs from sessions in different zones name the same month
    SELECT pg_catalog.tstzrange(pg_catalog.timezone(z, date_trunc('month', pg_catalog.timezone(z, at))),
                                pg_catalog.timezone(z, date_trunc('month', pg_catalog.timezone(z, at)) + interval '1 month'))
      FROM (SELECT coalesce(nullif(pg_catalog.current_setting('allocation.claim_timezone', true), ''), 'Asia/Shanghai') AS z) x
$$;
COMMENT ON FUNCTION allocation.month_of(timestamptz) IS 'The calendar month containing a time, in allocation.claim_timezone (default Asia/Shanghai), as the period argument of scorecard(), strategy_effectiveness() and evaluate_performance()';

-- One row per holding period of a rep that overlaps the period, with its outcome facts.
-- The clipped window w = the part of the holding inside the period.
CREATE FUNCTION allocation._outcome_base(p_period tstzrange, p_touch_days integer)
RETURNS TABLE (managed_id integer, key text, rep_id bigint, team_id bigint, territory_id bigint,
               rule_id bigint, source text, tier text, crop text,
               held_days numeric, held_at_end boolean, started_in_period boolean,
               first_contact interval, touched boolean, prior_deal boolean, converted boolean,
               deal_amount numeric, satisfaction_sum numeric, satisfaction_n integer)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    WITH h AS (
        SELECT a.managed_id, a.key, a.rep_id, r.team_id, a.territory_id, a.rule_id, a.source, a.tier, a.crop,
               a.valid_from, a.valid_to,
               greatest(a.valid_from, lower(p_period)) AS w_from,
               least(coalesce(a.valid_to, 'infinity'), upper(p_period)) AS w_to
          FROM allocation.assignment a
          LEFT JOIN allocation.rep r ON r.id = a.rep_id
         WHERE a.rep_id IS NOT NULL
           AND a.valid_from < upper(p_period) AND (a.valid_to IS NULL OR a.valid_to > lower(p_period)))
    SELECT h.managed_id, h.key, h.rep_id, h.team_id, h.territory_id, h.rule_id, h.source, h.tier, h.crop,
           round((extract(epoch FROM h.w_to - h.w_from) / 86400)::numeric, 4),
           h.valid_to IS NULL OR h.valid_to >= upper(p_period),
           h.valid_from >= lower(p_period),
           -- the holder's first follow-up after it got the customer (holdings that started in the period)
           CASE WHEN h.valid_from >= lower(p_period) THEN
                (SELECT min(f.at) FROM allocation.followup f
                  WHERE f.managed_id = h.managed_id AND f.key = h.key AND f.rep_id = h.rep_id
                    AND f.at >= h.valid_from AND f.at < h.w_to) - h.valid_from END,
           -- held at the end and touched (by anyone) within touch_days before the end
           (h.valid_to IS NULL OR h.valid_to >= upper(p_period))
           AND EXISTS (SELECT 1 FROM allocation.followup f
                        WHERE f.managed_id = h.managed_id AND f.key = h.key
                          AND f.at >= upper(p_period) - make_interval(days => p_touch_days) AND f.at < upper(p_period)),
           d.first_at < h.w_from,
           d.first_at >= h.w_from AND d.first_at < h.w_to,
           coalesce((SELECT sum(x.amount) FROM allocation.deal x
                      WHERE x.managed_id = h.managed_id AND x.key = h.key AND x.at >= h.w_from AND x.at < h.w_to), 0),
           s.total, coalesce(s.n, 0)::integer
      FROM h
      LEFT JOIN LATERAL (SELECT min(x.at) AS first_at FROM allocation.deal x
                          WHERE x.managed_id = h.managed_id AND x.key = h.key) d ON true
      LEFT JOIN LATERAL (SELECT sum(x.score_pct) AS total, count(*) AS n FROM allocation.satisfaction x
                          WHERE x.managed_id = h.managed_id AND x.key = h.key AND x.at >= h.w_from AND x.at < h.w_to) s ON true
$$;
COMMENT ON FUNCTION allocation._outcome_base(tstzrange, integer) IS 'internal: one row per holding period of a rep overlapping the period, with its outcome facts (days held in it, held at the end, first contact, touched, converted, deals, satisfaction)';

-- Per rep: the measures of the contract (rep_measures), for every rep with a holding, a credit
-- or an event in the period
CREATE FUNCTION allocation._rep_measures(p_period tstzrange, p_touch_days integer)
RETURNS TABLE (rep_id bigint, held_end integer, held_avg numeric, touched_pct numeric,
               first_contact_median interval, first_contacts integer, conversion_base integer,
               converted integer, conversion_pct numeric, revenue numeric, satisfaction_avg numeric,
               satisfaction_n integer, claims integer, releases integer, recycled_away integer,
               grants integer, grants_converted integer)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    WITH b AS (SELECT * FROM allocation._outcome_base(p_period, p_touch_days)),
    per_rep AS (
        SELECT b.rep_id,
               count(*) FILTER (WHERE b.held_at_end)::integer AS held_end,
               round(sum(b.held_days) / (extract(epoch FROM upper(p_period) - lower(p_period)) / 86400)::numeric, 2) AS held_avg,
               round(100.0 * count(*) FILTER (WHERE b.touched) / nullif(count(*) FILTER (WHERE b.held_at_end), 0), 1) AS touched_pct,
               justify_hours(percentile_cont(0.5) WITHIN GROUP (ORDER BY b.first_contact)
                             FILTER (WHERE b.first_contact IS NOT NULL)) AS first_contact_median,
               count(b.first_contact)::integer AS first_contacts,
               count(*) FILTER (WHERE b.prior_deal IS NOT TRUE)::integer AS conversion_base,
               count(*) FILTER (WHERE b.converted)::integer AS converted,
               sum(b.satisfaction_sum) AS sat_total, sum(b.satisfaction_n)::integer AS sat_n
          FROM b GROUP BY b.rep_id),
    credit AS (   -- revenue with the virtual teams' splits: what each rep was credited
        SELECT s.rep_id, sum(s.amount) AS revenue
          FROM allocation.deal d JOIN allocation.deal_split s ON s.deal_id = d.id
         WHERE d.at <@ p_period AND s.rep_id IS NOT NULL GROUP BY s.rep_id),
    ev AS (
        SELECT coalesce(e.to_rep, e.from_rep) AS rep_id,
               count(*) FILTER (WHERE e.kind = 'claim')::integer AS claims,
               count(*) FILTER (WHERE e.kind = 'release')::integer AS releases,
               count(*) FILTER (WHERE e.kind = 'recycle')::integer AS recycled_away
          FROM allocation.event e
         WHERE e.at <@ p_period AND e.period = 'open' AND e.kind IN ('claim', 'release', 'recycle')
         GROUP BY 1),
    ev_from AS (  -- a release or recycle names the rep that lost the customer
        SELECT e.from_rep AS rep_id,
               count(*) FILTER (WHERE e.kind = 'release')::integer AS releases,
               count(*) FILTER (WHERE e.kind = 'recycle')::integer AS recycled_away
          FROM allocation.event e
         WHERE e.at <@ p_period AND e.period = 'open' AND e.kind IN ('release', 'recycle') AND e.from_rep IS NOT NULL
         GROUP BY 1),
    gr AS (
        SELECT q.rep_id, count(*)::integer AS grants,
               count(*) FILTER (WHERE EXISTS (SELECT 1 FROM allocation.deal d
                                               WHERE d.managed_id = q.managed_id AND d.key = q.key AND d.at >= q.decided_at))::integer
                   AS grants_converted
          FROM allocation.resource_request q
         WHERE q.status IN ('granted', 'released', 'expired') AND q.decided_at <@ p_period AND q.rep_id IS NOT NULL
         GROUP BY q.rep_id),
    reps AS (SELECT x.rep_id FROM per_rep x UNION SELECT x.rep_id FROM credit x
             UNION SELECT x.rep_id FROM ev x WHERE x.claims > 0 UNION SELECT x.rep_id FROM ev_from x
             UNION SELECT x.rep_id FROM gr x)
    SELECT r.rep_id, coalesce(p.held_end, 0), coalesce(p.held_avg, 0), p.touched_pct,
           p.first_contact_median, coalesce(p.first_contacts, 0), coalesce(p.conversion_base, 0), coalesce(p.converted, 0),
           round(100.0 * p.converted / nullif(p.conversion_base, 0), 1),
           coalesce(c.revenue, 0), round(p.sat_total / nullif(p.sat_n, 0), 1), coalesce(p.sat_n, 0),
           coalesce(ev.claims, 0), coalesce(ef.releases, 0), coalesce(ef.recycled_away, 0),
           coalesce(gr.grants, 0), coalesce(gr.grants_converted, 0)
      FROM reps r
      LEFT JOIN per_rep p ON p.rep_id = r.rep_id
      LEFT JOIN credit c ON c.rep_id = r.rep_id
      LEFT JOIN ev ON ev.rep_id = r.rep_id
      LEFT JOIN ev_from ef ON ef.rep_id = r.rep_id
      LEFT JOIN gr ON gr.rep_id = r.rep_id
$$;
COMMENT ON FUNCTION allocation._rep_measures(tstzrange, integer) IS 'internal: every rep''s measures over a period (rep_measures() without the caller filter)';

CREATE FUNCTION allocation.rep_measures(period tstzrange, touch_days integer DEFAULT 30)
RETURNS TABLE (rep_id bigint, held_end integer, held_avg numeric, touched_pct numeric,
               first_contact_median interval, first_contacts integer, conversion_base integer,
               converted integer, conversion_pct numeric, revenue numeric, satisfaction_avg numeric,
               satisfaction_n integer, claims integer, releases integer, recycled_away integer,
               grants integer, grants_converted integer)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_all boolean := allocation._reads_all_measures();
    v_me bigint := allocation.current_rep_id();
BEGIN
    PERFORM allocation._check_period(period, touch_days);
    RETURN QUERY SELECT m.* FROM allocation._rep_measures(period, touch_days) m
                  WHERE v_all OR m.rep_id = v_me
                  ORDER BY m.rep_id;
END
$$;
COMMENT ON FUNCTION allocation.rep_measures(tstzrange, integer) IS
'Each rep''s measures over a period: customers held at the end and on average, touched within touch_days before the end (%), median first contact after getting a customer, conversion (first deal within the holding, %), revenue credited (with virtual-team splits), satisfaction (0-100), claims, releases, customers lost to recycling, resource grants and how many converted; a rep sees its own row';

-- Scorecards: per rep, team and territory
CREATE FUNCTION allocation.scorecard(period tstzrange, touch_days integer DEFAULT 30)
RETURNS TABLE (level text, id bigint, code text, name text, held_end integer, held_avg numeric,
               touched_pct numeric, first_contact_median interval, conversion_base integer, converted integer,
               conversion_pct numeric, revenue numeric, satisfaction_avg numeric, satisfaction_n integer,
               claims integer, releases integer, recycled_away integer, grants integer, grants_converted integer)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_all boolean := allocation._reads_all_measures();
    v_me bigint := allocation.current_rep_id();
    v_days numeric;
BEGIN
    PERFORM allocation._check_period(period, touch_days);
    v_days := (extract(epoch FROM upper(period) - lower(period)) / 86400)::numeric;
    RETURN QUERY
    WITH m AS (SELECT * FROM allocation._rep_measures(period, touch_days)),
    b AS (SELECT * FROM allocation._outcome_base(period, touch_days)),
    reps AS (
        SELECT 'rep'::text AS level, r.id, r.code, r.name, m.held_end, m.held_avg, m.touched_pct,
               m.first_contact_median, m.conversion_base, m.converted, m.conversion_pct, m.revenue,
               m.satisfaction_avg, m.satisfaction_n, m.claims, m.releases, m.recycled_away, m.grants, m.grants_converted
          FROM m JOIN allocation.rep r ON r.id = m.rep_id),
    teams AS (   -- the reps' measures summed per team (rates from the summed counts)
        SELECT 'team'::text, t.id, t.code, t.name, sum(m.held_end)::integer, sum(m.held_avg),
               round(100.0 * sum(m.touched_pct * m.held_end / 100.0) / nullif(sum(m.held_end) FILTER (WHERE m.touched_pct IS NOT NULL), 0), 1),
               NULL::interval, sum(m.conversion_base)::integer, sum(m.converted)::integer,
               round(100.0 * sum(m.converted) / nullif(sum(m.conversion_base), 0), 1), sum(m.revenue),
               round(sum(m.satisfaction_avg * m.satisfaction_n) / nullif(sum(m.satisfaction_n), 0), 1),
               sum(m.satisfaction_n)::integer, sum(m.claims)::integer, sum(m.releases)::integer,
               sum(m.recycled_away)::integer, sum(m.grants)::integer, sum(m.grants_converted)::integer
          FROM m JOIN allocation.rep r ON r.id = m.rep_id JOIN allocation.team t ON t.id = r.team_id
         GROUP BY t.id, t.code, t.name),
    terrs AS (   -- the customers held in each territory (the territory of their holding)
        SELECT 'territory'::text, t.id, t.code, t.name,
               count(*) FILTER (WHERE b.held_at_end)::integer, round(sum(b.held_days) / v_days, 2),
               round(100.0 * count(*) FILTER (WHERE b.touched) / nullif(count(*) FILTER (WHERE b.held_at_end), 0), 1),
               justify_hours(percentile_cont(0.5) WITHIN GROUP (ORDER BY b.first_contact) FILTER (WHERE b.first_contact IS NOT NULL)),
               count(*) FILTER (WHERE b.prior_deal IS NOT TRUE)::integer, count(*) FILTER (WHERE b.converted)::integer,
               round(100.0 * count(*) FILTER (WHERE b.converted) / nullif(count(*) FILTER (WHERE b.prior_deal IS NOT TRUE), 0), 1),
               sum(b.deal_amount), round(sum(b.satisfaction_sum) / nullif(sum(b.satisfaction_n), 0), 1),
               sum(b.satisfaction_n)::integer, NULL::integer, NULL::integer, NULL::integer, NULL::integer, NULL::integer
          FROM b JOIN allocation.territory t ON t.id = b.territory_id
         GROUP BY t.id, t.code, t.name)
    SELECT x.* FROM reps x WHERE v_all OR x.id = v_me
    UNION ALL SELECT x.* FROM teams x WHERE v_all
    UNION ALL SELECT x.* FROM terrs x WHERE v_all
    ORDER BY 1, 3;
END
$$;
COMMENT ON FUNCTION allocation.scorecard(tstzrange, integer) IS
'Scorecards over a period per rep, team and territory: held (end, average), touched %, median first contact, conversion, revenue with splits, satisfaction, claims, releases, lost to recycling, resources; a rep sees its own row only';

-- Strategy effectiveness: the same outcomes grouped by what assigned each customer
CREATE FUNCTION allocation.strategy_effectiveness(period tstzrange, touch_days integer DEFAULT 30)
RETURNS TABLE (dimension text, value text, holdings integer, started integer, touched_pct numeric,
               first_contact_median interval, conversion_base integer, converted integer, conversion_pct numeric,
               revenue numeric, revenue_per_holding numeric, satisfaction_avg numeric, satisfaction_n integer)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    IF NOT allocation._reads_all_measures() THEN
        RAISE EXCEPTION 'role % may not read strategy effectiveness', allocation._actor() USING ERRCODE = 'LA0M1',
              DETAIL = 'It compares every rep''s customers; managers, analysts and admins read it.',
              HINT = 'A rep reads its own measures with allocation.rep_measures() or allocation.scorecard().';
    END IF;
    PERFORM allocation._check_period(period, touch_days);
    RETURN QUERY
    WITH b AS (
        SELECT x.*, ru.name AS rule_name,
               CASE WHEN x.source IN ('rule', 'reevaluate', 'suggestion') THEN
                        coalesce(ru.policy, ru.target_kind, 'rule (deleted)')
                    ELSE x.source END AS policy,
               t.code AS territory_code
          FROM allocation._outcome_base(period, touch_days) x
          LEFT JOIN allocation.rule ru ON ru.id = x.rule_id
          LEFT JOIN allocation.territory t ON t.id = x.territory_id),
    dims AS (
        SELECT 'rule'::text AS dimension,
               coalesce(b.rule_name, CASE WHEN b.rule_id IS NULL THEN '(' || b.source || ')' ELSE '(rule ' || b.rule_id || ')' END) AS value,
               b.* FROM b
        UNION ALL SELECT 'policy', b.policy, b.* FROM b
        UNION ALL SELECT 'territory', coalesce(b.territory_code, '(none)'), b.* FROM b
        UNION ALL SELECT 'tier', coalesce(b.tier, '(none)'), b.* FROM b
        UNION ALL SELECT 'crop', coalesce(b.crop, '(none)'), b.* FROM b)
    SELECT d.dimension, d.value, count(*)::integer, count(*) FILTER (WHERE d.started_in_period)::integer,
           round(100.0 * count(*) FILTER (WHERE d.touched) / nullif(count(*) FILTER (WHERE d.held_at_end), 0), 1),
           justify_hours(percentile_cont(0.5) WITHIN GROUP (ORDER BY d.first_contact) FILTER (WHERE d.first_contact IS NOT NULL)),
           count(*) FILTER (WHERE d.prior_deal IS NOT TRUE)::integer, count(*) FILTER (WHERE d.converted)::integer,
           round(100.0 * count(*) FILTER (WHERE d.converted) / nullif(count(*) FILTER (WHERE d.prior_deal IS NOT TRUE), 0), 1),
           sum(d.deal_amount), round(sum(d.deal_amount) / count(*), 2),
           round(sum(d.satisfaction_sum) / nullif(sum(d.satisfaction_n), 0), 1), sum(d.satisfaction_n)::integer
      FROM dims d
     GROUP BY d.dimension, d.value
     ORDER BY d.dimension, count(*) DESC, d.value;
END
$$;
COMMENT ON FUNCTION allocation.strategy_effectiveness(tstzrange, integer) IS
'Outcomes over a period grouped by what assigned each customer: the rule, the policy (or manual, claim, transfer, ...), the territory, the tier and the crop; with counts, so small groups are visibly small; managers, analysts and admins';

-- Monthly snapshots for BI: refresh_scorecards(at) recomputes the month of `at` and the month
-- before it, each in one statement under an advisory lock (concurrent refreshes queue; readers see
-- the old or the new snapshot, never a mix)
CREATE TABLE allocation.scorecard_month (
    month                date NOT NULL,
    level                text NOT NULL CHECK (level IN ('rep', 'team', 'territory')),
    id                   bigint NOT NULL,
    code                 text,
    name                 text,
    held_end             integer,
    held_avg             numeric,
    touched_pct          numeric,
    first_contact_median interval,
    conversion_base      integer,
    converted            integer,
    conversion_pct       numeric,
    revenue              numeric,
    satisfaction_avg     numeric,
    satisfaction_n       integer,
    claims               integer,
    releases             integer,
    recycled_away        integer,
    grants               integer,
    grants_converted     integer,
    refreshed_at         timestamptz NOT NULL,
    PRIMARY KEY (month, level, id)
);
COMMENT ON TABLE allocation.scorecard_month IS 'Materialised monthly scorecards (refresh_scorecards(), run by run_maintenance()); derived data, not dumped: refresh after a restore';

-- The date that names a month of month_of() (its first day in the claim time zone)
CREATE FUNCTION allocation._month_date(p_month tstzrange)
RETURNS date
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT pg_catalog.timezone(coalesce(nullif(pg_catalog.current_setting('allocation.claim_timezone', true), ''), 'Asia/Shanghai'),
                               lower(p_month))::date
$$;
COMMENT ON FUNCTION allocation._month_date(tstzrange) IS 'internal: the first day of a month_of() month, in allocation.claim_timezone';

CREATE FUNCTION allocation._refresh_scorecards(at timestamptz)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_month tstzrange;
    n integer := 0;
    k integer;
BEGIN
    IF at IS NULL THEN
        RAISE EXCEPTION 'the time must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'refresh_scorecards() recomputes the month of this time and the month before.',
              HINT = 'SELECT allocation.refresh_scorecards(now());';
    END IF;
    PERFORM allocation._require_read_committed('refresh_scorecards');
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('allocation.refresh_scorecards'));
    FOREACH v_month IN ARRAY ARRAY[allocation.month_of(at - interval '1 month'), allocation.month_of(at)] LOOP
        DELETE FROM allocation.scorecard_month s WHERE s.month = allocation._month_date(v_month);
        INSERT INTO allocation.scorecard_month
        SELECT allocation._month_date(v_month), x.level, x.id, x.code, x.name, x.held_end, x.held_avg, x.touched_pct,
               x.first_contact_median, x.conversion_base, x.converted, x.conversion_pct, x.revenue,
               x.satisfaction_avg, x.satisfaction_n, x.claims, x.releases, x.recycled_away, x.grants,
               x.grants_converted, pg_catalog.clock_timestamp()
          FROM allocation.scorecard(pg_catalog.tstzrange(lower(v_month), least(upper(v_month), greatest(at, lower(v_month) + interval '1 second')))) x;
        GET DIAGNOSTICS k = ROW_COUNT;
        n := n + k;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION allocation._refresh_scorecards(timestamptz) IS 'internal: implementation of allocation.refresh_scorecards(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.refresh_scorecards(at timestamptz DEFAULT now())
RETURNS integer
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.refresh_scorecards(timestamptz) IS
'Recomputes the monthly scorecards of the month of `at` (up to `at`) and of the month before into scorecard_month (for a scheduler; run_maintenance() calls it); returns the rows written';

CREATE VIEW allocation.scorecard_monthly WITH (security_barrier) AS
SELECT s.month, s.level, s.id, s.code, s.name, s.held_end, s.held_avg, s.touched_pct, s.first_contact_median,
       s.conversion_base, s.converted, s.conversion_pct, s.revenue, s.satisfaction_avg, s.satisfaction_n,
       s.claims, s.releases, s.recycled_away, s.grants, s.grants_converted, s.refreshed_at
  FROM allocation.scorecard_month s
 WHERE pg_catalog.has_table_privilege('allocation.scorecard_month', 'SELECT')
    OR (s.level = 'rep' AND s.id = allocation.current_rep_id());
COMMENT ON VIEW allocation.scorecard_monthly IS 'BI: the materialised monthly scorecards (refresh_scorecards()); a rep sees its own rows';

-------------------------------------------------------------------------------
-- Rewards by rule (issue 14): evaluate_performance(period) gives the reps whose
-- measure over the period reaches a rule's threshold the rule's effect for the
-- next period of the same length, and revokes the rewards whose period is over.
-- The tables are in 70_claims.sql (claim_limits() reads them).
-------------------------------------------------------------------------------

CREATE FUNCTION allocation._reward_event(w allocation.reward, p_kind text, p_reason text)
RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS
$$
    INSERT INTO allocation.event (actor, kind, to_rep, reason, detail)
    VALUES (allocation._actor(), p_kind, w.rep_id, p_reason,
            pg_catalog.jsonb_build_object('reward', w.id, 'rule', w.rule_id, 'effect', w.effect, 'amount', w.amount,
                                          'tier', w.tier, 'pool', w.pool_id, 'measure', w.measure,
                                          'value', w.measure_value, 'earned_in', w.earned_in::text,
                                          'effective', w.effective::text))
$$;
COMMENT ON FUNCTION allocation._reward_event(allocation.reward, text, text) IS 'internal: the audit event of a reward (reward_applied, reward_revoked)';

CREATE FUNCTION allocation._evaluate_performance(period tstzrange)
RETURNS TABLE (rep_id bigint, rep_code text, rule text, action text, effect text, amount integer,
               measure_value numeric, effective tstzrange)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_next tstzrange;
    w allocation.reward;
    rr allocation.reward_rule;
    m record;
    v_value numeric;
    v_base integer;
BEGIN
    PERFORM allocation._check_period(period, 30);
    -- the next period of the same length (a calendar month is followed by the next month)
    v_next := CASE WHEN period = allocation.month_of(lower(period))
                   THEN allocation.month_of(upper(period))
                   ELSE pg_catalog.tstzrange(upper(period), upper(period) + (upper(period) - lower(period))) END;
    -- one evaluation at a time (a second waits, then finds everything done)
    PERFORM allocation._require_read_committed('evaluate_performance');
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('allocation.evaluate_performance'));
    -- 1. the rewards in force during this period (earned before it) are revoked: its
    --    evaluation gives the next ones
    FOR w IN UPDATE allocation.reward x SET revoked_at = pg_catalog.clock_timestamp()
              WHERE x.revoked_at IS NULL AND lower(x.effective) <= lower(period)
              RETURNING * LOOP
        IF w.capacity_added > 0 THEN    -- only what was added (an unlimited rep got nothing)
            UPDATE allocation.rep x SET capacity = greatest(x.capacity - w.capacity_added, 0)
             WHERE x.id = w.rep_id AND x.capacity IS NOT NULL;
        END IF;
        PERFORM allocation._reward_event(w, 'reward_revoked', format('its period %s is over', w.effective));
        rep_id := w.rep_id; rep_code := (SELECT x.code FROM allocation.rep x WHERE x.id = w.rep_id);
        rule := (SELECT x.name FROM allocation.reward_rule x WHERE x.id = w.rule_id);
        action := 'revoked'; effect := w.effect; amount := w.amount; measure_value := w.measure_value;
        effective := w.effective;
        RETURN NEXT;
    END LOOP;
    -- 2. the rewards earned in this period, effective for the next one
    FOR rr IN SELECT * FROM allocation.reward_rule x WHERE x.enabled ORDER BY x.id LOOP
        FOR m IN SELECT x.*, r.code FROM allocation._rep_measures(period, 30) x
                   JOIN allocation.rep r ON r.id = x.rep_id AND r.active
                  WHERE rr.team_id IS NULL OR allocation._rep_in_team(x.rep_id, rr.team_id)
                  ORDER BY x.rep_id LOOP
            v_value := CASE rr.measure WHEN 'conversion_pct' THEN m.conversion_pct WHEN 'revenue' THEN m.revenue
                                       WHEN 'satisfaction_avg' THEN m.satisfaction_avg ELSE m.touched_pct END;
            v_base := CASE rr.measure WHEN 'conversion_pct' THEN m.conversion_base
                                      WHEN 'satisfaction_avg' THEN m.satisfaction_n ELSE m.held_end END;
            CONTINUE WHEN v_value IS NULL OR v_value < rr.threshold OR v_base < rr.min_customers;
            INSERT INTO allocation.reward (rule_id, rep_id, earned_in, effective, effect, amount, tier, pool_id,
                                           measure, measure_value, applied_at)
            VALUES (rr.id, m.rep_id, period, v_next, rr.effect, rr.amount, rr.tier, rr.pool_id, rr.measure, v_value,
                    pg_catalog.clock_timestamp())
            ON CONFLICT ON CONSTRAINT reward_once DO NOTHING
            RETURNING * INTO w;
            CONTINUE WHEN NOT FOUND;      -- given already: the evaluation is idempotent
            IF w.effect = 'capacity_bonus' THEN
                UPDATE allocation.rep x SET capacity = x.capacity + w.amount WHERE x.id = w.rep_id AND x.capacity IS NOT NULL;
                IF FOUND THEN
                    UPDATE allocation.reward x SET capacity_added = w.amount WHERE x.id = w.id;
                END IF;
            END IF;
            PERFORM allocation._reward_event(w, 'reward_applied',
                        format('%s %s reached %s (rule %s) in %s', rr.measure, v_value, rr.threshold, rr.name, period));
            rep_id := w.rep_id; rep_code := m.code; rule := rr.name; action := 'applied'; effect := w.effect;
            amount := w.amount; measure_value := v_value; effective := w.effective;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation._evaluate_performance(tstzrange) IS 'internal: implementation of allocation.evaluate_performance(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.evaluate_performance(period tstzrange)
RETURNS TABLE (rep_id bigint, rep_code text, rule text, action text, effect text, amount integer,
               measure_value numeric, effective tstzrange)
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.evaluate_performance(tstzrange) IS
'Revokes the rewards whose period is over by the end of `period`, then gives every active rep whose measure over `period` reaches a reward rule''s threshold that rule''s effect for the next period of the same length (capacity_bonus raises rep.capacity; the other effects are read by claim_limits() and the resource caps); idempotent; one reward_applied / reward_revoked event each';

-- The rewards in force (BI and explain): a rep sees its own
CREATE VIEW allocation.active_reward WITH (security_barrier) AS
SELECT w.id, w.rep_id, r.code AS rep_code, rr.name AS rule, w.effect, w.amount, w.tier, w.pool_id,
       w.measure, w.measure_value, w.earned_in, w.effective, w.applied_at
  FROM allocation.reward w
  LEFT JOIN allocation.rep r ON r.id = w.rep_id
  LEFT JOIN allocation.reward_rule rr ON rr.id = w.rule_id
 WHERE w.revoked_at IS NULL
   AND (pg_catalog.has_table_privilege('allocation.reward', 'SELECT') OR w.rep_id = allocation.current_rep_id());
COMMENT ON VIEW allocation.active_reward IS 'Rewards given and not revoked, with the rule, the measure that earned them and when they apply; a rep sees its own';

-------------------------------------------------------------------------------
-- Alerts: conditions a manager should act on, by rule, deduplicated, closed
-- automatically when the condition clears, announced with NOTIFY (issue 14)
-------------------------------------------------------------------------------
-- Each kind has one evaluator, allocation._alert_<kind>(rule, at), returning the
-- subjects for which the condition holds at a time; allocation._evaluate_alerts()
-- is the generic part: it opens an alert (and notifies) for a new subject, keeps
-- an open one, and resolves the open alerts no rule reports any more.  A kind is
-- added by writing its evaluator and its parameter check (allocation._alert_params).
CREATE TABLE allocation.alert_rule (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (btrim(name) <> ''),
    kind        text NOT NULL CHECK (kind IN ('territory_untouched', 'stale_suggestion', 'stale_transfer', 'stale_dispute',
                                              'untouched_high_potential', 'low_conversion')),
    params      jsonb NOT NULL DEFAULT '{}',
    team_id     bigint REFERENCES allocation.team (id) ON DELETE CASCADE,
    enabled     boolean NOT NULL DEFAULT true,
    note        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE allocation.alert_rule IS 'Alert rules (configuration, written by admins, audited as config_change events): a kind, its parameters (params, checked when saved) and an optional team scope; allocation.evaluate_alerts() (and run_maintenance()) turn them into allocation.alert rows';
COMMENT ON COLUMN allocation.alert_rule.kind IS 'territory_untouched (no follow-up of a territory''s held customers in days), stale_suggestion, stale_transfer, stale_dispute (a pending suggestion / pending transfer / open ownership dispute older than days); untouched_high_potential and low_conversion are reserved for the outcome measures';
COMMENT ON COLUMN allocation.alert_rule.params IS 'per kind: {"days": N} (N > 0 whole days) for every kind here, territory_untouched also {"territory_id": id} to watch one territory (and its sub-territories)';
COMMENT ON COLUMN allocation.alert_rule.team_id IS 'only subjects whose rep belongs to this team or a sub-team (a territory: its owner rep, or its owner team); NULL = every team';

CREATE TABLE allocation.alert (
    id           bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    rule_id      bigint,            -- no foreign keys: the history outlives a deleted rule or rep
    kind         text NOT NULL,
    subject      text NOT NULL,
    rep_id       bigint,
    manager      name,
    since        timestamptz NOT NULL,
    opened_at    timestamptz NOT NULL,
    resolved_at  timestamptz,
    resolved_by  text,
    resolution   text,
    detail       jsonb NOT NULL DEFAULT '{}',
    CONSTRAINT alert_resolved CHECK ((resolved_at IS NULL) = (resolved_by IS NULL) AND (resolved_at IS NULL) = (resolution IS NULL))
);
-- deduplication: one open alert per subject and kind, also under concurrent evaluations
CREATE UNIQUE INDEX alert_one_open ON allocation.alert (kind, subject) WHERE resolved_at IS NULL;
CREATE INDEX alert_rep_idx ON allocation.alert (rep_id, opened_at);
COMMENT ON TABLE allocation.alert IS 'Alerts (engine-maintained: evaluate_alerts(), run_maintenance(), resolve_alert()): at most one open per kind and subject; resolved automatically when its condition clears; each new one is announced with NOTIFY on channel allocation_alert';
COMMENT ON COLUMN allocation.alert.subject IS 'what the alert is about, stable across evaluations: territory <id>, suggestion <id>, transfer <id>, dispute <id>';
COMMENT ON COLUMN allocation.alert.rep_id IS 'the rep concerned: the territory''s owner rep, the suggested rep, the transfer''s holder, the dispute''s holder (NULL = none)';
COMMENT ON COLUMN allocation.alert.manager IS 'the manager of the rep''s team (team.manager_login of its team or the nearest ancestor with one; a territory owned by a team: that team''s)';
COMMENT ON COLUMN allocation.alert.since IS 'when the condition began (e.g. the last follow-up plus the rule''s days); the same episode keeps the same since';
COMMENT ON COLUMN allocation.alert.opened_at IS 'the evaluation time (the at argument) that opened the alert; resolved_at: the one that found the condition cleared, or when a manager resolved it';
COMMENT ON COLUMN allocation.alert.resolution IS 'cleared (the condition no longer holds, resolved_by = the role that ran the evaluation) or a manager''s reason (resolve_alert())';

-- The parameters of a kind, checked (LA0A0) and normalised; LA0A1 for a kind without evaluator
CREATE FUNCTION allocation._alert_params(p_kind text, p_params jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_allowed text[];
    v_bad text;
    v_days jsonb := p_params -> 'days';
    v_wrong boolean;
BEGIN
    IF pg_catalog.to_regprocedure(pg_catalog.format('allocation.%I(allocation.alert_rule, timestamptz)', '_alert_' || p_kind)) IS NULL THEN
        RAISE EXCEPTION 'alert kind % is not available', p_kind USING ERRCODE = 'LA0A1',
              DETAIL = 'This version of the extension has no evaluator for it.',
              HINT = 'Use territory_untouched, stale_suggestion, stale_transfer, stale_dispute, untouched_high_potential or low_conversion.';
    END IF;
    IF p_params IS NULL OR pg_catalog.jsonb_typeof(p_params) <> 'object' THEN
        RAISE EXCEPTION 'alert rule parameters must be a JSON object' USING ERRCODE = 'LA0A0',
              DETAIL = pg_catalog.format('They are %s.', coalesce(p_params::text, 'NULL')),
              HINT = 'For example {"days": 7}.';
    END IF;
    v_allowed := CASE p_kind WHEN 'territory_untouched' THEN ARRAY['days', 'territory_id']
                             WHEN 'untouched_high_potential' THEN ARRAY['days', 'tiers', 'min_value', 'table']
                             WHEN 'low_conversion' THEN ARRAY['below_pct', 'period_days', 'min_customers']
                             ELSE ARRAY['days'] END;
    SELECT k INTO v_bad FROM pg_catalog.jsonb_object_keys(p_params) k WHERE k <> ALL (v_allowed) ORDER BY k LIMIT 1;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'unknown parameter "%" for alert kind %', v_bad, p_kind USING ERRCODE = 'LA0A0',
              DETAIL = pg_catalog.format('Kind %s takes %s.', p_kind, pg_catalog.array_to_string(v_allowed, ', ')),
              HINT = 'For example {"days": 7}.';
    END IF;
    IF p_kind = 'low_conversion' THEN
        -- below_pct 0..100, period_days 1..36500, min_customers >= 1
        SELECT k INTO v_bad FROM unnest(ARRAY['below_pct', 'period_days', 'min_customers']) k
         WHERE p_params -> k IS NULL OR pg_catalog.jsonb_typeof(p_params -> k) <> 'number'
            OR CASE k WHEN 'below_pct' THEN (p_params ->> k)::numeric NOT BETWEEN 0 AND 100
                      WHEN 'period_days' THEN (p_params ->> k)::numeric NOT BETWEEN 1 AND 36500
                                              OR (p_params ->> k)::numeric <> trunc((p_params ->> k)::numeric)
                      ELSE (p_params ->> k)::numeric < 1 OR (p_params ->> k)::numeric <> trunc((p_params ->> k)::numeric) END
         LIMIT 1;
        IF v_bad IS NOT NULL THEN
            RAISE EXCEPTION 'alert kind low_conversion needs "%" (below_pct 0 to 100, period_days 1 to 36500, min_customers 1 or more)', v_bad
                  USING ERRCODE = 'LA0A0', DETAIL = pg_catalog.format('"%s" is %s.', v_bad, coalesce(p_params -> v_bad, 'null'::jsonb)),
                        HINT = 'For example {"below_pct": 10, "period_days": 90, "min_customers": 20}.';
        END IF;
        RETURN p_params;
    END IF;
    IF p_kind = 'untouched_high_potential' THEN
        v_wrong := (p_params ? 'tiers') = (p_params ? 'min_value')
                   OR (p_params ? 'tiers' AND (pg_catalog.jsonb_typeof(p_params -> 'tiers') <> 'array'
                                               OR pg_catalog.jsonb_array_length(p_params -> 'tiers') = 0
                                               OR EXISTS (SELECT 1 FROM pg_catalog.jsonb_array_elements(p_params -> 'tiers') x
                                                           WHERE pg_catalog.jsonb_typeof(x) <> 'string')))
                   OR (p_params ? 'min_value' AND pg_catalog.jsonb_typeof(p_params -> 'min_value') <> 'number')
                   OR (p_params ? 'table' AND (pg_catalog.jsonb_typeof(p_params -> 'table') <> 'string'
                                               OR NOT EXISTS (SELECT 1 FROM allocation.managed_table m
                                                               WHERE m.active AND m.tbl = pg_catalog.to_regclass(p_params ->> 'table'))));
        IF v_wrong THEN
            RAISE EXCEPTION 'alert kind untouched_high_potential needs "tiers" (potential tiers) or "min_value", and "table" must name a managed table'
                  USING ERRCODE = 'LA0A0', DETAIL = pg_catalog.format('The parameters are %s.', p_params),
                        HINT = 'For example {"days": 14, "tiers": ["high"]} or {"days": 14, "min_value": 500000, "table": "crm.customer"}.';
        END IF;
    END IF;
    v_wrong := CASE WHEN v_days IS NULL OR pg_catalog.jsonb_typeof(v_days) <> 'number' THEN true
                    ELSE (v_days #>> '{}')::numeric <= 0 OR (v_days #>> '{}')::numeric > 36500
                         OR (v_days #>> '{}')::numeric <> trunc((v_days #>> '{}')::numeric) END;
    IF v_wrong THEN
        RAISE EXCEPTION 'alert kind % needs "days", a whole number of days from 1 to 36500', p_kind USING ERRCODE = 'LA0A0',
              DETAIL = pg_catalog.format('"days" is %s.', coalesce(v_days::text, 'missing')),
              HINT = 'For example {"days": 7}.';
    END IF;
    v_wrong := CASE WHEN NOT p_params ? 'territory_id' THEN false
                    WHEN pg_catalog.jsonb_typeof(p_params -> 'territory_id') <> 'number' THEN true
                    ELSE NOT EXISTS (SELECT 1 FROM allocation.territory t
                                      WHERE t.id::numeric = (p_params ->> 'territory_id')::numeric) END;
    IF v_wrong THEN
        RAISE EXCEPTION 'territory % does not exist', p_params -> 'territory_id' USING ERRCODE = 'LA0A0',
              DETAIL = 'Parameter "territory_id" names the territory to watch (with its sub-territories).',
              HINT = 'SELECT id, code FROM allocation.territory;';
    END IF;
    RETURN p_params;
END
$$;
COMMENT ON FUNCTION allocation._alert_params(text, jsonb) IS 'internal: checks an alert rule''s parameters for its kind (LA0A0), and that the kind has an evaluator (LA0A1)';

-- (SECURITY DEFINER: an admin writes the table but may not run internal functions;
-- search_path pinned, every name qualified)
CREATE FUNCTION allocation._alert_rule_check()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    -- pg_restore (and a plain dump script) reloads rules that were checked when saved,
    -- possibly before the territories they name: a superuser with check_function_bodies
    -- off, as in allocation._config_audit()
    IF current_setting('check_function_bodies') = 'off'
       AND coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user), false) THEN
        RETURN NEW;
    END IF;
    IF NEW.name IS NULL OR btrim(NEW.name) = '' THEN
        RAISE EXCEPTION 'an alert rule needs a name' USING ERRCODE = 'LA0A0',
              DETAIL = 'The name says in every alert and event which rule raised it.',
              HINT = 'For example ''territories untouched for a week''.';
    END IF;
    NEW.params := allocation._alert_params(NEW.kind, NEW.params);
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION allocation._alert_rule_check() IS 'internal: an alert rule''s parameters are checked when it is saved';
CREATE TRIGGER alert_rule_check BEFORE INSERT OR UPDATE OF name, kind, params ON allocation.alert_rule
    FOR EACH ROW EXECUTE FUNCTION allocation._alert_rule_check();

-------------------------------------------------------------------------------
-- Evaluators: the subjects for which a rule's condition holds at a time
-------------------------------------------------------------------------------
-- Whether a team is a given team or one of its sub-teams
CREATE FUNCTION allocation._team_within(p_team bigint, p_ancestor bigint)
RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    WITH RECURSIVE up(id, parent_id, depth) AS (
        SELECT t.id, t.parent_id, 0 FROM allocation.team t WHERE t.id = p_team
        UNION ALL
        SELECT t.id, t.parent_id, up.depth + 1 FROM allocation.team t JOIN up ON t.id = up.parent_id WHERE up.depth < 64)
    SELECT EXISTS (SELECT 1 FROM up WHERE up.id = p_ancestor)
$$;
COMMENT ON FUNCTION allocation._team_within(bigint, bigint) IS 'internal: whether a team is another team or one of its sub-teams';

-- A territory (or each territory under the watched one) with held customers, none of
-- which had a follow-up in the last N days (before the first follow-up: since the
-- territory's earliest current holding began)
CREATE FUNCTION allocation._alert_territory_untouched(r allocation.alert_rule, at timestamptz)
RETURNS TABLE (subject text, rep_id bigint, manager name, since timestamptz, detail jsonb)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    WITH RECURSIVE watched(id, depth) AS (
        SELECT t.id, 0 FROM allocation.territory t
         WHERE NOT (r.params ? 'territory_id') OR t.id = (r.params ->> 'territory_id')::bigint
        UNION ALL
        SELECT t.id, w.depth + 1 FROM allocation.territory t JOIN watched w ON t.parent_id = w.id
         WHERE r.params ? 'territory_id' AND w.depth < 64),
    held AS (
        SELECT a.managed_id, a.key, a.territory_id, a.valid_from
          FROM allocation.assignment a
          JOIN allocation.managed_table m ON m.id = a.managed_id AND m.active
         WHERE a.valid_to IS NULL AND a.rep_id IS NOT NULL AND a.valid_from <= $2
           AND a.territory_id IN (SELECT w.id FROM watched w)),
    touch AS (
        SELECT h.territory_id, count(*) AS customers, min(h.valid_from) AS held_since,
               max(f.last_at) AS last_followup
          FROM held h
          LEFT JOIN LATERAL (SELECT max(f.at) AS last_at FROM allocation.followup f
                              WHERE f.managed_id = h.managed_id AND f.key = h.key AND f.at <= $2) f ON true
         GROUP BY h.territory_id)
    SELECT 'territory ' || t.id, t.owner_rep_id,
           coalesce(allocation._team_manager(t.owner_rep_id), allocation.team_manager(t.owner_team_id)),
           coalesce(x.last_followup, x.held_since) + make_interval(days => (r.params ->> 'days')::int),
           jsonb_build_object('territory_id', t.id, 'territory_code', t.code, 'territory_name', t.name,
                              'owner_team_id', t.owner_team_id, 'customers', x.customers,
                              'last_followup', x.last_followup,
                              'held_since', CASE WHEN x.last_followup IS NULL THEN x.held_since END,
                              'days', (r.params ->> 'days')::int)
      FROM touch x JOIN allocation.territory t ON t.id = x.territory_id
     WHERE coalesce(x.last_followup, x.held_since) + make_interval(days => (r.params ->> 'days')::int) <= $2
       AND (r.team_id IS NULL
            OR (t.owner_rep_id IS NOT NULL AND allocation._rep_in_team(t.owner_rep_id, r.team_id))
            OR (t.owner_rep_id IS NULL AND t.owner_team_id IS NOT NULL
                AND allocation._team_within(t.owner_team_id, r.team_id)))
$$;
COMMENT ON FUNCTION allocation._alert_territory_untouched(allocation.alert_rule, timestamptz) IS 'internal: alert kind territory_untouched: territories whose held customers had no follow-up in the rule''s days';

-- A suggestion pending for more than N days
CREATE FUNCTION allocation._alert_stale_suggestion(r allocation.alert_rule, at timestamptz)
RETURNS TABLE (subject text, rep_id bigint, manager name, since timestamptz, detail jsonb)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT 'suggestion ' || s.id, s.rep_id, allocation._team_manager(s.rep_id),
           s.created_at + make_interval(days => (r.params ->> 'days')::int),
           jsonb_build_object('suggestion_id', s.id, 'managed_id', m.id, 'table', m.table_name, 'key', s.key,
                              'created_at', s.created_at, 'reason', s.reason, 'days', (r.params ->> 'days')::int)
      FROM allocation.suggestion s JOIN allocation.managed_table m ON m.id = s.managed_id
     WHERE s.status = 'pending'
       AND s.created_at + make_interval(days => (r.params ->> 'days')::int) <= $2
       AND (r.team_id IS NULL OR allocation._rep_in_team(s.rep_id, r.team_id))
$$;
COMMENT ON FUNCTION allocation._alert_stale_suggestion(allocation.alert_rule, timestamptz) IS 'internal: alert kind stale_suggestion: suggestions pending for more than the rule''s days';

-- A transfer pending for more than N days (and not yet expired at that time)
CREATE FUNCTION allocation._alert_stale_transfer(r allocation.alert_rule, at timestamptz)
RETURNS TABLE (subject text, rep_id bigint, manager name, since timestamptz, detail jsonb)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT 'transfer ' || t.id, t.from_rep, allocation._team_manager(t.from_rep),
           t.requested_at + make_interval(days => (r.params ->> 'days')::int),
           jsonb_build_object('transfer_id', t.id, 'managed_id', m.id, 'table', m.table_name, 'key', t.key, 'to_rep', t.to_rep,
                              'to_rep_code', (SELECT x.code FROM allocation.rep x WHERE x.id = t.to_rep),
                              'approval', t.approval, 'requested_by', t.requested_by, 'requested_at', t.requested_at,
                              'expires_at', t.expires_at, 'days', (r.params ->> 'days')::int)
      FROM allocation.transfer t JOIN allocation.managed_table m ON m.id = t.managed_id
     WHERE t.status = 'pending' AND t.expires_at > $2
       AND t.requested_at + make_interval(days => (r.params ->> 'days')::int) <= $2
       AND (r.team_id IS NULL OR allocation._rep_in_team(t.from_rep, r.team_id))
$$;
COMMENT ON FUNCTION allocation._alert_stale_transfer(allocation.alert_rule, timestamptz) IS 'internal: alert kind stale_transfer: transfers pending (not expired) for more than the rule''s days; the rep is the holder';

-- An ownership dispute open for more than N days
CREATE FUNCTION allocation._alert_stale_dispute(r allocation.alert_rule, at timestamptz)
RETURNS TABLE (subject text, rep_id bigint, manager name, since timestamptz, detail jsonb)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT 'dispute ' || d.id, d.holder_rep, allocation._team_manager(d.holder_rep),
           d.opened_at + make_interval(days => (r.params ->> 'days')::int),
           jsonb_build_object('dispute_id', d.id, 'managed_id', m.id, 'table', m.table_name, 'key', d.key, 'claimant_rep', d.claimant_rep,
                              'claimant_rep_code', (SELECT x.code FROM allocation.rep x WHERE x.id = d.claimant_rep),
                              'opened_at', d.opened_at, 'claim', d.claim, 'days', (r.params ->> 'days')::int)
      FROM allocation.ownership_dispute d JOIN allocation.managed_table m ON m.id = d.managed_id
     WHERE d.status = 'open'
       AND d.opened_at + make_interval(days => (r.params ->> 'days')::int) <= $2
       AND (r.team_id IS NULL OR allocation._rep_in_team(d.holder_rep, r.team_id))
$$;
COMMENT ON FUNCTION allocation._alert_stale_dispute(allocation.alert_rule, timestamptz) IS 'internal: alert kind stale_dispute: ownership disputes open for more than the rule''s days; the rep is the holder';

-- untouched_high_potential: a held customer whose potential (set_potential()) is in the rule's
-- tiers or at least min_value, and whose holder did not follow it up for `days` (the clock
-- starts with the holding when there is no follow-up); the rep is the holder
CREATE FUNCTION allocation._alert_untouched_high_potential(r allocation.alert_rule, at timestamptz)
RETURNS TABLE (subject text, rep_id bigint, manager name, since timestamptz, detail jsonb)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
    v_days integer := (r.params ->> 'days')::integer;
BEGIN
    FOR m IN SELECT x.* FROM allocation.managed_table x JOIN allocation.potential p ON p.managed_id = x.id
              WHERE x.active AND (NOT r.params ? 'table' OR x.tbl = pg_catalog.to_regclass(r.params ->> 'table'))
              ORDER BY x.id LOOP
        RETURN QUERY
        SELECT 'customer ' || m.id || '/' || a.key, a.rep_id, allocation._team_manager(a.rep_id),
               greatest(a.valid_from, f.last_at) + make_interval(days => v_days),
               jsonb_build_object('managed_id', m.id, 'table', m.table_name, 'key', a.key, 'potential', p.value,
                                  'potential_tier', p.tier, 'last_followup', f.last_at, 'held_since', a.valid_from,
                                  'days', v_days)
          FROM allocation._potentials(m.id) p
          JOIN allocation.assignment a ON a.managed_id = m.id AND a.key = p.key AND a.valid_to IS NULL AND a.rep_id IS NOT NULL
          LEFT JOIN LATERAL (SELECT max(x.at) AS last_at FROM allocation.followup x
                              WHERE x.managed_id = m.id AND x.key = a.key AND x.rep_id = a.rep_id AND x.at <= $2) f ON true
         WHERE (CASE WHEN r.params ? 'tiers' THEN p.tier IN (SELECT jsonb_array_elements_text(r.params -> 'tiers'))
                     ELSE p.value >= (r.params ->> 'min_value')::numeric END)
           AND a.valid_from <= $2
           AND greatest(a.valid_from, f.last_at) + make_interval(days => v_days) <= $2
           AND (r.team_id IS NULL OR allocation._rep_in_team(a.rep_id, r.team_id));
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation._alert_untouched_high_potential(allocation.alert_rule, timestamptz) IS 'internal: alert kind untouched_high_potential: held customers of a high potential (tiers or min_value) their holder did not follow up for the rule''s days';

-- low_conversion: a rep whose conversion over the last period_days is below below_pct, with at
-- least min_customers customers behind the rate; since: the first day it was seen (the day of `at`
-- while it lasts, so one episode keeps one alert)
CREATE FUNCTION allocation._alert_low_conversion(r allocation.alert_rule, at timestamptz)
RETURNS TABLE (subject text, rep_id bigint, manager name, since timestamptz, detail jsonb)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT 'rep ' || x.rep_id, x.rep_id, allocation._team_manager(x.rep_id),
           -- the episode's since: the open alert's, or that of the newest alert when a manager
           -- resolved it by hand (not raised again until the condition clears), else today
           coalesce((SELECT a.since FROM allocation.alert a
                      WHERE a.kind = 'low_conversion' AND a.subject = 'rep ' || x.rep_id AND a.resolved_at IS NULL),
                    (SELECT l.since FROM (SELECT a.since, a.resolution FROM allocation.alert a
                                           WHERE a.kind = 'low_conversion' AND a.subject = 'rep ' || x.rep_id
                                           ORDER BY a.id DESC LIMIT 1) l
                      WHERE l.resolution IS DISTINCT FROM 'cleared'),
                    date_trunc('day', $2)),
           jsonb_build_object('conversion_pct', x.conversion_pct, 'converted', x.converted, 'conversion_base', x.conversion_base,
                              'held_end', x.held_end, 'below_pct', (r.params ->> 'below_pct')::numeric,
                              'period_days', (r.params ->> 'period_days')::integer)
      FROM allocation._rep_measures(tstzrange($2 - make_interval(days => (r.params ->> 'period_days')::integer), $2), 30) x
      JOIN allocation.rep rp ON rp.id = x.rep_id AND rp.active
     WHERE x.conversion_base >= (r.params ->> 'min_customers')::integer
       AND x.conversion_pct < (r.params ->> 'below_pct')::numeric
       AND (r.team_id IS NULL OR allocation._rep_in_team(x.rep_id, r.team_id))
$$;
COMMENT ON FUNCTION allocation._alert_low_conversion(allocation.alert_rule, timestamptz) IS 'internal: alert kind low_conversion: reps whose conversion over the last period_days is below below_pct with at least min_customers customers behind it';

-------------------------------------------------------------------------------
-- The generic part: open, keep, resolve; NOTIFY
-------------------------------------------------------------------------------
-- The NOTIFY payload of an alert: its id, kind and times only.  LISTEN has no access
-- control (any role that can connect may listen), so the subject, the rep and the detail
-- (a customer's key, its potential) are read from allocation.my_alert, which filters by role.
CREATE FUNCTION allocation._alert_payload(a allocation.alert)
RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT pg_catalog.jsonb_build_object('id', a.id, 'kind', a.kind, 'since', a.since, 'opened_at', a.opened_at)::text
$$;
COMMENT ON FUNCTION allocation._alert_payload(allocation.alert) IS 'internal: the JSON payload NOTIFY allocation_alert sends for a new alert: id, kind, since, opened_at only (any role may LISTEN; the rest is read from my_alert)';

CREATE FUNCTION allocation._alert_event(a allocation.alert, p_kind text, p_reason text)
RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS
$$
    INSERT INTO allocation.event (actor, kind, managed_id, table_name, key, to_rep, reason, detail)
    SELECT allocation._actor(), p_kind, m.id, m.table_name, CASE WHEN m.id IS NOT NULL THEN a.detail ->> 'key' END,
           a.rep_id, p_reason,
           jsonb_build_object('alert_id', a.id, 'alert_kind', a.kind, 'subject', a.subject, 'rule_id', a.rule_id,
                              'manager', a.manager, 'since', a.since, 'at', coalesce(a.resolved_at, a.opened_at))
      FROM (SELECT 1) one
      LEFT JOIN allocation.managed_table m ON m.id = (a.detail ->> 'managed_id')::integer AND a.detail ? 'key'
$$;
COMMENT ON FUNCTION allocation._alert_event(allocation.alert, text, text) IS 'internal: the alert_opened / alert_resolved event of an alert (about a customer when its detail names managed_id and key)';

CREATE FUNCTION allocation._evaluate_alerts(at timestamptz)
RETURNS TABLE (opened integer, kept integer, resolved integer)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_actor text := allocation._actor();
    r allocation.alert_rule;
    c record;
    a allocation.alert;
    v_seen text[] := '{}';
    v_key text;
BEGIN
    PERFORM allocation._refuse_read_only('allocation.evaluate_alerts()');   -- 25006 on a standby, before anything else
    IF _evaluate_alerts.at IS NULL THEN
        RAISE EXCEPTION 'the time must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.evaluate_alerts() evaluates the alert rules as of this time.',
              HINT = 'SELECT * FROM allocation.evaluate_alerts();';
    END IF;
    IF NOT allocation._is_manager(v_actor)
       AND NOT coalesce((SELECT ro.rolsuper FROM pg_catalog.pg_roles ro WHERE ro.rolname = v_actor), false) THEN
        RAISE EXCEPTION 'role % may not evaluate alerts', v_actor USING ERRCODE = 'LA0A4',
              DETAIL = 'Alerts are evaluated by managers, admins and the scheduler (allocation.run_maintenance()).',
              HINT = 'Schedule allocation.run_maintenance() with pg_cron as a manager or superuser.';
    END IF;
    opened := 0; kept := 0; resolved := 0;
    -- one evaluation at a time: a second one waits and then finds the alerts open
    PERFORM allocation._require_read_committed('evaluate_alerts');
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('allocation.evaluate_alerts'));
    FOR r IN SELECT * FROM allocation.alert_rule x WHERE x.enabled ORDER BY x.id LOOP
      -- one rule at a time: a rule that fails (e.g. a potential expression that no longer
      -- compiles) is reported and keeps its open alerts; the other rules are evaluated
      BEGIN
        FOR c IN EXECUTE pg_catalog.format('SELECT * FROM allocation.%I($1, $2) ORDER BY 1', '_alert_' || r.kind)
                 USING r, _evaluate_alerts.at LOOP
            v_key := r.kind || E'\x1f' || c.subject;
            CONTINUE WHEN v_key = ANY (v_seen);     -- a second rule of the kind reports it too
            v_seen := v_seen || v_key;
            IF EXISTS (SELECT 1 FROM allocation.alert x
                        WHERE x.kind = r.kind AND x.subject = c.subject AND x.resolved_at IS NULL) THEN
                kept := kept + 1;
                CONTINUE;
            END IF;
            -- a manager resolved this episode of the condition by hand: not again until it clears
            CONTINUE WHEN EXISTS (SELECT 1 FROM allocation.alert x
                                   WHERE x.kind = r.kind AND x.subject = c.subject AND x.since = c.since
                                     AND x.resolution IS DISTINCT FROM 'cleared');
            INSERT INTO allocation.alert (rule_id, kind, subject, rep_id, manager, since, opened_at, detail)
            VALUES (r.id, r.kind, c.subject, c.rep_id, c.manager, c.since, _evaluate_alerts.at,
                    coalesce(jsonb_strip_nulls(c.detail), '{}'))
            RETURNING * INTO a;
            PERFORM allocation._alert_event(a, 'alert_opened',
                        pg_catalog.format('%s: %s (rule %s)', a.kind, a.subject, r.name));
            -- delivered when the transaction commits (never for one that rolls back)
            PERFORM pg_catalog.pg_notify('allocation_alert', allocation._alert_payload(a));
            opened := opened + 1;
        END LOOP;
      EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'allocation: alert rule "%" could not be evaluated: %', r.name, SQLERRM
              USING DETAIL = pg_catalog.format('SQLSTATE %s; its open alerts are kept.', SQLSTATE),
                    HINT = 'Fix the rule or what it reads (e.g. the table''s potential expression).';
        v_seen := v_seen || ARRAY(SELECT x.kind || E'\x1f' || x.subject FROM allocation.alert x
                                   WHERE x.resolved_at IS NULL AND x.kind = r.kind);
      END;
    END LOOP;
    FOR a IN UPDATE allocation.alert x
                SET resolved_at = _evaluate_alerts.at, resolved_by = v_actor, resolution = 'cleared'
              WHERE x.resolved_at IS NULL AND NOT ((x.kind || E'\x1f' || x.subject) = ANY (v_seen))
              RETURNING * LOOP
        PERFORM allocation._alert_event(a, 'alert_resolved', pg_catalog.format('%s: %s cleared', a.kind, a.subject));
        resolved := resolved + 1;
    END LOOP;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION allocation._evaluate_alerts(timestamptz) IS 'internal: implementation of allocation.evaluate_alerts(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.evaluate_alerts(at timestamptz DEFAULT now())
RETURNS TABLE (opened integer, kept integer, resolved integer)
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.evaluate_alerts(timestamptz) IS
'Evaluates the enabled alert rules as of a time (managers, admins, the scheduler): opens an alert for each new subject (event alert_opened, NOTIFY allocation_alert with a JSON payload, delivered at commit), keeps the open ones, resolves those whose condition cleared (event alert_resolved); idempotent at the same time; returns the counts';

CREATE FUNCTION allocation._resolve_alert(id bigint, reason text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_actor text := allocation._actor();
    a allocation.alert;
BEGIN
    IF _resolve_alert.id IS NULL OR _resolve_alert.reason IS NULL OR btrim(_resolve_alert.reason) = '' THEN
        RAISE EXCEPTION 'resolve_alert() needs an alert id and a reason' USING ERRCODE = '22004',
              DETAIL = 'One of them is NULL (or the reason is blank); the reason is kept with the alert and in the audit log.',
              HINT = 'SELECT allocation.resolve_alert(42, ''talked to the rep'');';
    END IF;
    SELECT * INTO a FROM allocation.alert x WHERE x.id = _resolve_alert.id FOR UPDATE;
    IF a.id IS NULL THEN
        RAISE EXCEPTION 'alert % does not exist', _resolve_alert.id USING ERRCODE = 'LA0A2',
              DETAIL = 'No row of allocation.alert has this id.', HINT = 'SELECT id, kind, subject FROM allocation.my_alert WHERE open;';
    END IF;
    IF NOT allocation._is_manager(v_actor) AND a.manager IS DISTINCT FROM v_actor THEN
        RAISE EXCEPTION 'role % may not resolve alert %', v_actor, a.id USING ERRCODE = 'LA0A4',
              DETAIL = 'Alerts are resolved by a manager (or the manager of the rep''s team).',
              HINT = 'Ask a sales manager; an alert also resolves by itself when its condition clears.';
    END IF;
    IF a.resolved_at IS NOT NULL THEN
        RAISE EXCEPTION 'alert % is already resolved', a.id USING ERRCODE = 'LA0A3',
              DETAIL = pg_catalog.format('It was resolved by %s (%s).', a.resolved_by, a.resolution),
              HINT = 'Only an open alert can be resolved.';
    END IF;
    UPDATE allocation.alert x SET resolved_at = pg_catalog.now(), resolved_by = v_actor, resolution = _resolve_alert.reason
     WHERE x.id = a.id RETURNING * INTO a;
    PERFORM allocation._alert_event(a, 'alert_resolved', pg_catalog.format('%s: %s resolved by %s: %s', a.kind, a.subject, v_actor, a.resolution));
END
$$;
COMMENT ON FUNCTION allocation._resolve_alert(bigint, text) IS 'internal: implementation of allocation.resolve_alert(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.resolve_alert(id bigint, reason text)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.resolve_alert(bigint, text) IS
'A manager resolves an open alert by hand, with a reason (event alert_resolved); it is not opened again while the same episode of its condition lasts (the same since)';

-- Each role reads its own alerts: a rep those about it, a team manager those it manages;
-- readers of the whole picture (managers, analysts, admins) all
CREATE VIEW allocation.my_alert WITH (security_barrier) AS
SELECT a.id, a.kind, a.subject, a.rep_id, r.code AS rep_code, a.manager, a.since, a.opened_at,
       a.resolved_at IS NULL AS open, a.resolved_at, a.resolved_by, a.resolution, a.rule_id, ru.name AS rule_name, a.detail
  FROM allocation.alert a
  LEFT JOIN allocation.rep r ON r.id = a.rep_id
  LEFT JOIN allocation.alert_rule ru ON ru.id = a.rule_id
 WHERE pg_catalog.has_table_privilege('allocation.alert', 'SELECT')
    OR a.rep_id = allocation.current_rep_id()
    OR a.manager = CURRENT_USER;
COMMENT ON VIEW allocation.my_alert IS 'Alerts, open and resolved: a rep sees those about itself, a team manager (team.manager_login) those of its teams, managers, analysts and admins all (a security barrier: a rep''s own functions in a query never see other rows)';

SELECT pg_catalog.pg_extension_config_dump('allocation.alert_rule', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.alert', '');

-------------------------------------------------------------------------------
-- Maintenance: everything time-driven, in one call a scheduler runs (issue 14)
-------------------------------------------------------------------------------
-- The order (each step sees what the earlier ones did):
--   1 recycle              customers due go back to the public pool (warnings first)
--   2 expire_grants        grants of ended pool seasons return their units; waitlists served
--   3 expire_transfers     pending transfers past their time expire
--   4 dissolve_virtual_teams  virtual teams whose period ended dissolve
--   5 auto_settle_disputes ownership disputes whose team presets agree are settled
--   6 evaluate_alerts      alerts open / resolve on the state the steps above left
--   7 evaluate_performance rewards (when installed)
--   8 refresh_scorecards   scorecards (when installed)
--   9 seal_audit           the audit chain seals the events committed before this run
-- Each step runs in its own subtransaction: one that fails is rolled back alone and
-- reported (outcome failed, its SQLSTATE and message); the others go on.  None of the
-- steps waits for a busy customer: recycle and expire_grants skip what another open
-- transaction holds and report it; the next run takes it.
CREATE FUNCTION allocation._run_maintenance(at timestamptz)
RETURNS TABLE (step text, outcome text, result text, code text, message text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_actor text := allocation._actor();
    v_at timestamptz := _run_maintenance.at;
    v_steps constant text[] := ARRAY['recycle', 'expire_grants', 'expire_transfers', 'dissolve_virtual_teams',
                                     'auto_settle_disputes', 'evaluate_alerts', 'evaluate_performance',
                                     'refresh_scorecards', 'seal_audit'];
    v_proc regprocedure;
    v_arg text;
    v_step text;
BEGIN
    PERFORM allocation._refuse_read_only('allocation.run_maintenance()');   -- 25006 on a standby, before anything else
    IF v_at IS NULL THEN
        RAISE EXCEPTION 'the time must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.run_maintenance() runs every time-driven step as of this time.',
              HINT = 'SELECT * FROM allocation.run_maintenance();';
    END IF;
    IF NOT allocation._is_manager(v_actor)
       AND NOT coalesce((SELECT ro.rolsuper FROM pg_catalog.pg_roles ro WHERE ro.rolname = v_actor), false) THEN
        RAISE EXCEPTION 'role % may not run maintenance', v_actor USING ERRCODE = 'LA0A5',
              DETAIL = 'allocation.run_maintenance() is run by managers, admins and the scheduler''s role.',
              HINT = 'Schedule it with pg_cron as a superuser or a role granted allocation.grant_role(..., ''manager'').';
    END IF;
    -- one run at a time: a second run while one is in progress does nothing and says so
    -- (a scheduler's next run comes soon; a run never waits behind a long one)
    PERFORM allocation._require_read_committed('run_maintenance');
    IF NOT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('allocation.run_maintenance')) THEN
        step := 'run_maintenance'; outcome := 'skipped'; result := NULL; code := NULL;
        message := 'another run_maintenance() is in progress';
        RETURN NEXT;
        RETURN;
    END IF;
    FOREACH v_step IN ARRAY v_steps LOOP
        step := v_step; outcome := 'ok'; result := NULL; code := NULL; message := NULL;
        BEGIN
            CASE v_step
            WHEN 'recycle' THEN
                SELECT pg_catalog.format('%s recycled, %s warned, %s skipped',
                                         count(*) FILTER (WHERE x.action = 'recycled'),
                                         count(*) FILTER (WHERE x.action = 'warned'),
                                         count(*) FILTER (WHERE x.action = 'skipped'))
                  INTO result FROM allocation.recycle(v_at) x;
            WHEN 'expire_grants' THEN
                result := allocation.expire_grants(v_at) || ' expired';
            WHEN 'expire_transfers' THEN
                result := allocation._expire_transfers(v_at) || ' expired';
            WHEN 'dissolve_virtual_teams' THEN
                result := allocation._dissolve_virtual_teams(v_at) || ' dissolved';
            WHEN 'auto_settle_disputes' THEN
                result := allocation._auto_settle_disputes(v_at) || ' settled';
            WHEN 'evaluate_alerts' THEN
                SELECT pg_catalog.format('%s opened, %s kept, %s resolved', x.opened, x.kept, x.resolved)
                  INTO result FROM allocation._evaluate_alerts(v_at) x;
            WHEN 'evaluate_performance', 'refresh_scorecards' THEN
                -- written by the measures module: run when installed.  evaluate_performance
                -- takes the time, or a period: the last complete calendar month before it
                v_proc := pg_catalog.to_regprocedure(pg_catalog.format('allocation.%I(timestamptz)', v_step));
                v_arg := '$1';
                IF v_proc IS NULL THEN
                    v_proc := pg_catalog.to_regprocedure(pg_catalog.format('allocation.%I(tstzrange)', v_step));
                    -- the last complete month before `at`, in the claim time zone (allocation.month_of)
                    v_arg := 'allocation.month_of(lower(allocation.month_of($1)) - interval ''1 second'')';
                END IF;
                IF v_proc IS NULL THEN
                    outcome := 'skipped'; message := pg_catalog.format('allocation.%s() is not installed', v_step);
                ELSE
                    EXECUTE pg_catalog.format('SELECT pg_catalog.left(pg_catalog.string_agg(x::text, ''; ''), 200) FROM allocation.%I(%s) x',
                                              v_step, v_arg)
                       INTO result USING v_at;
                END IF;
            WHEN 'seal_audit' THEN
                result := allocation.seal_audit() || ' events sealed';
            END CASE;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT;
            outcome := 'failed'; result := NULL;
        END;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation._run_maintenance(timestamptz) IS 'internal: implementation of allocation.run_maintenance(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.run_maintenance(at timestamptz DEFAULT now())
RETURNS TABLE (step text, outcome text, result text, code text, message text)
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.run_maintenance(timestamptz) IS
'Runs every time-driven step as of a time, in this order: recycle, expire_grants, expire_transfers, dissolve_virtual_teams, auto_settle_disputes, evaluate_alerts, evaluate_performance and refresh_scorecards (when installed), seal_audit; each step in its own subtransaction (one failing is reported, the others run); never waits for a busy customer; one run at a time (a second concurrent run is skipped); idempotent at the same time. For pg_cron: SELECT cron.schedule(''allocation-maintenance'', ''* * * * *'', ''SELECT * FROM allocation.run_maintenance()'')';

CREATE TRIGGER config_audit_insert AFTER INSERT ON allocation.alert_rule
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._config_audit();
CREATE TRIGGER config_audit_update AFTER UPDATE ON allocation.alert_rule
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._config_audit();
CREATE TRIGGER config_audit_delete AFTER DELETE ON allocation.alert_rule
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._config_audit();
CREATE TRIGGER config_audit_truncate AFTER TRUNCATE ON allocation.alert_rule
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._config_audit();
-- <<< issue 14
-- >>> issue 15
-------------------------------------------------------------------------------
-- Realignment and growth (issue 15)
-------------------------------------------------------------------------------

-------------------------------------------------------------------------------
-- Read-only servers (a hot standby) and read-only transactions (issue 15)
-------------------------------------------------------------------------------
-- Every read (views, explain, owner_at, territory_geojson, scorecard, the claim
-- screens) works on a hot standby: nothing on the read path writes.  A function
-- whose job is to write fails there with PostgreSQL's own read-only error
-- (25006) at its first write.  The scheduler's entry points and transfer_all()
-- refuse before they start: they catch per-item errors (run_maintenance per
-- step, transfer_all per customer -- its dry run too, which tries each transfer
-- and rolls it back --, evaluate_alerts per rule) or do nothing when
-- nothing is due, so without this check they would report success, or a list
-- of failed items with a misleading hint, on a server that cannot write at all.
CREATE FUNCTION allocation._refuse_read_only(what text)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    IF pg_catalog.current_setting('transaction_read_only')::boolean THEN
        IF pg_catalog.pg_is_in_recovery() THEN
            RAISE EXCEPTION 'cannot execute % in a read-only transaction', what USING ERRCODE = '25006',
                  DETAIL = 'This server is a hot standby (in recovery): it answers reads only.',
                  HINT = 'Run it on the primary server.';
        END IF;
        RAISE EXCEPTION 'cannot execute % in a read-only transaction', what USING ERRCODE = '25006',
              DETAIL = 'The transaction is read-only (BEGIN READ ONLY, SET TRANSACTION READ ONLY or default_transaction_read_only).',
              HINT = 'Run it in a read-write transaction.';
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._refuse_read_only(text) IS
    'internal: raises PostgreSQL''s read-only error (25006) for a writing function called in a read-only transaction or on a hot standby; called first by the scheduler''s functions and transfer_all() (its dry run too)';
CREATE OR REPLACE FUNCTION allocation.recycle(now timestamptz DEFAULT now())
RETURNS TABLE (table_name text, key text, rep_id bigint, action text, reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
    r record;
    v_owner bigint;
    v_found boolean;
    v_busy text;
    v_msg text;
    v_skipped integer := 0;
BEGIN
    PERFORM allocation._refuse_read_only('allocation.recycle()');   -- 25006 on a standby, before anything else
    IF recycle.now IS NULL OR (recycle.now > pg_catalog.now() + interval '1 minute'
                               AND NOT (SELECT ro.rolsuper FROM pg_catalog.pg_roles ro WHERE ro.rolname = allocation._actor())) THEN
        RAISE EXCEPTION 'recycle() cannot run as of a later time'
            USING ERRCODE = '22023',
                  DETAIL = format('It was called for %s; recycling as of a later time would take customers away before their policy says so.',
                                  coalesce(recycle.now::text, 'NULL')),
                  HINT = 'Call allocation.recycle() without an argument; only a superuser may simulate a later date.';
    END IF;
    -- the recycle events name the caller, not the function owner
    PERFORM allocation._set_actor(allocation._actor());
    -- one run at a time; a second caller waits and then finds nothing left to do
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('allocation.recycle'));
    FOR m IN SELECT * FROM allocation.managed_table mt WHERE mt.active ORDER BY mt.id LOOP
        -- warnings: once per customer and due time
        FOR r IN SELECT s.* FROM allocation._recycle_status(m.id, recycle.now) s
                  WHERE s.exempt IS NULL AND s.warn_at <= recycle.now AND s.due_at > recycle.now
                    AND NOT EXISTS (SELECT 1 FROM allocation.event e
                                     WHERE e.managed_id = m.id AND e.key = s.key AND e.kind = 'recycle_warning'
                                       AND e.to_rep = s.rep_id AND (e.detail->>'due_at')::timestamptz = s.due_at)
                  ORDER BY s.key LOOP
            INSERT INTO allocation.event (actor, kind, managed_id, table_name, key, to_rep, reason, detail)
            VALUES (allocation._actor(), 'recycle_warning', m.id, m.table_name, r.key, r.rep_id,
                    format('goes back to the public pool at %s: %s', r.due_at, r.why),
                    jsonb_build_object('due_at', r.due_at, 'policy_id', r.policy_id,
                                       'last_followup', r.last_followup, 'last_progress', r.last_progress));
            table_name := m.table_name; key := r.key; rep_id := r.rep_id; action := 'warned'; reason := r.why;
            RETURN NEXT;
        END LOOP;
        -- recycling: each due customer under its row lock, checked again after the lock.
        -- Nothing here waits for another transaction: a customer whose row, or whose rep's
        -- holdings counter, another open transaction holds (a claim in progress) is skipped,
        -- reported (action 'skipped') and left for the next run; the others are recycled.
        FOR r IN SELECT s.* FROM allocation._recycle_status(m.id, recycle.now) s
                  WHERE s.exempt IS NULL AND s.due_at <= recycle.now ORDER BY s.key LOOP
            v_busy := NULL;
            SELECT l.row_found, l.row_owner INTO v_found, v_owner FROM allocation._lock_customer_row(m, r.key, true) l;
            IF v_found IS NULL THEN
                IF EXISTS (SELECT 1 FROM allocation._table_rows(m.tbl, ARRAY[m.key_column::text], r.key, '')) THEN
                    v_busy := 'customer is busy: another open transaction is changing it';
                ELSE
                    CONTINUE;   -- deleted meanwhile
                END IF;
            ELSIF v_owner IS DISTINCT FROM r.rep_id OR NOT EXISTS (
                   SELECT 1 FROM allocation._recycle_status(m.id, recycle.now, r.key) s2
                    WHERE s2.exempt IS NULL AND s2.due_at <= recycle.now AND s2.rep_id = r.rep_id) THEN
                CONTINUE;       -- claimed, released, followed up or locked meanwhile
            ELSIF NOT allocation._try_lock_counter(r.rep_id) THEN
                v_busy := format('rep %s is busy: another open transaction is taking or releasing its customers',
                                 (SELECT x.code FROM allocation.rep x WHERE x.id = r.rep_id));
            ELSE
                BEGIN
                    PERFORM allocation._owner_update(m.tbl, r.key, NULL, 'recycle', 'recycled to the public pool: ' || r.why);
                EXCEPTION WHEN lock_not_available THEN
                    -- another counter this recycle needs (e.g. of a pending suggestion's rep) is busy
                    GET STACKED DIAGNOSTICS v_msg = MESSAGE_TEXT;
                    v_busy := v_msg;
                END;
            END IF;
            table_name := m.table_name; key := r.key; rep_id := r.rep_id;
            IF v_busy IS NULL THEN
                action := 'recycled'; reason := r.why;
            ELSE
                action := 'skipped'; reason := v_busy || '; left for the next run (due: ' || r.why || ')';
                v_skipped := v_skipped + 1;
            END IF;
            RETURN NEXT;
        END LOOP;
    END LOOP;
    IF v_skipped > 0 THEN
        RAISE NOTICE '% due customer(s) skipped: busy in another open transaction', v_skipped
            USING DETAIL = 'They are returned with action ''skipped'' and the reason; the others were recycled.',
                  HINT = 'The next run recycles them if they are still due.';
    END IF;
    PERFORM allocation._set_actor(NULL);
END
$$;
COMMENT ON FUNCTION allocation.recycle(timestamptz) IS
'Returns neglected customers to the public pool per allocation.recycle_policy and records warning events K days ahead; idempotent, one run at a time (schedule it with pg_cron); never waits for another transaction: a due customer busy in one (its row or its rep''s counter) is returned with action skipped and left for the next run';
CREATE OR REPLACE FUNCTION allocation.expire_grants(now timestamptz DEFAULT now())
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    r allocation.resource_request;
    n integer := 0;
    v_pool bigint;
    v_id bigint;
    v_skipped text[] := '{}';
BEGIN
    PERFORM allocation._refuse_read_only('allocation.expire_grants()');   -- 25006 on a standby, before anything else
    IF expire_grants.now IS NULL OR (expire_grants.now > pg_catalog.now() + interval '1 minute'
                                     AND NOT (SELECT ro.rolsuper FROM pg_catalog.pg_roles ro WHERE ro.rolname = allocation._actor())) THEN
        RAISE EXCEPTION 'expire_grants() cannot run as of a later time'
            USING ERRCODE = '22023', DETAIL = format('It was called for %s.', coalesce(expire_grants.now::text, 'NULL')),
                  HINT = 'Call allocation.expire_grants() without an argument; only a superuser may simulate a later date.';
    END IF;
    -- Nothing here waits for another transaction: a grant whose request row or pool row
    -- another open transaction holds (a release or a grant in progress) is skipped,
    -- reported in a NOTICE and left for the next run; the others expire.
    FOR v_id IN SELECT q.id FROM allocation.resource_request q JOIN allocation.resource_pool p ON p.id = q.pool_id
                 WHERE q.status = 'granted' AND p.valid_to IS NOT NULL AND p.valid_to <= expire_grants.now
                 ORDER BY q.pool_id, q.id LOOP
        SELECT q.* INTO r FROM allocation.resource_request q WHERE q.id = v_id FOR UPDATE SKIP LOCKED;
        IF r.id IS NULL THEN
            IF EXISTS (SELECT 1 FROM allocation.resource_request q WHERE q.id = v_id AND q.status = 'granted') THEN
                v_skipped := v_skipped || format('request %s (request busy)', v_id);
            END IF;
            CONTINUE;
        END IF;
        IF r.status <> 'granted' THEN
            CONTINUE;   -- released meanwhile
        END IF;
        PERFORM 1 FROM allocation.resource_pool x WHERE x.id = r.pool_id FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            v_skipped := v_skipped || format('request %s (pool %s busy)', r.id,
                                             (SELECT x.code FROM allocation.resource_pool x WHERE x.id = r.pool_id));
            CONTINUE;
        END IF;
        PERFORM allocation._return_units(r);
        UPDATE allocation.resource_request q SET status = 'expired', decided_at = expire_grants.now, reason = 'the pool''s season ended'
         WHERE q.id = r.id;
        PERFORM allocation._resource_event('resource_expired', r, 'the pool''s season ended');
        n := n + 1;
    END LOOP;
    FOR v_pool IN SELECT DISTINCT q.pool_id FROM allocation.resource_request q WHERE q.status = 'waitlisted' ORDER BY 1 LOOP
        -- a busy pool's waitlist is served by the next run (or by its own release)
        PERFORM 1 FROM allocation.resource_pool x WHERE x.id = v_pool FOR UPDATE SKIP LOCKED;
        IF FOUND THEN
            PERFORM allocation._serve_waitlist(v_pool, expire_grants.now);
        END IF;
    END LOOP;
    IF cardinality(v_skipped) > 0 THEN
        RAISE NOTICE '% grant(s) not expired: busy in another open transaction', cardinality(v_skipped)
            USING DETAIL = 'Skipped: ' || array_to_string(v_skipped, ', ') || '. The other grants were expired.',
                  HINT = 'Run allocation.expire_grants() again after that transaction ends (it is idempotent).';
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION allocation.expire_grants(timestamptz) IS 'Returns the units of grants whose pool season ended and the number expired; idempotent (an expired grant is never expired twice); never waits: grants busy in another open transaction are skipped, named in a NOTICE, and left for the next run';
CREATE OR REPLACE FUNCTION allocation.seal_audit()
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_batch constant integer := 50000;
    v_snap pg_snapshot;
    v_horizon xid8;
    v_end xid8;
    v_prev bytea;
    v_floor bigint;
    v_new_floor bigint;
    v_top bigint;
    v_ids bigint[];
    v_digests bytea[];
    v_n integer;
    v_i integer := 1;
    s allocation.audit_seal;
BEGIN
    PERFORM allocation._refuse_read_only('allocation.seal_audit()');   -- 25006 on a standby, before anything else
    -- one sealer at a time (readers and event writers are not blocked); the
    -- UNIQUE prev_hash is the backstop when an older snapshot (REPEATABLE READ)
    -- reads a stale head
    LOCK TABLE allocation.audit_seal IN SHARE ROW EXCLUSIVE MODE;
    v_snap := pg_catalog.pg_current_snapshot();
    v_horizon := pg_catalog.pg_snapshot_xmin(v_snap);
    SELECT a.hash, a.complete_below INTO v_prev, v_floor FROM allocation.audit_seal a ORDER BY a.id DESC LIMIT 1;
    v_prev := coalesce(v_prev, allocation._genesis());
    v_floor := coalesce(v_floor, 0);
    SELECT coalesce(max(a.last_id), 0) INTO v_top FROM allocation.audit_seal a;

    SELECT array_agg(e.id ORDER BY e.id), array_agg(allocation._event_digest(e) ORDER BY e.id)
      INTO v_ids, v_digests
      FROM allocation.event e
     WHERE e.id > v_floor
       AND allocation._xid8(e.xmin, allocation._xid_ref()) < v_horizon
       AND NOT EXISTS (SELECT 1 FROM allocation.audit_seal a WHERE a.last_id >= e.id AND a.events @> e.id)
       AND (e.id > v_top OR allocation._late_ok(e.id, e.xmin));
    v_n := coalesce(array_length(v_ids, 1), 0);
    IF v_n = 0 THEN
        RETURN 0;
    END IF;

    -- every transaction running at an earlier seal has ended before this one's
    -- horizon: no legitimate late event can appear below its last id any more
    SELECT greatest(v_floor, max(a.last_id)) INTO v_new_floor FROM allocation.audit_seal a WHERE a.xid_end <= v_horizon;
    v_new_floor := coalesce(v_new_floor, v_floor);
    -- the first xid assigned after this seal was computed: this transaction's
    -- own, taken now (a snapshot's xmax is not enough: it is the latest
    -- completed xid + 1, and a running transaction may hold a higher one).
    -- In a transaction that wrote before calling seal_audit() the own xid is
    -- older; a late event of a transaction that started in between would then
    -- be reported, so the scheduler runs seal_audit() in a transaction of its own.
    v_end := (greatest(pg_catalog.pg_current_xact_id()::text::bigint + 1,
                       pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text::bigint))::text::xid8;

    WHILE v_i <= v_n LOOP
        s := NULL;
        s.id := nextval(pg_catalog.pg_get_serial_sequence('allocation.audit_seal', 'id')::regclass);
        s.sealed_at := pg_catalog.clock_timestamp();
        s.sealed_by := allocation._actor();
        SELECT pg_catalog.range_agg(pg_catalog.int8range(u.id, u.id, '[]')), count(*), max(u.id)
          INTO s.events, s.event_count, s.last_id
          FROM unnest(v_ids[v_i : v_i + v_batch - 1]) u(id);
        s.digests := v_digests[v_i : v_i + v_batch - 1];
        s.horizon := v_horizon;
        s.xid_end := v_end;
        s.complete_below := v_new_floor;
        s.prev_hash := v_prev;
        s.hash := allocation._seal_hash(s);
        BEGIN
            INSERT INTO allocation.audit_seal SELECT (s).*;
        EXCEPTION WHEN unique_violation THEN
            -- only with a snapshot older than the lock (REPEATABLE READ): the head read was stale
            RAISE EXCEPTION 'another seal_audit() extended the audit chain first'
                USING ERRCODE = '40001',
                      DETAIL = 'This transaction''s snapshot predates that seal, so it cannot continue the chain; nothing was sealed.',
                      HINT = 'Run allocation.seal_audit() again, in a READ COMMITTED transaction of its own.';
        END;
        v_prev := s.hash;
        v_i := v_i + v_batch;
    END LOOP;
    RETURN v_n;
END
$$;
COMMENT ON FUNCTION allocation.seal_audit() IS
'Seals every event not sealed yet (of transactions that have ended) into the SHA-256 hash chain allocation.audit_seal; returns the number of events sealed (0 when there is nothing new). Idempotent and cheap; run it from the scheduler';
CREATE OR REPLACE FUNCTION allocation._require_owner(tbl regclass, what text)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'table must not be NULL' USING ERRCODE = '22004',
              DETAIL = format('allocation.%s() was called with a NULL table.', replace(what, ' ', '_')),
              HINT = 'Pass the customer table, e.g. ''crm.customer''.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = tbl) THEN
        RAISE EXCEPTION 'relation with OID % does not exist', tbl::oid USING ERRCODE = '42P01',
              DETAIL = format('allocation.%s() was called with a regclass that names no table.', replace(what, ' ', '_')),
              HINT = 'Pass the customer table by name, e.g. ''crm.customer''.';
    END IF;
    IF NOT coalesce(allocation._caller_owns(tbl), false) THEN
        RAISE EXCEPTION 'must be owner of table % to % it', tbl, what
            USING ERRCODE = '42501',
                  DETAIL = format('Role %s does not own %s (nor is it a member of its owner).', allocation._actor(), tbl),
                  HINT = 'Run it as the table''s owner, like ALTER TABLE.';
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._require_owner(regclass, text) IS 'internal: refuses a regclass that names no table (42P01) and a caller that does not own the table (42501)';
CREATE OR REPLACE FUNCTION allocation._lock_customer(p_tbl regclass, p_key text, p_reason text, p_lock boolean)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table;
    p_actor text := allocation._actor();
BEGIN
    m := allocation._managed(p_tbl);
    IF NOT p_lock THEN
        DELETE FROM allocation.customer_lock l WHERE l.managed_id = m.id AND l.key = p_key;
        IF NOT FOUND THEN
            RETURN false;
        END IF;
    ELSE
        IF p_reason IS NULL OR btrim(p_reason) = '' THEN
            RAISE EXCEPTION 'a lock needs a reason' USING ERRCODE = '22004',
                  DETAIL = 'The reason is shown to reps whose claims the lock refuses.',
                  HINT = 'Say why, e.g. ''head-office key account''.';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM allocation._current(m.id, p_key)) THEN
            RAISE EXCEPTION 'customer % not found in %', p_key, p_tbl USING ERRCODE = 'LA062',
                  DETAIL = 'The customer has no open ownership record.', HINT = 'Check the key.';
        END IF;
        -- under the customer's row lock, like every other change that keeps a customer where it
        -- is: a realignment step holding the row (it re-checks the stay reasons once, before
        -- its one UPDATE of the batch) either sees the lock or moves the customer first
        PERFORM allocation._lock_customer_row(m, p_key, false);
        INSERT INTO allocation.customer_lock AS l (managed_id, key, reason, locked_by) VALUES (m.id, p_key, p_reason, p_actor)
        ON CONFLICT (managed_id, key) DO UPDATE SET reason = EXCLUDED.reason, locked_at = now(), locked_by = EXCLUDED.locked_by;
    END IF;
    INSERT INTO allocation.event (actor, kind, managed_id, table_name, key, reason)
    VALUES (p_actor, CASE WHEN p_lock THEN 'lock' ELSE 'unlock' END, m.id, m.table_name, p_key, p_reason);
    RETURN true;
END
$$;
COMMENT ON FUNCTION allocation._lock_customer(regclass, text, text, boolean) IS 'internal: sets or removes a customer lock with its event';
-- territory imports: on_invalid, any CRS, a text form for large files (the 1.0 signature goes)
DROP FUNCTION allocation.import_territories(jsonb, text, text, text);
CREATE FUNCTION allocation.geojson_features(geojson text)
RETURNS TABLE (feature integer, value jsonb)
AS 'MODULE_PATHNAME', 'allocation_geojson_features'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION allocation.geojson_features(text) IS
'Splits a GeoJSON text without parsing it whole: row 0 = the document without its features (for a FeatureCollection "features" holds their number), rows 1..n = each element of "features" as jsonb, in file order; not JSON: LA001';

-- The import itself. fc is text so that a file of any size (pg_read_file()
-- returns text) is split feature by feature; the jsonb overload below calls it.
-- Each feature is checked in its own block: with on_invalid => 'skip' a feature
-- that cannot be stored is left out and reported, with 'error' (the default) its
-- error aborts the whole import (all or nothing). The block writes nothing (the
-- staging INSERT follows it), so a skipped feature costs no transaction id.
CREATE FUNCTION allocation.import_territories(
    fc text,
    code_property text DEFAULT 'code',
    name_property text DEFAULT 'name',
    parent_property text DEFAULT NULL,
    on_invalid text DEFAULT 'error')
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET jit = off   -- a few thousand rows at most per statement: JIT compilation would cost more than it saves
AS $$
DECLARE
    f          jsonb;
    n          integer := 0;
    i          integer;
    v_total    integer := 0;
    v_code     text;
    v_name     text;
    v_parent   text;
    v_geom     geometry;
    v_fixed    geometry;
    v_crsj     jsonb;
    v_crsname  text;
    v_srid     integer;
    v_fc_srid  integer := 4326;      -- the collection's CRS (absent = WGS 84, RFC 7946)
    v_fc_crs   text;
    v_gtype    text;
    v_reason   text;
    v_state    text;
    v_msg      text;
    v_ok       boolean;
    v_report   jsonb := '[]';
    v_skipped  integer := 0;
    v_moved    integer := 0;
BEGIN
    IF on_invalid IS NULL OR on_invalid NOT IN ('error', 'skip') THEN
        RAISE EXCEPTION 'on_invalid must be ''error'' or ''skip'', not %', coalesce('''' || on_invalid || '''', 'NULL')
            USING ERRCODE = 'LA0I0',
                  DETAIL = 'With ''error'' the first feature that cannot be stored refuses the whole file; with ''skip'' such features are left out and reported.',
                  HINT = 'Call import_territories(..., on_invalid => ''skip'') and read allocation.import_report() afterwards.';
    END IF;
    IF fc IS NULL THEN
        RAISE EXCEPTION 'input is not a GeoJSON FeatureCollection'
            USING ERRCODE = 'LA001',
                  DETAIL = 'Expected an object with "type": "FeatureCollection" and a "features" array, got NULL.',
                  HINT = 'Export the layer from your GIS as GeoJSON (QGIS: Export > Save Features As > GeoJSON).';
    END IF;
    IF code_property IS NULL OR name_property IS NULL THEN
        RAISE EXCEPTION 'code_property and name_property must not be NULL'
            USING ERRCODE = '22004',
                  DETAIL = 'They name the feature properties holding the territory code and name.',
                  HINT = 'Leave them out to use the defaults ''code'' and ''name''.';
    END IF;

    CREATE TEMP TABLE IF NOT EXISTS pg_temp.allocation_import (
        ord int, code text, name text, parent_code text, geom geometry, props jsonb) ON COMMIT DROP;
    TRUNCATE pg_temp.allocation_import;
    -- the features, split once into a temporary table (on disk beyond temp_buffers), so
    -- that the loop below holds one feature at a time and the input text only once: a
    -- FOR loop over geojson_features(fc) itself would keep a copy of fc in its cursor's
    -- parameters (and a custom plan another one as a constant; hence force_generic_plan)
    CREATE TEMP TABLE IF NOT EXISTS pg_temp.allocation_import_src (feature int, value jsonb) ON COMMIT DROP;
    ALTER TABLE pg_temp.allocation_import_src ALTER COLUMN value SET STORAGE EXTERNAL;  -- no compression
    TRUNCATE pg_temp.allocation_import_src;
    INSERT INTO pg_temp.allocation_import_src SELECT g.feature, g.value FROM allocation.geojson_features(fc) g;

    FOR i, f IN SELECT s.feature, s.value FROM pg_temp.allocation_import_src s ORDER BY s.feature LOOP
        v_code := NULL;
        BEGIN
            IF i = 0 THEN
                -- the collection: its type, its features, its CRS (errors here end the import)
                IF jsonb_typeof(f) <> 'object' OR f->>'type' IS DISTINCT FROM 'FeatureCollection'
                   OR jsonb_typeof(f->'features') IS DISTINCT FROM 'number' THEN
                    RAISE EXCEPTION 'input is not a GeoJSON FeatureCollection'
                        USING ERRCODE = 'LA001',
                              DETAIL = format('Expected an object with "type": "FeatureCollection" and a "features" array, got %s.',
                                              left(f::text, 80)),
                              HINT = 'Export the layer from your GIS as GeoJSON (QGIS: Export > Save Features As > GeoJSON).';
                END IF;
                v_total := (f->>'features')::integer;
                v_crsj := f->'crs';
            ELSE
                IF jsonb_typeof(f) <> 'object' OR f->>'type' IS DISTINCT FROM 'Feature' THEN
                    RAISE EXCEPTION 'feature % is not a GeoJSON Feature', i
                        USING ERRCODE = 'LA001',
                              DETAIL = format('Feature %s is %s.', i, left(f::text, 80)),
                              HINT = 'Every element of "features" must be an object with "type": "Feature".';
                END IF;
                v_code := f #>> ARRAY['properties', code_property];
                IF v_code IS NULL OR btrim(v_code) = '' THEN
                    RAISE EXCEPTION 'feature % has no territory code', i
                        USING ERRCODE = 'LA002',
                              DETAIL = format('Property "%s" is missing or empty in feature %s.', code_property, i),
                              HINT = 'Give every feature a unique code, or name the property holding it with code_property.';
                END IF;
                IF f->'geometry' IS NULL OR jsonb_typeof(f->'geometry') = 'null' THEN
                    RAISE EXCEPTION 'feature % (%) has no geometry', i, v_code
                        USING ERRCODE = 'LA003',
                              DETAIL = format('Feature %s with code %s has a null or missing geometry.', i, v_code),
                              HINT = 'Draw the territory polygon, or remove the feature from the file.';
                END IF;
                v_gtype := f #>> '{geometry,type}';
                IF v_gtype IS NULL OR v_gtype NOT IN ('Polygon', 'MultiPolygon') THEN
                    RAISE EXCEPTION 'feature % (%) has a % geometry, not a polygon', i, v_code, coalesce(v_gtype, 'untyped')
                        USING ERRCODE = 'LA004',
                              DETAIL = 'Territories must be Polygon or MultiPolygon geometries.',
                              HINT = 'Convert lines or points to polygons in your GIS before exporting.';
                END IF;
                v_crsj := f #> '{geometry,crs}';    -- a geometry may name its own CRS (GeoJSON 2008)
            END IF;

            -- a named CRS: any EPSG code PostGIS knows (spatial_ref_sys), or CRS84
            v_srid := NULL;
            IF v_crsj IS NOT NULL THEN
                v_crsname := v_crsj #>> '{properties,name}';
                IF v_crsname ~* '(^|:)CRS:?84$' THEN
                    v_srid := 4326;
                ELSE
                    SELECT s.srid INTO v_srid FROM spatial_ref_sys s
                     WHERE s.auth_name = 'EPSG'
                       AND s.auth_srid = substring(v_crsname FROM '(?i)EPSG[^0-9]*(?:[0-9.]+[^0-9]+)?([0-9]{1,9})$')::integer
                     ORDER BY s.srid LIMIT 1;
                END IF;
                IF v_srid IS NULL THEN
                    RAISE EXCEPTION '%coordinate reference system % is unknown',
                                    CASE WHEN i > 0 THEN format('feature %s (%s): ', i, v_code) ELSE '' END,
                                    coalesce('"' || v_crsname || '"', v_crsj::text)
                        USING ERRCODE = 'LA0I1',
                              DETAIL = 'A GeoJSON "crs" must be named by an EPSG code that PostGIS knows (table spatial_ref_sys), e.g. "urn:ogc:def:crs:EPSG::4490" or "EPSG:3857", or be CRS84.',
                              HINT = 'Export the layer with a known EPSG code (QGIS: Export > Save Features As > CRS), or reproject it to EPSG:4326.';
                END IF;
            END IF;
            IF i = 0 THEN
                v_fc_srid := coalesce(v_srid, 4326);
                v_fc_crs := v_crsname;
                IF v_fc_srid <> 4326 THEN
                    RAISE NOTICE 'the collection is in EPSG:% ("%"): its features are transformed to EPSG:4326',
                                 v_fc_srid, v_fc_crs;
                END IF;
                CONTINUE;
            END IF;
            v_srid := coalesce(v_srid, v_fc_srid);

            -- PostGIS reads a non-number ordinate as 0: refuse it here
            IF jsonb_path_exists(f->'geometry'->'coordinates',
                                 'strict $.** ? (@.type() != "array" && @.type() != "number")') THEN
                RAISE EXCEPTION 'feature % (%) has a malformed geometry', i, v_code
                    USING ERRCODE = 'LA001',
                          DETAIL = 'A coordinate is not a number.',
                          HINT = 'Check the coordinates arrays of the feature.';
            END IF;
            BEGIN
                v_geom := ST_SetSRID(ST_Force2D(ST_GeomFromGeoJSON((f->'geometry') - 'crs')), v_srid);
            EXCEPTION WHEN others THEN
                RAISE EXCEPTION 'feature % (%) has a malformed geometry', i, v_code
                    USING ERRCODE = 'LA001', DETAIL = SQLERRM,
                          HINT = 'Check the coordinates arrays of the feature.';
            END;
            IF v_srid <> 4326 AND NOT ST_IsEmpty(v_geom) THEN
                BEGIN
                    v_geom := ST_Transform(v_geom, 4326);
                EXCEPTION WHEN others THEN
                    RAISE EXCEPTION 'feature % (%) cannot be transformed from EPSG:% to EPSG:4326', i, v_code, v_srid
                        USING ERRCODE = 'LA005', DETAIL = SQLERRM,
                              HINT = 'Check that the coordinates are in the CRS the file names.';
                END;
                IF v_srid <> v_fc_srid THEN
                    v_report := v_report || jsonb_build_object('feature', i, 'code', v_code, 'action', 'transformed',
                                    'reason', format('from EPSG:%s (its geometry''s own CRS) to EPSG:4326', v_srid));
                END IF;
                v_moved := v_moved + 1;
            END IF;
            v_geom := ST_SetSRID(v_geom, 4326);
            IF ST_XMin(v_geom) < -180 OR ST_XMax(v_geom) > 180 OR ST_YMin(v_geom) < -90 OR ST_YMax(v_geom) > 90 THEN
                RAISE EXCEPTION 'feature % (%) has coordinates outside longitude/latitude range', i, v_code
                    USING ERRCODE = 'LA005',
                          DETAIL = format('Its extent is %s; EPSG:4326 longitudes lie in [-180, 180] and latitudes in [-90, 90].',
                                          ST_AsText(ST_Envelope(v_geom))),
                          HINT = 'The layer is probably in a projected CRS: name it in the file''s "crs" member (e.g. "EPSG:3857") or reproject it to EPSG:4326.';
            END IF;
            IF ST_IsEmpty(v_geom) THEN
                RAISE EXCEPTION 'feature % (%) has an empty geometry', i, v_code
                    USING ERRCODE = 'LA003',
                          DETAIL = format('Feature %s with code %s has an empty polygon.', i, v_code),
                          HINT = 'Draw the territory polygon, or remove the feature from the file (or import with on_invalid => ''skip'').';
            END IF;
            BEGIN
                v_ok := ST_IsValid(v_geom);
                IF NOT v_ok THEN
                    v_reason := ST_IsValidReason(v_geom);
                    v_fixed := ST_CollectionExtract(ST_MakeValid(v_geom), 3);
                END IF;
            EXCEPTION WHEN others THEN   -- GEOS gives up on some broken rings
                v_ok := false;
                v_reason := SQLERRM;
                v_fixed := NULL;
            END;
            IF NOT v_ok THEN
                IF v_fixed IS NULL OR ST_IsEmpty(v_fixed) OR NOT ST_IsValid(v_fixed) THEN
                    RAISE EXCEPTION 'feature % (%) has an invalid polygon that cannot be repaired', i, v_code
                        USING ERRCODE = 'LA008',
                              DETAIL = format('PostGIS reports: %s. ST_MakeValid does not yield a polygon.', v_reason),
                              HINT = 'Fix the geometry in your GIS (QGIS: Vector > Geometry Tools > Check Validity).';
                END IF;
                RAISE NOTICE 'feature % (%) had an invalid polygon and was repaired: %', i, v_code, v_reason;
                v_report := v_report || jsonb_build_object('feature', i, 'code', v_code, 'action', 'repaired', 'reason', v_reason);
                v_geom := v_fixed;
            END IF;
        EXCEPTION WHEN others THEN
            IF on_invalid = 'error' OR i = 0 THEN
                RAISE;
            END IF;
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
            IF v_state NOT LIKE 'LA%' THEN
                RAISE;   -- not a property of the feature (out of memory, ...): never skipped
            END IF;
            RAISE NOTICE 'feature % skipped (%): %', i, v_state, v_msg;
            v_report := v_report || jsonb_build_object('feature', i, 'code', v_code, 'action', 'skipped',
                                                       'sqlstate', v_state, 'reason', v_msg);
            v_skipped := v_skipped + 1;
            CONTINUE;
        END;
        v_name := coalesce(f #>> ARRAY['properties', name_property], v_code);
        v_parent := CASE WHEN parent_property IS NULL THEN NULL
                         ELSE nullif(btrim(f #>> ARRAY['properties', parent_property]), '') END;
        INSERT INTO pg_temp.allocation_import
        VALUES (i, v_code, v_name, v_parent, ST_Multi(v_geom), coalesce(f->'properties', '{}'));
    END LOOP;

    -- the same code twice: with skip, every feature carrying it is left out (which one is right is unknown)
    FOR v_code, v_msg IN
        SELECT code, string_agg(ord::text, ', ' ORDER BY ord) FROM pg_temp.allocation_import
         GROUP BY code HAVING count(*) > 1 ORDER BY min(ord) LOOP
        IF on_invalid = 'error' THEN
            RAISE EXCEPTION 'territory code % appears more than once in the file', v_code
                USING ERRCODE = 'LA007',
                      DETAIL = format('Features %s share the code %s.', v_msg, v_code),
                      HINT = 'Territory codes must be unique; fix the duplicates in the source layer.';
        END IF;
        SELECT v_report || jsonb_agg(jsonb_build_object('feature', ord, 'code', code, 'action', 'skipped', 'sqlstate', 'LA007',
                                     'reason', format('territory code %s appears more than once in the file (features %s)', code, v_msg))
                                     ORDER BY ord)
          INTO v_report FROM pg_temp.allocation_import WHERE code = v_code;
        DELETE FROM pg_temp.allocation_import WHERE code = v_code;
        GET DIAGNOSTICS n = ROW_COUNT;
        v_skipped := v_skipped + n;
        RAISE NOTICE 'features % skipped (LA007): territory code % appears more than once', v_msg, v_code;
    END LOOP;

    -- parents: in the file or already stored; with skip, a feature whose parent is
    -- unknown (or was skipped) is left out, and so on down the tree
    LOOP
        SELECT i2.ord, i2.parent_code, i2.code INTO i, v_parent, v_code
          FROM pg_temp.allocation_import i2
         WHERE i2.parent_code IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM pg_temp.allocation_import p WHERE p.code = i2.parent_code)
           AND NOT EXISTS (SELECT 1 FROM allocation.territory t WHERE t.code = i2.parent_code)
         ORDER BY i2.ord LIMIT 1;
        EXIT WHEN NOT FOUND;
        IF on_invalid = 'error' THEN
            RAISE EXCEPTION 'territory % names unknown parent %', v_code, v_parent
                USING ERRCODE = 'LA006',
                      DETAIL = format('No territory with code %s exists in the database or in the file.', v_parent),
                      HINT = 'Import the parent territories first, or include them in the same file.';
        END IF;
        v_msg := format('territory %s names unknown parent %s', v_code, v_parent);
        RAISE NOTICE 'feature % skipped (LA006): %', i, v_msg;
        v_report := v_report || jsonb_build_object('feature', i, 'code', v_code, 'action', 'skipped',
                                                   'sqlstate', 'LA006', 'reason', v_msg);
        v_skipped := v_skipped + 1;
        DELETE FROM pg_temp.allocation_import WHERE ord = i;
    END LOOP;

    -- upsert geometry and names; parents second, so any order in the file works
    INSERT INTO allocation.territory AS t (code, name, geom, properties)
    SELECT code, name, geom, props FROM pg_temp.allocation_import ORDER BY ord
    ON CONFLICT (code) DO UPDATE
       SET name = EXCLUDED.name, geom = EXCLUDED.geom, properties = EXCLUDED.properties;
    GET DIAGNOSTICS n = ROW_COUNT;

    IF parent_property IS NOT NULL THEN
        UPDATE allocation.territory t
           SET parent_id = p.id
          FROM pg_temp.allocation_import i2
          LEFT JOIN allocation.territory p ON p.code = i2.parent_code
         WHERE t.code = i2.code AND t.parent_id IS DISTINCT FROM p.id;
    END IF;

    -- (each territory written is audited by the configuration triggers of allocation.territory)
    DROP TABLE pg_temp.allocation_import, pg_temp.allocation_import_src;
    IF v_fc_srid <> 4326 THEN
        v_report := jsonb_build_array(jsonb_build_object('feature', NULL, 'code', NULL, 'action', 'transformed',
                        'reason', format('%s features from %s (EPSG:%s) to EPSG:4326', v_moved, v_fc_crs, v_fc_srid)))
                    || v_report;
    END IF;
    IF v_skipped > 0 THEN
        RAISE NOTICE 'imported % of % features, skipped %: SELECT * FROM allocation.import_report()', n, v_total, v_skipped;
    END IF;
    -- the report of this session's last import (a session setting: rolled back with the import)
    PERFORM set_config('allocation_import.report',
                       jsonb_build_object('features', v_total, 'imported', n, 'skipped', v_skipped,
                                          'on_invalid', on_invalid, 'rows', v_report)::text, false);
    RETURN n;
END
$$;
COMMENT ON FUNCTION allocation.import_territories(text, text, text, text, text) IS
'Loads a GeoJSON FeatureCollection (text of any size, split feature by feature) into allocation.territory, upserting by code; returns the number of features loaded. Any EPSG CRS PostGIS knows is transformed to EPSG:4326. on_invalid = error (default): all or nothing, bad input raises a specific SQLSTATE (LA001-LA008, LA0I1) and leaves existing territories untouched; skip: features that cannot be stored are left out and listed by allocation.import_report()';

CREATE FUNCTION allocation.import_territories(
    fc jsonb,
    code_property text DEFAULT 'code',
    name_property text DEFAULT 'name',
    parent_property text DEFAULT NULL,
    on_invalid text DEFAULT 'error')
RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT allocation.import_territories(fc::text, code_property, name_property, parent_property, on_invalid)
$$;
COMMENT ON FUNCTION allocation.import_territories(jsonb, text, text, text, text) IS
'import_territories() for a jsonb FeatureCollection (the same import: see the text form, which also takes files above jsonb''s 255 MB limit)';

-- What the session's last import_territories() left out, repaired or transformed.
CREATE FUNCTION allocation.import_report()
RETURNS TABLE (feature integer, code text, action text, sqlstate text, reason text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (r->>'feature')::integer, r->>'code', r->>'action', r->>'sqlstate', r->>'reason'
      FROM jsonb_array_elements(coalesce(nullif(current_setting('allocation_import.report', true), ''), '{}')::jsonb -> 'rows') r
$$;
COMMENT ON FUNCTION allocation.import_report() IS
'The report of this session''s last import_territories(): one row per feature skipped (feature index in the file, code, SQLSTATE, reason), repaired or transformed from its own CRS, and a first row (feature NULL) when the collection was transformed to EPSG:4326; empty after an import with nothing to report';

-- Territories that overlap each other (a manager's clean-up list).
-- they run as the caller and call PostGIS: its schema goes on their search_path
DO $$
DECLARE
    v_pg name;
BEGIN
    SELECT n.nspname INTO v_pg FROM pg_catalog.pg_extension e
      JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'postgis';
    EXECUTE format('ALTER FUNCTION allocation.import_territories(text, text, text, text, text) SET search_path = pg_catalog, %I, pg_temp', v_pg);
    EXECUTE format('ALTER FUNCTION allocation.import_territories(jsonb, text, text, text, text) SET search_path = pg_catalog, %I, pg_temp', v_pg);
END
$$;
-- location datum (GCJ-02 / BD-09) of a managed table's location column (new column last;
-- filled by an UPDATE, not a column default, so no "missing value" stays in the catalog)
ALTER TABLE allocation.managed_table ADD COLUMN location_datum text;
UPDATE allocation.managed_table SET location_datum = 'wgs84';
ALTER TABLE allocation.managed_table ALTER COLUMN location_datum SET DEFAULT 'wgs84',
    ALTER COLUMN location_datum SET NOT NULL,
    ADD CONSTRAINT managed_table_location_datum_check CHECK (location_datum IN ('wgs84', 'gcj02', 'bd09'));
COMMENT ON COLUMN allocation.managed_table.location_datum IS 'datum of the location column''s coordinates: wgs84 (default), gcj02 (Amap, Tencent and other licensed maps of China), bd09 (Baidu); the engine converts to WGS 84 before the territory lookup (see set_location_datum)';

-------------------------------------------------------------------------------
-- Location datum: customer positions captured on Chinese map SDKs
-------------------------------------------------------------------------------
-- Locations from Amap/Gaode or Tencent are GCJ-02, from Baidu BD-09: 100-700 m
-- off WGS 84, enough to put a border dealer in the neighbouring county.  The
-- table declares its column's datum; the engine (src/datum.c, on the write
-- path, no SPI) converts to WGS 84 before the territory lookup.

CREATE FUNCTION allocation.datum_convert(lon double precision, lat double precision,
                                         from_datum text, to_datum text,
                                         OUT lon double precision, OUT lat double precision)
AS 'MODULE_PATHNAME', 'allocation_datum_convert'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION allocation.datum_convert(double precision, double precision, text, text) IS
'Converts a longitude/latitude between the datums wgs84, gcj02 and bd09 exactly as the engine does for a managed table''s locations (the GCJ-02 and BD-09 inverses are iterative: round trip within 1e-6 m over China; GCJ-02 = WGS 84 outside the mainland box)';

CREATE FUNCTION allocation._set_location_datum(tbl regclass, datum text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_old allocation.managed_table;
    v_rows bigint;
BEGIN
    IF tbl IS NULL OR datum IS NULL THEN
        RAISE EXCEPTION 'table and datum are required'
            USING ERRCODE = '22004',
                  DETAIL = format('allocation.set_location_datum() was called with a NULL %s.', CASE WHEN tbl IS NULL THEN 'table' ELSE 'datum' END),
                  HINT = 'Call allocation.set_location_datum(''crm.customer'', ''gcj02''); the default datum is wgs84.';
    END IF;
    PERFORM allocation._require_owner(tbl, 'set the location datum of');
    IF datum NOT IN ('wgs84', 'gcj02', 'bd09') THEN
        RAISE EXCEPTION 'unknown location datum "%"', datum
            USING ERRCODE = 'LA017',
                  DETAIL = 'The datum says which map the coordinates of the location column come from.',
                  HINT = 'Use wgs84 (GPS, the default), gcj02 (Amap/Gaode, Tencent, other licensed maps of China) or bd09 (Baidu).';
    END IF;
    SELECT * INTO v_old FROM allocation.managed_table m WHERE m.tbl = _set_location_datum.tbl AND m.active FOR UPDATE;
    IF v_old.id IS NULL THEN
        RAISE EXCEPTION 'table % is not managed', tbl
            USING ERRCODE = 'LA012', DETAIL = 'There is no active allocation.manage() registration for this table.',
                  HINT = 'Call allocation.manage() first.';
    END IF;
    IF v_old.location_column IS NULL THEN
        RAISE EXCEPTION 'table % has no location column', tbl
            USING ERRCODE = 'LA019',
                  DETAIL = 'It was managed without a location column, so there are no coordinates to convert.',
                  HINT = 'Call allocation.unmanage(), then allocation.manage() with the location column, then this function.';
    END IF;
    IF v_old.location_datum = datum THEN
        RETURN;
    END IF;
    UPDATE allocation.managed_table m SET location_datum = datum WHERE m.id = v_old.id;
    EXECUTE format('SELECT count(*) FROM %s c WHERE c.%I IS NOT NULL', tbl, v_old.location_column) INTO v_rows;
    INSERT INTO allocation.event (actor, kind, managed_id, table_name, reason, detail)
    VALUES (allocation._actor(), 'config_change', v_old.id, v_old.table_name, 'location datum set',
            jsonb_build_object('table', 'managed_table', 'op', 'update', 'id', v_old.id,
                               'before', jsonb_build_object('location_datum', v_old.location_datum),
                               'after', jsonb_build_object('location_datum', datum),
                               'stored_locations_not_reevaluated', v_rows));
END
$$;
COMMENT ON FUNCTION allocation._set_location_datum(regclass, text) IS 'internal: implementation of allocation.set_location_datum(), run as the extension owner by its gateway';

CREATE FUNCTION allocation.set_location_datum(tbl regclass, datum text)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.set_location_datum(regclass, text) IS
'Declares the datum of a managed table''s location column: wgs84 (default), gcj02 (Amap/Gaode, Tencent), bd09 (Baidu); new writes are converted to WGS 84 before the territory lookup, stored customers keep their owners';

-------------------------------------------------------------------------------
-- Partitioned customer tables
-------------------------------------------------------------------------------
-- manage() puts the row triggers on the partitioned table (PostgreSQL clones
-- them to every partition, present and future) and the statement triggers on
-- the table and on every partition (statement triggers are not cloned: a
-- statement naming a partition fires that partition's own).  The event
-- trigger below gives a new partition its statement triggers, refuses to
-- attach a table that already holds rows (they were never registered), and
-- detaching or dropping a partition closes the ownerships of the customers
-- that leave the table.  The C side is src/partition.c.

-- Ends the current ownerships of some customers (a truncated, detached or
-- dropped partition): one closing event per customer, like _close_all.
CREATE FUNCTION allocation._close_keys(p_managed integer, p_keys text[], p_why text, p_actor text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    n bigint;
BEGIN
    WITH t AS (SELECT clock_timestamp() AS at),
    closing AS (
        SELECT a.key, a.rep_id FROM allocation.assignment a
         WHERE a.managed_id = p_managed AND a.valid_to IS NULL AND a.key = ANY (p_keys)),
    gone AS (
        DELETE FROM allocation.customer_state s WHERE s.managed_id = p_managed AND s.key = ANY (p_keys) RETURNING 1)
    INSERT INTO allocation.event (at, actor, kind, managed_id, table_name, key, from_rep, reason, period)
    SELECT t.at, p_actor, p_why, p_managed, m.table_name, c.key, c.rep_id,
           CASE p_why WHEN 'truncate' THEN 'partition truncated' ELSE 'partition left the table' END, 'close'
      FROM closing c CROSS JOIN allocation.managed_table m CROSS JOIN t
     WHERE m.id = p_managed
     ORDER BY c.key;
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE allocation.suggestion SET status = 'superseded', decided_at = now(), decided_by = p_actor,
           decision_reason = p_why
     WHERE managed_id = p_managed AND status = 'pending' AND key = ANY (p_keys);
    DELETE FROM allocation.identity WHERE managed_id = p_managed AND key = ANY (p_keys);
    DELETE FROM allocation.identity_key WHERE managed_id = p_managed AND key = ANY (p_keys);
    DELETE FROM allocation.protection WHERE managed_id = p_managed AND key = ANY (p_keys);
    RETURN n;
END
$$;
COMMENT ON FUNCTION allocation._close_keys(integer, text[], text, text) IS 'internal: closes the current ownerships of the given customers of a managed table (a partition truncated, detached or dropped)';

-- BEFORE TRUNCATE of one partition (src/partition.c): its customers' ownerships close.
CREATE FUNCTION allocation._record_truncate_partition(p_managed integer, p_part regclass, p_actor text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m allocation.managed_table := allocation._managed_by_id(p_managed);
    v_keys text[];
    v_key name;
BEGIN
    -- the key column as the partition names it (column names are the table's)
    v_key := m.key_column;
    -- (the key as its type's output function writes it: a cast to text could be a function
    -- the table's owner wrote, run here as whoever truncates)
    EXECUTE format('SELECT array_agg(pg_catalog.format(''%%s'', c.%I)) FROM %s c', v_key, p_part) INTO v_keys;
    IF v_keys IS NOT NULL THEN
        PERFORM allocation._close_keys(p_managed, v_keys, 'truncate', p_actor);
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._record_truncate_partition(integer, regclass, text) IS 'internal: TRUNCATE of one partition of a managed table closes the ownerships of its customers';

-- The statement triggers of every partition (and sub-partition) of a managed table.
CREATE FUNCTION allocation._partition_triggers(p_tbl regclass) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    p regclass;
    n integer := 0;
BEGIN
    FOR p IN SELECT t.relid FROM pg_catalog.pg_partition_tree(p_tbl) t
              WHERE t.relid <> p_tbl
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g
                                 WHERE g.tgrelid = t.relid AND g.tgname = 'zz_allocation_stmt_before')
              ORDER BY t.level, t.relid::oid LOOP
        EXECUTE format('CREATE TRIGGER zz_allocation_stmt_before BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s
                        FOR EACH STATEMENT EXECUTE FUNCTION allocation._stmt_trigger()', p);
        EXECUTE format('CREATE TRIGGER zz_allocation_stmt_after AFTER INSERT OR UPDATE OR DELETE ON %s
                        FOR EACH STATEMENT EXECUTE FUNCTION allocation._stmt_trigger()', p);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION allocation._partition_triggers(regclass) IS 'internal: gives every partition of a managed partitioned table the engine''s statement triggers (row triggers are cloned by PostgreSQL)';

-- Drops the statement triggers from the partitions (unmanage, a detached partition).
CREATE FUNCTION allocation._drop_partition_triggers(p_rel regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    p regclass;
BEGIN
    -- (pg_partition_tree() of a table that is no longer partitioned nor a partition is empty)
    FOR p IN SELECT DISTINCT g.tgrelid::regclass FROM pg_catalog.pg_trigger g
              WHERE g.tgname IN ('zz_allocation_stmt_before', 'zz_allocation_stmt_after') AND NOT g.tgisinternal
                AND g.tgrelid IN (SELECT p_rel UNION ALL SELECT t.relid FROM pg_catalog.pg_partition_tree(p_rel) t) LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS zz_allocation_stmt_before ON %s', p);
        EXECUTE format('DROP TRIGGER IF EXISTS zz_allocation_stmt_after ON %s', p);
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation._drop_partition_triggers(regclass) IS 'internal: removes the engine''s statement triggers from a table and its partitions';

-- After CREATE TABLE / ALTER TABLE: new partitions get the statement triggers;
-- an attached table holding rows is refused (its customers were never
-- registered); a detached partition's customers leave the table (their
-- ownerships close) and it loses the triggers.
CREATE FUNCTION allocation._on_partition_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m record;
    d record;
    v_keys text[];
    v_rows boolean;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM allocation.managed_table mt JOIN pg_catalog.pg_class c ON c.oid = mt.tbl
                    WHERE mt.active AND c.relkind = 'p') THEN
        RETURN;     -- no partitioned table is managed: one small query per CREATE/ALTER TABLE
    END IF;
    -- detached: a table with the engine's statement triggers that no managed table contains any more
    -- (anyone may create a trigger of that name, even on allocation._stmt_trigger(), on a table of
    -- its own: such a table's rows are read as the extension owner below, so its keys are read
    -- through their type's output function, never a cast, which its owner could have written,
    -- and only keys the managed table no longer holds are closed)
    FOR d IN SELECT g.tgrelid::regclass AS rel FROM pg_catalog.pg_trigger g
              WHERE g.tgname = 'zz_allocation_stmt_before' AND NOT g.tgisinternal
                AND g.tgfoid = 'allocation._stmt_trigger()'::pg_catalog.regprocedure
                AND NOT EXISTS (SELECT 1 FROM allocation.managed_table mt
                                 WHERE mt.active AND (mt.tbl = g.tgrelid
                                       OR mt.tbl IN (SELECT a FROM pg_catalog.pg_partition_ancestors(g.tgrelid) a))) LOOP
        -- the table it was detached from: the command's, or one of its ancestors
        FOR m IN SELECT DISTINCT mt.id, mt.tbl, mt.key_column FROM allocation.managed_table mt, pg_catalog.pg_event_trigger_ddl_commands() x
                  WHERE mt.active AND (mt.tbl = x.objid OR mt.tbl IN (SELECT a FROM pg_catalog.pg_partition_ancestors(x.objid) a)) LOOP
            EXECUTE format('SELECT array_agg(d.k) FROM (SELECT pg_catalog.format(''%%s'', c.%1$I) AS k FROM %2$s c) d
                             WHERE NOT EXISTS (SELECT 1 FROM %3$s x WHERE pg_catalog.format(''%%s'', x.%1$I) = d.k)',
                           m.key_column, d.rel, m.tbl) INTO v_keys;
            IF v_keys IS NOT NULL THEN
                PERFORM allocation._close_keys(m.id, v_keys, 'partition_detached', allocation._actor());
            END IF;
        END LOOP;
        PERFORM allocation._drop_partition_triggers(d.rel);
    END LOOP;
    FOR m IN SELECT mt.tbl, mt.table_name FROM allocation.managed_table mt JOIN pg_catalog.pg_class c ON c.oid = mt.tbl
              WHERE mt.active AND c.relkind = 'p' LOOP
        FOR d IN SELECT t.relid AS rel, c.relkind FROM pg_catalog.pg_partition_tree(m.tbl) t
                   JOIN pg_catalog.pg_class c ON c.oid = t.relid
                  WHERE t.relid <> m.tbl
                    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g
                                     WHERE g.tgrelid = t.relid AND g.tgname = 'zz_allocation_stmt_before') LOOP
            IF d.relkind NOT IN ('r', 'p') THEN
                RAISE EXCEPTION 'partition % of managed table % is not an ordinary table', d.rel, m.table_name
                    USING ERRCODE = 'LA010',
                          DETAIL = format('Relation %s has relkind %s; the engine''s triggers need ordinary tables.', d.rel, d.relkind),
                          HINT = 'Use an ordinary table as the partition.';
            END IF;
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', d.rel) INTO v_rows;
            IF v_rows THEN
                RAISE EXCEPTION 'table % holds rows and cannot become a partition of managed table %', d.rel, m.table_name
                    USING ERRCODE = 'LA064',
                          DETAIL = 'Its customers were never registered by the allocation engine (no owner decision, no history).',
                          HINT = format('Attach it empty, then INSERT INTO %s SELECT * FROM the old table (the rules decide each row).', m.table_name);
            END IF;
        END LOOP;
        PERFORM allocation._partition_triggers(m.tbl);
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation._on_partition_ddl() IS 'internal: new partitions of managed tables get the statement triggers; attaching a table with rows is refused; a detached partition''s customers leave the registry';
CREATE EVENT TRIGGER allocation_partition_ddl ON ddl_command_end WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE')
    EXECUTE FUNCTION allocation._on_partition_ddl();
COMMENT ON EVENT TRIGGER allocation_partition_ddl IS 'allocation: partitions of managed tables, present and future, carry the engine''s statement triggers';

-- DROP of a partition: its customers left the table; their ownerships close.
CREATE FUNCTION allocation._on_partition_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m record;
    v_keys text[];
BEGIN
    -- a partition of a managed table carried the engine's statement trigger
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger_dropped_objects() o
                    WHERE o.object_type = 'trigger' AND o.object_identity LIKE 'zz_allocation_stmt_before on %')
       OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger_dropped_objects() o WHERE o.object_type = 'table') THEN
        RETURN;
    END IF;
    FOR m IN SELECT mt.* FROM allocation.managed_table mt JOIN pg_catalog.pg_class c ON c.oid = mt.tbl
              WHERE mt.active AND c.relkind = 'p' LOOP
        -- the open ownerships whose customer is no longer in the table
        EXECUTE format('SELECT array_agg(a.key) FROM allocation.assignment a
                         WHERE a.managed_id = $1 AND a.valid_to IS NULL
                           AND NOT EXISTS (SELECT 1 FROM %s c WHERE pg_catalog.format(''%%s'', c.%I) = a.key)', m.tbl, m.key_column)
           INTO v_keys USING m.id;
        IF v_keys IS NOT NULL THEN
            PERFORM allocation._close_keys(m.id, v_keys, 'partition_dropped', allocation._actor());
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation._on_partition_drop() IS 'internal: dropping a partition of a managed table closes the ownerships of the customers it held';
CREATE EVENT TRIGGER allocation_partition_drop ON sql_drop EXECUTE FUNCTION allocation._on_partition_drop();
COMMENT ON EVENT TRIGGER allocation_partition_drop IS 'allocation: a dropped partition''s customers leave the registry (their ownerships close)';

CREATE OR REPLACE FUNCTION allocation._manage(
    tbl regclass,
    key_column name,
    location_column name,
    owner_column name,
    attributes jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    known constant text[] := ARRAY['tier', 'crop', 'business_type', 'tags', 'stage', 'name', 'phone',
                                   'credit_code', 'last_contact', 'expected_output', 'parent'];
    v_kind   char;
    v_type   oid;
    v_typmod integer;
    v_attnum smallint;
    v_attnums jsonb := '{}';
    v_logical text;
    v_col    text;
    v_id     integer;
    v_name   text;
    v_bad    text;
    v_count  bigint;
    v_postgis name;
    v_ptype  text;
BEGIN
    IF tbl IS NULL OR key_column IS NULL OR owner_column IS NULL THEN
        RAISE EXCEPTION 'table, key column and owner column are required'
            USING ERRCODE = '22004',
                  DETAIL = 'allocation.manage() was called with a NULL table, key column or owner column.',
                  HINT = 'Call allocation.manage(''crm.customer'', ''id'', ''location'', ''owner_id'').';
    END IF;
    PERFORM allocation._require_owner(tbl, 'manage');
    SELECT c.relkind, format('%I.%I', n.nspname, c.relname) INTO v_kind, v_name
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = tbl AND c.relpersistence = 't') THEN
        RAISE EXCEPTION 'temporary table % cannot be managed', tbl
            USING ERRCODE = 'LA010',
                  DETAIL = 'A temporary table disappears at the end of the session without notice, leaving the registry open.',
                  HINT = 'Manage a permanent table.';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = tbl AND c.relispartition) THEN
        RAISE EXCEPTION 'partition % cannot be managed', tbl
            USING ERRCODE = 'LA010',
                  DETAIL = 'Rows inserted through the partitioned parent would not find the mapping.',
                  HINT = format('Manage the partitioned table: allocation.manage(%L, ...).',
                                (SELECT a::regclass::text FROM pg_catalog.pg_partition_ancestors(tbl) a
                                  WHERE NOT (SELECT c.relispartition FROM pg_catalog.pg_class c WHERE c.oid = a)));
    END IF;
    IF v_kind = 'p' AND EXISTS (SELECT 1 FROM pg_catalog.pg_partition_tree(tbl) t
                                  JOIN pg_catalog.pg_class c ON c.oid = t.relid WHERE c.relkind NOT IN ('r', 'p')) THEN
        RAISE EXCEPTION 'partitioned table % has a partition that is not an ordinary table', tbl
            USING ERRCODE = 'LA010',
                  DETAIL = format('Partition %s has relkind %s; the engine''s triggers need ordinary tables.',
                                  (SELECT min(t.relid::regclass::text) FROM pg_catalog.pg_partition_tree(tbl) t
                                     JOIN pg_catalog.pg_class c ON c.oid = t.relid WHERE c.relkind NOT IN ('r', 'p')),
                                  (SELECT min(c.relkind::text) FROM pg_catalog.pg_partition_tree(tbl) t
                                     JOIN pg_catalog.pg_class c ON c.oid = t.relid WHERE c.relkind NOT IN ('r', 'p'))),
                  HINT = 'Detach the foreign partitions, or manage an ordinary table.';
    END IF;
    IF v_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', tbl
            USING ERRCODE = 'LA010',
                  DETAIL = format('Relation %s has relkind %s; only ordinary tables can be managed.', tbl, v_kind),
                  HINT = 'Manage the base table behind the view.';
    END IF;
    IF v_name LIKE 'allocation.%' THEN
        RAISE EXCEPTION 'the extension''s own tables cannot be managed'
            USING ERRCODE = 'LA010', DETAIL = format('%s belongs to the allocation extension.', v_name),
                  HINT = 'Manage your customer table.';
    END IF;
    -- no writes slip between registering the existing rows and installing the triggers
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', tbl);
    IF EXISTS (SELECT 1 FROM allocation.managed_table m WHERE m.tbl = _manage.tbl AND m.active) THEN
        RAISE EXCEPTION 'table % is already managed', tbl
            USING ERRCODE = 'LA011',
                  DETAIL = 'allocation.manage() was already called for this table.',
                  HINT = 'Call allocation.unmanage() first to change the mapping.';
    END IF;

    -- key: one column with a unique, non-partial index of its own; a partitioned table's
    -- unique index must also hold the partition columns (PRIMARY KEY (id, province)):
    -- then the key comes first and the engine checks it across partitions (partition.c)
    v_attnum := allocation._column_attnum(tbl, key_column, 'key');
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                    WHERE i.indrelid = tbl AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
                      AND (i.indnkeyatts = 1 OR v_kind = 'p') AND i.indkey[0] = v_attnum) THEN
        RAISE EXCEPTION 'key column "%" of % is not unique', key_column, tbl
            USING ERRCODE = 'LA013',
                  DETAIL = CASE WHEN v_kind = 'p'
                                THEN 'The key of a partitioned table must be the first column of a primary key or unique, non-partial index (which also holds the partition columns).'
                                ELSE 'The key must be a single column with a primary key or a unique, non-partial index.' END,
                  HINT = CASE WHEN v_kind = 'p'
                              THEN format('ALTER TABLE %s ADD PRIMARY KEY (%I, <partition columns>);', tbl, key_column)
                              ELSE format('ALTER TABLE %s ADD UNIQUE (%I);', tbl, key_column) END;
    END IF;
    IF v_kind = 'p' THEN
        -- unique with the partition columns only: one row per key in the whole table first
        EXECUTE format('SELECT min(k), count(*) FROM (SELECT c.%1$I::text AS k FROM %2$s c GROUP BY 1 HAVING count(*) > 1) d',
                       key_column, tbl) INTO v_bad, v_count;
        IF v_count > 0 THEN
            RAISE EXCEPTION '% key(s) of % occur in more than one row', v_count, tbl
                USING ERRCODE = 'LA013',
                      DETAIL = format('For example key %s; the engine needs one row per key across all partitions.', v_bad),
                      HINT = 'Merge or renumber those customers first.';
        END IF;
    END IF;
    v_attnums := v_attnums || jsonb_build_object('key', v_attnum);

    -- location: a PostGIS geometry holding points
    IF location_column IS NOT NULL THEN
        v_attnum := allocation._column_attnum(tbl, location_column, 'location');
        SELECT a.atttypid, a.atttypmod INTO v_type, v_typmod FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = tbl AND a.attnum = v_attnum;
        -- (runs as the extension owner: PostGIS is reached by its schema, never by search_path)
        SELECT n.nspname INTO v_postgis FROM pg_catalog.pg_extension e
          JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'postgis';
        IF v_typmod >= 0 AND v_type = (SELECT t.oid FROM pg_catalog.pg_type t
                                        WHERE t.typname = 'geometry' AND t.typnamespace = v_postgis::regnamespace) THEN
            EXECUTE format('SELECT %I.postgis_typmod_type($1)', v_postgis) INTO v_ptype USING v_typmod;
        END IF;
        IF v_type IS DISTINCT FROM (SELECT t.oid FROM pg_catalog.pg_type t
                                     WHERE t.typname = 'geometry' AND t.typnamespace = v_postgis::regnamespace)
           OR (v_typmod >= 0 AND v_ptype NOT IN ('Point', 'Geometry')) THEN
            RAISE EXCEPTION 'location column "%" of % is not a PostGIS point column', location_column, tbl
                USING ERRCODE = 'LA014',
                      DETAIL = format('Its type is %s.', format_type(v_type, v_typmod)),
                      HINT = 'Use a geometry(Point, 4326) column (ALTER TABLE ... ADD COLUMN location geometry(Point, 4326)).';
        END IF;
        v_attnums := v_attnums || jsonb_build_object('location', v_attnum);
    END IF;

    -- owner: holds a rep id
    v_attnum := allocation._column_attnum(tbl, owner_column, 'owner');
    SELECT a.atttypid INTO v_type FROM pg_catalog.pg_attribute a WHERE a.attrelid = tbl AND a.attnum = v_attnum;
    IF v_type NOT IN ('bigint'::regtype, 'integer'::regtype) THEN
        RAISE EXCEPTION 'owner column "%" of % cannot hold a rep id', owner_column, tbl
            USING ERRCODE = 'LA015',
                  DETAIL = format('Its type is %s; rep ids are bigint.', format_type(v_type, NULL)),
                  HINT = format('ALTER TABLE %s ALTER COLUMN %I TYPE bigint USING ...;', tbl, owner_column);
    END IF;
    v_attnums := v_attnums || jsonb_build_object('owner', v_attnum);

    -- attributes: logical name -> column
    IF attributes IS NULL OR jsonb_typeof(attributes) <> 'object' THEN
        RAISE EXCEPTION 'attributes must be a JSON object'
            USING ERRCODE = 'LA016',
                  DETAIL = format('Got %s.', coalesce(attributes::text, 'NULL')),
                  HINT = 'Map logical names to columns, e.g. {"tier": "customer_tier", "crop": "main_crop"}.';
    END IF;
    FOR v_logical, v_col IN SELECT key, value #>> '{}' FROM jsonb_each(attributes) LOOP
        IF NOT v_logical = ANY (known) THEN
            RAISE EXCEPTION 'unknown attribute "%"', v_logical
                USING ERRCODE = 'LA016',
                      DETAIL = format('The attributes object maps "%s", which the engine does not know.', v_logical),
                      HINT = format('Known attributes: %s.', array_to_string(known, ', '));
        END IF;
        IF v_col IS NULL OR jsonb_typeof(attributes -> v_logical) <> 'string' THEN
            RAISE EXCEPTION 'attribute "%" must name a column', v_logical
                USING ERRCODE = 'LA016', DETAIL = format('Got %s.', attributes -> v_logical),
                      HINT = 'Give the column name as a JSON string.';
        END IF;
        v_attnum := allocation._column_attnum(tbl, v_col::name, format('%s attribute', v_logical));
        IF v_logical = 'tags' THEN
            SELECT a.atttypid INTO v_type FROM pg_catalog.pg_attribute a WHERE a.attrelid = tbl AND a.attnum = v_attnum;
            IF v_type NOT IN ('text[]'::regtype, 'varchar[]'::regtype) THEN
                RAISE EXCEPTION 'tags column "%" of % is not a text array', v_col, tbl
                    USING ERRCODE = 'LA016', DETAIL = format('Its type is %s.', format_type(v_type, NULL)),
                          HINT = 'Map tags to a text[] column.';
            END IF;
        END IF;
        IF v_logical = 'parent' THEN
            -- the parent is found by the key's unique index: it must be a value of the key's type
            SELECT a.atttypid INTO v_type FROM pg_catalog.pg_attribute a WHERE a.attrelid = tbl AND a.attnum = v_attnum;
            IF v_type IS DISTINCT FROM (SELECT a.atttypid FROM pg_catalog.pg_attribute a
                                         WHERE a.attrelid = tbl AND a.attname = key_column AND NOT a.attisdropped) THEN
                RAISE EXCEPTION 'parent column "%" of % does not have the key column''s type', v_col, tbl
                    USING ERRCODE = 'LA016',
                          DETAIL = format('Its type is %s; the key column %I is %s.', format_type(v_type, NULL), key_column,
                                          (SELECT format_type(a.atttypid, NULL) FROM pg_catalog.pg_attribute a
                                            WHERE a.attrelid = tbl AND a.attname = key_column AND NOT a.attisdropped)),
                          HINT = 'The parent column holds the key of the parent customer (a county distributor''s id).';
            END IF;
        END IF;
        v_attnums := v_attnums || jsonb_build_object(v_logical, v_attnum);
    END LOOP;

    -- the engine reads these columns with its owner's rights: only built-in types (no user casts)
    PERFORM allocation._check_column_types(tbl, key_column,
                                           (SELECT array_agg(x.value) FROM jsonb_each_text(attributes) x));

    EXECUTE format('SELECT count(*) FROM %s c WHERE c.%I IS NULL', tbl, key_column) INTO v_count;
    IF v_count > 0 THEN
        RAISE EXCEPTION '% row(s) of % have a NULL key', v_count, tbl
            USING ERRCODE = 'LA063',
                  DETAIL = format('Column %I is the key; every customer needs one to be registered.', key_column),
                  HINT = format('Give those rows a key, then ALTER TABLE %s ALTER COLUMN %I SET NOT NULL.', tbl, key_column);
    END IF;

    -- existing owners must be known reps
    EXECUTE format('SELECT min(%1$I)::text, count(*) FROM %2$s c WHERE %1$I IS NOT NULL
                     AND NOT EXISTS (SELECT 1 FROM allocation.rep r WHERE r.id = c.%1$I)', owner_column, tbl)
       INTO v_bad, v_count;
    IF v_count > 0 THEN
        RAISE EXCEPTION '% row(s) of % have an owner that is not a rep', v_count, tbl
            USING ERRCODE = 'LA020',
                  DETAIL = format('For example owner %s does not exist in allocation.rep.', v_bad),
                  HINT = 'Create the missing reps (or clear those owners) before calling allocation.manage().';
    END IF;

    UPDATE allocation.managed_table m
       SET active = true, key_column = _manage.key_column, location_column = _manage.location_column,
           owner_column = _manage.owner_column, attributes = _manage.attributes, attnums = v_attnums,
           managed_since = now(), table_name = v_name, location_datum = 'wgs84'
     WHERE m.tbl = _manage.tbl
    RETURNING m.id INTO v_id;
    IF v_id IS NULL THEN
        INSERT INTO allocation.managed_table (tbl, key_column, location_column, owner_column, attributes, attnums, table_name)
        VALUES (tbl, key_column, location_column, owner_column, attributes, v_attnums, v_name)
        RETURNING id INTO v_id;
    END IF;

    -- rows already in the table get their first ownership period (one event
    -- each: owned rows as pinned manual assignments, the rest in the pool) and,
    -- being no rule's decision, a state row; the event trigger recounts holdings
    EXECUTE format($q$
        WITH rows AS (
            SELECT c.%1$I::text AS key, c.%2$I AS rep_id, %3$s AS tier, %4$s AS crop, %5$s AS business_type,
                   CASE WHEN c.%2$I IS NULL THEN 'no owner when the table was attached'
                        ELSE 'owner when the table was attached' END AS reason
              FROM %6$s c),
        state AS (
            INSERT INTO allocation.customer_state (managed_id, key, rep_id, source, pinned, reason, tier, crop,
                                                   business_type, valid_from)
            SELECT $1, r.key, r.rep_id, CASE WHEN r.rep_id IS NULL THEN 'pool' ELSE 'manual' END,
                   r.rep_id IS NOT NULL, r.reason, r.tier, r.crop, r.business_type, $3
              FROM rows r
            RETURNING 1)
        INSERT INTO allocation.event (at, actor, kind, managed_id, table_name, key, to_rep, reason,
                                      source, pinned, period, tier, crop, business_type)
        SELECT $3, allocation._actor(), 'attach', $1, $2, r.key, r.rep_id, r.reason,
               CASE WHEN r.rep_id IS NULL THEN 'pool' ELSE 'manual' END, r.rep_id IS NOT NULL,
               'open', r.tier, r.crop, r.business_type
          FROM rows r$q$,
        key_column, owner_column,
        CASE WHEN attributes ? 'tier' THEN format('c.%I::text', attributes->>'tier') ELSE 'NULL' END,
        CASE WHEN attributes ? 'crop' THEN format('c.%I::text', attributes->>'crop') ELSE 'NULL' END,
        CASE WHEN attributes ? 'business_type' THEN format('c.%I::text', attributes->>'business_type') ELSE 'NULL' END,
        tbl) USING v_id, v_name, clock_timestamp();
    GET DIAGNOSTICS v_count = ROW_COUNT;
    -- (holdings: the attach events moved them, trigger ownership_loaded)
    PERFORM allocation._warn_over_capacity(v_id, NULL);    -- existing owners are kept, even over capacity

    EXECUTE format('CREATE TRIGGER zz_allocation_before BEFORE INSERT OR UPDATE ON %s
                    FOR EACH ROW EXECUTE FUNCTION allocation._row_trigger()', tbl);
    EXECUTE format('CREATE TRIGGER zz_allocation_after AFTER INSERT OR UPDATE OR DELETE ON %s
                    FOR EACH ROW EXECUTE FUNCTION allocation._row_trigger()', tbl);
    EXECUTE format('CREATE TRIGGER zz_allocation_stmt_before BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION allocation._stmt_trigger()', tbl);
    EXECUTE format('CREATE TRIGGER zz_allocation_stmt_after AFTER INSERT OR UPDATE OR DELETE ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION allocation._stmt_trigger()', tbl);
    IF v_kind = 'p' THEN
        -- row triggers are cloned to every partition; statement triggers are not (30b_partitions.sql)
        PERFORM allocation._partition_triggers(tbl);
    END IF;

    INSERT INTO allocation.event (actor, kind, managed_id, table_name, reason, detail)
    VALUES (allocation._actor(), 'manage', v_id, v_name, 'table attached',
            jsonb_build_object('key_column', key_column, 'location_column', location_column,
                               'owner_column', owner_column, 'attributes', attributes, 'existing_rows', v_count));
END
$$;
COMMENT ON FUNCTION allocation._manage(regclass, name, name, name, jsonb) IS 'internal: implementation of allocation.manage(), run as the extension owner by its gateway';
CREATE OR REPLACE FUNCTION allocation._unmanage(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id integer;
    v_name text;
BEGIN
    PERFORM allocation._require_owner(tbl, 'unmanage');
    SELECT m.id, m.table_name INTO v_id, v_name FROM allocation.managed_table m WHERE m.tbl = _unmanage.tbl AND m.active;
    IF v_id IS NULL THEN
        RAISE EXCEPTION 'table % is not managed', tbl
            USING ERRCODE = 'LA012',
                  DETAIL = 'There is no active allocation.manage() registration for this table.',
                  HINT = 'See SELECT tbl FROM allocation.managed_table WHERE active.';
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS zz_allocation_before ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS zz_allocation_after ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS zz_allocation_stmt_before ON %s', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS zz_allocation_stmt_after ON %s', tbl);
    IF (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = tbl) = 'p' THEN
        PERFORM allocation._drop_partition_triggers(tbl);
    END IF;
    PERFORM allocation._detach(v_id, 'unmanaged');
END
$$;
COMMENT ON FUNCTION allocation._unmanage(regclass) IS 'internal: implementation of allocation.unmanage(), run as the extension owner by its gateway';
CREATE OR REPLACE FUNCTION allocation._on_ddl_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    m record;
    l text;
    v_name name;
    v_attnum smallint;
    v_now name;
    v_names jsonb;
    v_attnums jsonb;
    v_table text;
BEGIN
    FOR m IN SELECT mt.* FROM allocation.managed_table mt
              WHERE mt.active
                AND mt.tbl IN (SELECT c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() c) LOOP
        -- logical name -> column name, as stored
        v_names := jsonb_strip_nulls(jsonb_build_object('key', m.key_column, 'location', m.location_column,
                                                        'owner', m.owner_column)) || m.attributes;
        v_attnums := '{}';
        FOR l, v_name IN SELECT key, value #>> '{}' FROM jsonb_each(v_names) LOOP
            SELECT a.attnum INTO v_attnum FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = m.tbl AND a.attname = v_name AND a.attnum > 0 AND NOT a.attisdropped;
            IF v_attnum IS NULL THEN
                -- the name is gone: the column was renamed; follow its number
                SELECT a.attname, a.attnum INTO v_now, v_attnum FROM pg_catalog.pg_attribute a
                 WHERE a.attrelid = m.tbl AND a.attnum = (m.attnums ->> l)::smallint AND NOT a.attisdropped;
                IF v_now IS NOT NULL THEN
                    v_names := jsonb_set(v_names, ARRAY[l], to_jsonb(v_now::text));
                END IF;
            END IF;
            -- numbers follow the names (they shift after a dump and restore)
            IF v_attnum IS NOT NULL THEN
                v_attnums := v_attnums || jsonb_build_object(l, v_attnum);
            END IF;
            v_now := NULL;
            v_attnum := NULL;
        END LOOP;
        -- a mapped column whose type changed would break the engine: refuse the DDL
        IF (SELECT a.atttypid FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = m.tbl AND a.attname = (v_names ->> 'owner') AND NOT a.attisdropped)
           NOT IN ('pg_catalog.int8'::pg_catalog.regtype, 'pg_catalog.int4'::pg_catalog.regtype)
           OR (v_names ? 'location' AND (SELECT a.atttypid FROM pg_catalog.pg_attribute a
                                          WHERE a.attrelid = m.tbl AND a.attname = (v_names ->> 'location')
                                            AND NOT a.attisdropped)
               IS DISTINCT FROM (SELECT t.oid FROM pg_catalog.pg_type t
                                   JOIN pg_catalog.pg_extension e ON e.extnamespace = t.typnamespace
                                  WHERE e.extname = 'postgis' AND t.typname = 'geometry'))
           OR (v_names ? 'tags' AND (SELECT a.atttypid FROM pg_catalog.pg_attribute a
                                      WHERE a.attrelid = m.tbl AND a.attname = (v_names ->> 'tags')
                                        AND NOT a.attisdropped)
               NOT IN ('pg_catalog._text'::pg_catalog.regtype, 'pg_catalog._varchar'::pg_catalog.regtype)) THEN
            RAISE EXCEPTION 'the type of a column used by the allocation engine cannot change'
                USING ERRCODE = 'LA018',
                      DETAIL = format('Table %s is managed: its owner column must stay integer or bigint, its location a PostGIS geometry, its tags a text array.', m.table_name),
                      HINT = 'Call allocation.unmanage() first, change the column, then allocation.manage() again.';
        END IF;
        -- the key and attribute columns stay of built-in types, as manage() requires: a user
        -- type's cast or output function would run as whoever the engine reads them as
        PERFORM allocation._check_column_types(m.tbl, (v_names ->> 'key')::name,
                    ARRAY(SELECT x.value FROM jsonb_each_text(v_names - 'key' - 'location' - 'owner') x));
        SELECT format('%I.%I', n.nspname, c.relname) INTO v_table
          FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = m.tbl;
        UPDATE allocation.managed_table mt
           SET key_column = v_names ->> 'key', location_column = v_names ->> 'location',
               owner_column = v_names ->> 'owner',
               attributes = v_names - 'key' - 'location' - 'owner',
               attnums = v_attnums, table_name = v_table
         WHERE mt.id = m.id
           AND (mt.key_column, mt.location_column, mt.owner_column, mt.attributes, mt.attnums, mt.table_name)
               IS DISTINCT FROM (v_names ->> 'key', v_names ->> 'location', v_names ->> 'owner',
                                 v_names - 'key' - 'location' - 'owner', v_attnums, v_table);
    END LOOP;
    -- keep rule condition texts in step with renamed columns
    -- (only when the written text no longer means the stored condition, e.g. after a rename);
    -- a rule whose condition cannot be read any more (it no longer compiles, and is skipped)
    -- does not block the ALTER TABLE: it gets a WARNING
    FOR m IN SELECT r.id, r.name FROM allocation.rule r
              WHERE r.condition_bin IS NOT NULL
                AND r.tbl IN (SELECT c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() c)
                AND NOT allocation._condition_still_means(r.condition, r.condition_bin, r.tbl, r.condition_search_path)
              ORDER BY r.id LOOP
        BEGIN
            UPDATE allocation.rule r SET condition = allocation._condition_deparse(r.condition_bin, r.tbl)
             WHERE r.id = m.id;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'allocation: the condition of rule "%" could not follow this change: %', m.name, SQLERRM
                USING HINT = 'Fix it with UPDATE allocation.rule SET condition = ... ; until then the rule is skipped.';
        END;
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation._on_ddl_end() IS 'internal: follows column renames on managed tables (mapping and rule conditions); refuses a mapped column''s change to a type the engine cannot use safely (LA018, LA016)';
-- realignment: the batch writer's entries name the plan that moved a customer (attribute last)
ALTER TYPE allocation._entry ADD ATTRIBUTE plan bigint;
CREATE OR REPLACE FUNCTION allocation._record_batch(p_actor text, p_entries allocation._entry[],
                                         p_delta_rep bigint[], p_delta_n integer[])
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_ops text[];
    v_any_stage boolean;
    v_any_sug boolean;
    v_any_pin boolean;
    v_changes boolean;
    v_released bigint[];
    v_auto record;
    v_auto_keys text[];
    v_auto_managed integer[];
    v_auto_stage text[];
    -- the time of this batch's ownership changes: the clock, read while the
    -- customers' rows are locked, so one customer's times never go back
    v_now timestamptz := clock_timestamp();
BEGIN
    SELECT array_agg(DISTINCT b.op), bool_or(b.stage IS NOT NULL), bool_or(b.sug IS NOT NULL), bool_or(b.kind = 'pin')
      INTO v_ops, v_any_stage, v_any_sug, v_any_pin
      FROM unnest(p_entries) b;
    -- customers whose stage changes into a pool's auto-grant stage (read before the registry moves)
    IF v_any_stage AND EXISTS (SELECT 1 FROM allocation.resource_pool rp WHERE rp.auto_stage IS NOT NULL AND rp.active) THEN
        SELECT array_agg(b.managed_id), array_agg(b.key), array_agg(b.stage)
          INTO v_auto_managed, v_auto_keys, v_auto_stage
          FROM unnest(p_entries) b
          CROSS JOIN LATERAL allocation._current(b.managed_id, b.key) a
         WHERE b.op IN ('refresh', 'update') AND b.stage IS DISTINCT FROM a.stage
           AND b.stage IN (SELECT rp.auto_stage FROM allocation.resource_pool rp WHERE rp.active);
    END IF;
    -- an accepted suggestion is recorded under the suggestion's rule
    IF EXISTS (SELECT 1 FROM unnest(p_entries) b WHERE b.source = 'suggestion') THEN
        SELECT array_agg(ROW(b.ord, b.managed_id, b.op, b.key, b.rep, b.old_rep, b.team, b.territory,
                             coalesce(b.rule, (SELECT s.rule_id FROM allocation.suggestion s
                                                WHERE b.source = 'suggestion' AND s.managed_id = b.managed_id
                                                  AND s.key = b.key AND s.status = 'pending')),
                             b.source, b.pinned, b.kind, b.reason, b.tier, b.crop, b.btype, b.sug, b.stage,
                             b.req, b.state, b.plan)::allocation._entry ORDER BY b.ord)
          INTO p_entries
          FROM unnest(p_entries) b;
    END IF;

    -- same owner, new attributes: the customer's state row follows (no history, no event);
    -- a customer that had none (assigned by a rule) gets one from its current ownership
    IF 'refresh' = ANY (v_ops) THEN
        -- (a refresh carrying a suggestion keeps the current reason and rule)
        -- (a 'pin' is a person confirming the current owner: pinned, source manual, their reason)
        INSERT INTO allocation.customer_state AS s
               (managed_id, key, rep_id, team_id, territory_id, rule_id, source, pinned, reason,
                tier, crop, business_type, stage, stage_since, valid_from)
        SELECT b.managed_id, b.key, a.rep_id, a.team_id, b.territory,
               CASE WHEN b.kind = 'pin' THEN NULL
                    WHEN b.reason IS NULL OR b.sug IS NOT NULL THEN a.rule_id ELSE b.rule END,
               CASE WHEN b.kind = 'pin' THEN 'manual' ELSE a.source END,
               a.pinned OR b.pinned,
               CASE WHEN b.sug IS NULL THEN coalesce(b.reason, a.reason) ELSE a.reason END,
               b.tier, b.crop, b.btype, b.stage,
               CASE WHEN b.stage IS DISTINCT FROM a.stage THEN v_now ELSE a.stage_since END,
               a.valid_from
          FROM unnest(p_entries) b
          CROSS JOIN LATERAL allocation._current(b.managed_id, b.key) a
         WHERE b.op = 'refresh'
        ON CONFLICT (managed_id, key) DO UPDATE
           SET rep_id = EXCLUDED.rep_id, team_id = EXCLUDED.team_id, territory_id = EXCLUDED.territory_id,
               rule_id = EXCLUDED.rule_id, source = EXCLUDED.source, pinned = EXCLUDED.pinned,
               reason = EXCLUDED.reason, tier = EXCLUDED.tier, crop = EXCLUDED.crop,
               business_type = EXCLUDED.business_type, stage = EXCLUDED.stage,
               stage_since = EXCLUDED.stage_since, valid_from = EXCLUDED.valid_from;
    END IF;

    v_changes := 'update' = ANY (v_ops) OR 'delete' = ANY (v_ops);

    -- the current ownership of updated/deleted customers ends: the owners whose
    -- slots are released are the ones it recorded
    IF v_changes THEN
        SELECT array_agg(a.rep_id) INTO v_released
          FROM unnest(p_entries) b
          CROSS JOIN LATERAL allocation._current(b.managed_id, b.key) a
         WHERE b.op IN ('update', 'delete') AND a.rep_id IS NOT NULL;
        DELETE FROM allocation.customer_state s
         USING unnest(p_entries) b
         WHERE b.op IN ('update', 'delete') AND s.managed_id = b.managed_id AND s.key = b.key;
    END IF;

    -- the new ownership of inserted/updated customers: a state row unless a rule
    -- assigned a rep and nobody pinned it (then the event alone records it)
    INSERT INTO allocation.customer_state (managed_id, key, rep_id, team_id, territory_id, rule_id,
                                           source, pinned, reason, tier, crop, business_type, stage, stage_since,
                                           valid_from)
    SELECT b.managed_id, b.key, b.rep, b.team, b.territory, b.rule, b.source, b.pinned,
           b.reason, b.tier, b.crop, b.btype, b.stage, CASE WHEN b.stage IS NOT NULL THEN v_now END, v_now
      FROM unnest(p_entries) b
     WHERE b.op IN ('insert', 'update')
       AND b.state
     ORDER BY b.ord;

    -- registration protection (报备): a rep that inserts a customer as its own login
    IF 'insert' = ANY (v_ops) AND EXISTS (SELECT 1 FROM allocation.claim_policy cp WHERE cp.protection IS NOT NULL)
       AND EXISTS (SELECT 1 FROM allocation.rep r WHERE r.login = p_actor) THEN
        PERFORM allocation._record_protection(p_actor, array_agg(b.managed_id), array_agg(b.key), array_agg(b.tier))
           FROM unnest(p_entries) b
          WHERE b.op = 'insert';
    END IF;
    IF 'delete' = ANY (v_ops) THEN
        DELETE FROM allocation.protection pr USING unnest(p_entries) b
         WHERE b.op = 'delete' AND pr.managed_id = b.managed_id AND pr.key = b.key;
    END IF;

    -- suggestions: a pending one is superseded by any new decision on the same customer
    -- (a new key cannot have one: DELETE supersedes)
    IF v_changes OR v_any_sug OR v_any_pin THEN
    -- the slots these suggestions reserved are given back: their reps' counters are
    -- locked first, in rep id order, under the ordered-locking rule (55P03, not a deadlock)
    PERFORM allocation._lock_counter(x.rep_id)
       FROM (SELECT DISTINCT s.rep_id
               FROM allocation.suggestion s
               JOIN unnest(p_entries) b ON s.managed_id = b.managed_id AND s.key = b.key
              WHERE s.status = 'pending' AND (b.op IN ('update', 'delete') OR b.sug IS NOT NULL OR b.kind = 'pin')) x
      ORDER BY x.rep_id;
    UPDATE allocation.suggestion s
       SET status = CASE WHEN b.source = 'suggestion' THEN 'accepted' ELSE 'superseded' END,
           decided_at = now(), decided_by = p_actor,
           decision_reason = b.reason
      FROM unnest(p_entries) b
     WHERE (b.op IN ('update', 'delete') OR b.sug IS NOT NULL OR b.kind = 'pin')
       AND s.managed_id = b.managed_id AND s.key = b.key AND s.status = 'pending';
    END IF;

    IF v_any_sug THEN
        INSERT INTO allocation.suggestion (managed_id, key, rep_id, rule_id, territory_id, reason)
        SELECT b.managed_id, b.key, b.sug, b.rule, b.territory, b.reason
          FROM unnest(p_entries) b
         WHERE b.sug IS NOT NULL
         ORDER BY b.ord;
    END IF;

    -- counters: the statement's slots (one write per rep), minus the former owners
    IF p_delta_rep IS NOT NULL OR v_released IS NOT NULL THEN
        UPDATE allocation.rep_load l
           SET held = l.held + r.n
          FROM (SELECT rep, sum(n)::integer AS n
                  FROM (SELECT unnest(v_released) AS rep, -1 AS n
                        UNION ALL SELECT * FROM unnest(p_delta_rep, p_delta_n)) u
                 WHERE rep IS NOT NULL GROUP BY rep) r
         WHERE l.rep_id = r.rep AND r.n <> 0;
    END IF;

    FOR v_auto IN SELECT * FROM unnest(v_auto_managed, v_auto_keys, v_auto_stage) AS x(managed_id, key, stage) LOOP
        PERFORM allocation._auto_grant(v_auto.managed_id, v_auto.key, v_auto.stage);
    END LOOP;

    INSERT INTO allocation.event (at, actor, kind, managed_id, table_name, key, from_rep, to_rep, rule_id, reason, detail,
                                  team_id, territory_id, source, pinned, period, tier, crop, business_type, stage)
    SELECT v_now, p_actor, b.kind, b.managed_id, m.table_name, b.key, b.old_rep,
           CASE WHEN b.op = 'delete' THEN NULL ELSE coalesce(b.rep, b.sug) END,
           b.rule, b.reason,
           jsonb_strip_nulls(jsonb_build_object('suggested', CASE WHEN b.sug IS NOT NULL THEN true END,
                                                -- a dispute: the owner the write asked for (evidence)
                                                'requested_owner', b.req,
                                                -- a realignment's move: its plan
                                                'realign_plan', b.plan)),
           b.team, b.territory, b.source, b.pinned,
           CASE b.op WHEN 'delete' THEN 'close' WHEN 'refresh' THEN NULL ELSE 'open' END,
           CASE WHEN b.op IN ('insert', 'update') THEN b.tier END,
           CASE WHEN b.op IN ('insert', 'update') THEN b.crop END,
           CASE WHEN b.op IN ('insert', 'update') THEN b.btype END,
           CASE WHEN b.op IN ('insert', 'update') THEN b.stage END
      FROM unnest(p_entries) b
      JOIN allocation.managed_table m ON m.id = b.managed_id
     WHERE b.op <> 'refresh' OR b.sug IS NOT NULL OR b.kind = 'pin'
     ORDER BY b.ord;
END
$$;
COMMENT ON FUNCTION allocation._record_batch(text, allocation._entry[], bigint[], integer[])
    IS 'internal: writes one statement''s allocation decisions (ownership events, state exceptions, suggestions, counters)';

-------------------------------------------------------------------------------
-- Realignment (调整分配方案, issue 15): a manager stages territory, rule and rep
-- changes in a plan, previews every customer that would move (and every one
-- that stays, with the reason) as the engine's own decision code sees it, then
-- applies configuration and moves in committed batches, resumable.
--
-- Preview: the staged configuration is written inside a subtransaction that is
-- always rolled back; C (realign.c) decides every customer again in dry-run
-- mode while it is visible.  The rollback invalidates this backend's caches;
-- other backends never see it (invalidations of an aborted subtransaction are
-- not sent) and a transaction that changed territories never publishes a
-- shared territory index.  Apply: the configuration is committed first, with
-- the list of customers to move (allocation.realign_item); then batches move
-- them through the row trigger's re-evaluation (_realign_move), each customer
-- re-checked under its row lock, one event (kind realign, detail.realign_plan)
-- per move, a COMMIT between batches.
-------------------------------------------------------------------------------
CREATE TABLE allocation.realign_plan (
    id           bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name         text NOT NULL CHECK (btrim(name) <> ''),
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    status       text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'applying', 'applied', 'cancelled')),
    applied_at   timestamptz,
    reason       text,
    claim_grace  interval NOT NULL DEFAULT interval '30 days' CHECK (claim_grace >= interval '0'),
    applied_by   text,
    started_at   timestamptz,
    total        integer,
    CHECK ((status = 'applied') = (applied_at IS NOT NULL))
);
COMMENT ON TABLE allocation.realign_plan IS 'Realignment plans: staged territory, rule and rep changes, previewed with realign_preview() and applied with CALL realign_apply()';
COMMENT ON COLUMN allocation.realign_plan.claim_grace IS 'a customer claimed less than this long ago stays with its claimer';
COMMENT ON COLUMN allocation.realign_plan.total IS 'customers listed to move when the apply started (allocation.realign_item)';

CREATE TABLE allocation.realign_territory (
    plan_id          bigint NOT NULL REFERENCES allocation.realign_plan (id) ON DELETE CASCADE,
    territory_id     bigint NOT NULL REFERENCES allocation.territory (id) ON DELETE CASCADE,
    new_geom         geometry(MultiPolygon, 4326),
    set_owner        boolean NOT NULL DEFAULT false,
    new_owner_rep_id bigint REFERENCES allocation.rep (id) ON DELETE CASCADE,
    new_owner_team_id bigint REFERENCES allocation.team (id) ON DELETE CASCADE,
    new_priority     integer,
    new_exclusive    boolean,
    old_geom         geometry(MultiPolygon, 4326),
    old_owner_rep_id bigint,
    old_owner_team_id bigint,
    old_priority     integer NOT NULL,
    old_exclusive    boolean NOT NULL,
    staged_by        text NOT NULL,
    staged_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plan_id, territory_id),
    CHECK (new_owner_rep_id IS NULL OR new_owner_team_id IS NULL)
);
COMMENT ON TABLE allocation.realign_territory IS 'Staged territory changes of a realignment plan: new_* NULL = unchanged (the owner: set_owner), old_* = the territory when staged (an apply refuses when it changed since)';

CREATE TABLE allocation.realign_rule (
    plan_id     bigint NOT NULL REFERENCES allocation.realign_plan (id) ON DELETE CASCADE,
    seq         integer NOT NULL,
    rule_id     bigint REFERENCES allocation.rule (id) ON DELETE CASCADE,
    definition  jsonb NOT NULL,
    before      jsonb,
    staged_by   text NOT NULL,
    staged_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plan_id, seq)
);
COMMENT ON TABLE allocation.realign_rule IS 'Staged rule changes of a realignment plan, applied in seq order: rule_id NULL = a new rule (definition = its columns), else the columns to change ({"enabled": false} disables it); before = the rule when staged';

CREATE TABLE allocation.realign_rep (
    plan_id       bigint NOT NULL REFERENCES allocation.realign_plan (id) ON DELETE CASCADE,
    rep_id        bigint NOT NULL REFERENCES allocation.rep (id) ON DELETE CASCADE,
    set_capacity  boolean NOT NULL DEFAULT false,
    new_capacity  integer CHECK (new_capacity >= 0),
    new_active    boolean,
    old_capacity  integer,
    old_active    boolean NOT NULL,
    staged_by     text NOT NULL,
    staged_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (plan_id, rep_id)
);
COMMENT ON TABLE allocation.realign_rep IS 'Staged rep changes of a realignment plan: capacity (set_capacity; NULL = unlimited) and active flag (NULL = unchanged)';

CREATE TABLE allocation.realign_item (
    plan_id      bigint NOT NULL REFERENCES allocation.realign_plan (id) ON DELETE CASCADE,
    ord          bigint NOT NULL,
    managed_id   integer NOT NULL,
    key          text NOT NULL,
    from_rep     bigint,
    to_rep       bigint,
    rule_id      bigint,
    territory_id bigint,
    status       text NOT NULL CHECK (status IN ('pending', 'moved', 'unchanged', 'stayed', 'gone')),
    reason       text,
    done_at      timestamptz,
    result_rep   bigint,
    PRIMARY KEY (plan_id, ord)
);
CREATE INDEX realign_item_pending_idx ON allocation.realign_item (plan_id, ord) WHERE status = 'pending';
COMMENT ON TABLE allocation.realign_item IS 'The customers a realignment apply listed (those the new configuration moves, and those that stay, with the reason), and how far the apply got: its resume point';
COMMENT ON COLUMN allocation.realign_item.status IS 'pending (not reached yet), moved, unchanged (decided again: same owner), stayed (reason), gone (row deleted)';

-------------------------------------------------------------------------------
-- C parts (realign.c, claims.c)
-------------------------------------------------------------------------------
CREATE FUNCTION allocation._realign_scan(skip_managed integer[], skip_keys text[], skip_reps bigint[],
    OUT ord bigint, OUT managed_id integer, OUT key text, OUT from_rep bigint, OUT outcome text,
    OUT to_rep bigint, OUT team_id bigint, OUT rule_id bigint, OUT territory_id bigint, OUT reason text,
    OUT simulated boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'allocation_realign_scan' LANGUAGE C;
COMMENT ON FUNCTION allocation._realign_scan(integer[], text[], bigint[]) IS 'internal: every customer of the managed tables whose decision (the trigger''s code, dry run, moves simulated in order) differs from its owner under the configuration now visible';

CREATE FUNCTION allocation._realign_move(tbl regclass, key text, plan bigint, reason text,
                                         OUT result text, OUT owner bigint)
AS 'MODULE_PATHNAME', 'allocation_realign_move' LANGUAGE C;
COMMENT ON FUNCTION allocation._realign_move(regclass, text, bigint, text) IS 'internal: one customer decided again by the rules through its row trigger, recorded as a realign event naming the plan';

CREATE FUNCTION allocation._realign_lock_batch(tbl regclass, keys text[], OUT key text, OUT owner bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'allocation_realign_lock_batch' LANGUAGE C;
COMMENT ON FUNCTION allocation._realign_lock_batch(regclass, text[]) IS 'internal: locks a realignment batch''s customer rows in key order in one statement (NOWAIT: 55P03 when one is busy) and returns their keys and owners';

CREATE FUNCTION allocation._realign_move_batch(tbl regclass, keys text[], plan bigint, reason text,
                                               OUT key text, OUT result text, OUT owner bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'allocation_realign_move_batch' LANGUAGE C;
COMMENT ON FUNCTION allocation._realign_move_batch(regclass, text[], bigint, text) IS 'internal: a realignment batch''s customers decided again by the rules in one engine UPDATE, in the listed order (LA0R8 otherwise), recorded in one statement batch as realign events naming the plan';

CREATE FUNCTION allocation._realign_quiet(on_ boolean)
RETURNS boolean
AS 'MODULE_PATHNAME', 'allocation_realign_quiet' LANGUAGE C;
COMMENT ON FUNCTION allocation._realign_quiet(boolean) IS 'internal: quiets the territory-owner NOTICE while a plan''s configuration is written (until the transaction ends); returns the previous state';

CREATE FUNCTION allocation._territory_owner_notice() RETURNS trigger
AS 'MODULE_PATHNAME', 'allocation_territory_owner_notice' LANGUAGE C;
COMMENT ON FUNCTION allocation._territory_owner_notice() IS 'internal: NOTICE that a direct change of a territory''s owner moves no existing customer (points at realignment)';
CREATE TRIGGER territory_owner_notice AFTER UPDATE OF owner_rep_id, owner_team_id ON allocation.territory
    FOR EACH ROW
    WHEN (OLD.owner_rep_id IS DISTINCT FROM NEW.owner_rep_id OR OLD.owner_team_id IS DISTINCT FROM NEW.owner_team_id)
    EXECUTE FUNCTION allocation._territory_owner_notice();

-------------------------------------------------------------------------------
-- Checks shared by every entry point
-------------------------------------------------------------------------------
-- The plan, for a manager; refuses NULL, unknown plans, other roles and (p_draft) plans
-- that are not drafts.  p_lock: the plan row is locked (FOR UPDATE NOWAIT when p_lock = 'nowait').
CREATE FUNCTION allocation._realign_plan(p_plan bigint, p_what text, p_draft boolean, p_lock text DEFAULT NULL)
RETURNS allocation.realign_plan
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    p allocation.realign_plan;
    v_actor text := allocation._actor();
BEGIN
    IF NOT allocation._is_manager(v_actor) THEN
        RAISE EXCEPTION 'role % may not %', v_actor, p_what USING ERRCODE = 'LA0R0',
              DETAIL = 'Realignment plans are staged, previewed and applied by managers and admins.',
              HINT = 'Ask a manager, or have an admin run allocation.grant_role(..., ''manager'').';
    END IF;
    IF p_plan IS NULL THEN
        RAISE EXCEPTION 'plan id must not be NULL' USING ERRCODE = '22004',
              DETAIL = format('allocation.%s was called with a NULL plan.', p_what),
              HINT = 'Pass the id allocation.realign_create() returned.';
    END IF;
    IF p_lock = 'nowait' THEN
        BEGIN
            SELECT * INTO p FROM allocation.realign_plan x WHERE x.id = p_plan FOR UPDATE NOWAIT;
        EXCEPTION WHEN lock_not_available THEN
            RAISE EXCEPTION 'realignment plan % is being applied by another session', p_plan USING ERRCODE = 'LA0R7',
                  DETAIL = 'Another transaction holds the plan while it applies a batch.',
                  HINT = 'Wait for it; allocation.realign_progress shows how far it got.';
        END;
    ELSIF p_lock IS NOT NULL THEN
        SELECT * INTO p FROM allocation.realign_plan x WHERE x.id = p_plan FOR UPDATE;
    ELSE
        SELECT * INTO p FROM allocation.realign_plan x WHERE x.id = p_plan;
    END IF;
    IF p.id IS NULL THEN
        RAISE EXCEPTION 'realignment plan % does not exist', p_plan USING ERRCODE = 'LA0R1',
              DETAIL = 'No row of allocation.realign_plan has that id.',
              HINT = 'SELECT id, name, status FROM allocation.realign_plan lists the plans.';
    END IF;
    IF p_draft AND p.status <> 'draft' THEN
        RAISE EXCEPTION 'realignment plan % is %', p_plan, p.status USING ERRCODE = 'LA0R2',
              DETAIL = CASE p.status WHEN 'applied' THEN format('It was applied at %s; an applied plan never changes.', p.applied_at)
                                     WHEN 'applying' THEN 'Its apply started; only CALL allocation.realign_apply() continues it.'
                                     ELSE 'A cancelled plan is kept as a record only.' END,
              HINT = 'Create a new plan with allocation.realign_create().';
    END IF;
    RETURN p;
END
$$;
COMMENT ON FUNCTION allocation._realign_plan(bigint, text, boolean, text) IS 'internal: the plan a realignment function names, after the caller (manager), NULL, existence and status checks';

-------------------------------------------------------------------------------
-- Staging
-------------------------------------------------------------------------------
CREATE FUNCTION allocation._realign_create(name text, reason text, claim_grace interval)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_actor text := allocation._actor();
    v_id bigint;
BEGIN
    IF NOT allocation._is_manager(v_actor) THEN
        RAISE EXCEPTION 'role % may not create a realignment plan', v_actor USING ERRCODE = 'LA0R0',
              DETAIL = 'Realignment plans are staged, previewed and applied by managers and admins.',
              HINT = 'Ask a manager, or have an admin run allocation.grant_role(..., ''manager'').';
    END IF;
    IF name IS NULL OR btrim(name) = '' THEN
        RAISE EXCEPTION 'a realignment plan needs a name' USING ERRCODE = '22004',
              DETAIL = 'allocation.realign_create() was called with a NULL or empty name.',
              HINT = 'Name it after what it does, e.g. ''2027 east-county split''.';
    END IF;
    IF claim_grace IS NULL OR claim_grace < interval '0' THEN
        RAISE EXCEPTION 'claim grace must be a non-negative interval' USING ERRCODE = '22023',
              DETAIL = format('allocation.realign_create() was called with claim_grace %s.', coalesce(claim_grace::text, 'NULL')),
              HINT = 'Pass e.g. interval ''30 days'' (customers claimed within it stay), or interval ''0''.';
    END IF;
    INSERT INTO allocation.realign_plan (name, created_by, reason, claim_grace)
    VALUES (name, v_actor, reason, claim_grace) RETURNING id INTO v_id;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION allocation._realign_create(text, text, interval) IS 'internal: implementation of allocation.realign_create(), run as the extension owner by its gateway';
CREATE FUNCTION allocation.realign_create(name text, reason text DEFAULT NULL, claim_grace interval DEFAULT interval '30 days')
RETURNS bigint
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.realign_create(text, text, interval) IS
'Creates a draft realignment plan (managers); customers claimed less than claim_grace ago stay with their claimer';

-- A staged shape: a valid, non-empty (Multi)Polygon in EPSG:4326, as a MultiPolygon.  Created
-- with PostGIS's schema written into its body: functions run as the extension owner never
-- search that schema (see 90_privileges.sql).
DO $do$
DECLARE
    pg name := (SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
                 WHERE e.extname = 'postgis');
BEGIN
    EXECUTE format($f$
CREATE FUNCTION allocation._realign_shape(g %1$I.geometry, p_code text)
RETURNS %1$I.geometry
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS
$b$
BEGIN
    IF %1$I.st_srid(g) <> 4326 OR %1$I.geometrytype(g) NOT IN ('POLYGON', 'MULTIPOLYGON') OR %1$I.st_isempty(g)
       OR NOT %1$I.st_isvalid(g) THEN
        RAISE EXCEPTION 'the staged shape of territory %% is not a valid polygon in EPSG:4326', p_code USING ERRCODE = 'LA0R4',
              DETAIL = format('Got a %%s with SRID %%s%%s.', %1$I.geometrytype(g), %1$I.st_srid(g),
                              CASE WHEN NOT %1$I.st_isvalid(g) THEN ' that is not valid: ' || %1$I.st_isvalidreason(g) ELSE '' END),
              HINT = 'Pass a non-empty, valid (Multi)Polygon with SRID 4326 (ST_Transform / ST_MakeValid first).';
    END IF;
    RETURN %1$I.st_multi(g);
END
$b$$f$, pg);
    EXECUTE format($f$
CREATE FUNCTION allocation._realign_point_json(p text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS
$b$ SELECT %1$I.st_asgeojson(%1$I.st_transform(p::%1$I.geometry, 4326), 7)::jsonb $b$$f$, pg);
END
$do$;
COMMENT ON FUNCTION allocation._realign_point_json IS 'internal: a customer location (text form of any SRID) as GeoJSON in EPSG:4326';
COMMENT ON FUNCTION allocation._realign_shape IS 'internal: a staged territory shape checked (valid, non-empty polygon in EPSG:4326) and made a MultiPolygon';

CREATE FUNCTION allocation._realign_stage_territory(plan_id bigint, territory text, geom geometry, owner_rep bigint,
                                                    owner_team bigint, priority integer, exclusive boolean,
                                                    clear_owner boolean)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    p allocation.realign_plan := allocation._realign_plan(plan_id, 'realign_stage_territory()', true, 'lock');
    t allocation.territory;
    g allocation.territory.geom%TYPE;
BEGIN
    IF territory IS NULL THEN
        RAISE EXCEPTION 'territory must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.realign_stage_territory() was called with a NULL territory code.', HINT = 'Pass the territory''s code.';
    END IF;
    SELECT * INTO t FROM allocation.territory x WHERE x.code = territory;
    IF t.id IS NULL THEN
        RAISE EXCEPTION 'territory % does not exist', territory USING ERRCODE = 'LA0R3',
              DETAIL = 'No row of allocation.territory has that code.', HINT = 'Stage changes of existing territories (create new ones with import_territories()).';
    END IF;
    IF owner_rep IS NOT NULL AND owner_team IS NOT NULL OR clear_owner AND (owner_rep IS NOT NULL OR owner_team IS NOT NULL) THEN
        RAISE EXCEPTION 'a territory has one owner: a rep, a team or none' USING ERRCODE = 'LA0R4',
              DETAIL = format('Territory %s was staged with owner rep %s, owner team %s and clear_owner %s.', territory,
                              coalesce(owner_rep::text, 'NULL'), coalesce(owner_team::text, 'NULL'), coalesce(clear_owner, false)),
              HINT = 'Pass owner_rep, or owner_team, or clear_owner => true.';
    END IF;
    IF owner_rep IS NOT NULL AND NOT EXISTS (SELECT 1 FROM allocation.rep r WHERE r.id = owner_rep) THEN
        RAISE EXCEPTION 'rep % does not exist', owner_rep USING ERRCODE = 'LA0R3',
              DETAIL = 'The staged owner is not in allocation.rep.', HINT = 'Use the id of an existing rep.';
    END IF;
    IF owner_team IS NOT NULL AND NOT EXISTS (SELECT 1 FROM allocation.team x WHERE x.id = owner_team) THEN
        RAISE EXCEPTION 'team % does not exist', owner_team USING ERRCODE = 'LA0R3',
              DETAIL = 'The staged owner team is not in allocation.team.', HINT = 'Use the id of an existing team.';
    END IF;
    IF geom IS NOT NULL THEN
        g := allocation._realign_shape(geom, territory);
    END IF;
    IF g IS NULL AND NOT coalesce(clear_owner, false) AND owner_rep IS NULL AND owner_team IS NULL
       AND priority IS NULL AND exclusive IS NULL THEN
        RAISE EXCEPTION 'nothing to stage for territory %', territory USING ERRCODE = 'LA0R4',
              DETAIL = 'No new shape, owner, priority or exclusive flag was given.', HINT = 'Pass at least one change.';
    END IF;
    INSERT INTO allocation.realign_territory AS s (plan_id, territory_id, new_geom, set_owner, new_owner_rep_id, new_owner_team_id,
                                                   new_priority, new_exclusive, old_geom, old_owner_rep_id, old_owner_team_id,
                                                   old_priority, old_exclusive, staged_by)
    VALUES (p.id, t.id, g, coalesce(clear_owner, false) OR owner_rep IS NOT NULL OR owner_team IS NOT NULL, owner_rep, owner_team,
            priority, exclusive, t.geom, t.owner_rep_id, t.owner_team_id, t.priority, t.exclusive, allocation._actor())
    ON CONFLICT ON CONSTRAINT realign_territory_pkey DO UPDATE
       SET new_geom = coalesce(EXCLUDED.new_geom, s.new_geom),
           set_owner = s.set_owner OR EXCLUDED.set_owner,
           new_owner_rep_id = CASE WHEN EXCLUDED.set_owner THEN EXCLUDED.new_owner_rep_id ELSE s.new_owner_rep_id END,
           new_owner_team_id = CASE WHEN EXCLUDED.set_owner THEN EXCLUDED.new_owner_team_id ELSE s.new_owner_team_id END,
           new_priority = coalesce(EXCLUDED.new_priority, s.new_priority),
           new_exclusive = coalesce(EXCLUDED.new_exclusive, s.new_exclusive),
           staged_by = EXCLUDED.staged_by, staged_at = EXCLUDED.staged_at;
END
$$;
COMMENT ON FUNCTION allocation._realign_stage_territory(bigint, text, geometry, bigint, bigint, integer, boolean, boolean) IS 'internal: implementation of allocation.realign_stage_territory(), run as the extension owner by its gateway';
CREATE FUNCTION allocation.realign_stage_territory(plan_id bigint, territory text, geom geometry DEFAULT NULL,
                                                   owner_rep bigint DEFAULT NULL, owner_team bigint DEFAULT NULL,
                                                   priority integer DEFAULT NULL, exclusive boolean DEFAULT NULL,
                                                   clear_owner boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.realign_stage_territory(bigint, text, geometry, bigint, bigint, integer, boolean, boolean) IS
'Stages a territory change in a draft plan (managers): new shape, owner rep or team (clear_owner: none), priority, exclusive flag; staging again merges';

CREATE FUNCTION allocation._realign_stage_rule(plan_id bigint, rule_id bigint, definition jsonb)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    p allocation.realign_plan := allocation._realign_plan(plan_id, 'realign_stage_rule()', true, 'lock');
    r allocation.rule;
    v_seq integer;
    v_bad text;
    v_def jsonb := definition;
    v_state text;
    v_msg text;
    v_tbl regclass;
    v_cond text;
    v_prev allocation.rule;
    v_earlier jsonb;
BEGIN
    IF definition IS NULL OR jsonb_typeof(definition) <> 'object' OR definition = '{}' THEN
        RAISE EXCEPTION 'a staged rule needs a definition object' USING ERRCODE = '22004',
              DETAIL = 'allocation.realign_stage_rule() was called with a NULL, empty or non-object definition.',
              HINT = 'Pass the rule''s columns, e.g. ''{"name": "east", "target_kind": "rep", "target_rep_id": 3}'', or ''{"enabled": false}'' for an existing rule.';
    END IF;
    SELECT string_agg(k, ', ') INTO v_bad FROM jsonb_object_keys(definition) k
     WHERE k NOT IN ('name', 'priority', 'enabled', 'mode', 'tbl', 'territory_id', 'crops', 'crop_zones', 'tiers',
                     'business_types', 'tags', 'condition', 'condition_search_path', 'target_kind', 'target_rep_id',
                     'target_team_id', 'policy', 'description');
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'unknown rule column(s) %', v_bad USING ERRCODE = 'LA0R4',
              DETAIL = 'A staged rule names columns of allocation.rule a person may set.',
              HINT = 'Use name, priority, enabled, mode, tbl, territory_id, crops, crop_zones, tiers, business_types, tags, condition, condition_search_path, target_kind, target_rep_id, target_team_id, policy, description.';
    END IF;
    IF rule_id IS NOT NULL THEN
        SELECT * INTO r FROM allocation.rule x WHERE x.id = rule_id;
        IF r.id IS NULL THEN
            RAISE EXCEPTION 'rule % does not exist', rule_id USING ERRCODE = 'LA0R3',
                  DETAIL = 'No row of allocation.rule has that id.', HINT = 'Pass NULL as rule_id to stage a new rule.';
        END IF;
    END IF;
    -- a condition's names resolve under its search path (the gateway's is pinned)
    IF v_def ? 'condition' AND NOT v_def ? 'condition_search_path' THEN
        v_def := v_def || jsonb_build_object('condition_search_path', '"$user", public');
    END IF;
    -- validated now as it will be applied (rule_before: the condition compiles), then undone
    BEGIN
        PERFORM allocation._realign_put_rule(rule_id, v_def);
        RAISE EXCEPTION USING ERRCODE = 'LA0R9', MESSAGE = 'undo';
    EXCEPTION
        WHEN SQLSTATE 'LA0R9' THEN NULL;
        WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
            RAISE EXCEPTION 'the staged rule is not valid: %', v_msg USING ERRCODE = 'LA0R4',
                  DETAIL = format('Saving it would fail with SQLSTATE %s.', v_state),
                  HINT = 'Fix the definition (allocation.rule''s columns and checks apply; qualify tbl, e.g. public.customer).';
    END;
    -- a condition runs as its table's owner: like a rule saved directly (rules.c), only that
    -- owner may give a rule a condition, or change what an existing condition means (its text,
    -- table or search path); the apply and the preview write the rule as the extension owner,
    -- which passes the trigger's own check on any table.  Other changes of a rule that has a
    -- condition (enabled, priority, target...) stay a manager's.
    -- (compared with the rule as this plan's earlier staged changes leave it)
    v_prev := r;
    IF r.id IS NOT NULL THEN
        FOR v_earlier IN SELECT x.definition FROM allocation.realign_rule x
                          WHERE x.plan_id = p.id AND x.rule_id = r.id ORDER BY x.seq LOOP
            v_prev := jsonb_populate_record(v_prev, v_earlier);
        END LOOP;
    END IF;
    SELECT n.tbl, n.condition INTO v_tbl, v_cond
      FROM jsonb_populate_record(CASE WHEN r.id IS NULL THEN NULL::allocation.rule ELSE v_prev END, v_def) n;
    IF v_cond IS NOT NULL
       AND (r.id IS NULL OR v_cond IS DISTINCT FROM v_prev.condition OR v_tbl IS DISTINCT FROM v_prev.tbl
            OR (v_def ? 'condition_search_path' AND v_def ->> 'condition_search_path' IS DISTINCT FROM v_prev.condition_search_path))
       AND NOT coalesce(allocation._caller_owns(v_tbl), false) THEN
        RAISE EXCEPTION 'must be owner of table % to stage a rule with a condition on it', v_tbl USING ERRCODE = '42501',
              DETAIL = format('A rule condition runs as the table''s owner; role %s does not own %s (nor is it a member of its owner).',
                              allocation._actor(), v_tbl),
              HINT = 'Ask the table''s owner to stage the rule, or stage it without a condition.';
    END IF;
    SELECT coalesce(max(x.seq), 0) + 1 INTO v_seq FROM allocation.realign_rule x WHERE x.plan_id = p.id;
    INSERT INTO allocation.realign_rule (plan_id, seq, rule_id, definition, before, staged_by)
    VALUES (p.id, v_seq, rule_id, v_def,
            CASE WHEN r.id IS NOT NULL THEN to_jsonb(r) - ARRAY['condition_bin', 'condition_stamp', 'updated_at'] END,
            allocation._actor());
    RETURN v_seq;
END
$$;
COMMENT ON FUNCTION allocation._realign_stage_rule(bigint, bigint, jsonb) IS 'internal: implementation of allocation.realign_stage_rule(), run as the extension owner by its gateway';
CREATE FUNCTION allocation.realign_stage_rule(plan_id bigint, rule_id bigint, definition jsonb)
RETURNS integer
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.realign_stage_rule(bigint, bigint, jsonb) IS
'Stages a rule change in a draft plan (managers): rule_id NULL = a new rule (definition = its columns), else the columns to change ({"enabled": false} disables it); validated now, applied in order';

-- Writes one staged rule (new: INSERT; existing: the definition's columns over the row)
CREATE FUNCTION allocation._realign_put_rule(p_rule bigint, p_def jsonb)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    IF p_rule IS NULL THEN
        INSERT INTO allocation.rule (name, priority, enabled, mode, tbl, territory_id, crops, crop_zones, tiers, business_types,
                                     tags, condition, condition_search_path, target_kind, target_rep_id, target_team_id,
                                     policy, description)
        SELECT n.name, coalesce(n.priority, 0), coalesce(n.enabled, true), coalesce(n.mode, 'auto'), n.tbl, n.territory_id,
               n.crops, n.crop_zones, n.tiers, n.business_types, n.tags, n.condition, n.condition_search_path,
               n.target_kind, n.target_rep_id, n.target_team_id, n.policy, n.description
          FROM jsonb_populate_record(NULL::allocation.rule, p_def) n;
    ELSE
        UPDATE allocation.rule r
           SET (name, priority, enabled, mode, tbl, territory_id, crops, crop_zones, tiers, business_types, tags, condition,
                condition_search_path, target_kind, target_rep_id, target_team_id, policy, description, updated_at) =
               (SELECT n.name, n.priority, n.enabled, n.mode, n.tbl, n.territory_id, n.crops, n.crop_zones, n.tiers,
                       n.business_types, n.tags, n.condition, n.condition_search_path, n.target_kind, n.target_rep_id,
                       n.target_team_id, n.policy, n.description, now()
                  FROM jsonb_populate_record(r, p_def) n)
         WHERE r.id = p_rule;
    END IF;
END
$$;
COMMENT ON FUNCTION allocation._realign_put_rule(bigint, jsonb) IS 'internal: writes one staged rule change';

CREATE FUNCTION allocation._realign_stage_rep(plan_id bigint, rep_id bigint, capacity integer, active boolean, unlimited boolean)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    p allocation.realign_plan := allocation._realign_plan(plan_id, 'realign_stage_rep()', true, 'lock');
    r allocation.rep;
BEGIN
    IF rep_id IS NULL THEN
        RAISE EXCEPTION 'rep must not be NULL' USING ERRCODE = '22004',
              DETAIL = 'allocation.realign_stage_rep() was called with a NULL rep.', HINT = 'Pass the rep''s id.';
    END IF;
    SELECT * INTO r FROM allocation.rep x WHERE x.id = rep_id;
    IF r.id IS NULL THEN
        RAISE EXCEPTION 'rep % does not exist', rep_id USING ERRCODE = 'LA0R3',
              DETAIL = 'No row of allocation.rep has that id.', HINT = 'Use the id of an existing rep.';
    END IF;
    IF capacity < 0 OR (capacity IS NOT NULL AND coalesce(unlimited, false))
       OR (capacity IS NULL AND active IS NULL AND NOT coalesce(unlimited, false)) THEN
        RAISE EXCEPTION 'nothing valid to stage for rep %', r.code USING ERRCODE = 'LA0R4',
              DETAIL = format('Got capacity %s, active %s, unlimited %s.', coalesce(capacity::text, 'NULL'),
                              coalesce(active::text, 'NULL'), coalesce(unlimited, false)),
              HINT = 'Pass a capacity >= 0, or unlimited => true, and/or active.';
    END IF;
    INSERT INTO allocation.realign_rep AS s (plan_id, rep_id, set_capacity, new_capacity, new_active, old_capacity, old_active, staged_by)
    VALUES (p.id, r.id, capacity IS NOT NULL OR coalesce(unlimited, false), capacity, active, r.capacity, r.active, allocation._actor())
    ON CONFLICT ON CONSTRAINT realign_rep_pkey DO UPDATE
       SET set_capacity = s.set_capacity OR EXCLUDED.set_capacity,
           new_capacity = CASE WHEN EXCLUDED.set_capacity THEN EXCLUDED.new_capacity ELSE s.new_capacity END,
           new_active = coalesce(EXCLUDED.new_active, s.new_active),
           staged_by = EXCLUDED.staged_by, staged_at = EXCLUDED.staged_at;
END
$$;
COMMENT ON FUNCTION allocation._realign_stage_rep(bigint, bigint, integer, boolean, boolean) IS 'internal: implementation of allocation.realign_stage_rep(), run as the extension owner by its gateway';
CREATE FUNCTION allocation.realign_stage_rep(plan_id bigint, rep_id bigint, capacity integer DEFAULT NULL,
                                             active boolean DEFAULT NULL, unlimited boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.realign_stage_rep(bigint, bigint, integer, boolean, boolean) IS
'Stages a rep change in a draft plan (managers): capacity (unlimited => true: no limit) and/or active';

CREATE FUNCTION allocation._realign_cancel(plan_id bigint, reason text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    p allocation.realign_plan := allocation._realign_plan(plan_id, 'realign_cancel()', true, 'lock');
BEGIN
    UPDATE allocation.realign_plan x SET status = 'cancelled', reason = coalesce(_realign_cancel.reason, x.reason)
     WHERE x.id = p.id;
END
$$;
COMMENT ON FUNCTION allocation._realign_cancel(bigint, text) IS 'internal: implementation of allocation.realign_cancel(), run as the extension owner by its gateway';
CREATE FUNCTION allocation.realign_cancel(plan_id bigint, reason text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.realign_cancel(bigint, text) IS 'Cancels a draft plan (managers); it is kept as a record';

-------------------------------------------------------------------------------
-- Configuring: the staged changes written (preview: in a subtransaction rolled back)
-------------------------------------------------------------------------------
CREATE FUNCTION allocation._realign_configure(p_plan bigint)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_code text;
    v_rule record;
BEGIN
    -- what was staged must still be what is there (nobody changed it since)
    SELECT t.code INTO v_code
      FROM allocation.realign_territory s JOIN allocation.territory t ON t.id = s.territory_id
     WHERE s.plan_id = p_plan
       AND (t.geom::text IS DISTINCT FROM s.old_geom::text AND s.new_geom IS NOT NULL
            OR s.set_owner AND (t.owner_rep_id IS DISTINCT FROM s.old_owner_rep_id OR t.owner_team_id IS DISTINCT FROM s.old_owner_team_id)
            OR t.priority IS DISTINCT FROM s.old_priority AND s.new_priority IS NOT NULL
            OR t.exclusive IS DISTINCT FROM s.old_exclusive AND s.new_exclusive IS NOT NULL)
     LIMIT 1;
    IF v_code IS NULL THEN
        SELECT 'rule ' || r.name INTO v_code
          FROM allocation.realign_rule s JOIN allocation.rule r ON r.id = s.rule_id
         WHERE s.plan_id = p_plan AND s.before IS DISTINCT FROM to_jsonb(r) - ARRAY['condition_bin', 'condition_stamp', 'updated_at']
         LIMIT 1;
    END IF;
    IF v_code IS NULL THEN
        SELECT 'rep ' || r.code INTO v_code
          FROM allocation.realign_rep s JOIN allocation.rep r ON r.id = s.rep_id
         WHERE s.plan_id = p_plan
           AND (s.set_capacity AND r.capacity IS DISTINCT FROM s.old_capacity OR s.new_active IS NOT NULL AND r.active <> s.old_active)
         LIMIT 1;
    ELSIF v_code NOT LIKE 'rule %' THEN
        v_code := 'territory ' || v_code;
    END IF;
    IF v_code IS NOT NULL THEN
        RAISE EXCEPTION '% changed since it was staged in realignment plan %', v_code, p_plan USING ERRCODE = 'LA0R5',
              DETAIL = 'The plan would overwrite a change made after it was staged.',
              HINT = 'Cancel the plan and stage a new one from the current configuration.';
    END IF;
    PERFORM allocation._realign_quiet(true);
    UPDATE allocation.rep r
       SET capacity = CASE WHEN s.set_capacity THEN s.new_capacity ELSE r.capacity END,
           active = coalesce(s.new_active, r.active)
      FROM allocation.realign_rep s WHERE s.plan_id = p_plan AND r.id = s.rep_id;
    UPDATE allocation.territory t
       SET geom = coalesce(s.new_geom, t.geom),
           owner_rep_id = CASE WHEN s.set_owner THEN s.new_owner_rep_id ELSE t.owner_rep_id END,
           owner_team_id = CASE WHEN s.set_owner THEN s.new_owner_team_id ELSE t.owner_team_id END,
           priority = coalesce(s.new_priority, t.priority),
           exclusive = coalesce(s.new_exclusive, t.exclusive)
      FROM allocation.realign_territory s WHERE s.plan_id = p_plan AND t.id = s.territory_id;
    FOR v_rule IN SELECT * FROM allocation.realign_rule x WHERE x.plan_id = p_plan ORDER BY x.seq LOOP
        PERFORM allocation._realign_put_rule(v_rule.rule_id, v_rule.definition);
    END LOOP;
    PERFORM allocation._realign_quiet(false);
END
$$;
COMMENT ON FUNCTION allocation._realign_configure(bigint) IS 'internal: writes a plan''s staged reps, territories and rules (refuses when any changed since it was staged)';

-- Why a customer stays whatever the rules say (first reason), for the keys given (NULL: every
-- customer with a reason); one implementation for the preview and the apply's re-check
CREATE FUNCTION allocation._realign_stays(p_managed integer, p_keys text[], p_grace interval)
RETURNS TABLE (key text, reason text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    -- the keys filter sits in every branch, so one customer costs a few index probes (plpgsql
    -- plans it with the actual arguments: p_keys IS NULL folds away)
    RETURN QUERY
    SELECT DISTINCT ON (x.key) x.key, x.reason
      FROM (SELECT s.key, 1 AS pri,
                   'pinned: ' || CASE s.source WHEN 'claim' THEN format('claimed by rep %s (a claim pins)', r.code)
                                               WHEN 'transfer' THEN format('transferred to rep %s (a transfer pins)', r.code)
                                               WHEN 'dispute' THEN 'ownership settled by a dispute'
                                               WHEN 'suggestion' THEN 'a manager accepted a suggestion'
                                               ELSE 'its owner was set by hand (allocation.assign)' END AS reason
              FROM allocation.customer_state s LEFT JOIN allocation.rep r ON r.id = s.rep_id
             WHERE s.managed_id = p_managed AND s.pinned AND (p_keys IS NULL OR s.key = ANY (p_keys))
            UNION ALL
            SELECT l.key, 2, format('locked by %s: %s', l.locked_by, l.reason)
              FROM allocation.customer_lock l WHERE l.managed_id = p_managed AND (p_keys IS NULL OR l.key = ANY (p_keys))
            UNION ALL
            SELECT d.key, 3, format('under ownership dispute %s', d.id)
              FROM allocation.ownership_dispute d WHERE d.managed_id = p_managed AND d.status = 'open' AND (p_keys IS NULL OR d.key = ANY (p_keys))
            UNION ALL
            SELECT d.key, 4, format('disputed as a possible duplicate of customer %s', d.other_key)
              FROM allocation.duplicate d WHERE d.managed_id = p_managed AND d.status = 'open' AND d.action = 'dispute'
               AND (p_keys IS NULL OR d.key = ANY (p_keys))
            UNION ALL
            SELECT pr.key, 5, format('protected for rep %s until %s (registration protection)', r.code,
                                     to_char(pr.until, 'YYYY-MM-DD'))
              FROM allocation.protection pr JOIN allocation.rep r ON r.id = pr.rep_id
             WHERE pr.managed_id = p_managed AND pr.until > now() AND (p_keys IS NULL OR pr.key = ANY (p_keys))
            UNION ALL
            SELECT s.key, 0, format('claimed by rep %s on %s, within the plan''s claim grace of %s', r.code,
                                    to_char(s.valid_from, 'YYYY-MM-DD'), p_grace)
              FROM allocation.customer_state s JOIN allocation.rep r ON r.id = s.rep_id
             WHERE s.managed_id = p_managed AND s.source = 'claim' AND s.valid_from > now() - p_grace
               AND (p_keys IS NULL OR s.key = ANY (p_keys))
            UNION ALL
            SELECT v.key, 7, format('in virtual team %s', t.name)
              FROM allocation.virtual_team_customer v JOIN allocation.virtual_team t ON t.id = v.team_id
             WHERE v.managed_id = p_managed AND v.valid_to IS NULL AND t.dissolved_at IS NULL AND (p_keys IS NULL OR v.key = ANY (p_keys))
            UNION ALL
            SELECT x.key, 8, format('a transfer to rep %s is pending (transfer %s)', r.code, x.id)
              FROM allocation.transfer x JOIN allocation.rep r ON r.id = x.to_rep
             WHERE x.managed_id = p_managed AND x.status = 'pending' AND (p_keys IS NULL OR x.key = ANY (p_keys))

           ) x
     ORDER BY x.key, x.pri;
END
$$;
COMMENT ON FUNCTION allocation._realign_stays(integer, text[], interval) IS 'internal: why customers stay in a realignment whatever the rules say (pinned, locked, disputed, protected, recently claimed, in a virtual team, pending transfer; a new rep''s ramp-up is _realign_ramp_up)';

-- Until when a rep is in its new-rep ramp-up (allocation.new_rep_policy), NULL when it is not:
-- its customers stay with it
CREATE FUNCTION allocation._realign_ramp_up(p_rep bigint)
RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS
$$
    SELECT r.created_at + np.ramp_up
      FROM allocation.rep r
      CROSS JOIN LATERAL (SELECT n.ramp_up FROM allocation.new_rep_policy n
                           WHERE n.team_id = r.team_id OR n.team_id IS NULL
                           ORDER BY n.team_id NULLS LAST LIMIT 1) np
     WHERE r.id = p_rep AND r.created_at + np.ramp_up > now()
$$;
COMMENT ON FUNCTION allocation._realign_ramp_up(bigint) IS 'internal: end of a rep''s new-rep ramp-up (NULL when not in one): a realignment leaves its customers with it';


-- Realignment (issue 15), part 2: preview, apply, progress, GeoJSON (part 1: 88_realign.sql)

-------------------------------------------------------------------------------
-- Preview
-------------------------------------------------------------------------------
CREATE TYPE allocation._realign_row AS (
    ord          bigint,
    managed_id   integer,
    key          text,
    from_rep     bigint,
    outcome      text,      -- assign, pool, suggest
    to_rep       bigint,
    rule_id      bigint,
    territory_id bigint,
    reason       text,      -- the decision's
    stays        text       -- why it stays (NULL: it moves)
);
COMMENT ON TYPE allocation._realign_row IS 'internal: one customer a realignment would move, or that stays with the reason';

-- Every customer whose decision under the configuration now visible differs from its
-- owner, and why it stays when it does (the C scan: the trigger's decision code)
CREATE FUNCTION allocation._realign_decide(p allocation.realign_plan)
RETURNS SETOF allocation._realign_row
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_ids integer[];
    v_keys text[];
    v_reasons text[];
    v_reps bigint[];
    v_until timestamptz[];
BEGIN
    -- the customers that stay whatever the rules say, read once (the exception tables are small)
    SELECT array_agg(m.id), array_agg(s.key), array_agg(s.reason) INTO v_ids, v_keys, v_reasons
      FROM allocation.managed_table m CROSS JOIN LATERAL allocation._realign_stays(m.id, NULL, p.claim_grace) s
     WHERE m.active;
    -- and those held by new reps in their ramp-up (by owner)
    SELECT array_agg(r.id), array_agg(u.until) INTO v_reps, v_until
      FROM allocation.rep r CROSS JOIN LATERAL (SELECT allocation._realign_ramp_up(r.id) AS until) u
     WHERE u.until IS NOT NULL;
    RETURN QUERY
    WITH d AS MATERIALIZED (SELECT * FROM allocation._realign_scan(v_ids, v_keys, v_reps)),
         st AS (SELECT * FROM unnest(v_ids, v_keys, v_reasons) AS x(managed_id, key, reason)),
         ru AS (SELECT * FROM unnest(v_reps, v_until) AS x(rep_id, until))
    SELECT d.ord, d.managed_id, d.key, d.from_rep, d.outcome, d.to_rep, d.rule_id, d.territory_id, d.reason,
           CASE WHEN d.outcome = 'suggest'
                THEN format('rule %s is review-mode: it suggests rep %s (allocation.accept_suggestion decides)',
                            (SELECT r.name FROM allocation.rule r WHERE r.id = d.rule_id),
                            (SELECT x.code FROM allocation.rep x WHERE x.id = d.to_rep))
                WHEN d.simulated THEN NULL
                WHEN st.reason IS NOT NULL THEN st.reason
                ELSE format('held by new rep %s in its ramp-up until %s (new-rep policy)',
                            (SELECT x.code FROM allocation.rep x WHERE x.id = d.from_rep), to_char(ru.until, 'YYYY-MM-DD'))
           END
      FROM d
      LEFT JOIN st ON st.managed_id = d.managed_id AND st.key = d.key
      LEFT JOIN ru ON ru.rep_id = d.from_rep;
END
$$;
COMMENT ON FUNCTION allocation._realign_decide(allocation.realign_plan) IS 'internal: the customers a realignment moves and those that stay, under the configuration now visible';

-- The plan's staged configuration is written in a subtransaction, every customer decided
-- again, and the subtransaction rolled back: nothing stays, nothing reaches other sessions
CREATE FUNCTION allocation._realign_compute(p_plan bigint, p_what text)
RETURNS SETOF allocation._realign_row
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    p allocation.realign_plan := allocation._realign_plan(p_plan, p_what, false);
    v_rows allocation._realign_row[];
BEGIN
    IF p.status <> 'draft' THEN
        RAISE EXCEPTION 'realignment plan % is %', p_plan, p.status USING ERRCODE = 'LA0R2',
              DETAIL = CASE p.status WHEN 'cancelled' THEN 'A cancelled plan is kept as a record only.'
                            ELSE 'A preview shows what a draft would do; this plan''s configuration is already written.' END,
              HINT = CASE p.status WHEN 'cancelled' THEN 'Create a new plan with allocation.realign_create().'
                          ELSE 'allocation.realign_item and allocation.realign_progress show what its apply did.' END;
    END IF;
    BEGIN
        PERFORM allocation._realign_configure(p.id);
        SELECT array_agg(r ORDER BY r.ord) INTO v_rows FROM allocation._realign_decide(p) r;
        RAISE EXCEPTION USING ERRCODE = 'LA0R9', MESSAGE = 'realignment preview: undo';
    EXCEPTION WHEN SQLSTATE 'LA0R9' THEN
        NULL;
    END;
    RETURN QUERY SELECT * FROM unnest(v_rows);
END
$$;
COMMENT ON FUNCTION allocation._realign_compute(bigint, text) IS 'internal: a draft plan''s decisions, computed with its configuration in a subtransaction that is rolled back';

CREATE FUNCTION allocation._realign_preview(plan_id bigint)
RETURNS TABLE (table_name text, key text, outcome text, from_rep bigint, from_rep_code text, to_rep bigint,
               to_rep_code text, rule_id bigint, rule_name text, territory_id bigint, territory_code text, reason text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    p allocation.realign_plan := allocation._realign_plan(plan_id, 'realign_preview()', false);
BEGIN
    RETURN QUERY
    WITH c AS MATERIALIZED (SELECT * FROM allocation._realign_compute(p.id, 'realign_preview()'))
    SELECT m.table_name, c.key,
           CASE WHEN c.stays IS NOT NULL THEN 'stays' ELSE 'moves' END,
           c.from_rep, f.code, c.to_rep, t.code, c.rule_id, r.name, c.territory_id, tr.code,
           CASE WHEN c.stays IS NOT NULL THEN 'stays, because ' || c.stays ELSE c.reason END
      FROM c
      JOIN allocation.managed_table m ON m.id = c.managed_id
      LEFT JOIN allocation.rep f ON f.id = c.from_rep
      LEFT JOIN allocation.rep t ON t.id = c.to_rep
      LEFT JOIN allocation.rule r ON r.id = c.rule_id
      LEFT JOIN allocation.territory tr ON tr.id = c.territory_id
     ORDER BY c.ord;
END
$$;
COMMENT ON FUNCTION allocation._realign_preview(bigint) IS 'internal: implementation of allocation.realign_preview(), run as the extension owner by its gateway';
CREATE FUNCTION allocation.realign_preview(plan_id bigint)
RETURNS TABLE (table_name text, key text, outcome text, from_rep bigint, from_rep_code text, to_rep bigint,
               to_rep_code text, rule_id bigint, rule_name text, territory_id bigint, territory_code text, reason text)
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.realign_preview(bigint) IS
'Every customer a draft plan would move (outcome moves: from -> to, rule, territory, reason) and every one that stays, with the reason (pinned, locked, disputed, protected, claimed within the grace, virtual team, pending transfer, new rep, review-mode rule); decided by the trigger''s own code, nothing changed (managers)';

CREATE FUNCTION allocation._realign_preview_reps(plan_id bigint)
RETURNS TABLE (rep_id bigint, rep_code text, held_before integer, moving_out integer, moving_in integer, held_after integer,
               capacity_before integer, capacity_after integer, active_after boolean, over_capacity boolean, note text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    p allocation.realign_plan := allocation._realign_plan(plan_id, 'realign_preview_reps()', false);
BEGIN
    RETURN QUERY
    WITH c AS MATERIALIZED (SELECT * FROM allocation._realign_compute(p.id, 'realign_preview_reps()') x
                             WHERE x.stays IS NULL),
         o AS (SELECT c.from_rep AS rep, count(*)::integer AS n FROM c WHERE c.from_rep IS NOT NULL GROUP BY 1),
         i AS (SELECT c.to_rep AS rep, count(*)::integer AS n FROM c WHERE c.to_rep IS NOT NULL GROUP BY 1)
    SELECT r.id, r.code, coalesce(l.held, 0), coalesce(o.n, 0), coalesce(i.n, 0),
           coalesce(l.held, 0) - coalesce(o.n, 0) + coalesce(i.n, 0),
           r.capacity, CASE WHEN s.set_capacity THEN s.new_capacity ELSE r.capacity END,
           coalesce(s.new_active, r.active),
           coalesce(coalesce(l.held, 0) - coalesce(o.n, 0) + coalesce(i.n, 0) >
                    CASE WHEN s.set_capacity THEN s.new_capacity ELSE r.capacity END, false),
           concat_ws('; ',
                     CASE WHEN coalesce(l.held, 0) - coalesce(o.n, 0) + coalesce(i.n, 0) >
                               CASE WHEN s.set_capacity THEN s.new_capacity ELSE r.capacity END
                          THEN 'over its capacity after the plan (the plan lowers it below what the rep keeps)' END,
                     CASE WHEN NOT coalesce(s.new_active, r.active) AND coalesce(l.held, 0) - coalesce(o.n, 0) > 0
                          THEN 'inactive after the plan but still holds customers' END)
      FROM allocation.rep r
      LEFT JOIN allocation.rep_load l ON l.rep_id = r.id
      LEFT JOIN allocation.realign_rep s ON s.plan_id = p.id AND s.rep_id = r.id
      LEFT JOIN o ON o.rep = r.id
      LEFT JOIN i ON i.rep = r.id
     WHERE o.n IS NOT NULL OR i.n IS NOT NULL OR s.rep_id IS NOT NULL
     ORDER BY r.id;
END
$$;
COMMENT ON FUNCTION allocation._realign_preview_reps(bigint) IS 'internal: implementation of allocation.realign_preview_reps(), run as the extension owner by its gateway';
CREATE FUNCTION allocation.realign_preview_reps(plan_id bigint)
RETURNS TABLE (rep_id bigint, rep_code text, held_before integer, moving_out integer, moving_in integer, held_after integer,
               capacity_before integer, capacity_after integer, active_after boolean, over_capacity boolean, note text)
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.realign_preview_reps(bigint) IS
'Per rep touched by a draft plan: holdings before and after its moves, capacity before and after, and capacity conflicts (managers)';

-------------------------------------------------------------------------------
-- Apply
-------------------------------------------------------------------------------
-- One listed customer, under its row lock: stays (a reason now, or it changed hands since
-- it was listed), or decided again by the rules through its row trigger
CREATE FUNCTION allocation._realign_move_item(p allocation.realign_plan, m allocation.managed_table, it allocation.realign_item)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_found boolean;
    v_owner bigint;
    v_stay text;
    v_res record;
BEGIN
    -- under the customer's row lock: what changed since the list was made counts
    SELECT l.row_found, l.row_owner INTO v_found, v_owner FROM allocation._lock_customer_row(m, it.key, false) l;
    IF v_found IS NULL THEN
        UPDATE allocation.realign_item i SET status = 'gone', reason = 'the customer row was deleted', done_at = clock_timestamp()
         WHERE i.plan_id = p.id AND i.ord = it.ord;
        RETURN;
    END IF;
    -- both reps' counters in id order (the engine's ordered-locking rule; the rules may still
    -- choose another rep, whose counter the trigger then takes), BEFORE the stay re-check:
    -- _lock_counter may wait, and a stay reason that is not ordered by the row lock (a
    -- customer lock, a virtual team link) committed meanwhile must still keep the customer
    PERFORM allocation._lock_counter(x.rep) FROM unnest(ARRAY[it.from_rep, it.to_rep]) x(rep)
      WHERE x.rep IS NOT NULL ORDER BY x.rep;
    SELECT s.reason INTO v_stay FROM allocation._realign_stays(m.id, ARRAY[it.key], p.claim_grace) s;
    IF v_stay IS NULL AND v_owner IS DISTINCT FROM it.from_rep THEN
        v_stay := format('changed hands since the plan listed it (held by %s now)',
                         coalesce((SELECT r.code FROM allocation.rep r WHERE r.id = v_owner), 'the public pool'));
    END IF;
    IF v_stay IS NULL AND allocation._realign_ramp_up(v_owner) IS NOT NULL THEN
        v_stay := format('held by new rep %s in its ramp-up until %s (new-rep policy)',
                         (SELECT r.code FROM allocation.rep r WHERE r.id = v_owner),
                         to_char(allocation._realign_ramp_up(v_owner), 'YYYY-MM-DD'));
    END IF;
    IF v_stay IS NOT NULL THEN
        UPDATE allocation.realign_item i SET status = 'stayed', reason = v_stay, done_at = clock_timestamp(), result_rep = v_owner
         WHERE i.plan_id = p.id AND i.ord = it.ord;
        RETURN;
    END IF;
    -- the row trigger decides again (pinned and disputed customers stay there too)
    SELECT * INTO v_res FROM allocation._realign_move(m.tbl, it.key, p.id, format('realignment plan %s (%s)', p.id, p.reason));
    UPDATE allocation.realign_item i
       SET status = CASE WHEN v_res.result IS NULL THEN 'gone' WHEN v_res.result = 'moved' THEN 'moved'
                         WHEN v_res.result IN ('unchanged', 'suggest') THEN 'unchanged' ELSE 'stayed' END,
           reason = CASE WHEN v_res.result IN ('pinned', 'disputed') THEN v_res.result
                         WHEN v_res.result = 'suggest' THEN 'a review-mode rule decided: a suggestion was queued'
                         ELSE i.reason END,
           result_rep = v_res.owner, done_at = clock_timestamp()
     WHERE i.plan_id = p.id AND i.ord = it.ord;
END
$$;
COMMENT ON FUNCTION allocation._realign_move_item(allocation.realign_plan, allocation.managed_table, allocation.realign_item) IS 'internal: one customer of a realignment apply, re-checked under its row lock and moved (or kept, with the reason)';

-- A batch of listed customers of one table, set-based: their rows locked in key order in one
-- statement (NOWAIT), the stay reasons re-checked for all of them in one query under those
-- locks, the reps' counters locked once in id order, then ONE engine UPDATE decides them again
-- in the listed order (the order the preview simulated) and its statement batch records every
-- move.  Any error (a busy row or counter, rows reached out of order, anything else) reaches
-- the caller, whose subtransaction rolls the batch back and moves it one customer at a time
-- (_realign_move_item): same checks, same outcomes, same events.
CREATE FUNCTION allocation._realign_move_items(p allocation.realign_plan, m allocation.managed_table,
                                               items allocation.realign_item[])
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_keys text[] := ARRAY(SELECT i.key FROM unnest(items) i ORDER BY i.ord);
    v_lk text[];
    v_lo bigint[];
    v_ord bigint[];
    v_found boolean[];
    v_owner bigint[];
    v_stay text[];
    v_move text[];
    v_reps bigint[];
    v_rep bigint;
    v_rk text[];
    v_rr text[];
    v_ro bigint[];
BEGIN
    SELECT array_agg(l.key), array_agg(l.owner) INTO v_lk, v_lo
      FROM allocation._realign_lock_batch(m.tbl, v_keys) l;
    -- the listed reps' counters, once, in id order (the engine's ordered-locking rule; the rules
    -- may still choose another rep, whose counter the trigger then takes), BEFORE the stay
    -- re-check: _lock_counter may wait, and a stay reason that is not ordered by the row lock
    -- (a customer lock, a virtual team link) committed meanwhile must still keep its customer
    SELECT array_agg(DISTINCT y.rep ORDER BY y.rep) INTO v_reps
      FROM unnest(items) i CROSS JOIN LATERAL (VALUES (i.from_rep), (i.to_rep)) y(rep)
     WHERE i.key = ANY (coalesce(v_lk, '{}')) AND y.rep IS NOT NULL;
    FOREACH v_rep IN ARRAY coalesce(v_reps, '{}') LOOP
        PERFORM allocation._lock_counter(v_rep);
    END LOOP;
    -- under the row locks, in one query: gone, stays (a reason now; changed hands since the
    -- plan listed it; held by a new rep in its ramp-up), or moves -- the checks of _realign_move_item
    WITH lk AS (SELECT * FROM unnest(v_lk, v_lo) AS x(key, owner)),
         st AS (SELECT * FROM allocation._realign_stays(m.id, coalesce(v_lk, '{}'), p.claim_grace))
    SELECT array_agg(i.ord ORDER BY i.ord), array_agg(lk.key IS NOT NULL ORDER BY i.ord),
           array_agg(lk.owner ORDER BY i.ord),
           array_agg(CASE WHEN lk.key IS NULL THEN 'the customer row was deleted'
                          ELSE coalesce(st.reason,
                                        CASE WHEN lk.owner IS DISTINCT FROM i.from_rep
                                             THEN format('changed hands since the plan listed it (held by %s now)',
                                                         coalesce(r.code, 'the public pool')) END,
                                        CASE WHEN ru.until IS NOT NULL
                                             THEN format('held by new rep %s in its ramp-up until %s (new-rep policy)',
                                                         r.code, to_char(ru.until, 'YYYY-MM-DD')) END) END ORDER BY i.ord)
      INTO v_ord, v_found, v_owner, v_stay
      FROM unnest(items) i
      LEFT JOIN lk ON lk.key = i.key
      LEFT JOIN st ON st.key = i.key
      LEFT JOIN allocation.rep r ON r.id = lk.owner
      LEFT JOIN LATERAL (SELECT allocation._realign_ramp_up(lk.owner) AS until) ru ON true;
    UPDATE allocation.realign_item i
       SET status = CASE WHEN x.found THEN 'stayed' ELSE 'gone' END, reason = x.stay, done_at = clock_timestamp(),
           result_rep = CASE WHEN x.found THEN x.owner ELSE i.result_rep END
      FROM unnest(v_ord, v_found, v_owner, v_stay) AS x(ord, found, owner, stay)
     WHERE i.plan_id = p.id AND i.ord = x.ord AND x.stay IS NOT NULL;
    SELECT array_agg(i.key ORDER BY i.ord) INTO v_move
      FROM unnest(items) i JOIN unnest(v_ord, v_stay) AS x(ord, stay) ON x.ord = i.ord
     WHERE x.stay IS NULL;
    IF v_move IS NULL THEN
        RETURN;
    END IF;
    SELECT array_agg(r.key), array_agg(r.result), array_agg(r.owner) INTO v_rk, v_rr, v_ro
      FROM allocation._realign_move_batch(m.tbl, v_move, p.id, format('realignment plan %s (%s)', p.id, p.reason)) r;
    UPDATE allocation.realign_item i
       SET status = CASE WHEN r.result IS NULL THEN 'gone' WHEN r.result = 'moved' THEN 'moved'
                         WHEN r.result IN ('unchanged', 'suggest') THEN 'unchanged' ELSE 'stayed' END,
           reason = CASE WHEN r.result IN ('pinned', 'disputed') THEN r.result
                         WHEN r.result = 'suggest' THEN 'a review-mode rule decided: a suggestion was queued'
                         ELSE i.reason END,
           result_rep = r.owner, done_at = clock_timestamp()
      FROM unnest(v_rk, v_rr, v_ro) AS r(key, result, owner)
      JOIN unnest(items) it ON it.key = r.key
     WHERE i.plan_id = p.id AND i.ord = it.ord;
END
$$;
COMMENT ON FUNCTION allocation._realign_move_items(allocation.realign_plan, allocation.managed_table, allocation.realign_item[]) IS 'internal: a batch of a realignment apply (one table) set-based: rows locked in one statement, stay reasons re-checked at once, counters locked once, one engine UPDATE; any error leaves the batch to the one-customer-at-a-time path';

-- One step: the first writes the configuration and lists the customers (one transaction);
-- each next one moves up to batch_size listed customers, re-checked under their row locks
CREATE FUNCTION allocation._realign_apply_step(plan_id bigint, reason text, batch_size integer,
    OUT status text, OUT total integer, OUT moved integer, OUT stayed integer, OUT unchanged integer,
    OUT pending integer, OUT done boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    p allocation.realign_plan := allocation._realign_plan(plan_id, 'realign_apply()', false, 'nowait');
    m allocation.managed_table;
    it allocation.realign_item;
    v_mid integer := 0;
    v_items allocation.realign_item[];
    v_run allocation.realign_item[];
    v_from integer;
    v_to integer;
    v_stop boolean := false;
BEGIN
    -- the stay re-check under the row locks must see what committed before those locks (a new
    -- snapshot per statement); a REPEATABLE READ snapshot would miss a customer lock or a
    -- virtual team link committed after the step began, and move that customer
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'a realignment step runs in READ COMMITTED transactions only' USING ERRCODE = '0A000',
              DETAIL = format('This transaction is %s; its snapshot could miss a reason to keep a customer that committed after it began.',
                              pg_catalog.current_setting('transaction_isolation')),
              HINT = 'Run CALL allocation.realign_apply() or allocation.realign_apply_step() in READ COMMITTED transactions (the default; check default_transaction_isolation).';
    END IF;
    IF reason IS NULL OR btrim(reason) = '' THEN
        RAISE EXCEPTION 'a realignment needs a reason' USING ERRCODE = '22004',
              DETAIL = 'The reason is kept with the plan and in every move''s audit event.',
              HINT = 'Say why, e.g. ''2027 county split: east belt to team B''.';
    END IF;
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch size must be at least 1' USING ERRCODE = '22023',
              DETAIL = format('allocation.realign_apply() was called with batch_size %s.', coalesce(batch_size::text, 'NULL')),
              HINT = 'Use e.g. 1000 (customers moved per transaction).';
    END IF;
    IF p.status IN ('applied', 'cancelled') THEN
        RAISE EXCEPTION 'realignment plan % is %', p.id, p.status USING ERRCODE = 'LA0R2',
              DETAIL = CASE p.status WHEN 'applied' THEN format('It was applied at %s; an applied plan never changes.', p.applied_at)
                                     ELSE 'A cancelled plan is kept as a record only.' END,
              HINT = 'Create a new plan with allocation.realign_create().';
    END IF;
    IF p.status = 'draft' THEN
        PERFORM allocation._realign_configure(p.id);
        INSERT INTO allocation.realign_item (plan_id, ord, managed_id, key, from_rep, to_rep, rule_id, territory_id, status, reason)
        SELECT p.id, d.ord, d.managed_id, d.key, d.from_rep, d.to_rep, d.rule_id, d.territory_id,
               CASE WHEN d.stays IS NULL THEN 'pending' ELSE 'stayed' END, coalesce(d.stays, d.reason)
          FROM allocation._realign_decide(p) d;
        UPDATE allocation.realign_plan x
           SET status = 'applying', applied_by = allocation._actor(), started_at = clock_timestamp(),
               reason = _realign_apply_step.reason,
               total = (SELECT count(*) FROM allocation.realign_item i WHERE i.plan_id = p.id)
         WHERE x.id = p.id;
        INSERT INTO allocation.event (actor, kind, reason, detail)
        VALUES (allocation._actor(), 'realign_started', reason,
                jsonb_build_object('realign_plan', p.id, 'name', p.name,
                                   'listed', (SELECT count(*) FROM allocation.realign_item i WHERE i.plan_id = p.id)));
    ELSE
        v_items := ARRAY(SELECT i FROM allocation.realign_item i
                          WHERE i.plan_id = p.id AND i.status = 'pending' ORDER BY i.ord LIMIT batch_size);
        v_from := 1;
        WHILE v_from <= coalesce(array_length(v_items, 1), 0) AND NOT v_stop LOOP
            -- the next run of customers of one table, in list order
            v_to := v_from;
            WHILE v_to < array_length(v_items, 1) AND v_items[v_to + 1].managed_id = v_items[v_from].managed_id LOOP
                v_to := v_to + 1;
            END LOOP;
            v_run := v_items[v_from:v_to];
            v_from := v_to + 1;
            IF v_run[1].managed_id <> v_mid THEN
                m := allocation._managed_by_id(v_run[1].managed_id);
                v_mid := v_run[1].managed_id;
            END IF;
            IF NOT m.active THEN
                UPDATE allocation.realign_item i SET status = 'gone', reason = 'the table is not managed any more', done_at = clock_timestamp()
                 WHERE i.plan_id = p.id AND i.ord IN (SELECT r.ord FROM unnest(v_run) r);
                CONTINUE;
            END IF;
            -- set-based first (_realign_move_items); on any error its subtransaction is rolled
            -- back and the run moves one customer at a time
            BEGIN
                PERFORM allocation._realign_move_items(p, m, v_run);
                CONTINUE;
            EXCEPTION WHEN OTHERS THEN
                RAISE DEBUG 'realignment plan %: a batch of % customers moves one at a time (%: %)',
                      p.id, array_length(v_run, 1), SQLSTATE, SQLERRM;
            END;
            FOREACH it IN ARRAY v_run LOOP
                -- one customer at a time in a subtransaction: a customer another transaction is
                -- changing while this batch already holds reps' counters (55P03, the engine's
                -- ordered-locking rule) ends the batch; the next one starts with it, holding nothing
                BEGIN
                    PERFORM allocation._realign_move_item(p, m, it);
                EXCEPTION WHEN lock_not_available THEN
                    v_stop := true;
                    EXIT;
                END;
            END LOOP;
        END LOOP;
        IF NOT EXISTS (SELECT 1 FROM allocation.realign_item i WHERE i.plan_id = p.id AND i.status = 'pending') THEN
            UPDATE allocation.realign_plan x SET status = 'applied', applied_at = clock_timestamp() WHERE x.id = p.id;
            INSERT INTO allocation.event (actor, kind, reason, detail)
            SELECT allocation._actor(), 'realign_applied', p.reason,
                   jsonb_build_object('realign_plan', p.id, 'name', p.name) || coalesce(jsonb_object_agg(s.status, s.n), '{}')
              FROM (SELECT i.status, count(*) AS n FROM allocation.realign_item i WHERE i.plan_id = p.id GROUP BY 1) s;
        END IF;
    END IF;
    SELECT x.status, x.total INTO status, total FROM allocation.realign_plan x WHERE x.id = p.id;
    SELECT count(*) FILTER (WHERE i.status = 'moved'), count(*) FILTER (WHERE i.status IN ('stayed', 'gone')),
           count(*) FILTER (WHERE i.status = 'unchanged'), count(*) FILTER (WHERE i.status = 'pending')
      INTO moved, stayed, unchanged, pending
      FROM allocation.realign_item i WHERE i.plan_id = p.id;
    done := status = 'applied';
END
$$;
COMMENT ON FUNCTION allocation._realign_apply_step(bigint, text, integer) IS 'internal: implementation of allocation.realign_apply_step(), run as the extension owner by its gateway';
CREATE FUNCTION allocation.realign_apply_step(plan_id bigint, reason text, batch_size integer DEFAULT 1000,
    OUT status text, OUT total integer, OUT moved integer, OUT stayed integer, OUT unchanged integer,
    OUT pending integer, OUT done boolean)
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.realign_apply_step(bigint, text, integer) IS
'One step of a realignment apply (managers): the first writes the plan''s configuration and lists the customers to move; each next one moves up to batch_size of them. CALL allocation.realign_apply() loops over it and commits between steps';

CREATE FUNCTION allocation.realign_in_block()
RETURNS boolean
AS 'MODULE_PATHNAME', 'allocation_realign_in_block' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION allocation.realign_in_block() IS 'Whether the caller runs inside a transaction block (BEGIN ... COMMIT), where CALL allocation.realign_apply() cannot commit between batches';

-- (no SET search_path: a procedure with SET clauses cannot commit; it names everything with its schema)
CREATE PROCEDURE allocation.realign_apply(plan_id bigint, reason text, batch_size integer DEFAULT 1000)
LANGUAGE plpgsql AS
$$
DECLARE
    r record;
    v_t0 timestamptz;
    v_first integer;
    v_rate double precision;
BEGIN
    IF allocation.realign_in_block() THEN
        RAISE EXCEPTION 'allocation.realign_apply() cannot run inside a transaction block' USING ERRCODE = 'LA0R6',
              DETAIL = 'It commits after each batch, so that no transaction holds every customer''s lock.',
              HINT = 'Run CALL allocation.realign_apply(...) on its own (autocommit), or loop over allocation.realign_apply_step() yourself.';
    END IF;
    LOOP
        r := allocation.realign_apply_step(plan_id, reason, batch_size);
        IF v_first IS NULL THEN
            v_first := r.pending;
            v_t0 := pg_catalog.clock_timestamp();
        END IF;
        v_rate := (v_first - r.pending) / GREATEST(pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - v_t0), 0.001);
        RAISE NOTICE 'realignment plan %: % of % listed customers done (% moved, % stayed, % unchanged), % pending%',
              plan_id, r.total - r.pending, r.total, r.moved, r.stayed, r.unchanged, r.pending,
              CASE WHEN r.pending > 0 AND v_rate > 0 THEN pg_catalog.format(', about %s s left', pg_catalog.round((r.pending / v_rate)::numeric, 1)) ELSE '' END;
        COMMIT;
        EXIT WHEN r.done;
    END LOOP;
END
$$;
-- (REVOKE ... ON ALL FUNCTIONS in 90_privileges.sql does not reach procedures)
REVOKE ALL ON PROCEDURE allocation.realign_apply(bigint, text, integer) FROM PUBLIC;
COMMENT ON PROCEDURE allocation.realign_apply(bigint, text, integer) IS
'Applies a realignment plan (managers): writes its configuration, then moves the listed customers in batches of batch_size, committing after each (NOTICE with counts and ETA; allocation.realign_progress); resumable after a crash or cancel by calling it again. Refused inside a transaction block (LA0R6)';

CREATE VIEW allocation.realign_progress AS
SELECT p.id AS plan_id, p.name, p.status, p.total,
       count(i.*) FILTER (WHERE i.status <> 'pending')::integer AS done,
       count(i.*) FILTER (WHERE i.status = 'moved')::integer AS moved,
       count(i.*) FILTER (WHERE i.status IN ('stayed', 'gone'))::integer AS stayed,
       count(i.*) FILTER (WHERE i.status = 'unchanged')::integer AS unchanged,
       count(i.*) FILTER (WHERE i.status = 'pending')::integer AS pending,
       p.started_at, max(i.done_at) AS last_move_at, p.applied_at,
       CASE WHEN count(i.*) FILTER (WHERE i.status = 'pending') > 0
                 AND count(i.*) FILTER (WHERE i.done_at IS NOT NULL) > 0
            THEN (max(i.done_at) - p.started_at) / count(i.*) FILTER (WHERE i.done_at IS NOT NULL)
                 * count(i.*) FILTER (WHERE i.status = 'pending') END AS eta
  FROM allocation.realign_plan p
  LEFT JOIN allocation.realign_item i ON i.plan_id = p.id
 GROUP BY p.id;
COMMENT ON VIEW allocation.realign_progress IS 'Realignment plans and how far their apply got: listed, done, moved, stayed, pending, and an estimate of the time left';

-------------------------------------------------------------------------------
-- GeoJSON for the map: moved customers (before/after owner), changed territories
-------------------------------------------------------------------------------
CREATE FUNCTION allocation._realign_geojson(plan_id bigint)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    p allocation.realign_plan := allocation._realign_plan(plan_id, 'realign_geojson()', false);
    v_rows allocation._realign_row[];
    v_customers jsonb := '[]';
    v_territories jsonb;
    m allocation.managed_table;
    v_part jsonb;
BEGIN
    IF p.status = 'draft' THEN
        SELECT array_agg(c ORDER BY c.ord) INTO v_rows FROM allocation._realign_compute(p.id, 'realign_geojson()') c;
    ELSE
        SELECT array_agg(ROW(i.ord, i.managed_id, i.key, i.from_rep, CASE WHEN i.to_rep IS NULL THEN 'pool' ELSE 'assign' END,
                             i.to_rep, i.rule_id, i.territory_id, i.reason,
                             CASE WHEN i.status IN ('stayed', 'gone') THEN i.reason END)::allocation._realign_row ORDER BY i.ord)
          INTO v_rows FROM allocation.realign_item i WHERE i.plan_id = p.id AND i.status <> 'unchanged';
    END IF;
    -- the customers' locations, read as each table's owner (one query per table)
    FOR m IN SELECT * FROM allocation.managed_table x
              WHERE x.active AND x.location_column IS NOT NULL
                AND x.id IN (SELECT r.managed_id FROM unnest(v_rows) r) LOOP
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'type', 'Feature',
                   'geometry', CASE WHEN m.location_datum = 'wgs84' THEN pj.g
                                    ELSE coalesce((SELECT jsonb_build_object('type', 'Point', 'coordinates',
                                                              jsonb_build_array(round(d.lon::numeric, 7), round(d.lat::numeric, 7)))
                                                     FROM allocation.datum_convert((pj.g #>> '{coordinates,0}')::float8,
                                                                                   (pj.g #>> '{coordinates,1}')::float8,
                                                                                   m.location_datum, 'wgs84') d
                                                    WHERE abs((pj.g #>> '{coordinates,0}')::float8) <= 180
                                                      AND abs((pj.g #>> '{coordinates,1}')::float8) <= 90), pj.g) END,
                   'properties', jsonb_build_object('kind', 'customer', 'table', m.table_name, 'key', r.key,
                                                    'outcome', CASE WHEN r.stays IS NULL THEN 'moves' ELSE 'stays' END,
                                                    'before_rep', fr.code, 'after_rep', CASE WHEN r.stays IS NULL THEN tr.code ELSE fr.code END,
                                                    'proposed_rep', tr.code, 'rule', ru.name, 'territory', te.code,
                                                    'reason', coalesce(r.stays, r.reason))) ORDER BY r.ord), '[]')
          INTO v_part
          FROM unnest(v_rows) r
          CROSS JOIN LATERAL allocation._table_rows(m.tbl, ARRAY[m.key_column::text, m.location_column::text], r.key, '') AS l(r)
          -- (a GCJ-02 / BD-09 column: the position the engine decided with, in WGS 84)
          CROSS JOIN LATERAL (SELECT allocation._realign_point_json(l.r[2]) AS g) pj
          LEFT JOIN allocation.rep fr ON fr.id = r.from_rep
          LEFT JOIN allocation.rep tr ON tr.id = r.to_rep
          LEFT JOIN allocation.rule ru ON ru.id = r.rule_id
          LEFT JOIN allocation.territory te ON te.id = r.territory_id
         WHERE r.managed_id = m.id AND l.r[2] IS NOT NULL;
        v_customers := v_customers || v_part;
    END LOOP;
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'type', 'Feature',
               'geometry', coalesce(s.new_geom, t.geom)::jsonb,
               'properties', jsonb_build_object('kind', 'territory', 'code', t.code, 'name', t.name,
                                                'shape_changed', s.new_geom IS NOT NULL,
                                                'before_geometry', CASE WHEN s.new_geom IS NOT NULL THEN s.old_geom::jsonb END,
                                                'before_owner_rep', bro.code, 'before_owner_team', bto.code,
                                                'after_owner_rep', CASE WHEN s.set_owner THEN aro.code ELSE bro.code END,
                                                'after_owner_team', CASE WHEN s.set_owner THEN ato.code ELSE bto.code END,
                                                'before_priority', s.old_priority, 'after_priority', coalesce(s.new_priority, s.old_priority),
                                                'before_exclusive', s.old_exclusive, 'after_exclusive', coalesce(s.new_exclusive, s.old_exclusive)))
               ORDER BY t.id), '[]')
      INTO v_territories
      FROM allocation.realign_territory s
      JOIN allocation.territory t ON t.id = s.territory_id
      LEFT JOIN allocation.rep bro ON bro.id = s.old_owner_rep_id
      LEFT JOIN allocation.team bto ON bto.id = s.old_owner_team_id
      LEFT JOIN allocation.rep aro ON aro.id = s.new_owner_rep_id
      LEFT JOIN allocation.team ato ON ato.id = s.new_owner_team_id
     WHERE s.plan_id = p.id;
    RETURN jsonb_build_object('type', 'FeatureCollection',
                              'properties', jsonb_build_object('realign_plan', p.id, 'name', p.name, 'status', p.status),
                              'features', v_territories || v_customers);
END
$$;
COMMENT ON FUNCTION allocation._realign_geojson(bigint) IS 'internal: implementation of allocation.realign_geojson(), run as the extension owner by its gateway';
CREATE FUNCTION allocation.realign_geojson(plan_id bigint)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'allocation_gateway' LANGUAGE C;
COMMENT ON FUNCTION allocation.realign_geojson(bigint) IS
'A plan as a GeoJSON FeatureCollection (managers): changed territories (shape, before/after owner, priority, exclusive) and the customers it moves or keeps (before/after owner, rule, reason); a draft is previewed, an applied plan read from its list';

-- Plans, their staged rows and their lists are user data: kept by pg_dump (the identity
-- sequence realign_plan_id_seq is registered with the others in 90_privileges.sql)
SELECT pg_catalog.pg_extension_config_dump('allocation.realign_plan', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.realign_territory', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.realign_rule', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.realign_rep', '');
SELECT pg_catalog.pg_extension_config_dump('allocation.realign_item', '');

-------------------------------------------------------------------------------
-- Coverage gaps (边缘市场无人管): where nobody sells
-------------------------------------------------------------------------------
-- Two kinds of gap, in the subtree of parent_code (NULL = every territory):
--   uncovered: the part of a territory with children that none of its children
--              covers (pieces under 0.01 km² are dropped: slivers left by two
--              GIS layers that do not share their borders exactly);
--   unowned:   a leaf territory with no owner rep or team, on itself or on any
--              ancestor (the territory_owner policy looks up the tree).
-- With the customers located there: each managed table with a location column
-- that the caller may read, read with the caller's own rights (row-level
-- security applies: a rep's login sees its own customers only).
-- SECURITY INVOKER: it reads allocation.territory and the customer tables as
-- the caller; PostGIS is on its search_path (set at the end of this file).
CREATE FUNCTION allocation.coverage_gaps(parent_code text DEFAULT NULL)
RETURNS TABLE (kind text, parent text, code text, name text, area_km2 double precision,
               customers bigint, keys jsonb, geom geometry)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET jit = off   -- PostGIS functions are costed high: JIT would compile for seconds to save nothing
AS $$
DECLARE
    v_root   bigint;
    m        record;
    v_srid   integer;
    v_gaps   geometry[];
    v_ids    integer[];
    v_counts bigint[];
    v_keys   jsonb[];
    r        record;
BEGIN
    IF parent_code IS NOT NULL THEN
        SELECT t.id INTO v_root FROM allocation.territory t WHERE t.code = coverage_gaps.parent_code;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'territory % does not exist', parent_code
                USING ERRCODE = 'LA0I2',
                      DETAIL = format('No row of allocation.territory has the code %s.', parent_code),
                      HINT = 'Pass the code of a stored territory, or NULL for every territory: SELECT code, name FROM allocation.territory WHERE parent_id IS NULL;';
        END IF;
    END IF;

    -- the gaps, in a stable order (kind, then territory code)
    WITH RECURSIVE scope AS (
        SELECT t.id FROM allocation.territory t
         WHERE (v_root IS NULL AND t.parent_id IS NULL) OR t.id = v_root
        UNION
        SELECT c.id FROM allocation.territory c JOIN scope s ON c.parent_id = s.id),
    owned AS (   -- territories with an owner on themselves or an ancestor
        SELECT t.id FROM allocation.territory t WHERE t.owner_rep_id IS NOT NULL OR t.owner_team_id IS NOT NULL
        UNION
        SELECT c.id FROM allocation.territory c JOIN owned o ON c.parent_id = o.id),
    uncovered AS (
        SELECT 'uncovered'::text AS kind, p.code AS parent, NULL::text AS code, p.name,
               (SELECT ST_Multi(ST_Collect(d.geom ORDER BY d.path))
                  FROM ST_Dump(ST_CollectionExtract(ST_Difference(p.geom, u.geom), 3)) d
                 WHERE ST_Area(d.geom::geography) >= 1e4) AS geom
          FROM allocation.territory p
          JOIN LATERAL (SELECT ST_Union(c.geom) AS geom FROM allocation.territory c
                         WHERE c.parent_id = p.id AND c.geom IS NOT NULL) u ON u.geom IS NOT NULL
         WHERE p.id IN (SELECT id FROM scope) AND p.geom IS NOT NULL),
    unowned AS (
        SELECT 'unowned'::text, p.code, t.code, t.name, t.geom
          FROM allocation.territory t
          LEFT JOIN allocation.territory p ON p.id = t.parent_id
         WHERE t.id IN (SELECT id FROM scope) AND t.id NOT IN (SELECT id FROM owned)
           AND NOT EXISTS (SELECT 1 FROM allocation.territory c WHERE c.parent_id = t.id)
           AND t.geom IS NOT NULL)
    SELECT array_agg(g.geom ORDER BY g.kind, g.parent, g.code),
           array_agg(jsonb_build_object('kind', g.kind, 'parent', g.parent, 'code', g.code, 'name', g.name) ORDER BY g.kind, g.parent, g.code)
      INTO v_gaps, v_keys
      FROM (SELECT * FROM uncovered x WHERE x.geom IS NOT NULL UNION ALL SELECT * FROM unowned) g;
    IF v_gaps IS NULL THEN
        RETURN;
    END IF;
    v_ids := ARRAY(SELECT generate_series(1, cardinality(v_gaps)));
    v_counts := array_fill(0::bigint, ARRAY[cardinality(v_gaps)]);
    -- v_keys holds each gap's row for now; its customers go into .keys
    FOR i IN 1 .. cardinality(v_keys) LOOP
        v_keys[i] := v_keys[i] || '{"keys": {}}';
    END LOOP;

    -- the customers sitting in each gap: one pass per readable customer table
    FOR m IN SELECT mt.tbl, mt.table_name, mt.key_column, mt.location_column, mt.location_datum
               FROM allocation.managed_table mt
              WHERE mt.active AND mt.location_column IS NOT NULL
                AND has_table_privilege(mt.tbl, 'SELECT')
              ORDER BY mt.table_name LOOP
        SELECT postgis_typmod_srid(a.atttypmod) INTO v_srid FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = m.tbl AND a.attname = m.location_column AND a.atttypmod >= 0;
        FOR r IN EXECUTE format(
            'SELECT g.i, count(*) AS n, jsonb_agg(c.k ORDER BY c.k) FILTER (WHERE c.rn <= 1000) AS keys
               FROM unnest($1, $2) g(gap, i)
               JOIN LATERAL (SELECT x.%1$I::text AS k, row_number() OVER (ORDER BY x.%1$I::text) AS rn
                               FROM %2$s x
                              WHERE %3$s) c ON true
              GROUP BY g.i',
            m.key_column, m.tbl,
            -- a GCJ-02 / BD-09 column: the position the engine decides with (converted to WGS 84,
            -- up to ~700 m away: the index probe takes a margin of 0.02 degree)
            CASE WHEN m.location_datum <> 'wgs84'
                 THEN CASE WHEN coalesce(v_srid, 0) > 0
                           THEN format('x.%1$I && ST_Transform(ST_Expand(g.gap, 0.02), %2$s) AND ', m.location_column, v_srid)
                           ELSE '' END
                      || format('ST_Covers(g.gap, (SELECT CASE WHEN abs(ST_X(w.p)) <= 180 AND abs(ST_Y(w.p)) <= 90
                                                              THEN (SELECT ST_SetSRID(ST_MakePoint(d.lon, d.lat), 4326)
                                                                      FROM allocation.datum_convert(ST_X(w.p), ST_Y(w.p), %2$L, ''wgs84'') d)
                                                              ELSE w.p END
                                                    FROM (SELECT ST_Transform(x.%1$I, 4326) AS p) w))',
                                m.location_column, m.location_datum)
                 WHEN coalesce(v_srid, 0) > 0
                 THEN format('x.%1$I && ST_Transform(g.gap, %2$s) AND ST_Covers(ST_Transform(g.gap, %2$s), x.%1$I)',
                             m.location_column, v_srid)
                 ELSE format('ST_Covers(g.gap, ST_Transform(x.%1$I, 4326))', m.location_column) END)
            USING v_gaps, v_ids LOOP
            v_counts[r.i] := v_counts[r.i] + r.n;
            v_keys[r.i] := jsonb_set(v_keys[r.i], ARRAY['keys', m.table_name], r.keys);
        END LOOP;
    END LOOP;

    FOR i IN 1 .. cardinality(v_gaps) LOOP
        kind := v_keys[i]->>'kind';
        parent := v_keys[i]->>'parent';
        code := v_keys[i]->>'code';
        name := v_keys[i]->>'name';
        geom := v_gaps[i];
        area_km2 := ST_Area(geom::geography) / 1e6;
        customers := v_counts[i];
        keys := v_keys[i]->'keys';
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation.coverage_gaps(text) IS
'Where nobody sells (边缘市场无人管), under parent_code or everywhere: uncovered = the part of a parent territory no child covers (pieces from 0.01 km²), unowned = a leaf territory without owner rep or team on itself or any ancestor; with the area, the customers located there and their keys per table ({"table": [first 1,000 keys]}) from the customer tables the caller may read (with its rights, row-level security included); LA0I2 for an unknown parent_code';

CREATE FUNCTION allocation.coverage_gaps_geojson(parent_code text DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object('type', 'FeatureCollection', 'features', coalesce(jsonb_agg(jsonb_build_object(
               'type', 'Feature',
               'geometry', ST_AsGeoJSON(g.geom, 6)::jsonb,
               'properties', jsonb_build_object('kind', g.kind, 'parent', g.parent, 'code', g.code, 'name', g.name,
                                                'area_km2', round(g.area_km2::numeric, 3), 'customers', g.customers,
                                                'keys', g.keys)) ORDER BY g.ord), '[]'))
      FROM (SELECT x.*, row_number() OVER () AS ord FROM allocation.coverage_gaps(parent_code) x) g
$$;
COMMENT ON FUNCTION allocation.coverage_gaps_geojson(text) IS
'coverage_gaps() as a GeoJSON FeatureCollection (kind, parent, code, name, area_km2, customers, keys per feature) for QGIS, a BI map or territory_map_html()';

-- these two run as the caller and call PostGIS: its schema goes on their search_path
-- (known only at CREATE EXTENSION time, as for import_territories in 90_privileges.sql)
DO $$
DECLARE
    v_pg name;
BEGIN
    SELECT n.nspname INTO v_pg FROM pg_catalog.pg_extension e
      JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'postgis';
    EXECUTE format('ALTER FUNCTION allocation.coverage_gaps(text) SET search_path = pg_catalog, %I, pg_temp', v_pg);
    EXECUTE format('ALTER FUNCTION allocation.coverage_gaps_geojson(text) SET search_path = pg_catalog, %I, pg_temp', v_pg);
END
$$;

-------------------------------------------------------------------------------
-- The map people open (issue 15): one self-contained HTML page
--
-- territory_map_html() returns a whole HTML document as text: territories
-- coloured by owner, customers as points coloured by their latest outcome,
-- hover tooltips, a legend, pan and zoom, and (with a realignment plan id) a
-- before/after toggle fed by allocation.realign_geojson(plan_id).  No network:
-- the renderer is ~300 lines of vanilla JavaScript inside the page (inline SVG,
-- an equirectangular projection scaled by cos(mid latitude)), and a Content
-- Security Policy forbids every fetch.
--
-- Data are read with the CALLER's rights (SECURITY INVOKER): territories
-- through territory_geojson(), customers from each managed table the caller may
-- SELECT (row-level security applies: a rep's page shows its own customers),
-- outcomes only when the caller may read allocation.followup and
-- allocation.deal (analysts, managers, admins); otherwise the holder status.
--
-- Escaping: the data travel as JSON inside <script type="application/json">
-- with <, > and & written as \u003c, \u003e, \u0026 (a territory named
-- "</script><img onerror=...>" stays a string); the title is HTML-escaped; the
-- script writes user data with textContent only; the CSP allows only the page's
-- own script, by its SHA-256, so an injected inline handler would not run.
-------------------------------------------------------------------------------

-- The managed tables a map can show: key, location, owner and name columns
-- (SECURITY DEFINER: reading the registry needs no grant; the customers
-- themselves are read by territory_map_html() with the caller's rights)
CREATE FUNCTION allocation.map_layers()
RETURNS TABLE (managed_id integer, tbl regclass, table_name text, key_column name, location_column name,
               owner_column name, name_column name, location_datum text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
    SELECT m.id, m.tbl, m.table_name, m.key_column, m.location_column, m.owner_column,
           (m.attributes ->> 'name')::name, m.location_datum
      FROM allocation.managed_table m
     WHERE m.active AND m.location_column IS NOT NULL
     ORDER BY m.id
$$;
COMMENT ON FUNCTION allocation.map_layers() IS 'The managed tables a map can show (active, with a location column): key, location, owner and name columns; the rows are read by territory_map_html() with the caller''s rights';

CREATE FUNCTION allocation.territory_map_html(title text DEFAULT 'Territories and customers',
                                              plan_id bigint DEFAULT NULL,
                                              max_customers integer DEFAULT 20000,
                                              max_bytes integer DEFAULT 16777216,
                                              simplify double precision DEFAULT 0)
RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$f$
DECLARE
    v_terr jsonb;
    v_reps jsonb;
    v_plan jsonb;
    v_cust jsonb := '[]';
    v_layers jsonb := '[]';
    v_rows jsonb;
    v_n integer;
    v_total integer := 0;
    v_idx integer := 0;
    v_outcomes boolean;
    v_name_expr text;
    v_outcome_sql text;
    v_outcome_join text := '';
    v_data text;
    v_page text;
    v_title text;
    l record;
    -- the page; the script's SHA-256 goes into the Content Security Policy
    v_css constant text := $css$
*{box-sizing:border-box}
html,body{margin:0;height:100%;font:14px/1.4 "Noto Sans CJK SC","WenQuanYi Micro Hei","Microsoft YaHei","PingFang SC",system-ui,sans-serif;color:#222;background:#f4f6f8}
header{padding:10px 16px 6px;background:#fff;border-bottom:1px solid #cfd8dc}
h1{margin:0;font-size:20px}
#sub{color:#555;font-size:12.5px}
main{display:flex;height:calc(100% - 64px)}
#wrap{position:relative;flex:1;min-width:0;background:#e8eef2;overflow:hidden}
#map{width:100%;height:100%;display:block;cursor:grab;user-select:none}
#map.drag{cursor:grabbing}
#map path.t{stroke:#fff;stroke-width:.8;vector-effect:non-scaling-stroke}
#map path.t:hover{stroke:#263238;stroke-width:2}
#map path.p{fill:none;stroke:#37474f;stroke-width:1.8;vector-effect:non-scaling-stroke;pointer-events:none}
#map path.chg{stroke:#000;stroke-width:2.6;vector-effect:non-scaling-stroke}
#map path.chg.before{fill:none;stroke-dasharray:6 4;pointer-events:none}
#map circle{stroke:#fff;stroke-width:.6;vector-effect:non-scaling-stroke}
#map g.dense circle{stroke-width:.25}
#map circle.mv{stroke:#000;stroke-width:1.6}
#tip{position:absolute;pointer-events:none;background:rgba(255,255,255,.96);border:1px solid #90a4ae;border-radius:5px;padding:6px 9px;font-size:12.5px;box-shadow:0 2px 6px rgba(0,0,0,.18);max-width:340px}
#tip b{display:block}
#zoom{position:absolute;right:10px;top:10px;display:flex;flex-direction:column;gap:4px}
#zoom button{width:30px;height:30px;font-size:16px;border:1px solid #90a4ae;background:#fff;border-radius:4px;cursor:pointer}
aside{width:320px;overflow:auto;background:#fff;border-left:1px solid #cfd8dc;padding:10px 14px}
aside h2{font-size:14px;margin:12px 0 6px}
.row{display:flex;align-items:center;gap:8px;margin:3px 0;font-size:12.5px}
.row .n{margin-left:auto;color:#555}
.sw{width:22px;height:13px;border:1px solid #b0bec5;flex:none}
.dot{width:11px;height:11px;border-radius:50%;flex:none;margin:0 5px}
.note{color:#666;font-size:11.5px;margin:6px 0}
#plan button{border:1px solid #607d8b;background:#fff;padding:4px 10px;border-radius:4px;cursor:pointer;margin-right:4px}
#plan button.on{background:#37474f;color:#fff}
#err{position:absolute;left:10px;top:10px;background:#ffebee;color:#b71c1c;border:1px solid #e57373;padding:8px;border-radius:4px}
$css$;
    v_js constant text := $js$
(function () {
'use strict';
var body = document.body;
function fail(msg) {
  body.setAttribute('data-status', 'error');
  body.setAttribute('data-error', String(msg));
  var e = document.getElementById('err');
  e.textContent = 'The map could not be drawn: ' + msg;
  e.hidden = false;
}
window.onerror = function (m, src, line) { fail(m + ' (line ' + line + ')'); };
var D = JSON.parse(document.getElementById('map-data').textContent);
var NS = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, parent) {
  var e = document.createElementNS(NS, tag);
  for (var k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}
function h(tag, text, parent, cls) {
  var e = document.createElement(tag);
  if (text !== null && text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  if (parent) parent.appendChild(e);
  return e;
}
function fmt(n) { return Number(n).toLocaleString('en-US'); }

// --- owners and their colours (golden-angle hues, as in demo/out/map.svg)
var repById = {}, repByCode = {};
D.reps.forEach(function (r, i) {
  var hue = Math.round(((i + 1) * 137.508) % 360), sat = 46 + 12 * ((i + 1) % 3);
  r.color = r.active ? 'hsl(' + hue + ',' + sat + '%,' + (70 + 7 * ((i + 1) % 2)) + '%)' : '#c9c9c9';
  r.dark = r.active ? 'hsl(' + hue + ',' + Math.min(sat + 20, 90) + '%,36%)' : '#757575';
  repById[r.id] = r; repByCode[r.code] = r;
});
var TEAM = '#cfd8e3', VACANT = '#efe6d2';
function repOf(v) {
  if (v === null || v === undefined) return null;
  return (typeof v === 'number' ? repById[v] : repByCode[v]) || null;
}
function ownerColor(rep, team) { return rep ? rep.color : (team ? TEAM : VACANT); }
function ownerText(rep, team) {
  if (rep) return rep.code + ' — ' + rep.name + (rep.active ? '' : ' (inactive)');
  if (team) return 'team ' + team;
  return 'nobody (vacant)';
}
var OUT = { deal: ['#1b7f3b', 'deal (成交)'], followup: ['#f9a825', 'followed up, no deal yet'],
            none: ['#546e7a', 'held, no outcome yet'], held: ['#424242', 'held by a rep'],
            pool: ['#d50000', 'public pool (公海)'] };

// --- projection: lon/lat -> SVG units, x scaled by cos(mid latitude)
var feats = (D.territories && D.territories.features) || [];
var bb = [Infinity, Infinity, -Infinity, -Infinity];
function ext(p) {
  if (p[0] < bb[0]) bb[0] = p[0]; if (p[1] < bb[1]) bb[1] = p[1];
  if (p[0] > bb[2]) bb[2] = p[0]; if (p[1] > bb[3]) bb[3] = p[1];
}
function walk(c, f) { if (typeof c[0] === 'number') f(c); else for (var i = 0; i < c.length; i++) walk(c[i], f); }
feats.forEach(function (f) { if (f.geometry) walk(f.geometry.coordinates, ext); });
if (!isFinite(bb[0])) D.customers.forEach(function (c) { ext([c[3], c[4]]); });
if (!isFinite(bb[0])) bb = [0, 0, 1, 1];
var padx = Math.max((bb[2] - bb[0]) * 0.03, 0.01), pady = Math.max((bb[3] - bb[1]) * 0.03, 0.01);
bb = [bb[0] - padx, bb[1] - pady, bb[2] + padx, bb[3] + pady];
var cosl = Math.cos((bb[1] + bb[3]) / 2 * Math.PI / 180);
var k = Math.min(1000 / ((bb[2] - bb[0]) * cosl), 1000 / (bb[3] - bb[1]));
var W = (bb[2] - bb[0]) * cosl * k, H = (bb[3] - bb[1]) * k;
function X(lon) { return (lon - bb[0]) * cosl * k; }
function Y(lat) { return (bb[3] - lat) * k; }
function ringPath(r) {
  var s = '';
  for (var i = 0; i < r.length; i++) s += (i ? 'L' : 'M') + X(r[i][0]).toFixed(2) + ' ' + Y(r[i][1]).toFixed(2);
  return s + 'Z';
}
function geomPath(g) {
  if (!g) return '';
  var polys = g.type === 'Polygon' ? [g.coordinates] : g.type === 'MultiPolygon' ? g.coordinates : [];
  var s = '';
  polys.forEach(function (p) { p.forEach(function (r) { s += ringPath(r); }); });
  return s;
}
function area(g) {
  var a = [Infinity, Infinity, -Infinity, -Infinity];
  if (g) walk(g.coordinates, function (p) { a[0] = Math.min(a[0], p[0]); a[1] = Math.min(a[1], p[1]);
                                         a[2] = Math.max(a[2], p[0]); a[3] = Math.max(a[3], p[1]); });
  return (a[2] - a[0]) * (a[3] - a[1]);
}

// --- the SVG: territories (largest first, parents as borders on top), customers, plan layer
var map = document.getElementById('map');
var view = { x: 0, y: 0, w: W, h: H };
map.setAttribute('viewBox', '0 0 ' + W.toFixed(2) + ' ' + H.toFixed(2));
var gT = svg('g', { id: 'territories' }, map), gP = svg('g', { id: 'parents' }, map),
    gPlanT = svg('g', { id: 'plan-territories' }, map), gC = svg('g', { id: 'customers' }, map),
    gPlanC = svg('g', { id: 'plan-customers' }, map);
var parents = {};
feats.forEach(function (f) { if (f.properties.parent) parents[f.properties.parent] = true; });
var byCode = {}, ownedBy = {}, drawn = 0;
var order = feats.map(function (f, i) { return i; })
                 .sort(function (a, b) { return area(feats[b].geometry) - area(feats[a].geometry) || a - b; });
var tPaths = {};
order.forEach(function (i) {
  var f = feats[i], p = f.properties, d = geomPath(f.geometry);
  byCode[p.code] = f;
  if (!d) return;
  var rep = repOf(p.owner_rep);
  if (parents[p.code]) {
    svg('path', { d: d, 'class': 'p' }, gP);
  } else {
    tPaths[p.code] = svg('path', { d: d, 'class': 't', fill: ownerColor(rep, p.owner_team), 'fill-rule': 'evenodd',
                                   'data-i': i }, gT);
    var key = rep ? 'r' + rep.id : (p.owner_team ? 'team' : 'vacant');
    ownedBy[key] = (ownedBy[key] || 0) + 1;
  }
  drawn++;
});
// dots shrink as customers get denser (3.8 units for a few hundred, 1.5 for 10,000+)
var R = Math.max(1.5, Math.min(3.8, 3.8 * Math.sqrt(600 / Math.max(D.customers.length, 1)))) * Math.max(W, H) / 1000,
    circles = [], counts = {};
if (D.customers.length > 3000) gC.setAttribute('class', 'dense');
D.customers.forEach(function (c, i) {
  var o = OUT[c[6]] ? c[6] : 'held';
  counts[o] = (counts[o] || 0) + 1;
  circles.push(svg('circle', { cx: X(c[3]).toFixed(2), cy: Y(c[4]).toFixed(2), r: R, fill: OUT[o][0], 'data-c': i }, gC));
});
map.setAttribute('data-rendered', String(drawn));
map.setAttribute('data-customers', String(circles.length));

// --- tooltip
var wrap = document.getElementById('wrap'), tip = document.getElementById('tip');
function showTip(ev, lines) {
  while (tip.firstChild) tip.removeChild(tip.firstChild);
  lines.forEach(function (l, j) { h(j ? 'span' : 'b', l, tip); if (j) h('br', null, tip); });
  tip.hidden = false;
  var r = wrap.getBoundingClientRect();
  var x = ev.clientX - r.left + 14, y = ev.clientY - r.top + 14;
  if (x + tip.offsetWidth > r.width) x = ev.clientX - r.left - tip.offsetWidth - 10;
  if (y + tip.offsetHeight > r.height) y = ev.clientY - r.top - tip.offsetHeight - 10;
  tip.style.left = x + 'px'; tip.style.top = y + 'px';
}
function territoryLines(p) {
  var rep = repOf(p.owner_rep);
  var l = [p.code + ' ' + (p.name || ''), 'owner: ' + ownerText(rep, p.owner_team),
           'holdings: ' + fmt(p.holdings) + ' held, ' + fmt(p.pool) + ' in the pool'];
  if (p.parent) l.push('inside: ' + p.parent);
  if (p.exclusive) l.push('locked (exclusive to its owner)');
  return l;
}
map.addEventListener('mousemove', function (ev) {
  if (dragging) return;
  var t = ev.target, i;
  if (t.hasAttribute('data-i')) {
    var f = feats[+t.getAttribute('data-i')], l = territoryLines(f.properties);
    var pc = planT[f.properties.code];
    if (pc) l.push('plan: ' + ownerText(repOf(pc.from), null) + ' → ' + ownerText(repOf(pc.to), null));
    showTip(ev, l);
  } else if (t.hasAttribute('data-c')) {
    var c = D.customers[+t.getAttribute('data-c')], rep = repOf(c[5]);
    var lay = D.layers[c[0]] || {};
    showTip(ev, [(c[2] || c[1]), lay.table + ' key ' + c[1], 'owner: ' + (rep ? ownerText(rep) : 'public pool'),
                 'latest outcome: ' + (OUT[c[6]] ? OUT[c[6]][1] : c[6]) + (c[7] ? ' (' + c[7].slice(0, 10) + ')' : '')]);
  } else if (t.hasAttribute('data-m')) {
    var m = planC[+t.getAttribute('data-m')];
    showTip(ev, [m.name || m.key || 'customer', (m.table ? m.table + ' key ' : 'key ') + m.key,
                 'moves: ' + ownerText(repOf(m.from), null).replace('nobody (vacant)', 'public pool') + ' → ' +
                 ownerText(repOf(m.to), null).replace('nobody (vacant)', 'public pool')].concat(m.reason ? ['why: ' + m.reason] : []));
  } else tip.hidden = true;
});
map.addEventListener('mouseleave', function () { tip.hidden = true; });

// --- pan and zoom (viewBox); customer dots keep their size on screen
var dragging = null;
function apply() {
  map.setAttribute('viewBox', [view.x, view.y, view.w, view.h].map(function (v) { return v.toFixed(3); }).join(' '));
  var r = R * view.w / W;
  circles.forEach(function (c) { c.setAttribute('r', r); });
  planCircles.forEach(function (c) { c.setAttribute('r', Math.max(r * 1.6, 3 * view.w / 1000)); });
}
function zoom(f, cx, cy) {
  var nw = Math.min(Math.max(view.w * f, W / 200), W * 2), g = nw / view.w;
  view.x = cx - (cx - view.x) * g; view.y = cy - (cy - view.y) * g; view.w = nw; view.h = view.h * g;
  apply();
}
function toMap(ev) {
  var r = map.getBoundingClientRect(), s = Math.max(view.w / r.width, view.h / r.height);
  var ox = (r.width * s - view.w) / 2, oy = (r.height * s - view.h) / 2;
  return [view.x - ox + (ev.clientX - r.left) * s, view.y - oy + (ev.clientY - r.top) * s, s];
}
map.addEventListener('wheel', function (ev) { ev.preventDefault(); var p = toMap(ev); zoom(ev.deltaY < 0 ? 0.8 : 1.25, p[0], p[1]); },
                     { passive: false });
map.addEventListener('mousedown', function (ev) { dragging = { x: ev.clientX, y: ev.clientY, vx: view.x, vy: view.y, s: toMap(ev)[2] };
                                                  map.classList.add('drag'); tip.hidden = true; });
window.addEventListener('mousemove', function (ev) {
  if (!dragging) return;
  view.x = dragging.vx - (ev.clientX - dragging.x) * dragging.s; view.y = dragging.vy - (ev.clientY - dragging.y) * dragging.s;
  apply();
});
window.addEventListener('mouseup', function () { dragging = null; map.classList.remove('drag'); });
document.getElementById('zin').addEventListener('click', function () { zoom(0.7, view.x + view.w / 2, view.y + view.h / 2); });
document.getElementById('zout').addEventListener('click', function () { zoom(1 / 0.7, view.x + view.w / 2, view.y + view.h / 2); });
document.getElementById('zreset').addEventListener('click', function () { view = { x: 0, y: 0, w: W, h: H }; apply(); });

// --- the realignment plan: a FeatureCollection of moved customers and changed territories
var planC = [], planT = {}, planCircles = [], planTPaths = [];
function pick(p, names) { for (var i = 0; i < names.length; i++) if (p[names[i]] !== undefined) return p[names[i]]; return null; }
var FROM = ['from_rep', 'before_rep', 'before_owner_rep', 'before_owner_team'], TO = ['to_rep', 'after_rep', 'after_owner_rep', 'after_owner_team'];
if (D.plan) {
  (D.plan.features || []).forEach(function (f) {
    var p = f.properties || {}, g = f.geometry;
    var kind = p.kind || (g && g.type === 'Point' ? 'customer' : 'territory');
    if (kind === 'customer') {
      if (!g || g.type !== 'Point') return;
      planC.push({ x: g.coordinates[0], y: g.coordinates[1], from: pick(p, FROM), to: pick(p, TO), key: p.key,
                   name: p.name, table: p.table || p.table_name, reason: p.reason || null });
    } else if (kind === 'territory') {
      var base = byCode[p.code];
      planT[p.code] = { from: pick(p, FROM), to: pick(p, TO), code: p.code,
                        after: geomPath(g) || (base ? geomPath(base.geometry) : ''),
                        before: (p.before_geometry ? geomPath(p.before_geometry) : '') || (base ? geomPath(base.geometry) : '') };
    }
  });
  planC.forEach(function (m, i) {
    planCircles.push(svg('circle', { cx: X(m.x).toFixed(2), cy: Y(m.y).toFixed(2), r: Math.max(R * 1.6, 3 * Math.max(W, H) / 1000), 'class': 'mv', 'data-m': i }, gPlanC));
  });
}
var mode = 'before';
function setMode(m) {
  if (!D.plan) return;
  mode = m;
  body.setAttribute('data-mode', m);
  while (gPlanT.firstChild) gPlanT.removeChild(gPlanT.firstChild);
  var nt = 0;
  Object.keys(planT).forEach(function (code) {
    var t = planT[code], d = m === 'after' ? t.after : t.before;
    if (!d) return;
    var base = byCode[code], i = base ? feats.indexOf(base) : -1;
    var attrs = { d: d, 'class': 'chg ' + m, 'fill-rule': 'evenodd' };
    if (m === 'after') attrs.fill = ownerColor(repOf(t.to), null);
    if (i >= 0 && m === 'after') attrs['data-i'] = i;
    svg('path', attrs, gPlanT);
    nt++;
  });
  planC.forEach(function (c, i) {
    var rep = repOf(m === 'after' ? c.to : c.from);
    planCircles[i].setAttribute('fill', rep ? rep.dark : OUT.pool[0]);
  });
  map.setAttribute('data-plan-territories', String(nt));
  map.setAttribute('data-plan-customers', String(planC.length));
  var bs = document.querySelectorAll('#plan button');
  for (var j = 0; j < bs.length; j++) bs[j].className = bs[j].getAttribute('data-mode') === m ? 'on' : '';
}

// --- the side panel: header line, plan, legend, notes
var sub = document.getElementById('sub');
sub.textContent = fmt(drawn) + ' territories · ' + fmt(circles.length) + ' customers · as seen by ' + D.viewer +
                  (D.viewer_rep ? ' (rep ' + D.viewer_rep + ')' : '') + ' · generated ' + D.generated_at;
var side = document.getElementById('side');
if (D.plan) {
  var pd = document.getElementById('plan');
  h('h2', 'Realignment plan ' + D.plan_id, pd);
  ['before', 'after'].forEach(function (m) {
    var b = h('button', m === 'before' ? 'Before (today)' : 'After the plan', pd);
    b.setAttribute('data-mode', m);
    b.addEventListener('click', function () { setMode(m); });
  });
  h('div', fmt(planC.length) + ' customers move, ' + fmt(Object.keys(planT).length) + ' territories change', pd, 'note');
  var net = {};
  planC.forEach(function (c) {
    var f = repOf(c.from), t = repOf(c.to);
    var fk = f ? f.code : '(pool)', tk = t ? t.code : '(pool)';
    net[fk] = net[fk] || [0, 0]; net[tk] = net[tk] || [0, 0];
    net[fk][0]++; net[tk][1]++;
  });
  Object.keys(net).sort().forEach(function (code) {
    var r = h('div', null, pd, 'row'), rep = repByCode[code];
    h('span', null, r, 'dot').style.background = rep ? rep.dark : OUT.pool[0];
    h('span', code + (rep ? ' ' + rep.name : ''), r);
    h('span', '−' + net[code][0] + ' +' + net[code][1], r, 'n');
  });
}
var lg = document.getElementById('legend');
h('h2', 'Territory owner', lg);
D.reps.forEach(function (r) {
  if (!ownedBy['r' + r.id]) return;
  var row = h('div', null, lg, 'row');
  h('span', null, row, 'sw').style.background = r.color;
  h('span', r.code + ' ' + r.name + (r.active ? '' : ' (inactive)'), row);
  h('span', fmt(ownedBy['r' + r.id]), row, 'n');
});
[['team', TEAM, 'owned by a team, no single rep'], ['vacant', VACANT, 'vacant: nobody owns it']].forEach(function (x) {
  if (!ownedBy[x[0]]) return;
  var row = h('div', null, lg, 'row');
  h('span', null, row, 'sw').style.background = x[1];
  h('span', x[2], row); h('span', fmt(ownedBy[x[0]]), row, 'n');
});
if (Object.keys(parents).length) {
  var row = h('div', null, lg, 'row');
  var s = h('span', null, row, 'sw'); s.style.background = '#fff'; s.style.border = '2px solid #37474f';
  h('span', 'border of a parent territory', row);
}
h('h2', D.outcomes ? 'Customers, by latest outcome' : 'Customers, by holder', lg);
(D.outcomes ? ['deal', 'followup', 'none', 'pool'] : ['held', 'pool']).forEach(function (o) {
  var row = h('div', null, lg, 'row');
  h('span', null, row, 'dot').style.background = OUT[o][0];
  h('span', OUT[o][1], row); h('span', fmt(counts[o] || 0), row, 'n');
});
if (D.plan) {
  var row2 = h('div', null, lg, 'row');
  var s2 = h('span', null, row2, 'dot'); s2.style.background = '#fff'; s2.style.border = '2px solid #000';
  h('span', 'a customer the plan moves (fill: owner before / after)', row2);
}
var nt = document.getElementById('notes');
if (!D.outcomes) h('div', 'Outcomes are not shown: your role may not read allocation.followup and allocation.deal.', nt, 'note');
D.layers.forEach(function (l) {
  h('div', l.table + ': ' + (l.note ? l.note : fmt(l.shown) + ' customers with a location'), nt, 'note');
});
h('div', 'Hover a territory or a customer; wheel or +/− to zoom, drag to pan.', nt, 'note');
setMode(/after/.test(location.hash) ? 'after' : 'before');
body.setAttribute('data-status', 'ok');
})();
$js$;
BEGIN
    IF title IS NULL OR max_customers IS NULL OR max_bytes IS NULL OR simplify IS NULL THEN
        RAISE EXCEPTION 'territory_map_html() needs a title, max_customers, max_bytes and simplify' USING ERRCODE = '22004',
              DETAIL = 'One of them is NULL (only plan_id may be NULL: no realignment plan).',
              HINT = 'SELECT allocation.territory_map_html(''Territories'');';
    END IF;
    IF length(title) > 200 THEN
        RAISE EXCEPTION 'map title is too long (% characters)', length(title) USING ERRCODE = 'LA0H0',
              DETAIL = 'The title of the page is at most 200 characters.', HINT = 'Pass a shorter title.';
    END IF;
    IF max_customers < 0 OR max_customers > 1000000 THEN
        RAISE EXCEPTION 'max_customers must be between 0 and 1000000, not %', max_customers USING ERRCODE = 'LA0H0',
              DETAIL = 'A browser draws about a million points at most; 0 draws territories only.',
              HINT = 'SELECT allocation.territory_map_html(''Territories'', max_customers => 50000);';
    END IF;
    IF max_bytes < 65536 OR max_bytes > 1000000000 THEN
        RAISE EXCEPTION 'max_bytes must be between 65536 and 1000000000, not %', max_bytes USING ERRCODE = 'LA0H0',
              DETAIL = 'The page is one text value: at least 64 kB (the renderer), at most 1 GB (a PostgreSQL text value).',
              HINT = 'SELECT allocation.territory_map_html(''Territories'', max_bytes => 50000000);';
    END IF;
    IF NOT (simplify >= 0 AND simplify <= 1) THEN
        RAISE EXCEPTION 'simplify must be between 0 and 1 degree, not %', simplify USING ERRCODE = 'LA0H0',
              DETAIL = 'simplify is the tolerance of ST_SimplifyPreserveTopology in degrees (0.001 is about 100 m); 0 keeps every vertex.',
              HINT = 'SELECT allocation.territory_map_html(''Territories'', simplify => 0.002);';
    END IF;

    -- the plan first: a wrong plan id fails before anything is read (realign_geojson()'s own
    -- errors pass through: LA0R1 unknown plan, LA0R0 a caller who may not see plans); the page
    -- draws what moves, not the customers that stay
    IF plan_id IS NOT NULL THEN
        v_plan := allocation.realign_geojson(plan_id);
        v_plan := jsonb_set(v_plan, '{features}', coalesce(
                      (SELECT jsonb_agg(x.f ORDER BY x.o) FROM jsonb_array_elements(v_plan -> 'features') WITH ORDINALITY AS x(f, o)
                        WHERE x.f -> 'properties' ->> 'outcome' IS DISTINCT FROM 'stays'), '[]'));
    END IF;

    -- territories, read like any client reads them (optionally simplified)
    v_terr := allocation.territory_geojson();
    IF simplify > 0 THEN
        SELECT jsonb_build_object('type', 'FeatureCollection', 'features', coalesce(jsonb_agg(
                   CASE WHEN s.g IS NULL THEN e.f ELSE jsonb_set(e.f, '{geometry}', s.g) END ORDER BY e.ord), '[]'))
          INTO v_terr
          FROM jsonb_array_elements(v_terr -> 'features') WITH ORDINALITY e(f, ord)
          LEFT JOIN LATERAL (SELECT ST_AsGeoJSON(ST_SimplifyPreserveTopology(t.geom, simplify), 6)::jsonb AS g
                               FROM allocation.territory t WHERE t.id = (e.f -> 'properties' ->> 'id')::bigint) s ON true;
    END IF;
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', r.id, 'code', r.code, 'name', r.name, 'active', r.active) ORDER BY r.id), '[]')
      INTO v_reps FROM allocation.rep r;

    -- customers: every managed table with a location the caller may read, with the caller's rights
    v_outcomes := has_table_privilege('allocation.followup', 'SELECT') AND has_table_privilege('allocation.deal', 'SELECT');
    v_outcome_sql := CASE WHEN v_outcomes THEN
        $o$CASE WHEN c.o IS NULL THEN 'pool'
                WHEN o.deal_at IS NOT NULL AND o.deal_at >= coalesce(o.fu_at, '-infinity') THEN 'deal'
                WHEN o.fu_at IS NOT NULL THEN 'followup' ELSE 'none' END,
           greatest(o.deal_at, o.fu_at)$o$
        ELSE $o$CASE WHEN c.o IS NULL THEN 'pool' ELSE 'held' END, NULL::timestamptz$o$ END;
    -- (the outcome tables appear in the query only when the caller may read them)
    IF v_outcomes THEN
        v_outcome_join := $o$
              LEFT JOIN LATERAL (
                    SELECT (SELECT greatest(max(d.at), (SELECT max(f.at) FROM allocation.followup f
                                                         WHERE f.managed_id = $2 AND f.key = c.k AND f.kind = 'deal'))
                              FROM allocation.deal d WHERE d.managed_id = $2 AND d.key = c.k) AS deal_at,
                           (SELECT max(f.at) FROM allocation.followup f
                             WHERE f.managed_id = $2 AND f.key = c.k AND f.kind <> 'deal') AS fu_at) o ON true$o$;
    END IF;
    FOR l IN SELECT * FROM allocation.map_layers() LOOP
        IF max_customers = 0 THEN
            v_layers := v_layers || jsonb_build_object('table', l.table_name, 'shown', 0,
                                                       'note', 'not drawn: max_customers => 0');
            v_idx := v_idx + 1;
            CONTINUE;
        END IF;
        IF NOT (has_column_privilege(l.tbl, l.key_column, 'SELECT') AND has_column_privilege(l.tbl, l.location_column, 'SELECT')
                AND has_column_privilege(l.tbl, l.owner_column, 'SELECT')
                AND (l.name_column IS NULL OR has_column_privilege(l.tbl, l.name_column, 'SELECT'))) THEN
            v_layers := v_layers || jsonb_build_object('table', l.table_name, 'shown', 0,
                                                       'note', 'not shown: your role may not read this table');
            v_idx := v_idx + 1;
            CONTINUE;
        END IF;
        v_name_expr := CASE WHEN l.name_column IS NULL THEN 'NULL::text' ELSE format('x.%I::text', l.name_column) END;
        EXECUTE format($q$
            SELECT count(*)::integer,
                   coalesce(jsonb_agg(jsonb_build_array($3, c.k, c.n, round(ST_X(c.p)::numeric, 6), round(ST_Y(c.p)::numeric, 6),
                                                        c.o, %6$s) ORDER BY c.k), '[]')
              FROM (SELECT y.k, y.n, y.o,
                           -- a GCJ-02 / BD-09 column: drawn where the engine places it (WGS 84)
                           CASE WHEN %8$L = 'wgs84' OR NOT (abs(ST_X(y.p)) <= 180 AND abs(ST_Y(y.p)) <= 90) THEN y.p
                                ELSE (SELECT ST_SetSRID(ST_MakePoint(d.lon, d.lat), 4326)
                                        FROM allocation.datum_convert(ST_X(y.p), ST_Y(y.p), %8$L, 'wgs84') d) END AS p
                      FROM (SELECT x.%1$I::text AS k, %4$s AS n, x.%3$I::bigint AS o,
                                   CASE WHEN ST_SRID(x.%2$I) IN (0, 4326) THEN x.%2$I ELSE ST_Transform(x.%2$I, 4326) END AS p
                              FROM %5$s x WHERE x.%2$I IS NOT NULL LIMIT $1) y) c
              %7$s$q$,
            l.key_column, l.location_column, l.owner_column, v_name_expr, l.tbl,
            v_outcome_sql, v_outcome_join, coalesce(l.location_datum, 'wgs84'))
          INTO v_n, v_rows USING max_customers - v_total + 1, l.managed_id, v_idx;
        v_total := v_total + v_n;
        IF v_total > max_customers THEN
            RAISE EXCEPTION 'more than % customers to draw', max_customers USING ERRCODE = 'LA0H1',
                  DETAIL = format('The managed tables you may read have more than %s customers with a location (%s reached it).',
                                  max_customers, l.table_name),
                  HINT = 'Pass a larger max_customers (up to 1000000), or 0 to draw the territories only.';
        END IF;
        v_cust := v_cust || v_rows;
        v_layers := v_layers || jsonb_build_object('table', l.table_name, 'shown', v_n);
        v_idx := v_idx + 1;
    END LOOP;

    -- the data as JSON inside the page: <, > and & escaped (no "</script>" can end the block)
    v_data := replace(replace(replace(jsonb_build_object(
                  'title', title, 'generated_at', to_char(now(), 'YYYY-MM-DD HH24:MI TZ'),
                  'viewer', current_user, 'viewer_rep', (SELECT r.code FROM allocation.rep r WHERE r.id = allocation.current_rep_id()),
                  'territories', v_terr, 'reps', v_reps, 'customers', v_cust, 'layers', v_layers,
                  'outcomes', v_outcomes, 'plan_id', plan_id, 'plan', v_plan)::text,
              '<', '\u003c'), '>', '\u003e'), '&', '\u0026');
    v_title := replace(replace(replace(replace(replace(title, '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '"', '&quot;'), '''', '&#39;');
    v_page := concat(
        E'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
        E'<meta name="viewport" content="width=device-width, initial-scale=1">\n',
        format(E'<meta http-equiv="Content-Security-Policy" content="default-src ''none''; style-src ''unsafe-inline''; script-src ''sha256-%s''; img-src data:">\n',
               encode(sha256(convert_to(v_js, 'UTF8')), 'base64')),
        E'<meta name="generator" content="allocation.territory_map_html()">\n',
        '<title>', v_title, E'</title>\n<style>', v_css, E'</style>\n</head>\n',
        E'<body data-status="loading">\n<header><h1>', v_title, E'</h1><div id="sub"></div></header>\n',
        E'<main><div id="wrap"><svg id="map" xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet"></svg>\n',
        E'<div id="zoom"><button id="zin" title="zoom in">+</button><button id="zout" title="zoom out">−</button>',
        E'<button id="zreset" title="whole map">⌂</button></div>\n',
        E'<div id="tip" hidden></div><div id="err" hidden></div></div>\n',
        E'<aside id="side"><div id="plan"></div><div id="legend"></div><div id="notes"></div></aside></main>\n',
        '<script type="application/json" id="map-data">', v_data, E'</script>\n',
        '<script>', v_js, E'</script>\n</body>\n</html>\n');
    IF octet_length(v_page) > max_bytes THEN
        RAISE EXCEPTION 'the map page would be % bytes, more than max_bytes (%)', octet_length(v_page), max_bytes
              USING ERRCODE = 'LA0H2',
              DETAIL = format('%s territories and %s customers; territory outlines are most of it.',
                              jsonb_array_length(v_terr -> 'features'), v_total),
              HINT = 'Simplify the outlines (simplify => 0.002, about 200 m), or pass a larger max_bytes.';
    END IF;
    RETURN v_page;
END
$f$;
COMMENT ON FUNCTION allocation.territory_map_html(text, bigint, integer, integer, double precision) IS
'One self-contained HTML page (no network): territories coloured by owner, customers coloured by latest outcome (deal, follow-up, none, pool), tooltips, legend, pan/zoom, and with plan_id the realignment plan''s before/after toggle (the moves of realign_geojson(plan_id)); read with the caller''s rights; LA0H0-LA0H2';

-- territory_map_html() runs with the caller's rights and calls PostGIS: it gets
-- PostGIS's schema in its search_path, like territory_geojson() (90_privileges.sql)
DO $$
DECLARE
    postgis_schema name;
BEGIN
    SELECT n.nspname INTO postgis_schema FROM pg_catalog.pg_extension e
      JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'postgis';
    EXECUTE format('ALTER FUNCTION allocation.territory_map_html(text, bigint, integer, integer, double precision) SET search_path = pg_catalog, %I, pg_temp',
                   postgis_schema);
END
$$;
-- <<< issue 15
-- >>> tail

-- nothing new for PUBLIC (current_rep_id(), which enable_rep_security() grants to PUBLIC, keeps that grant)
REVOKE ALL ON ALL TABLES IN SCHEMA allocation FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA allocation FROM PUBLIC;
DO $revoke$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'allocation'::regnamespace
                AND p.oid <> 'allocation.current_rep_id()'::regprocedure LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON ROUTINE %s FROM PUBLIC', f);   -- procedures too
    END LOOP;
END
$revoke$;
SELECT pg_catalog.pg_extension_config_dump('allocation.customer_share', '');
DO $seq$
DECLARE
    s regclass;
BEGIN
    -- the new identity sequences, one command each (each call updates pg_extension)
    FOR s IN SELECT c.oid FROM pg_catalog.pg_class c
              WHERE c.relnamespace = 'allocation'::regnamespace AND c.relkind = 'S'
                AND c.oid <> ALL ((SELECT e.extconfig FROM pg_catalog.pg_extension e WHERE e.extname = 'allocation')::oid[])
              ORDER BY c.relname LOOP
        PERFORM pg_catalog.pg_extension_config_dump(s, '');
    END LOOP;
END
$seq$;

-- Tables under enable_rep_security() keep their 1.0 policies (an update cannot
-- recreate policies on user tables: they would become members of the extension)
-- until enable_rep_security() runs again; until then shared reps do not see them.
DO $rls$
DECLARE
    v text;
BEGIN
    SELECT string_agg(p.polrelid::regclass::text, ', ' ORDER BY p.polrelid::regclass::text) INTO v
      FROM pg_catalog.pg_policy p WHERE p.polname = 'allocation_rep_read';
    IF v IS NOT NULL THEN
        RAISE NOTICE 'allocation 1.1: run allocation.enable_rep_security() again for %', v
            USING DETAIL = 'Version 1.1 lets reps see the customers shared with them; the policies of 1.0 do not know shares.',
                  HINT = 'SELECT allocation.enable_rep_security(''<table>''); as the table''s owner, for each of them.';
    END IF;
END
$rls$;
-- <<< tail

CREATE OR REPLACE FUNCTION allocation._grant_role(role regrole, kind text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    r text := role::text;
BEGIN
    IF role IS NULL OR role = 0 THEN
        RAISE EXCEPTION 'role must name an existing role'
            USING ERRCODE = '22004', DETAIL = 'allocation.grant_role() was called with a NULL or invalid role.',
                  HINT = 'SELECT allocation.grant_role(''crm_manager'', ''manager'');';
    END IF;
    IF kind IS NULL OR kind NOT IN ('admin', 'manager', 'rep', 'analyst') THEN
        RAISE EXCEPTION 'unknown allocation role kind "%"', kind
            USING ERRCODE = '22023',
                  DETAIL = 'The kinds are admin (configures), manager (decides), rep (sells) and analyst (reads).',
                  HINT = 'SELECT allocation.grant_role(''crm_manager'', ''manager'');';
    END IF;
    -- Only public functions are granted: every internal function (name starting with
    -- "_") is executable by the extension owner alone; the public functions that change
    -- state are C gateways running their internal implementation for the caller.
    EXECUTE format('GRANT USAGE ON SCHEMA allocation TO %s', r);
    -- everyone: read the organisation, territories and rules; explain decisions
    EXECUTE format('GRANT SELECT ON allocation.team, allocation.rep, allocation.territory, allocation.rule TO %s', r);
    EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.explain(regclass, text), allocation.explain(regclass, jsonb),
                    allocation.owner_at(regclass, text, timestamptz), %s,
                    allocation.territory_geojson(), allocation.territory_holdings(),
                    allocation.territory_map_html(text, bigint, integer, integer, double precision), allocation.map_layers(),
                    allocation.datum_convert(double precision, double precision, text, text),
                    allocation.normalize_name(text), allocation.normalize_name(text, text[]),
                    allocation.normalize_phone(text), allocation.credit_code_is_valid(text),
                    allocation.explain_claim(regclass, text, bigint), allocation.claim_limits(bigint, text),
                    allocation.claimable(bigint), allocation.current_rep_id(),
                    allocation.claim_today() TO %s',
                   'allocation.territory_at'::regproc::regprocedure, r);
    EXECUTE format('GRANT SELECT ON allocation.claimable_now, allocation.claim_policy, allocation.recycle_policy TO %s', r);
    EXECUTE format('GRANT SELECT ON allocation.transfer_policy, allocation.pending_transfer TO %s', r);
    -- sharing: each role reads the shares it has a part in (active_share) and its own shared keys
    EXECUTE format('GRANT SELECT ON allocation.active_share TO %s', r);
    EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.shared_with_me(regclass, boolean), allocation.team_manager(bigint) TO %s', r);
    -- dealer networks (read with the caller's own rights on the customer table)
    EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.customer_network(regclass, text),
                    allocation.network_summary(regclass), allocation.network_mapping(regclass) TO %s', r);
    EXECUTE format('GRANT SELECT ON allocation.dealer_network TO %s', r);
    -- virtual teams: how a deal is split, a team's shares at a time, the credit (a rep: its own rows)
    EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.split_revenue(regclass, text, numeric, timestamptz),
                    allocation.team_shares_at(bigint, timestamptz) TO %s', r);
    EXECUTE format('GRANT SELECT ON allocation.revenue_credit TO %s', r);
    -- the loop's measures: everyone, a rep sees its own rows (checked inside)
    EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.rep_measures(tstzrange, integer), allocation.scorecard(tstzrange, integer),
                    allocation.month_of(timestamptz) TO %s', r);
    EXECUTE format('GRANT SELECT ON allocation.scorecard_monthly, allocation.active_reward, allocation.reward_rule,
                    allocation.new_rep_policy, allocation.my_alert, allocation.alert_rule TO %s', r);
    -- the rep's pool screen (its point argument is a PostGIS type: named by its function)
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s, allocation.claimable_count(regclass, bigint) TO %s',
                   'allocation.claimable_page'::regproc::regprocedure, r);
    IF kind IN ('rep', 'manager', 'admin') THEN
        -- claims, releases and follow-ups (a rep acts for itself: the rep is taken from its login)
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.claim(regclass, text), allocation.release(regclass, text, text),
                        allocation.log_followup(regclass, text, text, text, text, boolean, timestamptz) TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.request_resource(bigint, regclass, text, numeric, text, tstzrange, bigint),
                        allocation.match_resources(regclass, text) TO %s', r);
        -- transfers: the holder hands over, the receiver asks, the approver its policy names decides
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.request_transfer(regclass, text, bigint, text),
                        allocation.approve_transfer(bigint, text), allocation.reject_transfer(bigint, text),
                        allocation.cancel_transfer(bigint) TO %s', r);
        -- sharing: the holder (or a manager) shares, the holder, a manager or the shared rep ends it
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.share_customer(regclass, text, bigint, text, tstzrange),
                        allocation.unshare_customer(regclass, text, bigint, text) TO %s', r);
        -- deals: a rep records those of customers it holds or shares in a virtual team
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.record_deal(regclass, text, numeric, timestamptz, text) TO %s', r);
        -- ownership disputes: a rep opens one for itself, reads the evidence of its own, withdraws its own claim
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.open_dispute(regclass, text, bigint, text),
                        allocation.dispute_evidence(bigint), allocation.dismiss_ownership_dispute(bigint, text) TO %s', r);
    END IF;
    IF kind IN ('analyst', 'manager', 'admin') THEN
        EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA allocation TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.upcoming_recycles(timestamptz) TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.check_consistency() TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.verify_audit(text), allocation.audit_head() TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.stat(), allocation.stat_index() TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.dispute_evidence(bigint), allocation.explain_event(bigint) TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.coverage_gaps(text), allocation.coverage_gaps_geojson(text) TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.strategy_effectiveness(tstzrange, integer),
                        allocation.customer_potential(regclass, text) TO %s', r);
    END IF;
    IF kind IN ('manager', 'admin') THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.assign(regclass, text, bigint, text),
                        allocation.accept_suggestion(bigint), allocation.reject_suggestion(bigint, text),
                        allocation.claim(regclass, text, bigint), allocation.lock_customer(regclass, text, text),
                        allocation.unlock_customer(regclass, text, text), allocation.resolve_dispute(bigint, bigint, text),
                        allocation.dismiss_dispute(bigint, text), allocation.recycle(timestamptz),
                        allocation.approve_request(bigint), allocation.reject_request(bigint, text),
                        allocation.release_grant(bigint, text), allocation.expire_grants(timestamptz),
                        allocation.grant_resource(bigint, regclass, text, numeric, text, tstzrange, bigint),
                        allocation.expire_transfers(timestamptz), allocation.transfer_all(bigint, bigint[], text, boolean) TO %s', r);
        -- realignment (issue 15): plans, preview, apply (a procedure: it commits between batches)
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.realign_create(text, text, interval), %s,
                        allocation.realign_stage_rule(bigint, bigint, jsonb),
                        allocation.realign_stage_rep(bigint, bigint, integer, boolean, boolean),
                        allocation.realign_cancel(bigint, text), allocation.realign_preview(bigint),
                        allocation.realign_preview_reps(bigint), allocation.realign_apply_step(bigint, text, integer),
                        allocation.realign_in_block(), allocation.realign_geojson(bigint) TO %s',
                       'allocation.realign_stage_territory'::regproc::regprocedure, r);   -- its geometry: PostGIS's schema
        EXECUTE format('GRANT EXECUTE ON PROCEDURE allocation.realign_apply(bigint, text, integer) TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.create_virtual_team(text, text, tstzrange, jsonb, regclass, text[]),
                        allocation.set_team_shares(bigint, jsonb), allocation.add_team_customer(bigint, regclass, text),
                        allocation.remove_team_customer(bigint, regclass, text), allocation.dissolve_virtual_team(bigint, text),
                        allocation.dissolve_virtual_teams(timestamptz) TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.settle_dispute(bigint, bigint, text),
                        allocation.auto_settle_disputes(timestamptz) TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.refresh_scorecards(timestamptz),
                        allocation.evaluate_performance(tstzrange) TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.evaluate_alerts(timestamptz), allocation.resolve_alert(bigint, text),
                        allocation.run_maintenance(timestamptz) TO %s', r);
    END IF;
    IF kind = 'admin' THEN
        -- configuration only: the registry, counters, suggestions, locks, follow-ups and the
        -- audit log are written by the engine alone (actor and time set by it)
        EXECUTE format('GRANT INSERT, UPDATE, DELETE ON allocation.team, allocation.rep, allocation.territory,
                        allocation.rule, allocation.claim_policy, allocation.recycle_policy,
                        allocation.resource_pool, allocation.transfer_policy, allocation.reward_rule,
                        allocation.new_rep_policy, allocation.alert_rule TO %s', r);
        EXECUTE format('GRANT USAGE ON SEQUENCE allocation.team_id_seq, allocation.rep_id_seq, allocation.territory_id_seq,
                        allocation.rule_id_seq, allocation.claim_policy_id_seq, allocation.recycle_policy_id_seq,
                        allocation.resource_pool_id_seq, allocation.transfer_policy_id_seq, allocation.reward_rule_id_seq,
                        allocation.new_rep_policy_id_seq, allocation.alert_rule_id_seq TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.import_territories(jsonb, text, text, text, text),
                        allocation.import_territories(text, text, text, text, text), allocation.import_report(),
                        allocation.geojson_features(text),
                        allocation.manage(regclass, name, name, name, jsonb), allocation.unmanage(regclass),
                        allocation.set_reevaluate(regclass, text), allocation.set_location_datum(regclass, text), allocation.grant_role(regrole, text),
                        allocation.enable_rep_security(regclass), allocation.disable_rep_security(regclass),
                        allocation.cache_stats(), allocation.set_duplicate_policy(regclass, text, text, real, double precision) TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.seal_audit() TO %s', r);
        -- outcomes from the CRM's own tables, the customers' potential (the table's owner, checked inside)
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.manage_outcomes(regclass, text, name, jsonb),
                        allocation.unmanage_outcomes(regclass), allocation.set_potential(regclass, text, jsonb) TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.dispute_policy(bigint, boolean, text[]) TO %s', r);
        EXECUTE format('GRANT EXECUTE ON FUNCTION allocation.stat_reset(regclass) TO %s', r);
        EXECUTE format('GRANT INSERT, UPDATE, DELETE ON allocation.name_term TO %s', r);
    END IF;
END
$$;

-- Roles granted under 1.0 get the new functions of their kind by grant_role() run again
-- after this update -- not here: a GRANT inside ALTER EXTENSION is recorded as the
-- extension's initial privilege (pg_init_privs), which pg_dump leaves out, so it would
-- be lost by a dump and restore.  The update names the roles to grant again.
DO $roles$
DECLARE
    v text;
BEGIN
    SELECT string_agg(DISTINCT x.grantee::regrole::text, ', ') INTO v
      FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) x
     WHERE c.oid = 'allocation.claim_policy'::regclass AND x.privilege_type = 'SELECT'
       AND x.grantee <> c.relowner AND x.grantee <> 0;
    IF v IS NOT NULL THEN
        RAISE NOTICE 'allocation 1.1: run allocation.grant_role() again for %', v
            USING DETAIL = 'Version 1.1 adds transfers, sharing, virtual teams with deals, dealer networks, ownership disputes, the allocation loop (scorecards, alerts, rewards), realignment plans, the map, coverage gaps and the location datum; each kind gets its new functions from grant_role().',
                  HINT = 'SELECT allocation.grant_role(''<role>'', ''<kind>''); for each of them, with its kind.';
    END IF;
END
$roles$;
