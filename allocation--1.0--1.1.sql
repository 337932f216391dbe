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

CREATE FUNCTION allocation._on_ddl_start() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT id, name FROM allocation.rule
              WHERE condition IS NOT NULL AND condition_stamp IS DISTINCT FROM allocation._condition_stamp()
              ORDER BY id LOOP
        BEGIN
            UPDATE allocation.rule SET condition = condition WHERE id = r.id;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'allocation: the condition of rule "%" does not compile on this server: %', r.name, SQLERRM
                USING HINT = 'Fix it with UPDATE allocation.rule SET condition = ... ; until then the rule is skipped.';
        END;
    END LOOP;
END
$$;
COMMENT ON FUNCTION allocation._on_ddl_start() IS 'internal: compiles again, before an ALTER TABLE, the rule conditions another server compiled';
CREATE EVENT TRIGGER allocation_ddl_start ON ddl_command_start WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION allocation._on_ddl_start();
REVOKE ALL ON FUNCTION allocation._on_ddl_start() FROM PUBLIC;

-- every condition compiled again here, and stamped (the rule trigger does it on
-- any UPDATE; no config_change event: nothing recorded changes).  A condition
-- that no longer compiles keeps no stamp: the engine skips its rule with a
-- WARNING, as 1.0 did, until it is fixed.
DO $upgrade$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT id, name FROM allocation.rule WHERE condition IS NOT NULL ORDER BY id LOOP
        BEGIN
            UPDATE allocation.rule SET condition = condition WHERE id = r.id;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'allocation 1.1: the condition of rule "%" does not compile: %', r.name, SQLERRM
                USING HINT = 'Fix it with UPDATE allocation.rule SET condition = ... ; until then the rule is skipped.';
        END;
    END LOOP;
END
$upgrade$;
