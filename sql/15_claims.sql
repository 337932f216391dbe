--
-- 15_claims: claim() and release() for reps and managers, every claim limit
-- with its SQLSTATE, explain_claim() and claimable_now, and that a refused
-- claim or release changes nothing.
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never
\x auto

DO $$
BEGIN
    CREATE ROLE regress_rep_a;
    CREATE ROLE regress_rep_b;
    CREATE ROLE regress_rep_c;
    CREATE ROLE regress_mgr;
    CREATE ROLE regress_nobody;
END $$;
INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales'), (2, 'ka', 'Key accounts');
UPDATE allocation.team SET parent_id = 1 WHERE id = 2;
INSERT INTO allocation.rep (id, code, name, team_id, capacity, login, active) VALUES
    (1, 'a', 'Rep A', 1, 3,    'regress_rep_a', true),
    (2, 'b', 'Rep B', 1, 10,   'regress_rep_b', true),
    (3, 'c', 'Rep C (key accounts)', 2, NULL, 'regress_rep_c', true),
    (4, 'd', 'Rep D (inactive)', 1, 10, NULL, false);
SELECT allocation.grant_role('regress_rep_a', 'rep'), allocation.grant_role('regress_rep_b', 'rep'),
       allocation.grant_role('regress_rep_c', 'rep'), allocation.grant_role('regress_mgr', 'manager');
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "X", "name": "Exclusive county of B"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}}
]}'::jsonb);
UPDATE allocation.territory SET owner_rep_id = 2, exclusive = true WHERE code = 'X';

CREATE TABLE r15_customer (id integer PRIMARY KEY, name text, tier text, loc geometry(Point, 4326), owner bigint);
GRANT SELECT, INSERT ON r15_customer TO regress_rep_a, regress_rep_b, regress_rep_c;
SELECT allocation.manage('r15_customer', 'id', 'loc', 'owner', '{"tier": "tier"}');
-- no rules: every new customer lands in the public pool
INSERT INTO r15_customer (id, name, tier) SELECT g, 'dealer ' || g, CASE WHEN g <= 6 THEN 'A' ELSE 'B' END
  FROM generate_series(1, 9) g;
INSERT INTO r15_customer (id, name, tier, loc) VALUES (10, 'inside X', 'B', ST_SetSRID(ST_MakePoint(5, 5), 4326));

CREATE FUNCTION r15_mask(t text) RETURNS text LANGUAGE sql IMMUTABLE
RETURN regexp_replace(t, '\w{3} \w{3} \d+ [0-9:.]+ \d{4} \w+', '<time>', 'g');
GRANT EXECUTE ON FUNCTION r15_mask(text) TO PUBLIC;
-- runs a statement; returns its SQLSTATE, message, detail and hint (times masked)
CREATE FUNCTION r15_try(sql text) RETURNS TABLE (code text, message text, detail text, hint text)
LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE sql;
    code := '00000';
    RETURN NEXT;
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    detail := r15_mask(detail);
    RETURN NEXT;
END $f$;
GRANT EXECUTE ON FUNCTION r15_try(text) TO PUBLIC;

CREATE VIEW r15_state AS
SELECT c.id, r.code AS owner, a.source, a.valid_from IS NOT NULL AS registered
  FROM r15_customer c
  LEFT JOIN allocation.rep r ON r.id = c.owner
  LEFT JOIN allocation.assignment a ON a.key = c.id::text AND a.valid_to IS NULL;
CREATE VIEW r15_events AS
SELECT e.id, e.actor, e.kind, e.key, fr.code AS from_rep, tr.code AS to_rep, e.reason
  FROM allocation.event e
  LEFT JOIN allocation.rep fr ON fr.id = e.from_rep
  LEFT JOIN allocation.rep tr ON tr.id = e.to_rep
 WHERE e.kind IN ('claim', 'release', 'lock', 'unlock', 'reassign');
-- changes whenever the table, the registry, the audit log or the counters change
CREATE VIEW r15_fingerprint AS
SELECT (SELECT string_agg(id || ':' || coalesce(owner::text, '-'), ',' ORDER BY id) FROM r15_customer) AS owners,
       (SELECT count(*) FROM allocation.assignment) AS registry_rows,
       (SELECT count(*) FROM allocation.event) AS events,
       (SELECT string_agg(rep_id || '=' || held, ',' ORDER BY rep_id) FROM allocation.rep_load) AS loads,
       (SELECT coalesce(sum(claims), 0) FROM allocation.claim_day) AS claims_counted;
