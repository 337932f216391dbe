-- demo/07_claims_pool.sql -- 撞单 ends: duplicate detection, claims from the public pool (公海),
-- limits, and recycling of neglected customers.
\set ON_ERROR_STOP 1
\pset null '-'

-- what a write refused by the engine looks like to the app (SQLSTATE + message)
CREATE FUNCTION demo.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN others THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

\echo
\echo '== Duplicate detection (撞单) =='
CREATE EXTENSION IF NOT EXISTS pg_trgm;
\echo '-- exact: same valid credit code or phone -> blocked; fuzzy: a similar name within 3 km -> warning'
SELECT allocation.set_duplicate_policy('crm.customer', exact => 'block', fuzzy => 'warn',
                                       name_similarity => 0.7, within_m => 3000) AS customers_indexed;
SELECT count(*) AS already_sharing_a_phone_or_code FROM allocation.dispute_queue WHERE action = 'existing';

-- a dealer that is already in the CRM (held by someone), and what a second rep types in for it
SELECT c.id AS dealer_id, c.name AS dealer_name, c.phone AS dealer_phone, r.code AS held_by
  FROM crm.customer c JOIN allocation.rep r ON r.id = c.owner_id
 WHERE c.tier = 'wholesaler' AND c.phone LIKE '1%' ORDER BY c.id LIMIT 1 \gset
\echo '-- a rep registers' :'dealer_name' 'again, phone typed as +86 with dashes:'
SELECT demo.try(format($$INSERT INTO crm.customer (name, phone, tier, crop, business_type, location)
                         VALUES (%L, %L, 'wholesaler', 'rice', 'dealer', NULL)$$,
                       :'dealer_name' || '（新）', '+86 ' || substr(:'dealer_phone', 1, 3) || '-' ||
                       substr(:'dealer_phone', 4, 4) || '-' || substr(:'dealer_phone', 8))) AS outcome;
SELECT pg_sleep(0.5);   -- the refusal is audited by a background worker, outside the failed transaction
SELECT kind, key, reason, detail->>'holder' AS holder FROM allocation.event WHERE kind = 'duplicate_blocked' ORDER BY id DESC LIMIT 1;

\echo '-- a similar name next door is kept, but flagged for a manager:'
SELECT id AS near_id, name AS near_name, ST_AsEWKT(location) AS near_loc FROM crm.customer
 WHERE tier = 'retailer' AND location IS NOT NULL ORDER BY id LIMIT 1 \gset
INSERT INTO crm.customer (name, tier, crop, business_type, location)
VALUES (:'near_name' || '经营部', 'retailer', 'rice', 'retail_shop', ST_Translate(:'near_loc'::geometry, 0.002, 0.001));
SELECT key, other_key, match, value, round(similarity::numeric, 2) AS similarity, action
  FROM allocation.dispute_queue WHERE action = 'warn';

\echo
\echo '== Claims from the public pool (公海) =='
INSERT INTO allocation.claim_policy (team_id, tier, max_held, daily_claims, cooldown, protection, note)
VALUES (NULL, NULL, NULL, 15, '14 days', '30 days', 'company rule: 15 claims a day, 14 days cooldown, 30 days 报备 protection'),
       (NULL, 'key_distributor', 12, NULL, NULL, NULL, 'no rep holds more than 12 key distributors');
-- one rep logs in with its own database role (reps act for themselves)
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loc07') THEN CREATE ROLE loc07; END IF;
END $$;
UPDATE allocation.rep SET login = 'loc07' WHERE code = 'loc07';
SELECT allocation.grant_role('loc07', 'rep');
GRANT USAGE ON SCHEMA crm, demo TO loc07;
GRANT EXECUTE ON FUNCTION demo.try(text) TO loc07;
GRANT SELECT, INSERT ON crm.customer TO loc07;
SELECT count(*) AS pool_customers FROM allocation.pool;
SET ROLE loc07;
\echo '-- what loc07 may claim now (first reasons why not):'
SELECT claimable, coalesce(sqlstate, '') AS sqlstate, count(*) FROM allocation.claimable_now GROUP BY 1, 2 ORDER BY 1 DESC, 2;
SELECT key AS pool_key FROM allocation.claimable_now WHERE claimable ORDER BY key::bigint LIMIT 1 \gset
SELECT allocation.claim('crm.customer', :'pool_key');
SELECT demo.try(format('SELECT allocation.claim(%L, %L)', 'crm.customer', :'pool_key')) AS claim_again;
SELECT allocation.release('crm.customer', :'pool_key', 'dealer closed its shop for the season');
SELECT demo.try(format('SELECT allocation.claim(%L, %L)', 'crm.customer', :'pool_key')) AS reclaim_in_cooldown;
RESET ROLE;
\echo '-- every check explained, for loc07 and this customer:'
SELECT c->>'check' AS "check", c->>'ok' AS ok, coalesce(c->>'sqlstate', '') AS sqlstate, c->>'message' AS message
  FROM jsonb_array_elements(allocation.explain_claim('crm.customer', :'pool_key', (SELECT id FROM allocation.rep WHERE code = 'loc07'))->'checks') c;
\echo '-- a manager claims it for another rep (a losing claimant would get LA080 naming the winner):'
SELECT allocation.claim('crm.customer', :'pool_key', (SELECT id FROM allocation.rep WHERE code = 'loc08'));
SELECT demo.try(format('SELECT allocation.claim(%L, %L, %s)', 'crm.customer', :'pool_key',
                       (SELECT id FROM allocation.rep WHERE code = 'loc09'))) AS losing_claim;

\echo
\echo '== Recycling neglected customers =='
-- the demo keeps this to one county so the story stays readable; production policies cover all
SELECT id AS county_id, code AS county_code FROM allocation.territory
 WHERE properties->>'level' = 'county' AND owner_rep_id IS NOT NULL ORDER BY code LIMIT 1 \gset
INSERT INTO allocation.recycle_policy (name, territory_id, no_followup, no_progress, warn_before, exempt_stages)
VALUES ('county ' || :'county_code' || ': 30 days without a visit', :county_id, '30 days', '120 days', '5 days', '{won}');
SELECT key AS visited_key FROM allocation.current_owner WHERE territory_id = :county_id AND rep_id IS NOT NULL ORDER BY key LIMIT 1 \gset
SELECT allocation.log_followup('crm.customer', :'visited_key', 'visit', 'demo of the new fungicide', at => now() + interval '20 days') AS followup_id;
\echo '-- day 27: warnings (once per customer and due date)'
SELECT action, count(*) FROM allocation.recycle(now() + interval '27 days') GROUP BY 1;
\echo '-- day 31: back to the pool, except the customer that was visited on day 20'
SELECT action, count(*) FROM allocation.recycle(now() + interval '31 days') GROUP BY 1;
SELECT count(*) AS second_run_does_nothing FROM allocation.recycle(now() + interval '31 days');
SELECT rep_code, key FROM allocation.current_owner WHERE territory_id = :county_id AND rep_id IS NOT NULL;
SELECT kind, count(*) FROM allocation.event WHERE kind IN ('claim', 'release', 'recycle', 'recycle_warning',
       'duplicate_blocked', 'duplicate_warning', 'duplicate_policy') GROUP BY 1 ORDER BY 1;

SELECT count(*) > 0 AS consistency_failed FROM allocation.check_consistency() \gset
\if :consistency_failed
    \echo 'FAILED: allocation.check_consistency() reported problems'
    SELECT 1/0 AS check_consistency_failed;
\endif
