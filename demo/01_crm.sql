-- demo/01_crm.sql — the "existing CRM", as it was before anyone heard of the allocation extension.
--
-- A CRM database with its own users (the sales staff) and its own customer table.  Nothing here
-- knows about allocation: the extension is attached to crm.customer later, in 03_org_rules.sql,
-- without migrating a single row.

\set ON_ERROR_STOP on
SET client_min_messages = warning;

CREATE EXTENSION IF NOT EXISTS postgis;

CREATE SCHEMA crm;
COMMENT ON SCHEMA crm IS 'The sample CRM the demo attaches the allocation engine to';

-- Scratch helpers for generating the sample data (not part of the CRM; thrown away with the demo cluster)
CREATE SCHEMA demo;

-- element of arr chosen by u in [0,1)
CREATE FUNCTION demo.pick(arr text[], u double precision) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT arr[1 + floor(u * array_length(arr, 1))::int] $$;

-- a Chinese personal name from two uniform numbers
CREATE FUNCTION demo.person(u1 double precision, u2 double precision) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT demo.pick('{王,李,张,刘,陈,杨,黄,赵,周,吴,徐,孙,胡,朱,高,林,何,郭,马,罗,梁,宋,郑,谢,韩,唐,冯,邓,曹,彭,曾,肖,田,董,袁,潘,蒋,蔡,余,杜,叶,程,魏,苏,吕,丁,任,沈,姚,卢,钟,谭,廖,邹,熊,龙,向,贺,颜,易}'::text[], u1)
        || demo.pick('{伟,芳,娜,敏,静,强,磊,军,洋,勇,艳,杰,涛,明,超,秀英,华,平,刚,桂英,建国,志强,海燕,红,俊,丹,鹏,辉,玲,斌,国平,春生,德华,湘兰,满秋,永红,卫东,冬梅,建军,小林}'::text[], u2)
$$;

-- a mainland mobile number
CREATE FUNCTION demo.phone(u1 double precision, u2 double precision) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT demo.pick('{133,135,137,138,139,150,151,152,158,159,173,177,180,182,186,187,189,199}'::text[], u1)
        || lpad((floor(u2 * 100000000))::bigint::text, 8, '0')
$$;

-- an 18-character unified social credit code (统一社会信用代码) shaped string; kind 91 = company, 93 = cooperative
CREATE FUNCTION demo.credit_code(kind text, county_code text, u double precision) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT kind || county_code || upper(lpad(to_hex(floor(u * 4294967295)::bigint), 8, '0'))
        || substr('0123456789ABCDEFGHJKLMNPQRTUWXY', 1 + floor(u * 9973)::int % 31, 1) || 'X'
$$;

-------------------------------------------------------------------------------
-- The CRM's own tables
-------------------------------------------------------------------------------
CREATE TABLE crm.sales_user (
    id       bigint PRIMARY KEY,
    login    text NOT NULL UNIQUE,
    name     text NOT NULL,
    phone    text,
    dept     text NOT NULL,
    hired_on date
);
COMMENT ON TABLE crm.sales_user IS 'CRM users: the sales staff (ids are used as owner_id of customers)';

CREATE TABLE crm.customer (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL,
    phone          text,
    credit_code    text,
    tier           text NOT NULL CHECK (tier IN ('key_distributor', 'wholesaler', 'retailer', 'grower')),
    crop           text,
    business_type  text,
    tags           text[] NOT NULL DEFAULT '{}',
    annual_volume  numeric(14, 2),
    is_cooperative boolean NOT NULL DEFAULT false,
    location       geometry(Point, 4326),
    owner_id       bigint REFERENCES crm.sales_user (id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    parent_id      bigint REFERENCES crm.customer (id)    -- 上级经销商: the distributor a retailer buys from
);
CREATE INDEX customer_parent_idx ON crm.customer (parent_id);

-- The CRM's activity tables: visits the field app logs, orders, satisfaction surveys (NPS)
CREATE TABLE crm.visit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES crm.customer (id),
    rep_id      bigint REFERENCES crm.sales_user (id),
    visited_at  timestamptz NOT NULL,
    channel     text NOT NULL,          -- visit, call, wechat, demo
    summary     text
);
CREATE TABLE crm.sales_order (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES crm.customer (id),
    ordered_at  timestamptz NOT NULL,
    total       numeric(14, 2) NOT NULL,
    sku         text
);
CREATE TABLE crm.survey (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES crm.customer (id),
    answered_at timestamptz NOT NULL,
    nps         integer NOT NULL CHECK (nps BETWEEN 0 AND 10)
);
CREATE INDEX customer_owner_idx ON crm.customer (owner_id);
CREATE INDEX customer_location_idx ON crm.customer USING gist (location);
COMMENT ON TABLE crm.customer IS 'CRM customers: county dealers (key_distributor), wholesalers, township retailers, large growers';
COMMENT ON COLUMN crm.customer.annual_volume IS 'purchases last season, CNY';