GRANT SELECT ON r15_state TO PUBLIC;

-- a rep claims a pool customer for itself
SET ROLE regress_rep_a;
SELECT allocation.claim('r15_customer', '1');
SELECT * FROM r15_state WHERE id = 1;
-- claiming it again: already yours
SELECT * FROM r15_try($$SELECT allocation.claim('r15_customer', '1')$$);
RESET ROLE;
SELECT * FROM r15_fingerprint \gset before_
-- another rep loses: the message names the holder
SET ROLE regress_rep_b;
SELECT * FROM r15_try($$SELECT allocation.claim('r15_customer', '1')$$);
-- a rep cannot name another rep (the admin form is for managers)
SELECT * FROM r15_try($$SELECT allocation.claim('r15_customer', '2', 2)$$);
-- nor release someone else's customer
SELECT * FROM r15_try($$SELECT allocation.release('r15_customer', '1', 'not mine')$$);
RESET ROLE;
-- a role that is no rep
SET ROLE regress_mgr;
SELECT * FROM r15_try($$SELECT allocation.claim('r15_customer', '2')$$);
RESET ROLE;
GRANT USAGE ON SCHEMA allocation TO regress_nobody;
GRANT EXECUTE ON FUNCTION allocation.release(regclass, text, text) TO regress_nobody;
SET ROLE regress_nobody;
SELECT * FROM r15_try($$SELECT allocation.release('r15_customer', '1', 'who am I')$$);
RESET ROLE;
-- bad arguments
SELECT * FROM r15_try($$SELECT allocation.claim('r15_customer', NULL)$$);
SELECT * FROM r15_try($$SELECT allocation.claim('r15_customer', '999', 1)$$);
SELECT * FROM r15_try($$SELECT allocation.claim('r15_customer', 'abc', 1)$$);
SELECT * FROM r15_try($$SELECT allocation.claim('r15_customer', '2', 99)$$);
SELECT * FROM r15_try($$SELECT allocation.claim('r15_customer', '2', 4)$$);
SELECT * FROM r15_try($$SELECT allocation.claim('pg_class', '2', 1)$$);
-- exclusive territory of rep b
SELECT * FROM r15_try($$SELECT allocation.claim('r15_customer', '10', 1)$$);
SELECT * FROM r15_fingerprint \gset after_
SELECT :'before_owners' = :'after_owners' AS owners_kept, :before_registry_rows = :after_registry_rows AS registry_kept,
       :before_events = :after_events AS events_kept, :'before_loads' = :'after_loads' AS loads_kept,
       :before_claims_counted = :after_claims_counted AS claim_counter_kept;

-- the manager's form
SET ROLE regress_mgr;
SELECT allocation.claim('r15_customer', '10', 2);
RESET ROLE;

-- capacity: rep a has capacity 3
SELECT allocation.claim('r15_customer', '2', 1), allocation.claim('r15_customer', '3', 1);
SELECT * FROM r15_fingerprint \gset before_
SELECT * FROM r15_try($$SELECT allocation.claim('r15_customer', '4', 1)$$);

-- release: a reason is required; the former owner's cooldown starts
SET ROLE regress_rep_a;
SELECT * FROM r15_try($$SELECT allocation.release('r15_customer', '3', '  ')$$);
SELECT allocation.release('r15_customer', '3', 'dealer went out of business');
SELECT * FROM r15_try($$SELECT allocation.release('r15_customer', '3', 'again')$$);
RESET ROLE;
SELECT * FROM r15_state WHERE id = 3;

-- claim policies: the most specific row per limit wins (tier row, then nearest team, then global)
INSERT INTO allocation.claim_policy (team_id, tier, max_held, daily_claims, cooldown, protection, note) VALUES
    (NULL, NULL, NULL, 5,    '7 days', '30 days', 'company default'),
    (1,    NULL, NULL, 4,    NULL,     NULL,      'field sales'),
    (NULL, 'A',  2,    NULL, NULL,     NULL,      'tier A is scarce: two per rep');
