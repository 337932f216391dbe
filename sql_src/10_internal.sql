-------------------------------------------------------------------------------
-- Internal plumbing: cache invalidation, append-only audit, counters
-------------------------------------------------------------------------------

-- Statement trigger on every configuration table: tells every backend to
-- drop its cached configuration (relcache invalidation + callback in C).
CREATE FUNCTION allocation._invalidate() RETURNS trigger
    AS 'MODULE_PATHNAME', 'allocation_invalidate' LANGUAGE C;
COMMENT ON FUNCTION allocation._invalidate() IS 'internal: invalidates the per-backend allocation caches after a configuration change';

CREATE TRIGGER zz_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON allocation.team
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._invalidate();
CREATE TRIGGER zz_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON allocation.rep
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._invalidate();
CREATE TRIGGER zz_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON allocation.territory
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._invalidate();
CREATE TRIGGER zz_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON allocation.rule
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._invalidate();
CREATE TRIGGER zz_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON allocation.managed_table
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._invalidate();

-- Append-only audit log.
CREATE FUNCTION allocation._event_append_only() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    -- shared by allocation.event and allocation.audit_seal (the hash chain over it)
    RAISE EXCEPTION 'allocation.% is append-only', TG_TABLE_NAME
        USING ERRCODE = 'LA050',
              DETAIL = format('%s on allocation.%s was refused; audit entries can never be changed or removed.', TG_OP, TG_TABLE_NAME),
              HINT = CASE TG_TABLE_NAME WHEN 'event' THEN 'Record a correcting decision instead (for example with allocation.assign()).'
                          ELSE 'Seals are only ever appended, by allocation.seal_audit().' END;
END
$$;
COMMENT ON FUNCTION allocation._event_append_only() IS 'internal: refuses UPDATE, DELETE and TRUNCATE on allocation.event and allocation.audit_seal';
CREATE TRIGGER event_no_update BEFORE UPDATE OR DELETE ON allocation.event
    FOR EACH ROW EXECUTE FUNCTION allocation._event_append_only();
CREATE TRIGGER event_no_truncate BEFORE TRUNCATE ON allocation.event
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._event_append_only();

-- Every rep gets a holdings counter.
-- (SECURITY DEFINER: an admin creates reps but cannot write the counters)
CREATE FUNCTION allocation._rep_load_row() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    INSERT INTO allocation.rep_load (rep_id) VALUES (NEW.id) ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION allocation._rep_load_row() IS 'internal: creates the holdings counter of a new rep';
CREATE TRIGGER rep_load_row AFTER INSERT ON allocation.rep
    FOR EACH ROW EXECUTE FUNCTION allocation._rep_load_row();

CREATE FUNCTION allocation._in_batch() RETURNS boolean
    AS 'MODULE_PATHNAME', 'allocation_in_batch' LANGUAGE C STABLE;
COMMENT ON FUNCTION allocation._in_batch() IS 'internal: whether the engine''s batch writer is running (kept in C, not a setting)';

-- Holdings counters are derived state: ownership events written by anything
-- but the engine's batch writer (manage(), unmanage(), a pg_restore) trigger a
-- recount.  (The engine's direct writer fires no trigger; its batches keep
-- the counters themselves.)
CREATE FUNCTION allocation._ownership_loaded() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    IF allocation._in_batch() OR NOT EXISTS (SELECT 1 FROM loaded n WHERE n.period IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM loaded n WHERE n.period = 'open' AND n.kind <> 'attach') THEN
        -- only closings (truncate, unmanage, a dropped table: each ends its customer's
        -- current period, whose owner is from_rep) and attachments (manage(): a customer
        -- with no current period opens one with to_rep): the counters move by exactly that,
        -- without reading the history
        UPDATE allocation.rep_load l SET held = l.held + c.n
          FROM (SELECT u.rep, sum(u.d)::integer AS n
                  FROM (SELECT n.from_rep AS rep, -1 AS d FROM loaded n WHERE n.period = 'close'
                        UNION ALL
                        SELECT n.to_rep, 1 FROM loaded n WHERE n.period = 'open') u
                 WHERE u.rep IS NOT NULL GROUP BY u.rep) c
         WHERE l.rep_id = c.rep AND c.n <> 0;
        PERFORM allocation._forget_counters();  -- this backend re-reads the counters it holds
    ELSE
        PERFORM allocation._recount_loads();    -- a restore, or anything else: from the history
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION allocation._ownership_loaded() IS 'internal: keeps rep holdings right after ownership events are written outside the engine''s batches (manage, unmanage, truncate: by the events; a restore: recounted from the history)';
CREATE TRIGGER ownership_loaded AFTER INSERT ON allocation.event
    REFERENCING NEW TABLE AS loaded
    FOR EACH STATEMENT EXECUTE FUNCTION allocation._ownership_loaded();