-------------------------------------------------------------------------------
-- Sales staff: 6 key-account managers, 10 crop specialists, 30 local reps
-------------------------------------------------------------------------------
SELECT setseed(0.20251127) \gset

INSERT INTO crm.sales_user (id, login, name, phone, dept, hired_on)
SELECT g.id,
       CASE WHEN g.id <= 6 THEN format('ka%s', lpad(g.id::text, 2, '0'))
            WHEN g.id <= 11 THEN format('rice%s', lpad((g.id - 6)::text, 2, '0'))
            WHEN g.id <= 14 THEN format('fruit%s', lpad((g.id - 11)::text, 2, '0'))
            WHEN g.id <= 16 THEN format('cotton%s', lpad((g.id - 14)::text, 2, '0'))
            ELSE format('loc%s', lpad((g.id - 16)::text, 2, '0')) END,
       demo.person(r.u1, r.u2),
       demo.phone(r.u3, r.u4),
       CASE WHEN g.id <= 6 THEN '大客户部' WHEN g.id <= 16 THEN '作物专家' ELSE '区域销售' END,
       date '2012-03-01' + floor(r.u5 * 4500)::int
  FROM generate_series(1, 46) AS g(id)
 CROSS JOIN LATERAL (SELECT random() + 0 * g.id AS u1, random() AS u2, random() AS u3, random() AS u4, random() AS u5) r
 ORDER BY g.id;

-------------------------------------------------------------------------------
-- Legacy customers typed in over the years, some with an owner "from the manager's memory"
-------------------------------------------------------------------------------
INSERT INTO crm.customer (name, phone, tier, crop, business_type, annual_volume, location, owner_id, created_at)
SELECT CASE WHEN r.u1 < 0.15 THEN demo.pick('{湘,潭,衡,岳,沅,澧,资,邵,永,郴}'::text[], r.u2) || demo.pick('{丰收,绿源,金穗,禾丰,惠农}'::text[], r.u3) || '农资公司'
            WHEN r.u1 < 0.65 THEN demo.person(r.u2, r.u3) || '农资店'
            ELSE demo.person(r.u2, r.u3) || '（种植户）' END,
       demo.phone(r.u4, r.u5),
       CASE WHEN r.u1 < 0.03 THEN 'key_distributor' WHEN r.u1 < 0.15 THEN 'wholesaler'
            WHEN r.u1 < 0.65 THEN 'retailer' ELSE 'grower' END,
       demo.pick('{rice,rice,rice,citrus,cotton,vegetable}'::text[], r.u6),
       CASE WHEN r.u1 < 0.15 THEN 'distribution' WHEN r.u1 < 0.65 THEN 'retail_shop' ELSE 'family_farm' END,
       round((CASE WHEN r.u1 < 0.15 THEN 300000 WHEN r.u1 < 0.65 THEN 40000 ELSE 20000 END * (0.5 + r.u7))::numeric, -2),
       ST_SetSRID(ST_MakePoint(110.6 + 2.4 * r.u8, 26.2 + 2.6 * r.u9), 4326),
       CASE WHEN r.u10 < 0.7 THEN 17 + floor(r.u11 * 30)::bigint END,
       timestamptz '2019-01-01 08:00+08' + (g.n * interval '9 days')
  FROM generate_series(1, 150) AS g(n)
 CROSS JOIN LATERAL (SELECT random() + 0 * g.n AS u1, random() AS u2, random() AS u3, random() AS u4, random() AS u5,
                            random() AS u6, random() AS u7, random() AS u8, random() AS u9, random() AS u10, random() AS u11) r
 ORDER BY g.n;

SELECT format('CRM before allocation: %s sales users, %s customers (%s with an owner)',
              (SELECT count(*) FROM crm.sales_user), count(*), count(owner_id)) AS crm
  FROM crm.customer;
