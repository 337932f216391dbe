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