-- A rep that holds customers cannot be deleted (customers assigned by a rule
-- have no registry row whose foreign key would refuse it).  The holdings
-- counter is read after this row is locked, so an assignment committed
-- meanwhile is seen.
CREATE FUNCTION allocation._rep_delete_check() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_held integer;
BEGIN
    SELECT l.held INTO v_held FROM allocation.rep_load l WHERE l.rep_id = OLD.id;
    IF v_held > 0 THEN
        RAISE EXCEPTION 'rep % still holds % customer(s)', OLD.code, v_held
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Rep %s (id %s) is the current owner of %s managed customer(s).', OLD.code, OLD.id, v_held),
                  HINT = 'Reassign or release its customers first (allocation.assign()), or set the rep inactive.';
    END IF;
    RETURN OLD;
END
$$;
COMMENT ON FUNCTION allocation._rep_delete_check() IS 'internal: refuses to delete a rep that still holds customers';
CREATE TRIGGER rep_delete_check BEFORE DELETE ON allocation.rep
    FOR EACH ROW EXECUTE FUNCTION allocation._rep_delete_check();

-- A pending suggestion reserves a slot of the rep it names (rep_load.reserved), so that
-- accepting it never fails for capacity.  The counter follows every change of a
-- suggestion's status, whoever makes it (batch writer, reject, unmanage, cascades).
-- Whoever creates a suggestion holds the rep's counter lock (it reserved the slot
-- under the capacity check); whoever ends one takes that lock first under the
-- ordered-locking rule (allocation._lock_counter), so this UPDATE does not wait in a cycle.
CREATE FUNCTION allocation._suggestion_reserved() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE allocation.rep_load l SET reserved = l.reserved + d.n
          FROM (SELECT x.rep_id, count(*)::integer AS n FROM new_rows x
                 WHERE x.status = 'pending' GROUP BY x.rep_id) d
         WHERE l.rep_id = d.rep_id;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE allocation.rep_load l SET reserved = l.reserved - d.n
          FROM (SELECT x.rep_id, count(*)::integer AS n FROM old_rows x
                 WHERE x.status = 'pending' GROUP BY x.rep_id) d
         WHERE l.rep_id = d.rep_id;
    ELSE
        UPDATE allocation.rep_load l SET reserved = l.reserved + d.n
          FROM (SELECT u.rep_id, sum(u.n)::integer AS n
                  FROM (SELECT o.rep_id, -1 AS n FROM old_rows o WHERE o.status = 'pending'
                        UNION ALL
                        SELECT x.rep_id, 1 FROM new_rows x WHERE x.status = 'pending') u
                 GROUP BY u.rep_id) d
         WHERE l.rep_id = d.rep_id AND d.n <> 0;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION allocation._suggestion_reserved() IS 'internal: keeps rep_load.reserved equal to the number of pending suggestions naming each rep';
CREATE TRIGGER suggestion_reserved_ins AFTER INSERT ON allocation.suggestion
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION allocation._suggestion_reserved();
CREATE TRIGGER suggestion_reserved_upd AFTER UPDATE ON allocation.suggestion
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION allocation._suggestion_reserved();
CREATE TRIGGER suggestion_reserved_del AFTER DELETE ON allocation.suggestion
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION allocation._suggestion_reserved();

-- Teams and territories: a hierarchy without cycles (one function for both
-- tables, which share code/parent_id); territory.updated_at on UPDATE.
CREATE FUNCTION allocation._hierarchy_before() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    v_cycle boolean;
    v_parent text;