SELECT * FROM allocation.claim_limits(1, 'A');
SELECT * FROM allocation.claim_limits(3, 'B');   -- key accounts inherit from field sales
SELECT * FROM allocation.claim_limits(1, NULL);
-- the same scope twice
SELECT * FROM r15_try($$INSERT INTO allocation.claim_policy (team_id, tier, daily_claims) VALUES (1, NULL, 9)$$);
SELECT * FROM r15_try($$INSERT INTO allocation.claim_policy (daily_claims) VALUES (-1)$$);

-- cooldown: rep a cannot take customer 3 back, rep b can
SELECT * FROM r15_try($$SELECT allocation.claim('r15_customer', '3', 1)$$);
-- tier A max_held 2: rep a holds 1 and 2 (tier A)
SELECT * FROM r15_try($$SELECT allocation.claim('r15_customer', '5', 1)$$);
SELECT allocation.claim('r15_customer', '3', 2);

-- daily limit: field sales 4 per day; rep b made 2 claims today (10 by its manager, 3)
SELECT allocation.claim('r15_customer', '7', 2), allocation.claim('r15_customer', '8', 2);
SELECT * FROM r15_fingerprint \gset before_
SELECT * FROM r15_try($$SELECT allocation.claim('r15_customer', '9', 2)$$);
SELECT * FROM r15_fingerprint \gset after_
SELECT :'before_owners' = :'after_owners' AS owners_kept, :before_events = :after_events AS events_kept,
       :before_claims_counted = :after_claims_counted AS claim_counter_kept;
SELECT r.code, d.claims FROM allocation.claim_day d JOIN allocation.rep r ON r.id = d.rep_id ORDER BY 1;

-- the claim day is today in allocation.claim_timezone (default Asia/Shanghai), which a session
-- cannot change: its own TimeZone does not move its claims to another day
SET TimeZone = 'Pacific/Kiritimati';
SELECT allocation.claim_today() = (now() AT TIME ZONE 'Asia/Shanghai')::date AS shanghai_day;
RESET TimeZone;
SET ROLE regress_rep_a;
SELECT * FROM r15_try($$SET allocation.claim_timezone = 'Etc/GMT+12'$$);
RESET ROLE;
SELECT * FROM r15_try($$SET allocation.claim_timezone = 'Mars/Olympus_Mons'$$);

-- locks: a locked pool customer cannot be claimed, a locked held one not released
SET ROLE regress_mgr;
SELECT allocation.lock_customer('r15_customer', '9', 'head office negotiates');
SELECT allocation.lock_customer('r15_customer', '2', 'audit');
SELECT * FROM r15_try($$SELECT allocation.lock_customer('r15_customer', '2', NULL)$$);
SELECT * FROM r15_try($$SELECT allocation.lock_customer('r15_customer', '999', 'x')$$);
RESET ROLE;
SELECT * FROM r15_try($$SELECT allocation.claim('r15_customer', '9', 3)$$);
SET ROLE regress_rep_a;
SELECT * FROM r15_try($$SELECT allocation.release('r15_customer', '2', 'too far away')$$);
RESET ROLE;
SET ROLE regress_mgr;
SELECT allocation.unlock_customer('r15_customer', '2', 'audit done'), allocation.unlock_customer('r15_customer', '2');
RESET ROLE;

-- registration protection (报备): rep c registers a dealer as its own login; it lands in the
-- pool (no rules), and for 30 days only rep c may claim it
SET ROLE regress_rep_c;
INSERT INTO r15_customer (id, name, tier) VALUES (20, 'registered by c', 'B');
RESET ROLE;
SELECT p.key, r.code, p.until - p.since AS protected_for FROM allocation.protection p JOIN allocation.rep r ON r.id = p.rep_id;
SELECT * FROM r15_try($$SELECT allocation.claim('r15_customer', '20', 2)$$);
SELECT allocation.claim('r15_customer', '20', 3);

