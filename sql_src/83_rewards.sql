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
