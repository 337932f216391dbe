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
