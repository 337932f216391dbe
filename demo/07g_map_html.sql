-- demo/07g_map_html.sql — the map a sales manager opens: one self-contained HTML page
--   :outdir/map.html   allocation.territory_map_html(): counties coloured by owner rep,
--                      customers coloured by their latest outcome, hover for code, name,
--                      owner and holdings, wheel/drag to zoom and pan, a legend.
--                      No network: open the file in any browser, mail it, put it on a share.
-- Runs after 07f_loop, so the customers carry the follow-ups and deals the loop recorded.
-- (A realignment plan's before/after view: territory_map_html(plan_id => ...), see the README.)
-- Run with: psql -v outdir=demo/out -f demo/07g_map_html.sql

\set ON_ERROR_STOP on
SET client_min_messages = warning;

\pset format unaligned
\pset tuples_only on
\o :outdir/map.html
SELECT allocation.territory_map_html('allocation demo — who owns which customer (a generated province, ~Hunan)',
                                     simplify => 0.0005);
\o
\pset tuples_only off
\pset format aligned

SELECT pg_size_pretty(octet_length(allocation.territory_map_html('x', simplify => 0.0005))::bigint) AS "map.html",
       (SELECT count(*) FROM allocation.territory WHERE geom IS NOT NULL) AS territories;
