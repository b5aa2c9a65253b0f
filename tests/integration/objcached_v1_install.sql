-- objcached invalidation hook for PostgreSQL 15, schema version 1.
--
--   psql -v ON_ERROR_STOP=1 -f sql/install.sql
--   psql -c "SELECT objcached.attach('public.users', 'User', 'id')"
--
-- Safe to run again: it creates what is missing, replaces the functions and re-applies the
-- privileges, in one transaction. docs/invalidation.md explains the design and the consumer contract.

BEGIN;

-- Everything below is written with fully qualified names; pinning search_path for the install as well
-- means a hostile search_path in the installing session cannot redirect an unqualified type or
-- operator either.
SET LOCAL search_path = pg_catalog, pg_temp;
SET LOCAL client_min_messages = warning;

-- Two concurrent installs would race on CREATE OR REPLACE; serialise them.
DO $$ BEGIN PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('objcached.install')); END $$;

DO $$
BEGIN
    IF pg_catalog.to_regclass('objcached.meta') IS NOT NULL THEN
        IF EXISTS (SELECT 1 FROM objcached.meta
                    WHERE key = 'schema_version' AND value IS DISTINCT FROM '1') THEN
            RAISE EXCEPTION 'objcached install: the database has objcached schema version %, this file installs 1',
                (SELECT value FROM objcached.meta WHERE key = 'schema_version');
        END IF;
    END IF;
END
$$;

CREATE SCHEMA IF NOT EXISTS objcached;
COMMENT ON SCHEMA objcached IS
    'objcached invalidation hook: statement triggers write changed keys to objcached.outbox';

CREATE TABLE IF NOT EXISTS objcached.meta (
    key   text PRIMARY KEY,
    value text
);
INSERT INTO objcached.meta (key, value) VALUES ('schema_version', '1')
    ON CONFLICT (key) DO NOTHING;
-- 'off' stops the triggers calling pg_notify (consumers still poll): a transaction that notifies
-- holds a cluster-wide lock through its commit, so busy databases may want it off. An existing
-- setting is kept.
INSERT INTO objcached.meta (key, value) VALUES ('notify', 'on')
    ON CONFLICT (key) DO NOTHING;

-- Generations only ever grow, across detach and re-attach too: a model that is attached again must
-- not come back to a generation whose cache entries may still be in memcached.
CREATE SEQUENCE IF NOT EXISTS objcached.generation_seq;

CREATE TABLE IF NOT EXISTS objcached.models (
    model      text PRIMARY KEY
               CONSTRAINT models_model_name CHECK (model ~ '^[A-Za-z_][A-Za-z0-9_]{0,63}$'),
    tbl        regclass NOT NULL,
    key_column name NOT NULL,      -- the name given to attach(); status shows the current name
    key_attnum smallint NOT NULL,  -- what the triggers use, so renaming the column keeps working
    generation bigint NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS models_tbl ON objcached.models (tbl);
COMMENT ON TABLE objcached.models IS
    'Models whose table is hooked; generation grows on every whole-model invalidation (TRUNCATE)';

CREATE TABLE IF NOT EXISTS objcached.outbox (
    id         bigserial PRIMARY KEY,
    model      text NOT NULL,
    keys       text[],             -- NULL: the whole model (TRUNCATE)
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
-- A queue: rows are deleted soon after they are inserted. Vacuum it by row count, not by a
-- fraction of its (small) size, so dead rows do not pile up in front of the consumers' index scans.
ALTER TABLE objcached.outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
                                  autovacuum_vacuum_insert_scale_factor = 0,
                                  autovacuum_vacuum_insert_threshold = 10000);
-- Big key arrays are compressed on insert: lz4 does it for a fraction of pglz's CPU (about 15 ms
-- less per 100,000 keys), where this server was built with it.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_settings
                WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE objcached.outbox ALTER COLUMN keys SET COMPRESSION lz4;
    END IF;