-- what can a rep claim now, and why not
SET ROLE regress_rep_a;
SELECT key, claimable, sqlstate, r15_mask(why_not) AS why_not FROM allocation.claimable_now ORDER BY key::int;
SELECT jsonb_pretty(allocation.explain_claim('r15_customer', '4'));
SELECT allocation.explain('r15_customer', '4')->'claim'->'claimable' AS explain_says_claimable;
RESET ROLE;
SELECT key, claimable, sqlstate FROM allocation.claimable(2) ORDER BY key::int;

-- the owner change of a claim runs the table's own triggers as the table owner, with the owner's
-- default search_path (unqualified names work) and the caller's temporary objects last
CREATE TABLE r15_log (id integer, owner bigint, by_role text);
CREATE FUNCTION r15_log_owner() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN INSERT INTO r15_log VALUES (NEW.id, NEW.owner, current_user); RETURN NEW; END$$;
CREATE TRIGGER r15_log AFTER UPDATE OF owner ON r15_customer FOR EACH ROW EXECUTE FUNCTION r15_log_owner();
SET ROLE regress_rep_a;
SELECT allocation.release('r15_customer', '1', 'moving to a key account');
-- a session with temporary tables or types could stand one in for the owner's: refused
CREATE TEMP TABLE r15_log (id integer, owner bigint, by_role text);
SELECT * FROM r15_try($$SELECT allocation.release('r15_customer', '2', 'capture attempt')$$);
SELECT count(*) AS captured_in_temp FROM pg_temp.r15_log;
DROP TABLE pg_temp.r15_log;
RESET ROLE;
SELECT * FROM r15_log;
DROP TRIGGER r15_log ON r15_customer;

-- the customer table is only ever read and changed as its owner: a CHECK of the key's domain
-- (code the table owner controls) never runs with the extension owner's rights
CREATE ROLE regress_r15_owner;
CREATE TABLE r15_who (who text);
GRANT INSERT ON r15_who TO PUBLIC;
CREATE FUNCTION r15_seen(v text) RETURNS boolean LANGUAGE plpgsql AS
$$BEGIN
    INSERT INTO public.r15_who VALUES (current_user);
    IF current_user = 'regress_r15_owner' THEN   -- the owner's code, run by claim()/release()
        PERFORM set_config('search_path', 'leaked, pg_catalog', false);   -- must not outlive it
    END IF;
    RETURN true;
END$$;
CREATE DOMAIN r15_key AS text CHECK (r15_seen(VALUE));
CREATE TABLE r15_dom (id r15_key PRIMARY KEY, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('r15_dom', 'id', 'loc', 'owner');
ALTER TABLE r15_dom OWNER TO regress_r15_owner;
INSERT INTO r15_dom (id) VALUES ('x');
TRUNCATE r15_who;
SELECT allocation.claim('r15_dom', 'x', 3);
SELECT allocation.release('r15_dom', 'x', 'checking who runs the domain check');
SELECT DISTINCT who FROM r15_who;
SELECT current_setting('search_path') AS search_path_after;
SELECT allocation.unmanage('r15_dom');
DROP TABLE r15_dom, r15_who;
DROP DOMAIN r15_key;
DROP FUNCTION r15_seen(text);
DROP ROLE regress_r15_owner;

-- only claim() can label an owner change a claim: no session setting exists for it
SET allocation.change_source = 'claim';
UPDATE r15_customer SET owner = 2 WHERE id = 1;
SELECT kind, a.source FROM allocation.event e JOIN allocation.assignment a ON a.key = e.key AND a.valid_to IS NULL
 WHERE e.key = '1' ORDER BY e.id DESC LIMIT 1;

-- the audit trail names the person who acted
SELECT * FROM r15_events ORDER BY id;
SELECT key, r.code AS rep, source, closed_reason FROM allocation.assignment a LEFT JOIN allocation.rep r ON r.id = a.rep_id
 WHERE key IN ('1', '3') ORDER BY a.id;
SELECT * FROM allocation.check_consistency();

DROP TABLE r15_customer CASCADE;
DROP EXTENSION allocation CASCADE;
DROP FUNCTION r15_try(text), r15_mask(text), r15_log_owner();
DROP TABLE r15_log;
DROP OWNED BY regress_rep_a, regress_rep_b, regress_rep_c, regress_mgr, regress_nobody;
DROP ROLE regress_rep_a, regress_rep_b, regress_rep_c, regress_mgr, regress_nobody;
