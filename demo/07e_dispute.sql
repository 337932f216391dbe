-- demo/07e_dispute.sql -- 冲突仲裁: a rep of the neighbouring county contests a dealer on the
-- county border; the customer is frozen, the manager reads the evidence from the log and the
-- house rules' verdicts, and settles it; explain_event() replays the original decision.
\set ON_ERROR_STOP 1
\pset null '-'

\echo
\echo '== A border dispute settled from the log (冲突仲裁) =='
-- a retailer held by a local rep through the territory-owner rule, whose location is within
-- 2 km of a neighbouring county owned by another active local rep
SELECT c.id AS dc, c.name AS dc_name, c.owner_id AS holder, t.id AS terr, n.owner_rep_id AS claimant
  FROM crm.customer c
  JOIN allocation.current_owner a ON a.tbl = 'crm.customer'::regclass AND a.key = c.id::text
  JOIN allocation.territory t ON t.id = a.territory_id
  JOIN allocation.territory n ON n.id <> t.id AND n.parent_id IS NOT NULL AND n.owner_rep_id IS NOT NULL
                             AND n.owner_rep_id <> c.owner_id AND ST_DWithin(n.geom::geography, c.location::geography, 2000)
  JOIN allocation.rep r ON r.id = n.owner_rep_id AND r.active
 WHERE c.tier = 'retailer' AND a.source = 'rule' AND t.owner_rep_id = c.owner_id
 ORDER BY c.id LIMIT 1 \gset
SELECT code AS holder_code FROM allocation.rep WHERE id = :holder \gset
SELECT code AS claimant_code FROM allocation.rep WHERE id = :claimant \gset
\echo '-- dealer' :dc :dc_name 'is held by' :holder_code '; the field app recorded visits of both reps (' :claimant_code 'came first)'
INSERT INTO allocation.followup (managed_id, key, rep_id, at, kind, outcome, recorded_by)
SELECT m.id, :'dc', x.rep, now() - x.ago, x.kind, x.outcome, 'crm_import'
  FROM allocation.managed_table m,
       (VALUES (:claimant, interval '40 days', 'visit', '送样: samples of the new fungicide'),
               (:holder, interval '12 days', 'call', 'price list sent'),
               (:claimant, interval '3 days', 'visit', 'field demo with the grower group')) AS x(rep, ago, kind, outcome)
 WHERE m.tbl = 'crm.customer'::regclass;

\echo '-- a manager opens the dispute for' :claimant_code '("the dealer sits on the border and buys from my county")'
SET ROLE demo_manager;
SELECT allocation.open_dispute('crm.customer', :'dc', :claimant,
                               'the dealer sits on the border, buys in my county and I visited it first') AS dispute \gset
\echo '-- frozen: the holder cannot give it away, a manager cannot assign it, the CRM cannot rewrite the owner'
SELECT demo.try(format('SELECT allocation.release(%L, %L, %L)', 'crm.customer', :'dc', 'not worth the fight')) AS release;
SELECT demo.try(format('SELECT allocation.assign(%L, %L, %s, %L)', 'crm.customer', :'dc', :claimant, 'just give it')) AS assign;
RESET ROLE;
SELECT demo.try(format('UPDATE crm.customer SET owner_id = %s WHERE id = %s', :claimant, :dc)) AS direct_update;

\echo '-- the evidence, from the log only (dispute_evidence): registration, follow-ups, the decision, the house rules'
SET ROLE demo_manager;
SELECT allocation.dispute_evidence(:dispute) AS ev \gset
RESET ROLE;
SELECT jsonb_build_object(
         'registered_by', :'ev'::jsonb -> 'registration' -> 'registered_by',
         'holder_followups', jsonb_array_length(:'ev'::jsonb -> 'followups' -> 'holder'),
         'claimant_followups', jsonb_array_length(:'ev'::jsonb -> 'followups' -> 'claimant'),
         'decided_by_rule', :'ev'::jsonb -> 'decision' -> 'rule' -> 'name',
         'territory', :'ev'::jsonb -> 'decision' -> 'territory' -> 'code',
         'changed_since', jsonb_array_length(:'ev'::jsonb -> 'decision' -> 'changed_since')) AS evidence;
SELECT p.key AS house_rule, p.value ->> 'side' AS favours, r.code AS verdict,
       regexp_replace(regexp_replace(p.value ->> 'why', ',? \(the other side: [^)]*\)', ''), ',? at [0-9-]+ [0-9:.+]+', '', 'g') AS why
  FROM jsonb_each(:'ev'::jsonb -> 'presets' -> 'verdicts') p LEFT JOIN allocation.rep r ON r.id = (p.value ->> 'winner')::bigint
 ORDER BY p.key;
SELECT :'ev'::jsonb -> 'presets' -> 'agree' AS presets_agree;

\echo '-- the presets disagree, so the manager decides: the claimant wins (it visited first, the dealer buys in its county)'
SET ROLE demo_manager;
SELECT allocation.settle_dispute(:dispute, :claimant, 'visited first and the dealer buys in its county; territory boundary to be reviewed');
RESET ROLE;
SELECT c.id, r.code AS owner_now FROM crm.customer c JOIN allocation.rep r ON r.id = c.owner_id WHERE c.id = :dc;
SELECT kind, actor, to_rep, left(reason, 80) AS reason FROM allocation.event
 WHERE key = :'dc' AND kind IN ('ownership_dispute_opened', 'ownership_dispute_settled', 'transfer') ORDER BY id;

\echo '-- why did the rules give it to' :holder_code 'in the first place? explain_event() replays that decision against the configuration then'
SELECT min(id) AS first_event FROM allocation.event WHERE key = :'dc' AND period = 'open' \gset
SELECT jsonb_build_object(
         'event', allocation.explain_event(:first_event) -> 'event' -> 'kind',
         'rule_then', allocation.explain_event(:first_event) -> 'rule' -> 'then' -> 'name',
         'consistent', allocation.explain_event(:first_event) -> 'replay' -> 'consistent',
         'territory_owner_then', allocation.explain_event(:first_event) -> 'territory_owner_then',
         'replayed', allocation.explain_event(:first_event) -> 'replayed') AS replay;