END
$$;
COMMENT ON TABLE objcached.outbox IS
    'Pending invalidations, one row per statement per model (at most 100000 keys a row); consumed by objcached.claim()';

-- ---------------------------------------------------------------------------------------------
-- Internal helpers. They run as the caller; the SECURITY DEFINER functions below call them as the
-- schema owner.

-- The relation and every table that inherits from it (partitions included), at any depth.
CREATE OR REPLACE FUNCTION objcached._tree(rel oid) RETURNS SETOF oid
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE down(rel) AS (
        SELECT rel
        UNION
        SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN down d ON i.inhparent = d.rel
    )
    SELECT rel FROM down
$$;

CREATE OR REPLACE FUNCTION objcached._qualified(rel oid) RETURNS text
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = rel
$$;

CREATE OR REPLACE FUNCTION objcached._notify_on() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT COALESCE((SELECT m.value <> 'off' FROM objcached.meta m WHERE m.key = 'notify'), true)
$$;

-- Whole-model invalidation: a keys-NULL outbox row and a new generation.
CREATE OR REPLACE FUNCTION objcached._invalidate_model(p_model text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE objcached.models SET generation = pg_catalog.nextval('objcached.generation_seq')
     WHERE model = p_model;
    INSERT INTO objcached.outbox (model, keys) VALUES (p_model, NULL);
    IF objcached._notify_on() THEN
        PERFORM pg_catalog.pg_notify('objcached', p_model);
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Trigger functions. SECURITY DEFINER so that any role allowed to write a hooked table can queue
-- its invalidations without having any right on the outbox; search_path pinned so that nothing a
-- caller defines can stand in for what they use.

-- INSERT, UPDATE and DELETE: one outbox row per model per statement, holding the distinct keys of the
-- rows in the transition tables (both old and new for UPDATE, so changing a key invalidates both).
CREATE OR REPLACE FUNCTION objcached.on_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    -- A statement touching more keys than this writes several rows, so no array grows without bound.
    c_max_keys constant integer := 100000;
    v_rows     bigint;
    v_notify   boolean;
    v_keys     text[];
    m          record;
    src        text;
    n          bigint;
BEGIN
    -- Static queries: planned once per table, unlike the dynamic ones below.
    IF TG_OP = 'DELETE' THEN
        SELECT pg_catalog.count(*) INTO v_rows FROM objcached_old;
    ELSE
        SELECT pg_catalog.count(*) INTO v_rows FROM objcached_new;
    END IF;
    IF v_rows = 0 THEN
        RETURN NULL;
    END IF;
    v_notify := COALESCE((SELECT x.value <> 'off' FROM objcached.meta x WHERE x.key = 'notify'), true);

    -- Models on this relation or on a table it inherits from: a write made directly to a partition
    -- fires the partition's triggers, not the partitioned table's.
    FOR m IN
        WITH RECURSIVE up(rel) AS (
            SELECT TG_RELID
            UNION
            SELECT i.inhparent FROM pg_catalog.pg_inherits i JOIN up ON i.inhrelid = up.rel
        )
        SELECT o.model, a.attname,
               -- A unique key (a one-column, immediate, total unique index on this relation):
               -- the keys of one transition table are distinct already.
               EXISTS (SELECT 1
                         FROM pg_catalog.pg_attribute ta
                         JOIN pg_catalog.pg_index i ON i.indrelid = ta.attrelid
                        WHERE ta.attrelid = TG_RELID AND ta.attname = a.attname
                          AND NOT ta.attisdropped AND i.indisunique AND i.indimmediate
                          AND i.indnkeyatts = 1 AND i.indkey[0] = ta.attnum
                          AND i.indpred IS NULL AND i.indexprs IS NULL) AS uniq
          FROM up
          JOIN objcached.models o ON o.tbl = up.rel::regclass
          LEFT JOIN pg_catalog.pg_attribute a
                 ON a.attrelid = o.tbl AND a.attnum = o.key_attnum AND NOT a.attisdropped
         ORDER BY o.model
    LOOP
        IF m.attname IS NULL THEN
            -- The key column was dropped: the keys cannot be named, so invalidate everything
            -- rather than lose the change or fail the write.
            RAISE WARNING 'objcached: key column of model % is gone; invalidating the whole model', m.model;
            PERFORM objcached._invalidate_model(m.model);
            CONTINUE;
        END IF;

        -- The key column is found by its current name (attnum is what attach recorded). Keys are
        -- made distinct in their own type (cheaper than as text) and then read as text: exactly how
        -- PostgreSQL prints them, e.g. a uuid in lower case with hyphens. A unique key needs no
        -- DISTINCT: an UPDATE adds only the old keys that are not new ones (a hash anti-join, half
        -- the work of making 2n keys distinct), and an INSERT or a DELETE nothing.
        IF m.uniq AND TG_OP = 'UPDATE' THEN
            src := pg_catalog.format('SELECT n.%1$I AS k FROM objcached_new n WHERE n.%1$I IS NOT NULL'
                                     ' UNION ALL SELECT o.%1$I FROM objcached_old o'
                                     ' WHERE o.%1$I IS NOT NULL AND NOT EXISTS'
                                     ' (SELECT 1 FROM objcached_new n2 WHERE n2.%1$I = o.%1$I)',
                                     m.attname);
        ELSIF m.uniq THEN
            src := pg_catalog.format('SELECT t.%1$I AS k FROM %2$I t WHERE t.%1$I IS NOT NULL',
                                     m.attname,
                                     CASE TG_OP WHEN 'INSERT' THEN 'objcached_new' ELSE 'objcached_old' END);
        ELSE
            IF TG_OP = 'INSERT' THEN
                src := pg_catalog.format('SELECT %I AS k FROM objcached_new', m.attname);
            ELSIF TG_OP = 'UPDATE' THEN
                src := pg_catalog.format('SELECT %1$I AS k FROM objcached_old'
                                         ' UNION ALL SELECT %1$I FROM objcached_new', m.attname);
            ELSE
                src := pg_catalog.format('SELECT %I AS k FROM objcached_old', m.attname);
            END IF;
            src := 'SELECT DISTINCT s.k FROM (' || src || ') s WHERE s.k IS NOT NULL';
        END IF;

        IF v_rows <= c_max_keys THEN
            EXECUTE 'SELECT pg_catalog.array_agg(d.k::text) FROM (' || src || ') d' INTO v_keys;
            IF v_keys IS NULL THEN
                CONTINUE;   -- every key was NULL: nothing that can be cached changed
            END IF;
            -- Only an UPDATE that changed the keys can reach more than c_max_keys here.
            FOR i IN 1 .. pg_catalog.cardinality(v_keys) BY c_max_keys LOOP
                INSERT INTO objcached.outbox (model, keys)
                VALUES (m.model, v_keys[i : i + c_max_keys - 1]);
            END LOOP;
        ELSE
            -- Never one array of all the keys: it could pass PostgreSQL's 1 GB limit.
            EXECUTE 'INSERT INTO objcached.outbox (model, keys)'
                    ' SELECT $1, pg_catalog.array_agg(c.k)'
                    '   FROM (SELECT d.k::text AS k, (pg_catalog.row_number() OVER () - 1) / $2 AS chunk'
                    '           FROM (' || src || ') d) c'
                    '  GROUP BY c.chunk'
                USING m.model, c_max_keys;
            GET DIAGNOSTICS n = ROW_COUNT;
            IF n = 0 THEN
                CONTINUE;
            END IF;
        END IF;
        IF v_notify THEN
            PERFORM pg_catalog.pg_notify('objcached', m.model);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- TRUNCATE: the keys are unknown, so the whole model is invalidated and its generation grows.
CREATE OR REPLACE FUNCTION objcached.on_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m record;
BEGIN
    FOR m IN
        WITH RECURSIVE up(rel) AS (
            SELECT TG_RELID
            UNION
            SELECT i.inhparent FROM pg_catalog.pg_inherits i JOIN up ON i.inhrelid = up.rel
        )
        SELECT o.model FROM up JOIN objcached.models o ON o.tbl = up.rel::regclass
         ORDER BY o.model
    LOOP
        PERFORM objcached._invalidate_model(m.model);
    END LOOP;
    RETURN NULL;
END
$$;

-- The four triggers every hooked relation carries, with the function each must call.
CREATE OR REPLACE FUNCTION objcached._trigger_specs()
RETURNS TABLE (tgname name, fn regprocedure, ddl text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    VALUES
    ('objcached_insert'::name, 'objcached.on_write()'::regprocedure,
     'AFTER INSERT ON %s REFERENCING NEW TABLE AS objcached_new'),
    ('objcached_update', 'objcached.on_write()',
     'AFTER UPDATE ON %s REFERENCING OLD TABLE AS objcached_old NEW TABLE AS objcached_new'),
    ('objcached_delete', 'objcached.on_write()',
     'AFTER DELETE ON %s REFERENCING OLD TABLE AS objcached_old'),
    ('objcached_truncate', 'objcached.on_truncate()',
     'AFTER TRUNCATE ON %s')
$$;

-- ---------------------------------------------------------------------------------------------
-- Administration: attach and detach. They run as the caller, who must own the table (creating the
-- triggers and enabling them ALWAYS needs it) and be allowed to write objcached.models: in practice
-- the role that ran this file.

CREATE OR REPLACE FUNCTION objcached.attach(tbl regclass, model text, key_column name DEFAULT 'id')
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rel      pg_catalog.pg_class%ROWTYPE;
    v_name     text;
    v_attnum   smallint;
    v_type     oid;
    v_parent   oid;
    v_old      objcached.models%ROWTYPE;
    v_rel_oid  oid;
    v_spec     record;
    v_fn       oid;
    v_enabled  "char";
BEGIN
    IF model IS NULL OR model !~ '^[A-Za-z_][A-Za-z0-9_]{0,63}$' THEN
        RAISE EXCEPTION 'objcached.attach: invalid model name %: it must match [A-Za-z_][A-Za-z0-9_]{0,63}',
            COALESCE(pg_catalog.quote_literal(model), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'objcached.attach: no table given for model %', model
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF key_column IS NULL THEN
        RAISE EXCEPTION 'objcached.attach: no key column given for model %', model
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT * INTO v_rel FROM pg_catalog.pg_class c WHERE c.oid = tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'objcached.attach: table with OID % does not exist', tbl::oid
            USING ERRCODE = 'undefined_table';
    END IF;
    v_name := objcached._qualified(tbl);
    IF v_rel.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'objcached.attach: % is %, not a table', v_name,
            CASE v_rel.relkind WHEN 'v' THEN 'a view' WHEN 'm' THEN 'a materialized view'
                               WHEN 'f' THEN 'a foreign table' WHEN 'S' THEN 'a sequence'
                               WHEN 'i' THEN 'an index' WHEN 'I' THEN 'an index'
                               ELSE 'of relkind ' || v_rel.relkind::text END
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF v_rel.relpersistence = 't' THEN
        RAISE EXCEPTION 'objcached.attach: % is a temporary table', v_name
            USING ERRCODE = 'wrong_object_type';
    END IF;
    SELECT i.inhparent INTO v_parent FROM pg_catalog.pg_inherits i WHERE i.inhrelid = tbl LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'objcached.attach: % is a % of %; attach that table instead', v_name,
            CASE WHEN v_rel.relispartition THEN 'partition' ELSE 'child table' END,
            objcached._qualified(v_parent)
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Writes made through the parent table fire only the parent''s statement triggers.';
    END IF;

    SELECT a.attnum, a.atttypid INTO v_attnum, v_type
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = tbl AND a.attname = key_column AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'objcached.attach: column % does not exist in table %',
            '"' || pg_catalog.replace(key_column, '"', '""') || '"', v_name
            USING ERRCODE = 'undefined_column';
    END IF;
    IF v_attnum < 0 THEN
        RAISE EXCEPTION 'objcached.attach: column % of table % is a system column',
            '"' || pg_catalog.replace(key_column, '"', '""') || '"', v_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The key types objcached can look up; a domain counts as its base type.
    WHILE (SELECT t.typtype FROM pg_catalog.pg_type t WHERE t.oid = v_type) = 'd' LOOP
        v_type := (SELECT t.typbasetype FROM pg_catalog.pg_type t WHERE t.oid = v_type);
    END LOOP;
    IF v_type NOT IN ('int8'::regtype, 'int4'::regtype, 'int2'::regtype, 'uuid'::regtype,
                      'text'::regtype, 'varchar'::regtype) THEN
        RAISE EXCEPTION 'objcached.attach: column % of table % has type %; key columns must be bigint, integer, smallint, uuid, text or varchar',
            '"' || pg_catalog.replace(key_column, '"', '""') || '"', v_name, pg_catalog.format_type(v_type, NULL)
            USING ERRCODE = 'datatype_mismatch';
    END IF;

    -- With a nondeterministic collation, distinct strings are equal keys ('Ann' = 'ann'): every
    -- spelling would be cached separately and only the stored one invalidated.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                 JOIN pg_catalog.pg_collation c ON c.oid = a.attcollation
                WHERE a.attrelid = tbl AND a.attnum = v_attnum AND NOT c.collisdeterministic) THEN
        RAISE EXCEPTION 'objcached.attach: column % of table % has a nondeterministic collation',
            '"' || pg_catalog.replace(key_column, '"', '""') || '"', v_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Keep concurrent writers of this table and other attach/detach calls out until we commit.
    EXECUTE pg_catalog.format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', v_name);

    SELECT * INTO v_old FROM objcached.models o WHERE o.model = attach.model FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO objcached.models (model, tbl, key_column, key_attnum, generation)
        VALUES (attach.model, tbl, key_column, v_attnum, pg_catalog.nextval('objcached.generation_seq'));
        -- Whatever was cached for this model before the hook existed may be stale.
        INSERT INTO objcached.outbox (model, keys) VALUES (attach.model, NULL);
        IF objcached._notify_on() THEN
            PERFORM pg_catalog.pg_notify('objcached', attach.model);
        END IF;
    ELSIF v_old.tbl <> tbl OR v_old.key_attnum <> v_attnum THEN
        UPDATE objcached.models o SET tbl = attach.tbl, key_column = attach.key_column, key_attnum = v_attnum
         WHERE o.model = attach.model;
        PERFORM objcached._invalidate_model(attach.model);
        IF v_old.tbl <> tbl THEN
            PERFORM objcached._unhook_if_unused(v_old.tbl);
        END IF;
    ELSIF v_old.key_column <> key_column THEN
        UPDATE objcached.models o SET key_column = attach.key_column WHERE o.model = attach.model;
    END IF;

    -- The table and every partition or child table, existing ones and ones added since the last
    -- attach: each needs its own triggers because a direct write to a partition fires only those.
    FOR v_rel_oid IN SELECT objcached._tree(tbl) LOOP
        FOR v_spec IN SELECT * FROM objcached._trigger_specs() LOOP
            SELECT t.tgfoid, t.tgenabled INTO v_fn, v_enabled
              FROM pg_catalog.pg_trigger t WHERE t.tgrelid = v_rel_oid AND t.tgname = v_spec.tgname;
            IF NOT FOUND THEN
                EXECUTE pg_catalog.format('CREATE TRIGGER %I ' || v_spec.ddl ||
                                          ' FOR EACH STATEMENT EXECUTE FUNCTION %s',
                                          v_spec.tgname, objcached._qualified(v_rel_oid), v_spec.fn);
                v_enabled := 'O';
            ELSIF v_fn <> v_spec.fn THEN
                RAISE EXCEPTION 'objcached.attach: table % already has a trigger named % that objcached did not create',
                    objcached._qualified(v_rel_oid), '"' || pg_catalog.replace(v_spec.tgname, '"', '""') || '"'
                    USING ERRCODE = 'duplicate_object';
            END IF;
            -- ALWAYS: also fire under session_replication_role = replica, which bulk loaders and
            -- replication tools set to skip ordinary triggers.
            IF v_enabled <> 'A' THEN
                EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I',
                                          objcached._qualified(v_rel_oid), v_spec.tgname);
            END IF;
        END LOOP;
    END LOOP;
END
$$;

-- Drops the triggers from the table and its partitions when no model uses the table any more.
CREATE OR REPLACE FUNCTION objcached._unhook_if_unused(p_tbl regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_trigger record;
BEGIN
    IF EXISTS (SELECT 1 FROM objcached.models o WHERE o.tbl = p_tbl) THEN
        RETURN;
    END IF;
    FOR v_trigger IN
        SELECT t.tgrelid, t.tgname
          FROM objcached._tree(p_tbl) r(rel)
          JOIN pg_catalog.pg_trigger t ON t.tgrelid = r.rel
          JOIN objcached._trigger_specs() s ON s.tgname = t.tgname AND s.fn = t.tgfoid
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', v_trigger.tgname,
                                  objcached._qualified(v_trigger.tgrelid));
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION objcached.detach(tbl regclass, model text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_old objcached.models%ROWTYPE;
BEGIN
    SELECT * INTO v_old FROM objcached.models o WHERE o.model = detach.model FOR UPDATE;
    IF NOT FOUND THEN
        RAISE NOTICE 'objcached.detach: model % is not attached', pg_catalog.quote_literal(model);
        RETURN;
    END IF;
    IF v_old.tbl <> tbl THEN
        RAISE EXCEPTION 'objcached.detach: model % is attached to %, not to %', model,
            COALESCE(objcached._qualified(v_old.tbl), v_old.tbl::oid::text),
            COALESCE(objcached._qualified(tbl), tbl::oid::text)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF objcached._qualified(tbl) IS NOT NULL THEN
        EXECUTE pg_catalog.format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', objcached._qualified(tbl));
    END IF;
    DELETE FROM objcached.models o WHERE o.model = detach.model;
    PERFORM objcached._unhook_if_unused(tbl);
END
$$;

-- ---------------------------------------------------------------------------------------------
-- For consumers (the objcached role). The contract, in one transaction:
--   BEGIN; SELECT id, model, keys FROM objcached.claim(1000); <delete them from memcached>; COMMIT;
-- and again while it returns rows.

-- Takes the oldest outbox rows no other consumer holds, up to max_rows rows and (except for the
-- first row, so that progress is always made) max_keys keys in all, and deletes them in the caller's
-- transaction: they are gone at COMMIT, and back for the next consumer if it rolls back or dies.
CREATE OR REPLACE FUNCTION objcached.claim(max_rows integer, max_keys integer DEFAULT 100000)
RETURNS TABLE (id bigint, model text, keys text[], created_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cur    refcursor;
    r      objcached.outbox%ROWTYPE;
    v_ids  bigint[] := '{}';
    v_keys bigint := 0;
    v_n    integer;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 OR max_keys IS NULL OR max_keys < 1 THEN
        RAISE EXCEPTION 'objcached.claim: max_rows and max_keys must be at least 1'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Under REPEATABLE READ or SERIALIZABLE, rows another consumer took since the snapshot would
    -- raise serialization errors instead of being skipped.
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'objcached.claim: run it in a READ COMMITTED transaction, not %',
            pg_catalog.upper(pg_catalog.current_setting('transaction_isolation'))
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    -- An explicit cursor fetches, and so locks, one row at a time: of the rows past the budget,
    -- only the first is locked (and left alone) until the caller's transaction ends.
    OPEN cur FOR SELECT o.* FROM objcached.outbox o ORDER BY o.id FOR UPDATE SKIP LOCKED;
    LOOP
        FETCH cur INTO r;
        EXIT WHEN NOT FOUND;
        v_n := COALESCE(pg_catalog.cardinality(r.keys), 0);
        EXIT WHEN v_keys > 0 AND v_keys + v_n > max_keys;
        v_ids := v_ids || r.id;
        v_keys := v_keys + v_n;
        id := r.id; model := r.model; keys := r.keys; created_at := r.created_at;
        RETURN NEXT;
        EXIT WHEN pg_catalog.cardinality(v_ids) >= max_rows;
    END LOOP;
    CLOSE cur;
    DELETE FROM objcached.outbox o WHERE o.id = ANY (v_ids);
END
$$;


-- For consumers: put keys whose invalidation could not be applied (a memcached server down or
-- frozen) back into the outbox, one row per model, inside the consumer's claim transaction, so
-- they are applied again later instead of lost. models[i] goes with keys[i].
CREATE OR REPLACE FUNCTION objcached.requeue(models text[], keys text[]) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO objcached.outbox (model, keys)
    SELECT u.m, pg_catalog.array_agg(u.k)
      FROM ROWS FROM (pg_catalog.unnest(models), pg_catalog.unnest(keys)) AS u(m, k)
     WHERE u.m IS NOT NULL AND u.k IS NOT NULL
     GROUP BY u.m
$$;

-- How far behind the consumers are: rows waiting (including those being applied right now) and
-- the age of the oldest.
CREATE OR REPLACE FUNCTION objcached.pending()
RETURNS TABLE (pending_rows bigint, oldest_age interval)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.count(*), pg_catalog.clock_timestamp() - pg_catalog.min(o.created_at)
      FROM objcached.outbox o
$$;

-- True when the table and every partition or child table carry all four triggers, enabled.
CREATE OR REPLACE FUNCTION objcached.hooked(tbl regclass) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = tbl)
       AND NOT EXISTS (
           SELECT 1
             FROM objcached._tree(tbl) r(rel)
            CROSS JOIN objcached._trigger_specs() s
            WHERE NOT EXISTS (
                SELECT 1 FROM pg_catalog.pg_trigger t
                 WHERE t.tgrelid = r.rel AND t.tgname = s.tgname AND t.tgfoid = s.fn
                   AND t.tgenabled <> 'D'))
$$;

-- One row per model, for objcached --check-config and for people. table_name is always
-- schema-qualified (NULL if the table was dropped); key_column is the column's current name (NULL if
-- it was dropped); hooked is objcached.hooked(tbl).
CREATE OR REPLACE VIEW objcached.status AS
SELECT o.model,
       o.tbl,
       CASE WHEN c.oid IS NOT NULL THEN pg_catalog.format('%I.%I', n.nspname, c.relname) END
           AS table_name,
       a.attname AS key_column,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS key_type,
       objcached.hooked(o.tbl) AS hooked,
       o.generation
  FROM objcached.models o
  LEFT JOIN pg_catalog.pg_class c ON c.oid = o.tbl
  LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_catalog.pg_attribute a
         ON a.attrelid = o.tbl AND a.attnum = o.key_attnum AND NOT a.attisdropped;

-- ---------------------------------------------------------------------------------------------
-- Privileges. Nothing here is for PUBLIC: writers need no right at all (triggers run their
-- SECURITY DEFINER functions without an EXECUTE check), and consumers get theirs by name, as
-- docs/invalidation.md shows:
--   GRANT USAGE ON SCHEMA objcached TO objcached;
--   GRANT EXECUTE ON FUNCTION objcached.claim(integer, integer), objcached.pending(),
--                             objcached.hooked(regclass),
--                             objcached.requeue(text[], text[]) TO objcached;
--   GRANT SELECT ON objcached.models, objcached.status TO objcached;
REVOKE ALL ON SCHEMA objcached FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA objcached FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA objcached FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA objcached FROM PUBLIC;

COMMIT;