BEGIN
    IF NEW.parent_id IS NOT NULL THEN
        EXECUTE format('WITH RECURSIVE up AS (
                            SELECT t.id, t.parent_id FROM allocation.%1$I t WHERE t.id = $1
                            UNION
                            SELECT t.id, t.parent_id FROM allocation.%1$I t JOIN up ON t.id = up.parent_id)
                        SELECT EXISTS (SELECT 1 FROM up WHERE up.id = $2),
                               (SELECT t.code FROM allocation.%1$I t WHERE t.id = $1)', TG_TABLE_NAME)
           INTO v_cycle, v_parent USING NEW.parent_id, NEW.id;
        IF v_cycle THEN
            RAISE EXCEPTION '% hierarchy would contain a cycle', TG_TABLE_NAME
                USING ERRCODE = 'LA009',
                      DETAIL = format('%s %s cannot have %s as parent: %s lies inside %s''s own subtree.',
                                      initcap(TG_TABLE_NAME), NEW.code, v_parent, v_parent, NEW.code),
                      HINT = format('Choose a parent outside the %s''s own subtree.', TG_TABLE_NAME);
        END IF;
    END IF;
    IF TG_TABLE_NAME = 'territory' AND TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();   -- on INSERT keep a supplied value (pg_restore)
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION allocation._hierarchy_before() IS 'internal: rejects team and territory hierarchy cycles; keeps territory.updated_at';
CREATE TRIGGER territory_before BEFORE INSERT OR UPDATE ON allocation.territory
    FOR EACH ROW EXECUTE FUNCTION allocation._hierarchy_before();
CREATE TRIGGER team_before BEFORE INSERT OR UPDATE ON allocation.team
    FOR EACH ROW EXECUTE FUNCTION allocation._hierarchy_before();

-- Rule validation: the SQL condition is parsed, type-checked and compiled here,
-- once, when the rule is saved (C: rules.c).
CREATE FUNCTION allocation._rule_before() RETURNS trigger
    AS 'MODULE_PATHNAME', 'allocation_rule_before' LANGUAGE C;
COMMENT ON FUNCTION allocation._rule_before() IS 'internal: validates and compiles a rule''s SQL condition when the rule is saved';
CREATE TRIGGER rule_before BEFORE INSERT OR UPDATE ON allocation.rule
    FOR EACH ROW EXECUTE FUNCTION allocation._rule_before();

-- The C triggers installed on managed tables by allocation.manage().
CREATE FUNCTION allocation._row_trigger() RETURNS trigger
    AS 'MODULE_PATHNAME', 'allocation_row_trigger' LANGUAGE C;
COMMENT ON FUNCTION allocation._row_trigger() IS 'internal: row trigger on managed tables (assignment on INSERT, reassignment on UPDATE, history on DELETE)';
CREATE FUNCTION allocation._stmt_trigger() RETURNS trigger
    AS 'MODULE_PATHNAME', 'allocation_stmt_trigger' LANGUAGE C;
COMMENT ON FUNCTION allocation._stmt_trigger() IS 'internal: statement trigger on managed tables (opens and flushes the per-statement decision batch)';

-- One decision of a statement, as the engine hands it to _record_batch (the
-- C writer writes the same entries directly when it can).
CREATE TYPE allocation._entry AS (
    ord         integer,    -- position in the statement
    managed_id  integer,
    op          text,       -- insert, update, refresh (same owner), delete
    key         text,
    rep         bigint,     -- new owner (NULL: pool or none)
    old_rep     bigint,     -- released owner
    team        bigint,
    territory   bigint,
    rule        bigint,
    source      text,
    pinned      boolean,
    kind        text,       -- the event's kind
    reason      text,
    tier        text,
    crop        text,
    btype       text,
    sug         bigint,     -- suggested rep
    stage       text,
    req         bigint,     -- dispute: the owner the write asked for
    state       boolean,    -- insert/update: needs a customer_state row (the engine's
                            -- rule: anything but "a rule assigned a rep, not pinned")
    plan        bigint      -- 1.1: a realignment's move: the plan (event detail realign_plan)
);
COMMENT ON TYPE allocation._entry IS 'internal: one decision of a statement, as the engine records it';

-- Writes one statement's decisions: ownership events, state exceptions,
-- suggestions, counters. Called once per statement by the C statement trigger.
CREATE FUNCTION allocation._record_batch(p_actor text, p_entries allocation._entry[],
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
