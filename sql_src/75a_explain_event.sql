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
