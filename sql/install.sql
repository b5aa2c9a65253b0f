-- objcached invalidation hook for PostgreSQL 15, schema version 2.
--
--   psql -v ON_ERROR_STOP=1 -f sql/install.sql
--   psql -c "SELECT objcached.attach('public.users', 'User', 'id')"                -- triggers
--   psql -c "SELECT objcached.attach('public.orders', 'Order', 'id', via => 'wal')" -- WAL reader
--
-- Safe to run again: it creates what is missing, upgrades a version-1 schema in place (outbox rows,
-- generations and settings are kept), replaces the functions, writes the per-table hook functions
-- again and re-applies the privileges, in one transaction. docs/invalidation.md explains the design
-- and the contracts of the outbox consumer, the feed and the WAL reader.
--
-- What version 2 adds to version 1:
--   * objcached.feed and objcached.feed_head: an ordered log of the invalidations that were applied
--     to memcached, which every sidecar reads with its own cursor (feed_poll), also on a replica;
--   * models.via ('triggers' | 'wal'): a 'wal' model has no triggers; its table is in publication
--     objcached and one sidecar reads the changes from logical replication slot objcached;
--   * outbox.requeued, set by requeue(), returned last by claim(); outbox.holds_back: a requeued row
--     that keeps its keys' oldest write time and holds the feed's caught_up_at back until its delete
--     is retried;
--   * per-table trigger functions with static SQL (objcached."hook_<oid>"), instead of one function
--     that planned dynamic statements on every statement; 'notify' defaults to 'off';
--   * added later to version 2, made by any run of this file over an install without them:
--     objcached.members and the event triggers objcached_ddl_end and objcached_sql_drop, which
--     invalidate a model whose rows DDL moved (ATTACH/DETACH PARTITION, INHERIT, NO INHERIT, DROP
--     TABLE of a partition); only a superuser's run can make the event triggers (_ddl_watch).

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
                    WHERE key = 'schema_version' AND value IS DISTINCT FROM '1'
                      AND value IS DISTINCT FROM '2') THEN
            RAISE EXCEPTION 'objcached install: the database has objcached schema version %, this file installs 2',
                (SELECT value FROM objcached.meta WHERE key = 'schema_version');
        END IF;
    END IF;
END
$$;

CREATE SCHEMA IF NOT EXISTS objcached;
COMMENT ON SCHEMA objcached IS
    'objcached invalidation hook: triggers or the WAL record changed keys; applied ones go to objcached.feed';

CREATE TABLE IF NOT EXISTS objcached.meta (
    key   text PRIMARY KEY,
    value text
);
-- Set to '2' at the end, once every object of version 2 exists.
INSERT INTO objcached.meta (key, value) VALUES ('schema_version', '2')
    ON CONFLICT (key) DO NOTHING;
-- 'on' makes the triggers call pg_notify('objcached', model) so consumers claim at once instead of
-- at their next poll. Off by default: a transaction that called pg_notify takes a cluster-wide lock
-- at commit and holds it through its commit's WAL flush, so hooked writers could no longer share a
-- flush (group commit). Sidecars poll every invalidation_poll anyway, and near-caches are woken by
-- the feed's own notification (feed_append). An existing setting (a version-1 database has 'on') is
-- kept; changing it rewrites the hook functions (trigger meta_changed below).
INSERT INTO objcached.meta (key, value) VALUES ('notify', 'off')
    ON CONFLICT (key) DO NOTHING;

-- Generations only ever grow, across detach and re-attach too: a model that is attached again must
-- not come back to a generation whose cache entries may still be in memcached. Across an uninstall
-- and a new install too: uninstall.sql drops the sequence, and the old hook's entries stay in
-- memcached until their ttl, also those of rows written while no hook recorded the writes. So a
-- new sequence starts at the time in microseconds since the epoch, above every generation an
-- earlier install reached (unless it drew more than one a microsecond since it was made, or the
-- server's clock went back). An existing one (a run again, an upgrade from version 1) is kept.
DO $$
BEGIN
    IF pg_catalog.to_regclass('objcached.generation_seq') IS NULL THEN
        CREATE SEQUENCE objcached.generation_seq;
        PERFORM pg_catalog.setval('objcached.generation_seq',
            pg_catalog.floor(pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000000)::bigint,
            false);
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS objcached.models (
    model      text PRIMARY KEY
               CONSTRAINT models_model_name CHECK (model ~ '^[A-Za-z_][A-Za-z0-9_]{0,63}$'),
    tbl        regclass NOT NULL,
    key_column name NOT NULL,      -- the name given to attach(); status shows the current name
    key_attnum smallint NOT NULL,  -- what the hook uses, so renaming the column keeps working
    generation bigint NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS models_tbl ON objcached.models (tbl);
-- Version 2: how the model's changes are captured. A version-1 model keeps its triggers.
ALTER TABLE objcached.models ADD COLUMN IF NOT EXISTS via text NOT NULL DEFAULT 'triggers';
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                    WHERE conrelid = 'objcached.models'::regclass AND conname = 'models_via') THEN
        ALTER TABLE objcached.models ADD CONSTRAINT models_via CHECK (via IN ('triggers', 'wal'));
    END IF;
END
$$;
COMMENT ON TABLE objcached.models IS
    'Models whose table is hooked (via triggers or the WAL); generation grows on every whole-model invalidation';

-- Which relations each model's table tree held (the table, its partitions and inheritance children)
-- when the hook last looked: attach, and the event triggers below after every CREATE, ALTER and DROP
-- TABLE. ATTACH/DETACH PARTITION, INHERIT, NO INHERIT and DROP TABLE of a partition move rows in or
-- out of a model without writing a row change (no trigger fires, the WAL carries none): the event
-- trigger sees the tree differ from these rows and invalidates the model whole. Added to version 2
-- later: an install that lacks it gets it, filled without invalidating anything.
-- rel is a regclass, not an oid: pg_dump writes it as the relation's name, so a restored database
-- has its own OIDs here (with oids, a DROP TABLE or NO INHERIT of a partition after a restore found
-- no member with the dropped table's new OID and invalidated nothing). pg_upgrade keeps OIDs anyway.
CREATE TABLE IF NOT EXISTS objcached.members (
    model text NOT NULL REFERENCES objcached.models (model) ON DELETE CASCADE,
    rel   regclass NOT NULL,
    PRIMARY KEY (model, rel)
);
-- An install from before rel was a regclass.
DO $$
BEGIN
    IF (SELECT a.atttypid FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = 'objcached.members'::pg_catalog.regclass AND a.attname = 'rel') = 'pg_catalog.oid'::pg_catalog.regtype THEN
        ALTER TABLE objcached.members ALTER COLUMN rel TYPE pg_catalog.regclass;
    END IF;
END
$$;
-- _ddl_watch looks up every DDL's relations here.
CREATE INDEX IF NOT EXISTS members_rel ON objcached.members (rel);
COMMENT ON TABLE objcached.members IS
    'The relations of each model''s table tree when last seen; a DDL that changes the tree invalidates the model';

CREATE TABLE IF NOT EXISTS objcached.outbox (
    id         bigserial PRIMARY KEY,
    model      text NOT NULL,
    keys       text[],             -- NULL: the whole model (TRUNCATE)
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
-- Version 2: true for rows put back by requeue() (memcached failed their deletes).
ALTER TABLE objcached.outbox ADD COLUMN IF NOT EXISTS requeued boolean NOT NULL DEFAULT false;
-- Version 2: true for requeued rows whose created_at is the oldest write of their keys (requeue's
-- since), not the requeue's time: until a consumer's retried delete succeeds and appends them to the
-- feed again they hold caught_up_at back to it (_feed_bound), since a sidecar may have refilled its
-- near-cache from memcached's old value after their first append. False for keys whose server is
-- emptied before it is read again (requeue without since).
ALTER TABLE objcached.outbox ADD COLUMN IF NOT EXISTS holds_back boolean NOT NULL DEFAULT false;
-- _feed_bound's oldest holding row: an index of the (few) holding rows only, so the appenders'
-- every call reads an empty index instead of scanning a backlog.
CREATE INDEX IF NOT EXISTS outbox_holds_back_created_at ON objcached.outbox (created_at) WHERE holds_back;
-- A queue: rows are deleted soon after they are inserted. Vacuum it by row count, not by a
-- fraction of its (small) size, so dead rows do not pile up in front of the consumers' index scans.
ALTER TABLE objcached.outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
                                  autovacuum_vacuum_insert_scale_factor = 0,
                                  autovacuum_vacuum_insert_threshold = 10000);
COMMENT ON TABLE objcached.outbox IS
    'Pending invalidations, one row per statement per model (at most 100000 keys a row); consumed by objcached.claim()';

-- ---------------------------------------------------------------------------------------------
-- The feed (version 2): every invalidation applied to memcached, in commit order, for every sidecar.
--
-- Whoever applies invalidations to memcached (the WAL reader, or an outbox consumer in trigger mode)
-- appends what it applied with feed_append(), in the transaction that also commits its work. Every
-- sidecar reads the feed with feed_poll(after, limit), from the primary or a streaming replica, with
-- its own cursor (the last seq it has seen), and drops those keys from its near-cache.
--
-- THE ORDERING PROMISE: a reader that has seen seq N has seen, or will never see, every row below N:
-- rows are never committed "behind" a reader's cursor. Seq values can have gaps (a rolled-back
-- append, a sequence's cached values lost in a crash); a gap never fills later. Why it holds:
--   * every append, heartbeat and prune first takes one transaction-level advisory lock (the key
--     8026094460995856485, 'objcache' in ASCII; pg_locks shows it as an advisory lock with classid
--     1868720739 and objid 1633904741), and holds it until its transaction ends; only then does it
--     draw seq values (nextval of objcached.feed_seq) and insert its rows. So appenders run one at a
--     time, and an appender draws higher values than every appender before it;
--   * on the primary, a transaction's COMMIT makes it visible to new snapshots (ProcArrayEndTransaction)
--     BEFORE it releases its locks. So when appender B gets the lock, appender A before it is already
--     visible to every snapshot taken from then on; B's rows (higher seqs) become visible only at B's
--     commit, later. A snapshot that sees B's rows therefore sees A's rows;
--   * on a streaming replica, transactions become visible when their commit records are replayed,
--     and replay follows WAL order. A's commit record was written before A released the lock, B's
--     after B took it: A is replayed, and visible, first.
--   So seq order is commit order, on the primary and on every replica, and a reader never skips a row
--   by moving its cursor past a gap.
-- Nothing else may call nextval('objcached.feed_seq') or write the feed: no role but the schema's
-- owner has any right on them (the functions below are SECURITY DEFINER).
CREATE SEQUENCE IF NOT EXISTS objcached.feed_seq;

CREATE TABLE IF NOT EXISTS objcached.feed (
    seq          bigint PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    committed_at timestamptz,    -- the newest source commit in this row (commit-to-applied latency)
    model        text NOT NULL,
    keys         text[],         -- distinct, at most 100,000; NULL: the whole model
    generation   bigint,         -- the model's generation after a whole-model invalidation, else NULL
    CONSTRAINT feed_whole_has_generation CHECK ((keys IS NULL) = (generation IS NOT NULL))
);
ALTER TABLE objcached.feed SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
                                autovacuum_vacuum_insert_scale_factor = 0,
                                autovacuum_vacuum_insert_threshold = 10000);
COMMENT ON TABLE objcached.feed IS
    'Applied invalidations in commit order (seq); appended by feed_append(), read by feed_poll(), pruned by feed_prune()';

CREATE TABLE IF NOT EXISTS objcached.feed_head (
    singleton    boolean PRIMARY KEY DEFAULT true CONSTRAINT feed_head_one_row CHECK (singleton),
    seq          bigint NOT NULL,       -- the last appended seq (0: nothing yet)
    -- Every write committed at or before this instant is in feed rows with seq <= seq (NULL: no
    -- such instant is known yet). Only grows.
    caught_up_at timestamptz,
    pruned_upto  bigint NOT NULL,       -- rows with seq <= this were pruned
    writer       text,                  -- who last appended or heartbeated, for operators
    updated_at   timestamptz NOT NULL
) WITH (fillfactor = 20);   -- updated on every append and heartbeat: leave room for HOT updates
ALTER TABLE objcached.feed_head SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
INSERT INTO objcached.feed_head (seq, caught_up_at, pruned_upto, writer, updated_at)
VALUES (0, NULL, 0, 'install.sql', pg_catalog.clock_timestamp())
    ON CONFLICT (singleton) DO NOTHING;
COMMENT ON TABLE objcached.feed_head IS
    'One row: the feed''s last seq, how far it is complete in time (caught_up_at), and what was pruned';

-- Crash recovery empties every unlogged table, and a promoted standby has them empty, without firing
-- a trigger: a trigger-mode model on an unlogged table would keep its cached rows. This unlogged
-- table has one row, so an empty one says "unlogged tables were emptied since": the next claim()
-- invalidates those models whole and puts the row back (_unlogged_reset).
CREATE UNLOGGED TABLE IF NOT EXISTS objcached.unlogged_alive (
    singleton boolean PRIMARY KEY DEFAULT true CONSTRAINT unlogged_alive_one_row CHECK (singleton)
);
INSERT INTO objcached.unlogged_alive DEFAULT VALUES ON CONFLICT (singleton) DO NOTHING;
COMMENT ON TABLE objcached.unlogged_alive IS
    'One row, gone when crash recovery emptied the unlogged tables: claim() then invalidates their models';

-- Big key arrays are compressed on insert: lz4 does it for a fraction of pglz's CPU (about 15 ms
-- less per 100,000 keys), where this server was built with it.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_settings
                WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE objcached.outbox ALTER COLUMN keys SET COMPRESSION lz4;
        ALTER TABLE objcached.feed ALTER COLUMN keys SET COMPRESSION lz4;
    END IF;
END
$$;

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

-- The relation and every table it inherits from, with the distance (0 for the relation itself).
CREATE OR REPLACE FUNCTION objcached._ancestors(rel oid) RETURNS TABLE (anc oid, depth integer)
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE up(anc, depth) AS (
        SELECT rel, 0
        UNION
        SELECT i.inhparent, up.depth + 1 FROM pg_catalog.pg_inherits i JOIN up ON i.inhrelid = up.anc
    )
    SELECT up.anc, pg_catalog.min(up.depth) FROM up GROUP BY up.anc
$$;

-- The ancestor of the relation that has no parent (the relation itself if it has none). With
-- multiple inheritance, the one with the lowest OID, so the answer is stable.
CREATE OR REPLACE FUNCTION objcached._topmost(rel oid) RETURNS oid
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.anc FROM objcached._ancestors(rel) a
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = a.anc)
     ORDER BY a.anc LIMIT 1
$$;

CREATE OR REPLACE FUNCTION objcached._qualified(rel oid) RETURNS text
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = rel
$$;

-- A string fit for an error message whatever it holds: JSON-quoted, control characters escaped.
CREATE OR REPLACE FUNCTION objcached._shown(s text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT COALESCE(pg_catalog.to_json(s)::text, 'NULL')
$$;

CREATE OR REPLACE FUNCTION objcached._notify_on() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT COALESCE((SELECT m.value <> 'off' FROM objcached.meta m WHERE m.key = 'notify'), true)
$$;

-- A new generation: generation_seq's next value, or the time in microseconds since the epoch when
-- that is higher (the sequence then moves up to it). A new install starts the sequence at the clock
-- (above), but a schema restored by pg_dump --schema-only has it back at its START value, 1, and
-- without the schema's rows: the models attached there again took generations 1, 2, ... , the keys
-- of an earlier copy's rows in a memcached pool that copies share (a staging copy made every night),
-- served until their ttl. A full dump gives it back at the dump's value, below what was drawn after
-- the dump. The clock is above both (unless it was set back). Two callers in the same microsecond
-- may return the same value: only for different models, whose keys differ anyway (one model's draws
-- are serialised by its objcached.models row, and a commit lies between them).
CREATE OR REPLACE FUNCTION objcached._next_generation() RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_next bigint := pg_catalog.nextval('objcached.generation_seq');
    v_now  bigint := pg_catalog.floor(pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000000)::bigint;
BEGIN
    IF v_next >= v_now THEN
        RETURN v_next;
    END IF;
    PERFORM pg_catalog.setval('objcached.generation_seq', v_now, true);
    RETURN v_now;
END
$$;

-- Whole-model invalidation: a keys-NULL outbox row and a new generation.
CREATE OR REPLACE FUNCTION objcached._invalidate_model(p_model text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE objcached.models SET generation = objcached._next_generation()
     WHERE model = p_model;
    INSERT INTO objcached.outbox (model, keys) VALUES (p_model, NULL);
    IF objcached._notify_on() THEN
        PERFORM pg_catalog.pg_notify('objcached', p_model);
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Trigger mode: per-table hook functions.
--
-- Every relation that a trigger-mode model covers (its table, and every partition or inheritance
-- child of it, at any depth) carries four statement triggers, objcached_insert, _update, _delete and
-- _truncate. They call a trigger function generated for that table, objcached."hook_<oid>"(), whose
-- SQL names the models and key columns as constants. Version 1 had one function for all tables,
-- which looked up the table's models in the catalogs and planned its statements with EXECUTE on
-- every statement: about 290 us of CPU added to a single-row UPDATE transaction, against about 35 us
-- for these, whose static statements plpgsql plans once per session (docs/invalidation.md,
-- "Measured overhead").
--
-- The generated functions are SECURITY DEFINER (any role allowed to write a hooked table queues its
-- invalidations without any right on the outbox) with search_path pinned (nothing a caller defines
-- can stand in for what they use). Names only ever enter them through format('%I') and
-- format('%L'), and their comments hold no names at all, so a hostile table or column name (quotes,
-- a newline, '*/', '$$') cannot change their code.
--
-- attach, detach, install.sql and a change of objcached.meta write them again (_sync_hooks), and
-- drop those no trigger uses any more. What a generated function assumes, it checks cheaply on every
-- statement, falling back to the dynamic path of version 1 when the check fails:
--   * the key column still has the name and attribute number it had (a RENAME COLUMN, or a column
--     dropped and another added under the old name, would otherwise make the static statements fail
--     or read the wrong column): one catalog lookup per model, done as a plpgsql "simple expression"
--     (pg_identify_object_as_address, a syscache probe, no SPI query);
--   * statements of at most 1,000 rows take the static path, larger ones the dynamic path (planning
--     costs little next to them, and it skips the DISTINCT for a unique key: see its comment).

-- The trigger-mode models whose changes a statement on relation `rel` must queue: those attached to
-- rel or to a table it inherits from, with each key column's current name (NULL if it was dropped).
CREATE OR REPLACE FUNCTION objcached._covering(rel oid)
RETURNS TABLE (model text, tbl oid, key_attnum smallint, attname name)
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT o.model, o.tbl::oid, o.key_attnum, a.attname
      FROM objcached._ancestors(rel) x
      JOIN objcached.models o ON o.tbl::oid = x.anc
      LEFT JOIN pg_catalog.pg_attribute a
             ON a.attrelid = o.tbl AND a.attnum = o.key_attnum AND NOT a.attisdropped
     WHERE o.via = 'triggers'
     ORDER BY o.model
$$;

-- Which generated function a relation's triggers call: the one of its nearest attached ancestor (or
-- itself) whose models are exactly the relation's; the relation's own otherwise (a child of two
-- attached parents). NULL: no trigger-mode model covers the relation, it carries no triggers.
CREATE OR REPLACE FUNCTION objcached._hook_anchor(rel oid) RETURNS oid
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_mine text[];
    v_anc  oid;
BEGIN
    SELECT pg_catalog.array_agg(c.model ORDER BY c.model) INTO v_mine FROM objcached._covering(rel) c;
    IF v_mine IS NULL THEN
        RETURN NULL;
    END IF;
    FOR v_anc IN
        SELECT a.anc FROM objcached._ancestors(rel) a
         WHERE EXISTS (SELECT 1 FROM objcached.models o WHERE o.tbl::oid = a.anc AND o.via = 'triggers')
         ORDER BY a.depth, a.anc
    LOOP
        IF (SELECT pg_catalog.array_agg(c.model ORDER BY c.model) FROM objcached._covering(v_anc) c)
           = v_mine THEN
            RETURN v_anc;
        END IF;
    END LOOP;
    RETURN rel;
END
$$;

-- The source of objcached."hook_<anchor>"(). The generated code is the same for every relation that
-- uses it: columns are named, never numbered, and partitions and children share their parent's
-- column names.
CREATE OR REPLACE FUNCTION objcached._hook_source(p_anchor oid) RETURNS text
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $gen$
DECLARE
    v_notify  boolean := objcached._notify_on();
    v_models  text[] := '{}';
    v_check   text := '';
    v_one     text;
    v_trunc   text := '';
    v_ins     text := '';
    v_upd     text := '';
    v_del     text := '';
    v_after   text;
    v_gone    text;
    m         record;
BEGIN
    FOR m IN SELECT * FROM objcached._covering(p_anchor) LOOP
        v_models := v_models || m.model;
        v_trunc := v_trunc || pg_catalog.format(
            E'        PERFORM objcached._invalidate_model(%L);\n', m.model);
        IF m.attname IS NULL THEN
            -- The key column was dropped: the keys cannot be named, so every write invalidates the
            -- whole model rather than lose the change or fail.
            v_gone := pg_catalog.format(
                E'            RAISE WARNING ''objcached: key column of model %% is gone; invalidating the whole model'', %L;\n'
                 '            PERFORM objcached._invalidate_model(%L);\n', m.model, m.model);
            v_ins := v_ins || v_gone;
            v_upd := v_upd || v_gone;
            v_del := v_del || v_gone;
            CONTINUE;
        END IF;
        v_one := pg_catalog.format(
            E'\n       AND (pg_catalog.pg_identify_object_as_address(1259, %s, %s)).object_names[3]'
             ' IS NOT DISTINCT FROM %L', m.tbl, m.key_attnum, m.attname);
        IF pg_catalog.strpos(v_check, v_one) = 0 THEN   -- two models on one key column: one check
            v_check := v_check || v_one;
        END IF;
        v_after := CASE WHEN v_notify THEN pg_catalog.format(
            E'            GET DIAGNOSTICS v_n = ROW_COUNT;\n'
             '            IF v_n > 0 THEN\n'
             '                PERFORM pg_catalog.pg_notify(''objcached'', %L);\n'
             '            END IF;\n', m.model) ELSE '' END;
        -- The keys of the rows, made distinct in their own type and then read as text: exactly how
        -- PostgreSQL prints them (a uuid in lower case with hyphens), with the type's output function
        -- (concat), as pgoutput sends them, never with a cast: the table's owner may have made the
        -- key column a type of its own since attach, with a cast to text of its own (CREATE CAST
        -- needs only the type), which this SECURITY DEFINER function would run as its owner, maybe
        -- a superuser. Output functions of types are C, so a superuser's. NULL keys cannot be cached:
        -- left out. No keys, no row. An UPDATE gives the old and the new keys, so changing a key
        -- invalidates both.
        v_ins := v_ins || pg_catalog.format(
            E'            INSERT INTO objcached.outbox (model, keys)\n'
             '            SELECT %1$L, pg_catalog.array_agg(pg_catalog.concat(d.k))\n'
             '              FROM (SELECT DISTINCT n.%2$I AS k FROM objcached_new n WHERE n.%2$I IS NOT NULL) d\n'
             '            HAVING pg_catalog.count(*) > 0;\n', m.model, m.attname) || v_after;
        v_upd := v_upd || pg_catalog.format(
            E'            INSERT INTO objcached.outbox (model, keys)\n'
             '            SELECT %1$L, pg_catalog.array_agg(pg_catalog.concat(d.k))\n'
             '              FROM (SELECT o.%2$I AS k FROM objcached_old o WHERE o.%2$I IS NOT NULL\n'
             '                    UNION SELECT n.%2$I FROM objcached_new n WHERE n.%2$I IS NOT NULL) d\n'
             '            HAVING pg_catalog.count(*) > 0;\n', m.model, m.attname) || v_after;
        v_del := v_del || pg_catalog.format(
            E'            INSERT INTO objcached.outbox (model, keys)\n'
             '            SELECT %1$L, pg_catalog.array_agg(pg_catalog.concat(d.k))\n'
             '              FROM (SELECT DISTINCT o.%2$I AS k FROM objcached_old o WHERE o.%2$I IS NOT NULL) d\n'
             '            HAVING pg_catalog.count(*) > 0;\n', m.model, m.attname) || v_after;
    END LOOP;
    IF pg_catalog.cardinality(v_models) = 0 THEN
        RETURN NULL;
    END IF;

    -- The c_models line is read back by _hook_models (objcached.status): keep its spelling.
    RETURN pg_catalog.format($src$
-- Generated by objcached (sql/install.sql, _hook_source) for the relation with OID %1$s and the
-- relations that share its models. Do not edit: attach, detach, install.sql and a change of
-- objcached.meta write it again.
DECLARE
    -- Above this many rows a statement takes the dynamic path below.
    c_small    constant integer := 1000;
    -- A statement touching more keys than this writes several rows, so no array grows without bound.
    c_max_keys constant integer := 100000;
    c_notify   constant boolean := %2$L;
    c_models   constant text[] := %3$L;
    v_rows     bigint;
    v_n        bigint;
    v_keys     text[];
    m          record;
    src        text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        -- The keys are unknown: the whole model is invalidated and its generation grows.
%4$s        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        SELECT pg_catalog.count(*) INTO v_rows FROM objcached_old;
    ELSE
        SELECT pg_catalog.count(*) INTO v_rows FROM objcached_new;
    END IF;
    IF v_rows = 0 THEN
        RETURN NULL;
    END IF;

    -- The static path: the key columns still have the names and numbers these statements were
    -- written for.
    IF v_rows <= c_small%5$s THEN
        IF TG_OP = 'INSERT' THEN
%6$s        ELSIF TG_OP = 'UPDATE' THEN
%7$s        ELSE
%8$s        END IF;
        RETURN NULL;
    END IF;

    -- The dynamic path (statements over c_small rows, or a key column renamed or dropped since this
    -- function was written): the key column is found by its attribute number, and the statements are
    -- planned for this call.
    FOR m IN
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
          FROM objcached.models o
          LEFT JOIN pg_catalog.pg_attribute a
                 ON a.attrelid = o.tbl AND a.attnum = o.key_attnum AND NOT a.attisdropped
         WHERE o.model = ANY (c_models)
         ORDER BY o.model
    LOOP
        IF m.attname IS NULL THEN
            RAISE WARNING 'objcached: key column of model %% is gone; invalidating the whole model', m.model;
            PERFORM objcached._invalidate_model(m.model);
            CONTINUE;
        END IF;
        -- A unique key needs no DISTINCT: an UPDATE adds only the old keys that are not new ones (a
        -- hash anti-join, half the work of making 2n keys distinct), and an INSERT or a DELETE nothing.
        IF m.uniq AND TG_OP = 'UPDATE' THEN
            src := pg_catalog.format('SELECT n.%%1$I AS k FROM objcached_new n WHERE n.%%1$I IS NOT NULL'
                                     ' UNION ALL SELECT o.%%1$I FROM objcached_old o'
                                     ' WHERE o.%%1$I IS NOT NULL AND NOT EXISTS'
                                     ' (SELECT 1 FROM objcached_new n2 WHERE n2.%%1$I = o.%%1$I)',
                                     m.attname);
        ELSIF m.uniq THEN
            src := pg_catalog.format('SELECT t.%%1$I AS k FROM %%2$I t WHERE t.%%1$I IS NOT NULL',
                                     m.attname,
                                     CASE TG_OP WHEN 'INSERT' THEN 'objcached_new' ELSE 'objcached_old' END);
        ELSE
            IF TG_OP = 'INSERT' THEN
                src := pg_catalog.format('SELECT %%I AS k FROM objcached_new', m.attname);
            ELSIF TG_OP = 'UPDATE' THEN
                src := pg_catalog.format('SELECT %%1$I AS k FROM objcached_old'
                                         ' UNION ALL SELECT %%1$I FROM objcached_new', m.attname);
            ELSE
                src := pg_catalog.format('SELECT %%I AS k FROM objcached_old', m.attname);
            END IF;
            src := 'SELECT DISTINCT s.k FROM (' || src || ') s WHERE s.k IS NOT NULL';
        END IF;

        IF v_rows <= c_max_keys THEN
            EXECUTE 'SELECT pg_catalog.array_agg(pg_catalog.concat(d.k)) FROM (' || src || ') d' INTO v_keys;
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
                    '   FROM (SELECT pg_catalog.concat(d.k) AS k, (pg_catalog.row_number() OVER () - 1) / $2 AS chunk'
                    '           FROM (' || src || ') d) c'
                    '  GROUP BY c.chunk'
                USING m.model, c_max_keys;
            GET DIAGNOSTICS v_n = ROW_COUNT;
            IF v_n = 0 THEN
                CONTINUE;
            END IF;
        END IF;
        IF c_notify THEN
            PERFORM pg_catalog.pg_notify('objcached', m.model);
        END IF;
    END LOOP;
    RETURN NULL;
END
$src$, p_anchor, v_notify, v_models, v_trunc,
       CASE WHEN v_check = '' THEN '' ELSE v_check END, v_ins, v_upd, v_del);
END
$gen$;

-- The four triggers every hooked relation carries.
CREATE OR REPLACE FUNCTION objcached._hook_triggers() RETURNS TABLE (tgname name, ddl text)
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    VALUES
    ('objcached_insert'::name, 'AFTER INSERT ON %s REFERENCING NEW TABLE AS objcached_new'),
    ('objcached_update', 'AFTER UPDATE ON %s REFERENCING OLD TABLE AS objcached_old NEW TABLE AS objcached_new'),
    ('objcached_delete', 'AFTER DELETE ON %s REFERENCING OLD TABLE AS objcached_old'),
    ('objcached_truncate', 'AFTER TRUNCATE ON %s')
$$;

-- True when the trigger function is objcached's: any function of schema objcached (the generated
-- ones, and version 1's on_write and on_truncate until the upgrade replaces them).
CREATE OR REPLACE FUNCTION objcached._ours(fn oid) RETURNS boolean
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                    WHERE p.oid = fn AND p.pronamespace = 'objcached'::regnamespace)
$$;

-- WAL models: PostgreSQL sends a partition's changes as its root's (publish_via_partition_root),
-- but leaves a partition out of a TRUNCATE published that way (pgoutput_truncate), so a TRUNCATE of
-- one partition alone never reaches the WAL reader. Every partition of a WAL model's table carries
-- this one trigger, objcached_wal_truncate: the WAL models of its ancestors are invalidated whole
-- through the outbox, which the WAL reader drains. Nothing else of the write path is hooked.
-- The new generations are not in the stream either: the reader keys its deletes with the
-- generations it last read, so the transaction also tells it (_map_changed) to read them again once
-- it is applied; before, every later change of the model deleted keys of the old generation and
-- what was cached under the new one stayed until its TTL.
-- The WAL models of the truncated relation itself too: a model's table made a partition of another
-- WAL model's table (ATTACH PARTITION) is such a partition, its TRUNCATE left out of the WAL as well
-- (found by a review, 2026-12-06).
CREATE OR REPLACE FUNCTION objcached.wal_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_model text;
    v_any   boolean := false;
BEGIN
    FOR v_model IN
        SELECT o.model FROM objcached.models o
         WHERE o.via = 'wal'
           AND o.tbl::oid IN (SELECT a.relid FROM pg_catalog.pg_partition_ancestors(TG_RELID) a)
         ORDER BY 1
    LOOP
        PERFORM objcached._invalidate_model(v_model);
        v_any := true;
    END LOOP;
    IF v_any THEN
        PERFORM objcached._map_changed();
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION objcached.wal_truncate() FROM PUBLIC;

-- Does relation p_rel need objcached_wal_truncate (a partition under a WAL model's table)?
CREATE OR REPLACE FUNCTION objcached._wal_truncate_wanted(p_rel oid) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = p_rel AND c.relispartition)
       AND EXISTS (SELECT 1 FROM objcached.models o
                    WHERE o.via = 'wal'
                      AND o.tbl::oid IN (SELECT a.relid FROM pg_catalog.pg_partition_ancestors(p_rel) a
                                          WHERE a.relid <> p_rel))
$$;

-- Makes the triggers of every relation in the trees of p_tables (whole trees, from their topmost
-- ancestors) what the models say: the four triggers, enabled ALWAYS, calling the right generated
-- function, or none; writes the generated functions again where their source changed, and drops
-- the generated functions no trigger calls any more. Runs as the caller, who must own the tables.
CREATE OR REPLACE FUNCTION objcached._sync_hooks(p_tables oid[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rel     oid;
    v_anchor  oid;
    v_done    oid[] := '{}';
    v_fn      text;
    v_fn_oid  oid;
    v_src     text;
    v_spec    record;
    v_trg     record;
    v_name    text;
    v_wal_trg oid;
BEGIN
    FOR v_rel, v_anchor IN
        SELECT t.rel, objcached._hook_anchor(t.rel)
          FROM (SELECT DISTINCT objcached._tree(objcached._topmost(x)) AS rel
                  FROM pg_catalog.unnest(p_tables) x
                 WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = x)) t
         ORDER BY 1
    LOOP
        v_name := objcached._qualified(v_rel);
        SELECT t.tgfoid INTO v_wal_trg FROM pg_catalog.pg_trigger t
         WHERE t.tgrelid = v_rel AND t.tgname = 'objcached_wal_truncate';
        IF objcached._wal_truncate_wanted(v_rel) THEN
            IF v_wal_trg IS NULL THEN
                EXECUTE pg_catalog.format('CREATE TRIGGER objcached_wal_truncate AFTER TRUNCATE ON %s'
                                          ' FOR EACH STATEMENT EXECUTE FUNCTION objcached.wal_truncate()',
                                          v_name);
            ELSIF NOT objcached._ours(v_wal_trg) THEN
                RAISE EXCEPTION 'objcached.attach: table % already has a trigger named % that objcached did not create',
                    v_name, 'objcached_wal_truncate' USING ERRCODE = 'duplicate_object';
            END IF;
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                            WHERE t.tgrelid = v_rel AND t.tgname = 'objcached_wal_truncate' AND t.tgenabled = 'A') THEN
                EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ALWAYS TRIGGER objcached_wal_truncate', v_name);
            END IF;
        ELSIF v_wal_trg IS NOT NULL AND objcached._ours(v_wal_trg) THEN
            EXECUTE pg_catalog.format('DROP TRIGGER objcached_wal_truncate ON %s', v_name);
        END IF;
        IF v_anchor IS NULL THEN
            FOR v_trg IN
                SELECT t.tgname FROM pg_catalog.pg_trigger t JOIN objcached._hook_triggers() s USING (tgname)
                 WHERE t.tgrelid = v_rel AND objcached._ours(t.tgfoid)
            LOOP
                EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', v_trg.tgname, v_name);
            END LOOP;
            CONTINUE;
        END IF;

        v_fn := pg_catalog.format('objcached.%I()', 'hook_' || v_anchor::text);
        IF NOT v_anchor = ANY (v_done) THEN
            v_src := objcached._hook_source(v_anchor);
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                            WHERE p.pronamespace = 'objcached'::regnamespace
                              AND p.proname = 'hook_' || v_anchor::text AND p.pronargs = 0
                              AND p.prosrc = v_src) THEN
                EXECUTE pg_catalog.format('CREATE OR REPLACE FUNCTION %s RETURNS trigger LANGUAGE plpgsql'
                                          ' SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS %L',
                                          v_fn, v_src);
                EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', v_fn);
            END IF;
            v_done := v_done || v_anchor;
        END IF;
        v_fn_oid := pg_catalog.to_regprocedure(v_fn);

        FOR v_spec IN SELECT * FROM objcached._hook_triggers() LOOP
            SELECT t.tgfoid, t.tgenabled INTO v_trg
              FROM pg_catalog.pg_trigger t WHERE t.tgrelid = v_rel AND t.tgname = v_spec.tgname;
            IF NOT FOUND THEN
                EXECUTE pg_catalog.format('CREATE TRIGGER %I ' || v_spec.ddl ||
                                          ' FOR EACH STATEMENT EXECUTE FUNCTION %s',
                                          v_spec.tgname, v_name, v_fn);
            ELSIF NOT objcached._ours(v_trg.tgfoid) THEN
                RAISE EXCEPTION 'objcached.attach: table % already has a trigger named % that objcached did not create',
                    v_name, '"' || pg_catalog.replace(v_spec.tgname, '"', '""') || '"'
                    USING ERRCODE = 'duplicate_object';
            ELSIF v_trg.tgfoid <> v_fn_oid THEN
                -- CREATE OR REPLACE TRIGGER takes the same lock as CREATE TRIGGER (SHARE ROW
                -- EXCLUSIVE: readers go on), where DROP TRIGGER would take ACCESS EXCLUSIVE.
                EXECUTE pg_catalog.format('CREATE OR REPLACE TRIGGER %I ' || v_spec.ddl ||
                                          ' FOR EACH STATEMENT EXECUTE FUNCTION %s',
                                          v_spec.tgname, v_name, v_fn);
            END IF;
            -- ALWAYS: also fire under session_replication_role = replica, which bulk loaders and
            -- replication tools set to skip ordinary triggers.
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                            WHERE t.tgrelid = v_rel AND t.tgname = v_spec.tgname AND t.tgenabled = 'A') THEN
                EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', v_name, v_spec.tgname);
            END IF;
        END LOOP;
    END LOOP;

    -- Generated functions that no trigger calls any more (their table was detached, moved to the
    -- WAL, dropped, or got another OID in a dump and restore).
    FOR v_fn IN
        SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'objcached'::regnamespace AND p.proname ~ '^hook_[0-9]+$'
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgfoid = p.oid)
    LOOP
        EXECUTE 'DROP FUNCTION ' || v_fn;
    END LOOP;
END
$$;

-- Every table whose triggers objcached manages: those of every model (a WAL model's partitions
-- carry objcached_wal_truncate), and any relation that carries a trigger calling one of
-- objcached's functions.
CREATE OR REPLACE FUNCTION objcached._sync_all_hooks() RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT objcached._sync_hooks(ARRAY(
        SELECT o.tbl::oid FROM objcached.models o
        UNION
        SELECT t.tgrelid FROM pg_catalog.pg_trigger t
         WHERE (t.tgname IN (SELECT s.tgname FROM objcached._hook_triggers() s)
                OR t.tgname = 'objcached_wal_truncate')
           AND objcached._ours(t.tgfoid)))
$$;

-- 'notify' in objcached.meta changed: it is baked into the generated functions, so write them again.
-- As the schema's owner, who owns them (and, as attach requires, the hooked tables).
CREATE OR REPLACE FUNCTION objcached._meta_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF (TG_OP <> 'DELETE' AND NEW.key = 'notify') OR (TG_OP <> 'INSERT' AND OLD.key = 'notify') THEN
        PERFORM objcached._sync_all_hooks();
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS meta_changed ON objcached.meta;
CREATE TRIGGER meta_changed AFTER INSERT OR UPDATE OR DELETE ON objcached.meta
    FOR EACH ROW EXECUTE FUNCTION objcached._meta_changed();

-- ---------------------------------------------------------------------------------------------
-- WAL mode (version 2): a model attached with via => 'wal' has no triggers. Its table is in
-- publication objcached, and one sidecar (the WAL reader) reads the changes from logical replication
-- slot objcached with the pgoutput plugin, applies them to memcached and appends them to the feed.
-- The application's writes pay nothing for it beyond the WAL PostgreSQL writes anyway (more with
-- REPLICA IDENTITY FULL).
--
-- The publication: publish = 'insert, update, delete, truncate', publish_via_partition_root = true
-- (a partition's changes are sent as changes of the attached, partitioned table, in its column
-- layout). A plain table's inheritance children are published one by one and are sent under their
-- own names: objcached.wal_tables() lists every relation the reader will be sent, with its model.
--
-- The WAL reader's contract (docs/invalidation.md, "What the WAL reader does"):
--   * slot objcached, plugin pgoutput, publication_names 'objcached' (messages 'true' for the
--     heartbeats). Created by a role with the REPLICATION attribute:
--       SELECT pg_catalog.pg_create_logical_replication_slot('objcached', 'pgoutput');
--   * per committed transaction: INSERT -> the new key; UPDATE -> the new key, and the old key when
--     the old-key tuple is sent (the key changed; it holds only replica-identity columns, and attach
--     made sure they include the key); DELETE -> the old key; TRUNCATE -> every model of the
--     relations, whole. Keys are the column's text output, as in trigger mode;
--   * delete the keys from memcached; then, in ONE transaction: objcached.requeue(models, keys,
--     since => the batch's first commit, or NULL for keys whose server is emptied before it is read
--     again) for the deletes that failed, FIRST (the append's caught_up_at must see them), then
--     objcached.feed_append(models, keys, whole, p_bump => true,
--     committed_at => newest commit of the batch, caught_up_at => NULL or a heartbeat instant,
--     writer); COMMIT; then confirm the slot position past the batch;
--   * heartbeat: SELECT pg_catalog.pg_logical_emit_message(true, 'objcached', <token> || ' ' ||
--     pg_catalog.clock_timestamp()::text) in a transaction of its own, the token a secret of the
--     reader (PUBLIC may emit messages: only those with its token are its own); once that message is
--     decoded back (all that came before it applied and appended), objcached.feed_heartbeat(<that
--     instant>, writer);
--   * objcached.wal_check() for --check-config and the setup command, and by the holder at the start of
--     streaming and every 5 s (while it returns rows the holder's heartbeats claim no caught_up_at): no rows means fine.

CREATE OR REPLACE FUNCTION objcached._publication_settings_differences() RETURNS SETOF text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT d FROM pg_catalog.pg_publication p,
           LATERAL (VALUES
               (CASE WHEN p.puballtables THEN 'it is FOR ALL TABLES (objcached adds its tables itself)' END),
               (CASE WHEN NOT p.pubinsert THEN 'it does not publish insert' END),
               (CASE WHEN NOT p.pubupdate THEN 'it does not publish update' END),
               (CASE WHEN NOT p.pubdelete THEN 'it does not publish delete' END),
               (CASE WHEN NOT p.pubtruncate THEN 'it does not publish truncate' END),
               (CASE WHEN NOT p.pubviaroot THEN 'publish_via_partition_root is false' END),
               (CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_publication_namespace pn WHERE pn.pnpubid = p.oid)
                     THEN 'it publishes whole schemas (FOR TABLES IN SCHEMA)' END)) v(d)
     WHERE p.pubname = 'objcached' AND v.d IS NOT NULL
$$;

-- Why publication objcached's owner cannot be trusted with it (NULL when it can). A publication's
-- owner may take tables out of it, stop it publishing update or delete, or give a table a row filter
-- or column list, without owning the tables: the WAL reader would then lose those changes silently.
-- A role with CREATE on the database could make publication objcached before the first wal-mode
-- attach; trusted is an owner that has the privileges of the hook's owner (the owner of schema
-- objcached: the role that ran this file), such as that role itself, a member of it or a superuser.
CREATE OR REPLACE FUNCTION objcached._publication_owner_problem() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.format('publication objcached is owned by role %I, which does not have the privileges of '
                             'objcached''s owner %I: it could take tables out of it or change what it publishes',
                             o.rolname, h.rolname)
      FROM pg_catalog.pg_publication p
      JOIN pg_catalog.pg_roles o ON o.oid = p.pubowner
      JOIN pg_catalog.pg_namespace n ON n.nspname = 'objcached'
      JOIN pg_catalog.pg_roles h ON h.oid = n.nspowner
     WHERE p.pubname = 'objcached' AND NOT pg_catalog.pg_has_role(p.pubowner, n.nspowner, 'USAGE')
$$;

-- The relations of a table's tree whose changes pgoutput sends: the table itself if it is
-- partitioned (its partitions are sent as it), else the table and its inheritance children that are
-- plain tables (a foreign table's writes are not in this database's WAL).
CREATE OR REPLACE FUNCTION objcached._wal_members(p_tbl oid) RETURNS SETOF oid
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT p_tbl FROM pg_catalog.pg_class c WHERE c.oid = p_tbl AND c.relkind = 'p'
    UNION ALL
    SELECT t.rel FROM objcached._tree(p_tbl) t(rel) JOIN pg_catalog.pg_class c ON c.oid = t.rel
     WHERE c.relkind = 'r' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class r WHERE r.oid = p_tbl AND r.relkind = 'p')
$$;

-- Why the replica identity of plain table `rel` does not carry column `col` (NULL when it does).
-- pgoutput sends the old row of a DELETE, and of an UPDATE that changes the replica identity, with
-- the replica identity's columns only: without the key column the reader could not name the key.
CREATE OR REPLACE FUNCTION objcached._replica_identity_problem(rel oid, col name) RETURNS text
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_ident  "char";
    v_attnum smallint;
    v_idx    oid;
    v_what   text;
BEGIN
    SELECT c.relreplident INTO v_ident FROM pg_catalog.pg_class c WHERE c.oid = rel;
    SELECT a.attnum INTO v_attnum FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = rel AND a.attname = col AND NOT a.attisdropped;
    IF v_attnum IS NULL THEN
        RETURN pg_catalog.format('it has no column %I', col);
    END IF;
    IF v_ident = 'f' THEN
        RETURN NULL;
    ELSIF v_ident = 'n' THEN
        RETURN 'its replica identity is NOTHING';
    ELSIF v_ident = 'd' THEN
        SELECT i.indexrelid INTO v_idx FROM pg_catalog.pg_index i WHERE i.indrelid = rel AND i.indisprimary;
        IF v_idx IS NULL THEN
            RETURN 'its replica identity is DEFAULT (the primary key) and it has no primary key';
        END IF;
        v_what := 'DEFAULT, the primary key';
    ELSE
        SELECT i.indexrelid INTO v_idx FROM pg_catalog.pg_index i WHERE i.indrelid = rel AND i.indisreplident;
        IF v_idx IS NULL THEN
            RETURN 'its replica identity is USING INDEX of an index that no longer exists (the same as NOTHING)';
        END IF;
        v_what := 'USING INDEX ' || pg_catalog.quote_ident((SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = v_idx));
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_index i, pg_catalog.generate_series(0, i.indnkeyatts - 1) k
                WHERE i.indexrelid = v_idx AND i.indkey[k] = v_attnum) THEN
        RETURN NULL;
    END IF;
    RETURN pg_catalog.format('its replica identity is %s (%s), which does not contain column %I', v_what,
        (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY k)
           FROM pg_catalog.pg_index i, pg_catalog.generate_series(0, i.indnkeyatts - 1) k,
                pg_catalog.pg_attribute a
          WHERE i.indexrelid = v_idx AND a.attrelid = rel AND a.attnum = i.indkey[k]), col);
END
$$;

-- The command that gives plain table `rel` a replica identity carrying `col`: its primary key when
-- that has the column; else a unique index that can be one (immediate, total, no expression, its
-- columns NOT NULL) and has the column; else FULL (every UPDATE and DELETE then logs the whole old
-- row: more WAL).
CREATE OR REPLACE FUNCTION objcached._replica_identity_fix(rel oid, col name) RETURNS text
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    WITH key AS (
        SELECT a.attnum FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = rel AND a.attname = col AND NOT a.attisdropped
    ), candidates AS (
        SELECT i.indexrelid, i.indisprimary
          FROM pg_catalog.pg_index i, key
         WHERE i.indrelid = rel AND i.indisunique AND i.indimmediate AND i.indisvalid
           AND i.indpred IS NULL AND i.indexprs IS NULL
           AND EXISTS (SELECT 1 FROM pg_catalog.generate_series(0, i.indnkeyatts - 1) k
                        WHERE i.indkey[k] = key.attnum)
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.generate_series(0, i.indnkeyatts - 1) k
                             JOIN pg_catalog.pg_attribute a ON a.attrelid = rel AND a.attnum = i.indkey[k]
                            WHERE NOT a.attnotnull)
    )
    SELECT pg_catalog.format('ALTER TABLE %s REPLICA IDENTITY %s', objcached._qualified(rel),
           COALESCE((SELECT CASE WHEN c.indisprimary THEN 'DEFAULT'
                                 ELSE 'USING INDEX ' || pg_catalog.quote_ident(x.relname) END
                       FROM candidates c JOIN pg_catalog.pg_class x ON x.oid = c.indexrelid
                      ORDER BY c.indisprimary DESC, x.relname LIMIT 1), 'FULL'))
$$;

-- What keeps the WAL reader from capturing every change of wal-mode model p_model, one row per
-- problem, each with its kind: 'table', 'publication' or 'replica_identity'. No rows: it is fine.
CREATE OR REPLACE FUNCTION objcached._wal_problems(p_model text)
RETURNS TABLE (kind text, problem text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_o    objcached.models%ROWTYPE;
    v_col  name;
    v_pub  oid;
    v_rel  record;
    v_p    text;
BEGIN
    SELECT * INTO v_o FROM objcached.models o WHERE o.model = p_model;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = v_o.tbl) THEN
        kind := 'table';
        problem := pg_catalog.format('model %s: its table (OID %s) no longer exists', p_model, v_o.tbl::oid);
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT a.attname INTO v_col FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = v_o.tbl AND a.attnum = v_o.key_attnum AND NOT a.attisdropped;
    IF v_col IS NULL THEN
        kind := 'table';
        problem := pg_catalog.format('model %s: the key column of %s was dropped', p_model, objcached._qualified(v_o.tbl));
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT p.oid INTO v_pub FROM pg_catalog.pg_publication p WHERE p.pubname = 'objcached';
    FOR v_rel IN
        SELECT t.rel, c.relkind, objcached._qualified(t.rel) AS name
          FROM objcached._tree(v_o.tbl) t(rel) JOIN pg_catalog.pg_class c ON c.oid = t.rel
         ORDER BY 3
    LOOP
        IF v_rel.relkind = 'f' THEN
            kind := 'table';
            problem := pg_catalog.format('model %s: %s is a foreign table: its writes are not in this database''s WAL',
                                         p_model, v_rel.name);
            RETURN NEXT;
        END IF;
        IF objcached._wal_truncate_wanted(v_rel.rel)
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                            WHERE t.tgrelid = v_rel.rel AND t.tgname = 'objcached_wal_truncate'
                              AND t.tgenabled = 'A' AND objcached._ours(t.tgfoid)) THEN
            kind := 'trigger';
            problem := pg_catalog.format('model %s: partition %s has no trigger objcached_wal_truncate, enabled always: '
                                         'a TRUNCATE of it alone would not be seen (the WAL does not carry it; '
                                         'attach the model again to add it)', p_model, v_rel.name);
            RETURN NEXT;
        END IF;
        IF v_rel.relkind = 'r' THEN
            v_p := objcached._replica_identity_problem(v_rel.rel, v_col);
            IF v_p IS NOT NULL THEN
                kind := 'replica_identity';
                problem := pg_catalog.format('model %s: table %s: %s (fix: %s)', p_model, v_rel.name, v_p,
                                             objcached._replica_identity_fix(v_rel.rel, v_col));
                RETURN NEXT;
            END IF;
        END IF;
    END LOOP;
    -- A partitioned table's changes come as its own, and so do a partition's when an ancestor is
    -- published (a model's table attached under another's): the Relation message is that table's,
    -- and when its replica identity lacks the key column the reader cannot tell whether an UPDATE
    -- changed the key, and invalidates the model whole at every UPDATE. Only the plain tables were
    -- checked before (found by a review, 2026-12-06).
    FOR v_rel IN
        SELECT a.relid AS rel, objcached._qualified(a.relid) AS name
          FROM pg_catalog.pg_partition_ancestors(v_o.tbl) a
          JOIN pg_catalog.pg_class c ON c.oid = a.relid
         WHERE c.relkind = 'p'
           AND (a.relid = v_o.tbl
                OR EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr
                            WHERE pr.prpubid = v_pub AND pr.prrelid = a.relid))
         ORDER BY 2
    LOOP
        v_p := objcached._replica_identity_problem(v_rel.rel, v_col);
        IF v_p IS NOT NULL THEN
            kind := 'replica_identity';
            problem := pg_catalog.format('model %s: partitioned table %s, whose changes carry %s''s: %s '
                                         '(every UPDATE would invalidate the model whole; fix: %s)',
                                         p_model, v_rel.name, objcached._qualified(v_o.tbl), v_p,
                                         objcached._replica_identity_fix(v_rel.rel, v_col));
            RETURN NEXT;
        END IF;
    END LOOP;
    IF v_pub IS NULL THEN
        kind := 'publication';
        problem := pg_catalog.format('model %s: publication objcached does not exist', p_model);
        RETURN NEXT;
        RETURN;
    END IF;
    FOR v_rel IN
        SELECT m.rel, objcached._qualified(m.rel) AS name, pr.oid AS prid, pr.prqual, pr.prattrs
          FROM objcached._wal_members(v_o.tbl) m(rel)
          LEFT JOIN pg_catalog.pg_publication_rel pr ON pr.prpubid = v_pub AND pr.prrelid = m.rel
         ORDER BY 2
    LOOP
        IF v_rel.prid IS NULL THEN
            kind := 'publication';
            problem := pg_catalog.format('model %s: table %s is not in publication objcached (attach the model again)',
                                         p_model, v_rel.name);
            RETURN NEXT;
        ELSIF v_rel.prqual IS NOT NULL OR v_rel.prattrs IS NOT NULL THEN
            kind := 'publication';
            problem := pg_catalog.format('model %s: table %s is in publication objcached with a %s: some changes would not be sent',
                                         p_model, v_rel.name,
                                         CASE WHEN v_rel.prqual IS NOT NULL THEN 'row filter' ELSE 'column list' END);
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;

-- Creates publication objcached if it does not exist; an existing one must have an owner with the
-- hook owner's privileges and objcached's settings.
CREATE OR REPLACE FUNCTION objcached._ensure_publication() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_diff text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication p WHERE p.pubname = 'objcached') THEN
        CREATE PUBLICATION objcached
            WITH (publish = 'insert, update, delete, truncate', publish_via_partition_root = true);
        RETURN;
    END IF;
    v_diff := objcached._publication_owner_problem();
    IF v_diff IS NOT NULL THEN
        RAISE EXCEPTION 'objcached.attach: %', v_diff
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = pg_catalog.format('ALTER PUBLICATION objcached OWNER TO %I (or DROP PUBLICATION objcached), then attach again.',
                                           (SELECT r.rolname FROM pg_catalog.pg_namespace n
                                              JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
                                             WHERE n.nspname = 'objcached'));
    END IF;
    SELECT pg_catalog.string_agg(d, '; ') INTO v_diff FROM objcached._publication_settings_differences() d;
    IF v_diff IS NOT NULL THEN
        RAISE EXCEPTION 'objcached.attach: publication objcached exists with other settings: %', v_diff
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'objcached needs publish = ''insert, update, delete, truncate'', publish_via_partition_root = true, '
                         'and a table list of its own: ALTER PUBLICATION objcached SET (publish = ''insert, update, delete, truncate'', '
                         'publish_via_partition_root = true), or drop it and attach again.';
    END IF;
END
$$;

-- Tells the WAL reader, in the WAL and in this transaction, that the models changed (attach,
-- detach): once it has applied this transaction it reads its relation map and the generations
-- again and restarts past it. Without it, a second model put on a table the reader already
-- watches for another model would never be invalidated (no change of an unknown relation would
-- ever make the reader look), nor would a generation attach bumped. Nothing without wal_level =
-- logical: there is no reader then.
CREATE OR REPLACE FUNCTION objcached._map_changed() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_catalog.current_setting('wal_level') = 'logical' THEN
        PERFORM pg_catalog.pg_logical_emit_message(true, 'objcached-map', '');
    END IF;
END
$$;

-- Adds what pgoutput must send for table p_tbl to the publication (idempotent).
CREATE OR REPLACE FUNCTION objcached._publish(p_tbl oid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rel record;
BEGIN
    PERFORM objcached._ensure_publication();
    FOR v_rel IN
        SELECT m.rel, pr.prqual, pr.prattrs, pr.oid AS prid
          FROM objcached._wal_members(p_tbl) m(rel)
          LEFT JOIN pg_catalog.pg_publication_rel pr
                 ON pr.prrelid = m.rel
                AND pr.prpubid = (SELECT p.oid FROM pg_catalog.pg_publication p WHERE p.pubname = 'objcached')
    LOOP
        IF v_rel.prid IS NULL THEN
            EXECUTE pg_catalog.format('ALTER PUBLICATION objcached ADD TABLE ONLY %s', objcached._qualified(v_rel.rel));
        ELSIF v_rel.prqual IS NOT NULL OR v_rel.prattrs IS NOT NULL THEN
            RAISE EXCEPTION 'objcached.attach: table % is in publication objcached with a %', objcached._qualified(v_rel.rel),
                CASE WHEN v_rel.prqual IS NOT NULL THEN 'row filter' ELSE 'column list' END
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = pg_catalog.format('ALTER PUBLICATION objcached SET TABLE ... or DROP TABLE ONLY %s, then attach again.',
                                               objcached._qualified(v_rel.rel));
        END IF;
    END LOOP;
END
$$;

-- Takes table p_tbl's tree out of the publication when no wal-mode model uses the table any more.
CREATE OR REPLACE FUNCTION objcached._unpublish_if_unused(p_tbl oid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rel oid;
BEGIN
    IF EXISTS (SELECT 1 FROM objcached.models o WHERE o.tbl::oid = p_tbl AND o.via = 'wal') THEN
        RETURN;
    END IF;
    FOR v_rel IN
        SELECT pr.prrelid FROM pg_catalog.pg_publication_rel pr
          JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid AND p.pubname = 'objcached'
         WHERE pr.prrelid IN (SELECT objcached._tree(p_tbl))
    LOOP
        EXECUTE pg_catalog.format('ALTER PUBLICATION objcached DROP TABLE ONLY %s', objcached._qualified(v_rel));
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Administration: attach and detach. They run as the caller, who must own the table (creating
-- triggers, enabling them ALWAYS and publishing a table need it), be allowed to write
-- objcached.models and, for via => 'wal', to create publication objcached (CREATE on the database)
-- the first time: in practice the role that ran this file.

-- Version 1's attach had no via argument; two versions side by side would make every call ambiguous.
-- Its grants, if anyone gave some, are given to the new one (see objcached_acl below).
CREATE TEMP TABLE objcached_acl (fn text, acl aclitem[]) ON COMMIT DROP;
DO $$
DECLARE
    v_fn regprocedure;
BEGIN
    v_fn := pg_catalog.to_regprocedure('objcached.attach(regclass, text, name)');
    IF v_fn IS NOT NULL THEN
        INSERT INTO pg_temp.objcached_acl
        SELECT 'objcached.attach(regclass, text, name, text)', p.proacl FROM pg_catalog.pg_proc p WHERE p.oid = v_fn;
        DROP FUNCTION objcached.attach(regclass, text, name);
    END IF;
    -- claim() returns one column more (requeued): CREATE OR REPLACE cannot change a result type.
    v_fn := pg_catalog.to_regprocedure('objcached.claim(integer, integer)');
    IF v_fn IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM pg_catalog.pg_proc p WHERE p.oid = v_fn AND 'requeued' = ANY (p.proargnames)) THEN
        INSERT INTO pg_temp.objcached_acl
        SELECT 'objcached.claim(integer, integer)', p.proacl FROM pg_catalog.pg_proc p WHERE p.oid = v_fn;
        DROP FUNCTION objcached.claim(integer, integer);
    END IF;
    -- requeue() takes its keys' write time (since) now; the old signature beside it would make
    -- two-argument calls ambiguous.
    v_fn := pg_catalog.to_regprocedure('objcached.requeue(text[], text[])');
    IF v_fn IS NOT NULL THEN
        INSERT INTO pg_temp.objcached_acl
        SELECT 'objcached.requeue(text[], text[], timestamptz)', p.proacl FROM pg_catalog.pg_proc p WHERE p.oid = v_fn;
        DROP FUNCTION objcached.requeue(text[], text[]);
    END IF;
    -- Version 1 helpers whose result types changed or that are gone.
    DROP FUNCTION IF EXISTS objcached._trigger_specs();
    DROP FUNCTION IF EXISTS objcached._unhook_if_unused(regclass);
END
$$;

CREATE OR REPLACE FUNCTION objcached.attach(tbl regclass, model text, key_column name DEFAULT 'id',
                                            via text DEFAULT 'triggers')
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rel      pg_catalog.pg_class%ROWTYPE;
    v_name     text;
    v_attnum   smallint;
    v_type     oid;
    v_parent   oid;
    v_old      objcached.models%ROWTYPE;
    v_member   record;
    v_problem  text;
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
    IF via IS NULL OR via NOT IN ('triggers', 'wal') THEN
        RAISE EXCEPTION 'objcached.attach: via must be ''triggers'' or ''wal'', not %', objcached._shown(via)
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
    IF v_rel.relpersistence = 'u' AND via = 'wal' THEN
        RAISE EXCEPTION 'objcached.attach: % is an unlogged table: its writes are not in the WAL', v_name
            USING ERRCODE = 'wrong_object_type', HINT = 'Attach it with via => ''triggers''.';
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

    IF via = 'wal' THEN
        -- Refused before anything is published: PostgreSQL refuses UPDATE and DELETE on a published
        -- table that has no replica identity, so publishing it would break the application's writes;
        -- and with one that lacks the key column, the reader could not name the key of a deleted row.
        FOR v_member IN
            SELECT t.rel, objcached._qualified(t.rel) AS name
              FROM objcached._tree(tbl) t(rel) JOIN pg_catalog.pg_class c ON c.oid = t.rel
             WHERE c.relkind = 'r' ORDER BY 2
        LOOP
            v_problem := objcached._replica_identity_problem(v_member.rel, key_column);
            IF v_problem IS NOT NULL THEN
                RAISE EXCEPTION 'objcached.attach: table % cannot be read from the WAL for model %: %',
                    v_member.name, model, v_problem
                    USING ERRCODE = 'object_not_in_prerequisite_state',
                          DETAIL = 'pgoutput sends the old row of a DELETE (and of an UPDATE that changes the key) with its '
                                   'replica identity''s columns only, and PostgreSQL refuses UPDATE and DELETE on a published '
                                   'table without a replica identity.',
                          HINT = objcached._replica_identity_fix(v_member.rel, key_column) || ';';
            END IF;
        END LOOP;
        IF EXISTS (SELECT 1 FROM objcached._tree(tbl) t(rel) JOIN pg_catalog.pg_class c ON c.oid = t.rel
                    WHERE c.relkind = 'f') THEN
            RAISE WARNING 'objcached.attach: % has foreign partitions or children: their writes are not in this database''s WAL', v_name;
        END IF;
        IF pg_catalog.current_setting('wal_level') <> 'logical' THEN
            RAISE WARNING 'objcached.attach: wal_level is %: the WAL reader needs wal_level = logical (and a restart)',
                pg_catalog.current_setting('wal_level');
        END IF;
    END IF;

    SELECT * INTO v_old FROM objcached.models o WHERE o.model = attach.model FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO objcached.models (model, tbl, key_column, key_attnum, generation, via)
        VALUES (attach.model, tbl, key_column, v_attnum, objcached._next_generation(), attach.via);
        -- Whatever was cached for this model before the hook existed may be stale.
        INSERT INTO objcached.outbox (model, keys) VALUES (attach.model, NULL);
        IF objcached._notify_on() THEN
            PERFORM pg_catalog.pg_notify('objcached', attach.model);
        END IF;
    ELSIF v_old.tbl <> tbl OR v_old.key_attnum <> v_attnum OR v_old.via <> attach.via THEN
        -- Moved to another table, key column or source: changes made in between may have been seen
        -- by neither the old nor the new way, so the whole model is invalidated.
        UPDATE objcached.models o SET tbl = attach.tbl, key_column = attach.key_column, key_attnum = v_attnum,
                                      via = attach.via
         WHERE o.model = attach.model;
        PERFORM objcached._invalidate_model(attach.model);
    ELSIF v_old.key_column <> key_column THEN
        UPDATE objcached.models o SET key_column = attach.key_column WHERE o.model = attach.model;
    END IF;

    IF via = 'wal' THEN
        PERFORM objcached._publish(tbl);
    END IF;
    IF v_old.model IS NOT NULL THEN
        IF v_old.tbl <> tbl AND pg_catalog.to_regclass(objcached._qualified(v_old.tbl)) IS NOT NULL THEN
            EXECUTE pg_catalog.format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', objcached._qualified(v_old.tbl));
        END IF;
        PERFORM objcached._unpublish_if_unused(v_old.tbl);
    END IF;
    -- The table and every partition or child table, existing ones and ones added since the last
    -- attach: each needs its own triggers because a direct write to a partition fires only those.
    -- Also drops the triggers of a table whose last trigger-mode model moved away. The tree is
    -- recorded first: the ALTER TABLEs of _sync_hooks fire objcached_ddl_end, which must find it
    -- unchanged (attach already invalidates what a change of table needs).
    PERFORM objcached._members_refresh(attach.model);
    PERFORM objcached._sync_hooks(ARRAY[tbl::oid, COALESCE(v_old.tbl::oid, tbl::oid)]);
    v_problem := CASE WHEN via = 'triggers' THEN objcached._triggers_blind(tbl) END;
    IF v_problem IS NOT NULL THEN
        RAISE WARNING 'objcached.attach: the triggers of % cannot see every write for model %: %', v_name, model,
            v_problem USING HINT = 'Attach it with via => ''wal''.';
    END IF;
    IF via = 'wal' OR v_old.via IS NOT DISTINCT FROM 'wal' THEN
        PERFORM objcached._map_changed();
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION objcached.detach(tbl regclass, model text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_old objcached.models%ROWTYPE;
BEGIN
    -- NULL compared with the model's table is NULL, not a mismatch: the model row went and its
    -- triggers stayed on the table, queueing rows for a model no one reads (a probe's finding).
    IF tbl IS NULL THEN
        RAISE EXCEPTION 'objcached.detach: no table given for model %', COALESCE(model, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
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
    PERFORM objcached._unpublish_if_unused(tbl);
    PERFORM objcached._sync_hooks(ARRAY[tbl::oid]);
    IF v_old.via = 'wal' THEN
        PERFORM objcached._map_changed();
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- DDL that moves rows in or out of a model: ALTER TABLE ... ATTACH PARTITION of a table with rows,
-- DETACH PARTITION (also CONCURRENTLY), INHERIT, NO INHERIT, DROP TABLE of a partition or child. None
-- fires a row or statement trigger, none writes a row change to the WAL: without this, the removed
-- rows stayed cached, and ids cached as absent stayed absent, until their TTL. Two event triggers
-- (objcached_ddl_end on ddl_command_end, objcached_sql_drop on sql_drop) compare each model's tree
-- with objcached.members and, for a model whose tree changed, do what a TRUNCATE does: a new
-- generation and a whole-model outbox row (which the consumers, or the WAL reader, apply and append
-- to the feed for the near-caches), and for a WAL model the map message so the reader reads the new
-- generation. Then the tree's triggers are made what attach makes them (an attached partition gets
-- its triggers, a detached one loses them) and a WAL model's plain children are published.
--
-- Event triggers need a superuser to create them: installed by another role, the hook has none,
-- and such DDL stays unseen (install.sql warns, --install-hook and --check-config say so). They do
-- not fire in single-user mode. pg_event_trigger_ddl_commands() names the altered relation only (the
-- parent for ATTACH/DETACH PARTITION, the child for INHERIT/NO INHERIT); what changed is read from
-- pg_inherits against objcached.members, so the subcommand does not matter. CREATE TABLE ... PARTITION
-- OF / INHERITS adds an empty table: nothing to invalidate, but it gets its triggers at once (a
-- direct write to it would otherwise go unseen until attach ran again). A foreign table made so is not
-- empty (its server's rows join the model): invalidated as an ATTACH is.

-- Records model p_model's tree as it is now. changed: it differs from what was recorded; gone: the
-- relations that left it.
CREATE OR REPLACE FUNCTION objcached._members_refresh(p_model text, OUT changed boolean, OUT gone oid[])
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_now oid[];
    v_was oid[];
BEGIN
    -- Compared first without a lock: most DDL on a model's tables (ADD COLUMN, SET (...), the ALTER
    -- TABLEs of _sync_hooks) changes no tree, and must not wait for, or deadlock with, a transaction
    -- that holds the model's row (a TRUNCATE of one partition, until it commits). Unchanged here is
    -- final: the committed members match the committed tree (every change of it records them in its
    -- own transaction), and this DDL's own change would show in v_now.
    FOR i IN 1 .. 2 LOOP
        SELECT pg_catalog.array_agg(t.rel ORDER BY t.rel) INTO v_now
          FROM objcached.models o CROSS JOIN LATERAL objcached._tree(o.tbl) t(rel)
         WHERE o.model = p_model;
        SELECT pg_catalog.array_agg(m.rel::oid ORDER BY m.rel::oid) INTO v_was
          FROM objcached.members m WHERE m.model = p_model;
        EXIT WHEN i = 2 OR v_now IS NOT DISTINCT FROM v_was;
        -- Two DDL on one tree at once (ATTACH takes SHARE UPDATE EXCLUSIVE on the parent) serialise
        -- here; then compared again (READ COMMITTED: the other's commit is seen).
        PERFORM 1 FROM objcached.models o WHERE o.model = p_model FOR UPDATE;
    END LOOP;
    changed := v_now IS DISTINCT FROM v_was;
    gone := ARRAY(SELECT x FROM pg_catalog.unnest(v_was) x WHERE NOT x = ANY (COALESCE(v_now, '{}')));
    IF changed THEN
        DELETE FROM objcached.members m WHERE m.model = p_model;
        INSERT INTO objcached.members (model, rel) SELECT p_model, x FROM pg_catalog.unnest(v_now) x;
    END IF;
END
$$;

-- The event triggers' function. SECURITY DEFINER: whoever runs the DDL (a table owner with no right
-- on schema objcached) gets the invalidation. An error in the invalidation aborts the DDL, as an
-- error of a row trigger aborts the write: committing it would leave the cache stale with no trace.
-- Re-hooking the tree is another matter: what fails there (a table that has a trigger named like
-- ours, say) is a WARNING and the DDL goes on; objcached.status shows hooked = false until attach
-- is run again.
CREATE OR REPLACE FUNCTION objcached._ddl_watch() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rels   oid[];
    v_hit    text[];
    v_model  record;
    v_ref    record;
    v_tables oid[] := '{}';
    v_gone   oid[] := '{}';
    v_wal    oid[] := '{}';
    v_names  text[] := '{}';
BEGIN
    -- The hook being dropped (DROP SCHEMA objcached CASCADE, a table of it dropped by hand).
    IF pg_catalog.to_regclass('objcached.members') IS NULL OR pg_catalog.to_regclass('objcached.models') IS NULL THEN
        RETURN;
    END IF;
    IF TG_EVENT = 'sql_drop' THEN
        SELECT pg_catalog.array_agg(d.objid) INTO v_rels FROM pg_catalog.pg_event_trigger_dropped_objects() d
         WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0;
    ELSE
        SELECT pg_catalog.array_agg(c.objid) INTO v_rels FROM pg_catalog.pg_event_trigger_ddl_commands() c
         WHERE c.classid = 'pg_catalog.pg_class'::regclass;
    END IF;
    IF v_rels IS NULL THEN
        RETURN;
    END IF;
    -- The models whose tree holds, or held, one of the DDL's relations. A model's members always
    -- hold its table (attach and every run of this file record them), so a relation that joined a
    -- tree has an ancestor among them: walked up from the DDL's relations (most have no parent), an
    -- index probe each, not down every model's tree. Every CREATE TABLE comes here, an application's
    -- temporary table of every request too: for those this is all, and objcached.models is not even
    -- read (an install holds it locked until it commits).
    SELECT pg_catalog.array_agg(DISTINCT m.model) INTO v_hit FROM objcached.members m
     WHERE m.rel::oid IN (SELECT a.anc FROM pg_catalog.unnest(v_rels) r(rel)
                            CROSS JOIN LATERAL objcached._ancestors(r.rel) a);
    IF v_hit IS NULL THEN
        RETURN;
    END IF;
    FOR v_model IN
        SELECT o.model, o.tbl::oid AS tbl, o.via FROM objcached.models o
         WHERE o.model = ANY (v_hit)
         ORDER BY o.model
    LOOP
        SELECT * INTO v_ref FROM objcached._members_refresh(v_model.model);
        IF NOT v_ref.changed THEN
            CONTINUE;
        END IF;
        v_names := v_names || v_model.model;
        v_tables := v_tables || v_model.tbl;
        v_gone := v_gone || v_ref.gone;
        IF v_model.via = 'wal' THEN
            v_wal := v_wal || v_model.tbl;
        END IF;
        -- A new partition or child (CREATE TABLE ... PARTITION OF / INHERITS) is empty: it brings no
        -- row, so nothing to invalidate; it only needs its triggers, below. Not a foreign one: its
        -- rows are wherever its server keeps them, and they join the model now.
        IF TG_TAG <> 'CREATE TABLE' THEN
            PERFORM objcached._invalidate_model(v_model.model);
        END IF;
    END LOOP;
    IF pg_catalog.cardinality(v_names) = 0 THEN
        RETURN;
    END IF;
    IF pg_catalog.cardinality(v_wal) > 0 THEN
        PERFORM objcached._map_changed();
    END IF;
    BEGIN
        -- The trees as they are now, and the relations that left them (their triggers go).
        PERFORM objcached._sync_hooks(v_tables || v_gone);
        -- A plain child made by CREATE TABLE ... INHERITS is not published here: it usually has no
        -- primary key yet, and a published table without a usable replica identity refuses every
        -- UPDATE and DELETE; attach publishes it (or says why not), as before.
        FOR v_ref IN SELECT DISTINCT x AS tbl FROM pg_catalog.unnest(v_wal) x
                      WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = x)
                        AND TG_TAG NOT IN ('CREATE TABLE', 'CREATE FOREIGN TABLE') LOOP
            PERFORM objcached._publish(v_ref.tbl);
        END LOOP;
        -- A plain child that left a WAL model (NO INHERIT) is published no more.
        FOR v_ref IN
            SELECT pr.prrelid AS rel FROM pg_catalog.pg_publication_rel pr
              JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid AND p.pubname = 'objcached'
             WHERE pr.prrelid = ANY (v_gone)
               AND NOT EXISTS (SELECT 1 FROM objcached.models o CROSS JOIN LATERAL objcached._wal_members(o.tbl) w(rel)
                                WHERE o.via = 'wal' AND w.rel = pr.prrelid)
        LOOP
            EXECUTE pg_catalog.format('ALTER PUBLICATION objcached DROP TABLE ONLY %s', objcached._qualified(v_ref.rel));
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'objcached: % changed the tables of model %, but their triggers could not be made again: %',
            TG_TAG, pg_catalog.array_to_string(v_names, ', '), SQLERRM
            USING HINT = 'objcached.status shows hooked = false until objcached.attach() is run again for the model.';
    END;
END
$$;
REVOKE ALL ON FUNCTION objcached._ddl_watch() FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- For outbox consumers (the objcached role). The contract, in one transaction:
--   BEGIN; SELECT id, model, keys, created_at, requeued FROM objcached.claim(1000);
--   <delete them from memcached>; [SELECT objcached.requeue(...)]; [SELECT objcached.feed_append(...)];
--   COMMIT;
-- and again while it returns rows.

-- If unlogged tables were emptied since the last call (objcached.unlogged_alive has no row), writes
-- a whole-model invalidation for every trigger-mode model with an unlogged table in its tree, and
-- the row again. Of concurrent callers one does it, under a transaction-level advisory lock; the
-- others go on without waiting for its transaction (a consumer's claim must not wait for another's
-- memcached deletes), and if it rolls back, the next call does it.
CREATE OR REPLACE FUNCTION objcached._unlogged_reset() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_model text;
BEGIN
    IF EXISTS (SELECT 1 FROM objcached.unlogged_alive) THEN
        RETURN;
    END IF;
    IF NOT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('objcached.unlogged_alive')) THEN
        RETURN;
    END IF;
    -- A statement of its own: a new snapshot, which sees a row a caller committed since the check.
    INSERT INTO objcached.unlogged_alive DEFAULT VALUES ON CONFLICT (singleton) DO NOTHING;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    FOR v_model IN
        SELECT o.model FROM objcached.models o
         WHERE o.via = 'triggers'
           AND EXISTS (SELECT 1 FROM objcached._tree(o.tbl) t(rel)
                         JOIN pg_catalog.pg_class c ON c.oid = t.rel
                        WHERE c.relpersistence = 'u')
         ORDER BY 1
    LOOP
        RAISE WARNING 'objcached: unlogged tables were emptied (crash recovery or a promoted standby): invalidating model % whole', v_model;
        PERFORM objcached._invalidate_model(v_model);
    END LOOP;
END
$$;

-- Takes the oldest outbox rows no other consumer holds, up to max_rows rows and (except for the
-- first row, so that progress is always made) max_keys keys in all, and deletes them in the caller's
-- transaction: they are gone at COMMIT, and back for the next consumer if it rolls back or dies.
-- The columns keep version 1's positions; requeued (version 2) comes last: a consumer that appends
-- to the feed appends a requeued row's keys only once their retried delete succeeded (a failed one
-- is requeued again, keeping its created_at while its server may still serve the old value).
CREATE OR REPLACE FUNCTION objcached.claim(max_rows integer, max_keys integer DEFAULT 100000)
RETURNS TABLE (id bigint, model text, keys text[], created_at timestamptz, requeued boolean)
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
    -- First, so that its rows are claimed with the others.
    PERFORM objcached._unlogged_reset();
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
        id := r.id; model := r.model; keys := r.keys; created_at := r.created_at; requeued := r.requeued;
        RETURN NEXT;
        EXIT WHEN pg_catalog.cardinality(v_ids) >= max_rows;
    END LOOP;
    CLOSE cur;
    DELETE FROM objcached.outbox o WHERE o.id = ANY (v_ids);
END
$$;

-- For consumers and the WAL reader: put keys whose invalidation could not be applied (a memcached
-- server down or frozen) back into the outbox, one row per model, inside the caller's transaction,
-- so they are applied again later instead of lost. models[i] goes with keys[i]; since is the oldest
-- write among them (the claimed rows' created_at, the WAL batch's first commit; later than now:
-- now). The rows are marked requeued and, with a since, holds_back, with since as created_at: until
-- a consumer's retry deletes them and appends them to the feed (in one transaction), _feed_bound
-- keeps caught_up_at at or before since, so near-caches stop answering once the retry is older than
-- feed_max_lag (their first append may have been followed by a refill from memcached's old value).
-- since NULL: the keys' server is emptied before anyone reads it again (failover's flush_all), so
-- nothing old can be refilled: created_at is now and the rows hold nothing back.
-- NULL models or keys are left out. Malformed input is an error, and nothing is requeued: arrays
-- that do not pair would lose the unpaired keys, and a model name attach would refuse would be
-- claimed by every consumer in turn and refused by its feed_append, rolling its batch back for ever.
CREATE OR REPLACE FUNCTION objcached.requeue(models text[], keys text[], since timestamptz DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_bad text;
BEGIN
    IF (models IS NULL) <> (keys IS NULL) THEN
        RAISE EXCEPTION 'objcached.requeue: models and keys must both be NULL or both be arrays'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.array_ndims(models) > 1 OR pg_catalog.array_ndims(keys) > 1 THEN
        RAISE EXCEPTION 'objcached.requeue: arrays must have one dimension'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.cardinality(models) <> pg_catalog.cardinality(keys) THEN
        RAISE EXCEPTION 'objcached.requeue: models has % elements and keys %: they go in pairs',
            pg_catalog.cardinality(models), pg_catalog.cardinality(keys)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT objcached._shown(m) INTO v_bad FROM pg_catalog.unnest(models) m
     WHERE m !~ '^[A-Za-z_][A-Za-z0-9_]{0,63}$' LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'objcached.requeue: invalid model name %: it must match [A-Za-z_][A-Za-z0-9_]{0,63}', v_bad
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- One row per model and 100,000 keys, as the triggers and feed_append write them: a row of all
    -- of one call's keys (300,000 took a consumer from 11 to 151 MB; a probe's finding) is what
    -- claim's max_keys cannot split.
    INSERT INTO objcached.outbox (model, keys, requeued, holds_back, created_at)
    SELECT s.m, pg_catalog.array_agg(s.k ORDER BY s.n), true, since IS NOT NULL,
           LEAST(since, pg_catalog.now())
      FROM (SELECT u.m, u.k, u.n,
                   (pg_catalog.row_number() OVER (PARTITION BY u.m ORDER BY u.n) - 1) / 100000 AS part
              FROM ROWS FROM (pg_catalog.unnest(models), pg_catalog.unnest(keys))
                   WITH ORDINALITY AS u(m, k, n)
             WHERE u.m IS NOT NULL AND u.k IS NOT NULL) AS s
     GROUP BY s.m, s.part;
END
$$;

-- How far behind the consumers are: rows waiting (including those being applied right now) and
-- the age of the oldest.
CREATE OR REPLACE FUNCTION objcached.pending()
RETURNS TABLE (pending_rows bigint, oldest_age interval)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.count(*), pg_catalog.clock_timestamp() - pg_catalog.min(o.created_at)
      FROM objcached.outbox o
$$;

-- The models a generated hook function queues (its c_models constant, as _hook_source writes it).
-- The pattern is an E'' literal: a plain one would lose its backslashes in a session with
-- standard_conforming_strings off, which parses this body when it calls it.
CREATE OR REPLACE FUNCTION objcached._hook_models(fn oid) RETURNS text[]
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.substring(p.prosrc, E'\\n    c_models   constant text\\[\\] := ''([^'']*)'';')::text[]
      FROM pg_catalog.pg_proc p WHERE p.oid = fn
$$;

-- True when the table and every partition or child table carry all four triggers, enabled ALWAYS,
-- calling a generated hook function that queues the models covering that relation. Enabled any
-- other way they miss writes: ENABLE TRIGGER (what ENABLE TRIGGER ALL after a DISABLE gives) does not
-- fire under session_replication_role = replica, ENABLE REPLICA TRIGGER fires under nothing else. A
-- hooked table made a partition or child of another hooked table (ATTACH PARTITION, INHERIT) keeps
-- its own function, which knows nothing of the parent's models, until attach runs again (or the
-- event trigger objcached_ddl_end, which does what attach does for the parent's tree).
CREATE OR REPLACE FUNCTION objcached._triggers_ok(p_tbl oid) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = p_tbl)
       AND NOT EXISTS (
           SELECT 1
             FROM objcached._tree(p_tbl) r(rel)
            CROSS JOIN LATERAL (SELECT pg_catalog.array_agg(v.model ORDER BY v.model) AS models
                                  FROM objcached._covering(r.rel) v) m
            CROSS JOIN objcached._hook_triggers() s
            WHERE NOT EXISTS (
                SELECT 1 FROM pg_catalog.pg_trigger t
                  JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
                 WHERE t.tgrelid = r.rel AND t.tgname = s.tgname AND t.tgenabled = 'A'
                   AND p.pronamespace = 'objcached'::regnamespace AND p.proname ~ '^hook_[0-9]+$'
                   AND (m.models IS NULL OR objcached._hook_models(p.oid) = m.models)))
$$;

-- Why the triggers of trigger-mode table p_tbl cannot see every write even when they are in place
-- (NULL: they can):
--   * it became a partition or inheritance child after attach (ATTACH PARTITION, INHERIT): a write
--     made through its parent fires only the parent's triggers, which queue the parent's models,
--     not this table's (attach refuses such a table for that reason);
--   * it, or a relation of its tree, is a table of a logical replication subscription: the apply
--     worker fires row triggers only, never statement triggers, so the replicated writes queue
--     nothing (via => 'wal' reads them from this database's WAL).
CREATE OR REPLACE FUNCTION objcached._triggers_blind(p_tbl oid) RETURNS text
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
           WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = p_tbl)
           THEN 'it is a partition or child table of another table: writes through the parent do not fire its triggers'
           WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_subscription_rel sr
                         WHERE sr.srrelid IN (SELECT objcached._tree(p_tbl)))
           THEN 'it is a table of a logical replication subscription: replicated writes fire no statement triggers'
           END
$$;

-- True when every change of the model's table reaches objcached: for a trigger-mode model, the
-- triggers are in place; for a wal-mode model, the table is published with a usable replica identity.
-- And in both, the key column's collation is deterministic, as attach required: with one that is not
-- (ALTER COLUMN ... COLLATE since), distinct spellings are one key ('Ann' = 'ann'), each is cached
-- apart, and a write names one of them.
CREATE OR REPLACE FUNCTION objcached._model_hooked(p_model text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE o.via
           WHEN 'triggers' THEN objcached._triggers_ok(o.tbl) AND objcached._triggers_blind(o.tbl) IS NULL
           ELSE EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = o.tbl)
                AND NOT EXISTS (SELECT 1 FROM objcached._wal_problems(o.model))
                AND NOT EXISTS (SELECT 1 FROM objcached._publication_settings_differences()) END
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                             JOIN pg_catalog.pg_collation c ON c.oid = a.attcollation
                            WHERE a.attrelid = o.tbl AND a.attnum = o.key_attnum AND NOT a.attisdropped
                              AND NOT c.collisdeterministic)
      FROM objcached.models o WHERE o.model = p_model
$$;

-- True when every model attached to the table is hooked as its via says (a table no model uses:
-- when it still carries objcached's triggers, as in version 1).
CREATE OR REPLACE FUNCTION objcached.hooked(tbl regclass) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    -- hooked.tbl: a bare tbl would be the column of objcached.models.
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = hooked.tbl)
       AND CASE WHEN EXISTS (SELECT 1 FROM objcached.models o WHERE o.tbl = hooked.tbl)
                THEN NOT EXISTS (SELECT 1 FROM objcached.models o
                                  WHERE o.tbl = hooked.tbl AND NOT objcached._model_hooked(o.model))
                ELSE objcached._triggers_ok(hooked.tbl) END
$$;

-- One row per model, for objcached --check-config and for people. table_name is always
-- schema-qualified (NULL if the table was dropped); key_column is the column's current name (NULL if
-- it was dropped); hooked is objcached.hooked(tbl): every model of the table is hooked its way.
-- Version 2 adds, last: via; for wal-mode models, published (the table, or its plain-table
-- inheritance children, are in publication objcached without a row filter or column list, and the
-- publication publishes insert, update, delete and truncate, via the partition root) and
-- replica_identity_ok (every plain table of the tree has a replica identity carrying the key
-- column); NULL for trigger mode. Written in plain SQL on the catalogs: a view's functions are called
-- with its reader's rights, and the objcached role may execute only the functions granted to it.
CREATE OR REPLACE VIEW objcached.status AS
SELECT o.model,
       o.tbl,
       CASE WHEN c.oid IS NOT NULL THEN pg_catalog.format('%I.%I', n.nspname, c.relname) END
           AS table_name,
       a.attname AS key_column,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS key_type,
       objcached.hooked(o.tbl) AS hooked,
       o.generation,
       o.via,
       CASE WHEN o.via = 'wal' THEN
           c.oid IS NOT NULL
           AND EXISTS (SELECT 1 FROM pg_catalog.pg_publication p
                        WHERE p.pubname = 'objcached' AND p.pubinsert AND p.pubupdate AND p.pubdelete
                          AND p.pubtruncate AND p.pubviaroot)
           AND NOT EXISTS (
               WITH RECURSIVE tree(rel) AS (
                   SELECT o.tbl::oid
                   UNION
                   SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree t ON i.inhparent = t.rel)
               SELECT 1 FROM tree t JOIN pg_catalog.pg_class tc ON tc.oid = t.rel
                WHERE CASE WHEN c.relkind = 'p' THEN t.rel = o.tbl::oid ELSE tc.relkind = 'r' END
                  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr
                                    JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
                                   WHERE p.pubname = 'objcached' AND pr.prrelid = t.rel
                                     AND pr.prqual IS NULL AND pr.prattrs IS NULL))
       END AS published,
       CASE WHEN o.via = 'wal' THEN
           c.oid IS NOT NULL AND a.attname IS NOT NULL AND NOT EXISTS (
               WITH RECURSIVE tree(rel) AS (
                   SELECT o.tbl::oid
                   UNION
                   SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree t ON i.inhparent = t.rel)
               SELECT 1 FROM tree t JOIN pg_catalog.pg_class tc ON tc.oid = t.rel
                WHERE tc.relkind = 'r' AND tc.relreplident <> 'f'
                  AND NOT EXISTS (
                      SELECT 1
                        FROM pg_catalog.pg_index i
                        JOIN pg_catalog.pg_attribute ka
                          ON ka.attrelid = t.rel AND ka.attname = a.attname AND NOT ka.attisdropped
                       CROSS JOIN pg_catalog.generate_series(0, i.indnkeyatts - 1) k
                       WHERE i.indrelid = t.rel AND i.indkey[k] = ka.attnum
                         AND ((tc.relreplident = 'd' AND i.indisprimary)
                              OR (tc.relreplident = 'i' AND i.indisreplident))))
       END AS replica_identity_ok
  FROM objcached.models o
  LEFT JOIN pg_catalog.pg_class c ON c.oid = o.tbl
  LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_catalog.pg_attribute a
         ON a.attrelid = o.tbl AND a.attnum = o.key_attnum AND NOT a.attisdropped;

-- ---------------------------------------------------------------------------------------------
-- For the WAL reader.

-- Every relation whose changes pgoutput sends for a wal-mode model, with the model and the key
-- column's name in that relation: the reader maps a Relation message's OID to models with it. A
-- partitioned table appears once (its partitions' changes are sent as its own); a plain table
-- appears with each of its inheritance children. Each of these also appears as every partition
-- ancestor it has: a model's table made a partition of another published table (ATTACH PARTITION)
-- has its changes sent as that table's (publish_via_partition_root), so the ancestor carries the
-- model too. A partition has its parent's column names, so the key column is the same name there.
-- The cost: a change of the ancestor's other partitions deletes that model's key too (an extra
-- delete, never a stale row; found by a review, 2026-12-06: the model was never invalidated).
CREATE OR REPLACE FUNCTION objcached.wal_tables()
RETURNS TABLE (relid oid, table_name text, model text, key_column name)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    -- key_column NULL: the model's key column was dropped (its changes can only go whole)
    SELECT x.rel, objcached._qualified(x.rel), o.model, a.attname
      FROM objcached.models o
      LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = o.tbl AND a.attnum = o.key_attnum AND NOT a.attisdropped
      CROSS JOIN LATERAL objcached._wal_members(o.tbl) m(rel)
      CROSS JOIN LATERAL (SELECT m.rel
                          UNION
                          SELECT p.relid FROM pg_catalog.pg_partition_ancestors(m.rel) p) x(rel)
     WHERE o.via = 'wal'
     ORDER BY 2, 3
$$;

-- Everything that keeps the WAL source from working, one problem a row; no rows: fine. objcached
-- runs it for --check-config and its setup command, and the WAL holder every 5 s (it must stay
-- cheap: catalog reads only).
DROP FUNCTION IF EXISTS objcached.wal_check();
CREATE OR REPLACE FUNCTION objcached.wal_check(p_slot name DEFAULT 'objcached') RETURNS TABLE (problem text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_slot record;
    v_m    record;
    v_diff text;
BEGIN
    IF pg_catalog.current_setting('wal_level') <> 'logical' THEN
        problem := pg_catalog.format('wal_level is %s, not logical: ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL',
                                     pg_catalog.current_setting('wal_level'));
        RETURN NEXT;
    END IF;
    IF pg_catalog.current_setting('max_replication_slots')::integer < 1 THEN
        problem := 'max_replication_slots is 0: the WAL reader needs a slot (ALTER SYSTEM SET max_replication_slots = 10, then restart)';
        RETURN NEXT;
    END IF;
    IF pg_catalog.current_setting('max_wal_senders')::integer < 1 THEN
        problem := 'max_wal_senders is 0: the WAL reader streams through a WAL sender (ALTER SYSTEM SET max_wal_senders = 10, then restart)';
        RETURN NEXT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication p WHERE p.pubname = 'objcached') THEN
        problem := 'publication objcached does not exist: attach a model with via => ''wal''';
        RETURN NEXT;
    ELSE
        problem := objcached._publication_owner_problem();
        IF problem IS NOT NULL THEN
            RETURN NEXT;
        END IF;
        SELECT pg_catalog.string_agg(d, '; ') INTO v_diff FROM objcached._publication_settings_differences() d;
        IF v_diff IS NOT NULL THEN
            problem := 'publication objcached has other settings than objcached''s: ' || v_diff;
            RETURN NEXT;
        END IF;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM objcached.models o WHERE o.via = 'wal') THEN
        problem := 'no model is attached with via => ''wal'': the WAL reader has nothing to read';
        RETURN NEXT;
    END IF;
    FOR v_m IN SELECT o.model FROM objcached.models o WHERE o.via = 'wal' ORDER BY o.model LOOP
        RETURN QUERY SELECT p.problem FROM objcached._wal_problems(v_m.model) p
                      WHERE p.kind <> 'publication'
                         OR EXISTS (SELECT 1 FROM pg_catalog.pg_publication x WHERE x.pubname = 'objcached');
    END LOOP;

    SELECT s.slot_type, s.plugin, s.database, s.wal_status, s.temporary INTO v_slot
      FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = p_slot;
    IF NOT FOUND THEN
        problem := pg_catalog.format('replication slot %s does not exist: SELECT pg_catalog.pg_create_logical_replication_slot(%L, ''pgoutput'') '
                                     'as a role with the REPLICATION attribute', p_slot, p_slot);
        RETURN NEXT;
    ELSIF v_slot.slot_type <> 'logical' THEN
        problem := pg_catalog.format('replication slot %s is a physical slot; the WAL reader needs a logical slot with plugin pgoutput', p_slot);
        RETURN NEXT;
    ELSE
        IF v_slot.plugin IS DISTINCT FROM 'pgoutput' THEN
            problem := pg_catalog.format('replication slot %s uses plugin %s, not pgoutput', p_slot, v_slot.plugin);
            RETURN NEXT;
        END IF;
        IF v_slot.database IS DISTINCT FROM pg_catalog.current_database() THEN
            problem := pg_catalog.format('replication slot %s belongs to database %s, not to %s',
                                         p_slot, v_slot.database, pg_catalog.current_database());
            RETURN NEXT;
        END IF;
    END IF;
    IF v_slot.wal_status = 'lost' THEN
        problem := pg_catalog.format('replication slot %s was invalidated (wal_status lost: it fell more than max_slot_wal_keep_size behind): '
                   'changes since are gone; objcached makes it again and invalidates every WAL model whole', p_slot);
        RETURN NEXT;
    ELSIF v_slot.wal_status = 'unreserved' THEN
        problem := pg_catalog.format('replication slot %s is about to be invalidated (wal_status unreserved: it is more than max_slot_wal_keep_size behind)', p_slot);
        RETURN NEXT;
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- The feed's functions (see "The feed" above for the ordering promise).
--
-- Appenders (the WAL reader, outbox consumers): feed_append, feed_heartbeat,
-- feed_heartbeat_if_drained, feed_prune. Each takes the feed lock first, so it must be called in a
-- READ COMMITTED transaction (every statement then sees what committed before it; under REPEATABLE
-- READ the head row would raise serialization errors), as late as possible in it: the lock is held
-- until COMMIT, and every other appender waits for it. An outbox consumer calls feed_append right
-- before COMMIT, after its memcached deletes were acknowledged (so a sidecar that hears of a row and
-- reads memcached again never reads what was deleted), and passes its claimed rows except requeued
-- ones whose retried delete failed again. Readers (every sidecar): feed_poll.

-- The feed lock, and the isolation level every appender needs.
CREATE OR REPLACE FUNCTION objcached._feed_lock(p_caller text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION '%: run it in a READ COMMITTED transaction, not %', p_caller,
            pg_catalog.upper(pg_catalog.current_setting('transaction_isolation'))
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    -- 8026094460995856485 is 'objcache' in ASCII.
    PERFORM pg_catalog.pg_advisory_xact_lock(8026094460995856485);
END
$$;

-- The caught_up_at an appender may claim: what it says (p_claim, NULL: nothing), but never later
-- than now, nor than the created_at of the first outbox row (in id order) that waits and was not
-- requeued, nor than the oldest created_at of the rows that hold back (see requeue()): their keys'
-- write, whose delete failed on a server that may still serve the old value.
-- The WAL reader's instant covers the writes it reads from the WAL; the outbox holds the
-- others (trigger-mode models, and the whole-model invalidations of attach). Why that row V bounds
-- them all: its created_at is its writer's transaction start, before V's id was drawn. A writer
-- that committed before that instant drew its rows' ids earlier (ids are drawn in time order: the
-- sequence has no per-session cache), so they are below V's; V being the first that waits, they
-- have left the outbox, and a consumer that took a row commits its feed_append with it (a claim not
-- yet committed still shows the row as waiting). Reading the clock before the outbox is read (a
-- later snapshot) keeps a write that commits in between out of the claim. (The first row by id, not
-- the smallest created_at: an index scan, not a scan of a backlog.)
CREATE OR REPLACE FUNCTION objcached._feed_bound(p_claim timestamptz) RETURNS timestamptz
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_now    timestamptz := pg_catalog.clock_timestamp();
    v_oldest timestamptz;
    v_retry  timestamptz;
BEGIN
    IF p_claim IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT o.created_at INTO v_oldest FROM objcached.outbox o WHERE NOT o.requeued ORDER BY o.id LIMIT 1;
    SELECT o.created_at INTO v_retry FROM objcached.outbox o WHERE o.holds_back ORDER BY o.created_at LIMIT 1;
    RETURN LEAST(p_claim, v_now, v_oldest, v_retry);
END
$$;

-- Sets the head after an append or a heartbeat and wakes the LISTENing sidecars; returns the head.
CREATE OR REPLACE FUNCTION objcached._feed_advance(p_last bigint, p_caught_up_at timestamptz, p_writer text)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_head bigint;
BEGIN
    UPDATE objcached.feed_head h
       SET seq = GREATEST(h.seq, p_last),
           -- A claim (never past this clock: _feed_bound) moves it forward, and replaces one ahead
           -- of this clock: kept by GREATEST, a value written while the clock ran ahead (a step, a
           -- resumed virtual machine) stayed in the future once the clock came back, and the
           -- followers took it for a fresh proof until time caught up (found by a review; they now
           -- refuse one ahead by more than feed_max_lag, oc_feed_clock_ahead). No claim: unchanged.
           caught_up_at = CASE WHEN p_caught_up_at IS NULL THEN h.caught_up_at
                               WHEN h.caught_up_at > pg_catalog.clock_timestamp() THEN p_caught_up_at
                               ELSE GREATEST(h.caught_up_at, p_caught_up_at) END,
           writer = pg_catalog.left(p_writer, 200),
           updated_at = pg_catalog.clock_timestamp()
     RETURNING h.seq INTO v_head;
    -- One notification per appending transaction, from one appender at a time: the cluster-wide
    -- commit lock that pg_notify costs is taken by appenders only, never by the application's
    -- writers. Identical notifications of one transaction are merged; payload: the head.
    PERFORM pg_catalog.pg_notify('objcached_feed', v_head::text);
    RETURN v_head;
END
$$;

-- Appends applied invalidations: p_models[i] goes with p_keys[i] (one row per model and 100,000
-- distinct keys, NULL keys left out), and a keys-NULL row for each model in p_whole, carrying the
-- model's generation: bumped first (_next_generation()) when p_bump (the WAL
-- reader's TRUNCATE: no trigger bumped it), read as it is when not (trigger mode: the TRUNCATE
-- trigger bumped it in the writer's transaction). A model of p_whole that is not in objcached.models
-- gets no row: a whole-model row must carry a generation and it has none (it was detached; its
-- sidecars drop its entries when they see it gone). Rows are appended keyed ones first, by model,
-- then whole-model ones, by model. p_committed_at (the newest source commit in the batch) goes on
-- every row; p_caught_up_at (NULL: unchanged) may advance the head's caught_up_at, bounded by
-- _feed_bound. Returns the new head seq. Malformed input is an error, and nothing is appended.
CREATE OR REPLACE FUNCTION objcached.feed_append(p_models text[], p_keys text[], p_whole text[], p_bump boolean,
                                                 p_committed_at timestamptz, p_caught_up_at timestamptz,
                                                 p_writer text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c_max_keys constant integer := 100000;
    v_bad      text;
    v_last     bigint;
    v_gen      bigint;
    v_model    text;
    v_keys     text[];
    r          record;
BEGIN
    IF (p_models IS NULL) <> (p_keys IS NULL) THEN
        RAISE EXCEPTION 'objcached.feed_append: p_models and p_keys must both be NULL or both be arrays'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.array_ndims(p_models) > 1 OR pg_catalog.array_ndims(p_keys) > 1
       OR pg_catalog.array_ndims(p_whole) > 1 THEN
        RAISE EXCEPTION 'objcached.feed_append: arrays must have one dimension'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.cardinality(p_models) <> pg_catalog.cardinality(p_keys) THEN
        RAISE EXCEPTION 'objcached.feed_append: p_models has % elements and p_keys %: they go in pairs',
            pg_catalog.cardinality(p_models), pg_catalog.cardinality(p_keys)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The WAL reader's every batch: keys of one model, no whole-model row. Checked and appended
    -- without the general path's queries (each costs an executor start): 2-3x less execution
    -- time per call (docs/benchmarks.md, 2026-12-04); the rows are the same.
    v_model := p_models[pg_catalog.array_lower(p_models, 1)];
    IF v_model ~ '^[A-Za-z_][A-Za-z0-9_]{0,63}$'
       AND pg_catalog.cardinality(pg_catalog.array_remove(p_models, v_model)) = 0
       AND pg_catalog.cardinality(p_keys) <= c_max_keys
       AND COALESCE(pg_catalog.cardinality(pg_catalog.array_remove(p_whole, NULL)), 0) = 0 THEN
        PERFORM objcached._feed_lock('objcached.feed_append');
        SELECT pg_catalog.array_agg(DISTINCT k COLLATE "C" ORDER BY k COLLATE "C") INTO v_keys
          FROM pg_catalog.unnest(p_keys) k
         WHERE k IS NOT NULL;
        IF v_keys IS NOT NULL THEN
            v_last := pg_catalog.nextval('objcached.feed_seq');
            INSERT INTO objcached.feed (seq, committed_at, model, keys, generation)
            VALUES (v_last, p_committed_at, v_model, v_keys, NULL);
        END IF;
        RETURN objcached._feed_advance(v_last, objcached._feed_bound(p_caught_up_at), p_writer);
    END IF;

    SELECT objcached._shown(m) INTO v_bad
      FROM (SELECT pg_catalog.unnest(p_models) UNION ALL SELECT w FROM pg_catalog.unnest(p_whole) w
             WHERE w IS NOT NULL) x(m)
     WHERE m IS NULL OR m !~ '^[A-Za-z_][A-Za-z0-9_]{0,63}$'
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'objcached.feed_append: invalid model name %: it must match [A-Za-z_][A-Za-z0-9_]{0,63}', v_bad
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_bump IS NULL AND pg_catalog.cardinality(pg_catalog.array_remove(p_whole, NULL)) > 0 THEN
        RAISE EXCEPTION 'objcached.feed_append: p_bump must be true or false when p_whole names models'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    PERFORM objcached._feed_lock('objcached.feed_append');

    FOR r IN
        SELECT c.m, pg_catalog.array_agg(c.k ORDER BY c.k COLLATE "C") AS ks
          FROM (SELECT x.m, x.k,
                       (pg_catalog.row_number() OVER (PARTITION BY x.m ORDER BY x.k COLLATE "C") - 1) / c_max_keys
                           AS chunk
                  FROM (SELECT DISTINCT u.m, u.k
                          FROM ROWS FROM (pg_catalog.unnest(p_models), pg_catalog.unnest(p_keys)) u(m, k)
                         WHERE u.k IS NOT NULL) x) c
         GROUP BY c.m, c.chunk
         ORDER BY c.m COLLATE "C", c.chunk
    LOOP
        v_last := pg_catalog.nextval('objcached.feed_seq');
        INSERT INTO objcached.feed (seq, committed_at, model, keys, generation)
        VALUES (v_last, p_committed_at, r.m, r.ks, NULL);
    END LOOP;

    FOR r IN
        SELECT DISTINCT w AS m FROM pg_catalog.unnest(p_whole) w WHERE w IS NOT NULL ORDER BY 1
    LOOP
        IF p_bump THEN
            UPDATE objcached.models o SET generation = objcached._next_generation()
             WHERE o.model = r.m RETURNING o.generation INTO v_gen;
        ELSE
            SELECT o.generation INTO v_gen FROM objcached.models o WHERE o.model = r.m;
        END IF;
        CONTINUE WHEN v_gen IS NULL;   -- not attached: see above
        v_last := pg_catalog.nextval('objcached.feed_seq');
        INSERT INTO objcached.feed (seq, committed_at, model, keys, generation)
        VALUES (v_last, p_committed_at, r.m, NULL, v_gen);
    END LOOP;

    RETURN objcached._feed_advance(v_last, objcached._feed_bound(p_caught_up_at), p_writer);
END
$$;

-- The WAL reader's heartbeat: no rows, only caught_up_at (and writer, updated_at), and the
-- notification. Its p_caught_up_at is the clock_timestamp() it read when it emitted a transactional
-- logical message (pg_logical_emit_message(true, 'objcached', ...)) that it has since decoded back
-- from its slot, having applied and appended everything decoded before it: every transaction that
-- had returned from COMMIT before that instant has its commit record before the message's (the
-- message is in the WAL only once its own transaction commits, after the instant), so it was
-- decoded first. Bounded by _feed_bound like feed_append's. Returns the head seq.
CREATE OR REPLACE FUNCTION objcached.feed_heartbeat(p_caught_up_at timestamptz, p_writer text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_caught_up_at IS NULL THEN
        RAISE EXCEPTION 'objcached.feed_heartbeat: p_caught_up_at must not be NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM objcached._feed_lock('objcached.feed_heartbeat');
    RETURN objcached._feed_advance(NULL, objcached._feed_bound(p_caught_up_at), p_writer);
END
$$;

-- Trigger mode's heartbeat: under the feed lock, if no outbox row waits (requeued rows that hold
-- nothing back aside), moves caught_up_at to the start of the calling statement, notifies, and
-- returns true; else moves it as far as _feed_bound allows (the created_at of the first waiting row,
-- in id order, or of the oldest row that holds back), notifies, and returns false. Why statement_timestamp() is a correct caught_up_at under READ COMMITTED: the
-- check below runs in a snapshot taken after the statement began (and after the lock was granted),
-- so a transaction that returned from COMMIT before the statement began is visible to it. Its outbox
-- rows are then either still there (visible: not drained), or deleted by a consumer that committed,
-- which appended them to the feed in that same transaction (so they are in rows with seq <= head),
-- or claimed by a consumer that has not committed yet: its deletes are not committed, so to this
-- snapshot the rows are still there (not drained). False, and nothing moves, while any model is
-- attached via 'wal': the outbox says nothing of the writes the WAL reader has yet to read, and its heartbeats
-- (feed_heartbeat) advance caught_up_at instead.
CREATE OR REPLACE FUNCTION objcached.feed_heartbeat_if_drained(p_writer text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM objcached._feed_lock('objcached.feed_heartbeat_if_drained');
    IF EXISTS (SELECT 1 FROM objcached.models o WHERE o.via = 'wal') THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT 1 FROM objcached.outbox o WHERE NOT o.requeued OR o.holds_back) THEN
        -- Not drained: proven up to the first waiting row's created_at (_feed_bound), which under
        -- steady writes is about the consumers' lag, so near-caches stay fresh without a drain.
        PERFORM objcached._feed_advance(NULL, objcached._feed_bound(pg_catalog.statement_timestamp()),
                                        p_writer);
        RETURN false;
    END IF;
    PERFORM objcached._feed_advance(NULL, pg_catalog.statement_timestamp(), p_writer);
    RETURN true;
END
$$;

-- Deletes the feed rows older than p_keep (created_at < clock_timestamp() - p_keep, taken as a prefix
-- in seq order, so that every row at or below pruned_upto is gone even if the clock stepped back),
-- advances pruned_upto to the highest seq deleted, and returns how many rows it deleted. A reader
-- whose cursor is below pruned_upto has missed rows and must empty its near-cache.
CREATE OR REPLACE FUNCTION objcached.feed_prune(p_keep interval) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_cut   timestamptz;
    v_keep  bigint;
    v_n     bigint;
    v_max   bigint;
BEGIN
    IF p_keep IS NULL OR p_keep < interval '0' THEN
        RAISE EXCEPTION 'objcached.feed_prune: p_keep must be an interval of zero or more, not %', COALESCE(p_keep::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM objcached._feed_lock('objcached.feed_prune');
    v_cut := pg_catalog.clock_timestamp() - p_keep;
    -- The first row to keep, found by walking the rows to delete in seq order.
    SELECT f.seq INTO v_keep FROM objcached.feed f WHERE f.created_at >= v_cut ORDER BY f.seq LIMIT 1;
    WITH d AS (DELETE FROM objcached.feed f WHERE v_keep IS NULL OR f.seq < v_keep RETURNING f.seq)
    SELECT pg_catalog.count(*), pg_catalog.max(d.seq) INTO v_n, v_max FROM d;
    IF v_max IS NOT NULL THEN
        UPDATE objcached.feed_head h SET pruned_upto = GREATEST(h.pruned_upto, v_max),
                                        updated_at = pg_catalog.clock_timestamp();
    END IF;
    RETURN v_n;
END
$$;

-- For every sidecar, on the primary or a hot standby: the head, and the feed rows after p_after in
-- seq order, at most p_limit of them, in ONE statement (one snapshot: the head and the rows agree).
-- Every row carries the head columns; with no rows to return, exactly one row has the head columns
-- and NULL feed columns. db_now is clock_timestamp() of the server answering, so a sidecar judges
-- caught_up_at against the database's clock only. Read-only (no writes, no temporary tables), so it
-- runs on a hot standby. A reader whose p_after is below pruned_upto has missed rows; one whose
-- p_after is above head is reading another database (a restore, a failover to an older replica).
CREATE OR REPLACE FUNCTION objcached.feed_poll(p_after bigint, p_limit integer)
RETURNS TABLE (head bigint, caught_up_at timestamptz, pruned_upto bigint, db_now timestamptz,
               seq bigint, model text, keys text[], generation bigint, committed_at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- The plan is the same for every p_after and p_limit (an index range scan on feed_pkey, stopped by
-- the LIMIT), but its generic plan's estimate (a third of the feed after an unknown p_after) is worse
-- than a custom plan's, so the plan cache would plan every call again: about 100 us of CPU a call.
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
BEGIN
    IF p_after IS NULL OR p_limit IS NULL OR p_limit < 0 THEN
        RAISE EXCEPTION 'objcached.feed_poll: p_after must not be NULL and p_limit must be 0 or more (got %, %)',
            COALESCE(p_after::text, 'NULL'), COALESCE(p_limit::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT h.seq, h.caught_up_at, h.pruned_upto, pg_catalog.clock_timestamp(),
           f.seq, f.model, f.keys, f.generation, f.committed_at
      FROM objcached.feed_head h
      LEFT JOIN LATERAL (SELECT x.seq, x.model, x.keys, x.generation, x.committed_at
                           FROM objcached.feed x
                          WHERE x.seq > p_after
                          ORDER BY x.seq
                          LIMIT p_limit) f ON true
     ORDER BY f.seq;
END
$$;

-- Every model's tree as it is now (an install or an upgrade invalidates nothing for it), before
-- _sync_all_hooks's ALTER TABLEs fire the event trigger.
DO $$
DECLARE
    v_model text;
BEGIN
    FOR v_model IN SELECT o.model FROM objcached.models o ORDER BY 1 LOOP
        PERFORM objcached._members_refresh(v_model);
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Version 1 to 2: the triggers call the generated functions now; version 1's are no longer used.
DO $$ BEGIN PERFORM objcached._sync_all_hooks(); END $$;
DROP FUNCTION IF EXISTS objcached.on_write();
DROP FUNCTION IF EXISTS objcached.on_truncate();

-- Grants that version 1's attach and claim had, given to their version-2 replacements (the grantor
-- becomes the installing role).
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT a.fn, x.grantee, x.is_grantable
          FROM pg_temp.objcached_acl a, pg_catalog.aclexplode(a.acl) x
         WHERE x.privilege_type = 'EXECUTE' AND x.grantee <> 0
           AND x.grantee <> (SELECT p.proowner FROM pg_catalog.pg_proc p WHERE p.oid = a.fn::regprocedure)
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I%s', r.fn,
                                  (SELECT rol.rolname FROM pg_catalog.pg_roles rol WHERE rol.oid = r.grantee),
                                  CASE WHEN r.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END
$$;

-- The event triggers (see _ddl_watch), enabled ALWAYS (they also fire under
-- session_replication_role = replica). Only a superuser may create them: another role's install
-- goes on without them, and says what that leaves unseen.
DO $$
DECLARE
    v_spec record;
    v_have record;
BEGIN
    FOR v_spec IN
        VALUES ('objcached_ddl_end'::name, 'ddl_command_end',
                $t$'ALTER TABLE', 'ALTER FOREIGN TABLE', 'CREATE TABLE', 'CREATE FOREIGN TABLE'$t$),
               ('objcached_sql_drop', 'sql_drop',
                $t$'DROP TABLE', 'DROP FOREIGN TABLE', 'DROP SCHEMA', 'DROP OWNED'$t$)
    LOOP
        SELECT e.evtfoid, e.evtenabled INTO v_have FROM pg_catalog.pg_event_trigger e
         WHERE e.evtname = v_spec.column1;
        IF FOUND AND v_have.evtfoid = 'objcached._ddl_watch()'::regprocedure AND v_have.evtenabled = 'A' THEN
            CONTINUE;
        END IF;
        IF FOUND AND NOT objcached._ours(v_have.evtfoid) THEN
            RAISE WARNING 'objcached install: an event trigger named % exists that objcached did not make: left alone, '
                          'so ATTACH/DETACH PARTITION, INHERIT, NO INHERIT and DROP TABLE of a partition are not seen',
                v_spec.column1;
            CONTINUE;
        END IF;
        -- Tried rather than decided from rolsuper: managed services let their admin role make event
        -- triggers without being a superuser (rds_superuser, azure_pg_admin).
        BEGIN
            IF FOUND THEN
                EXECUTE pg_catalog.format('DROP EVENT TRIGGER %I', v_spec.column1);
            END IF;
            EXECUTE pg_catalog.format('CREATE EVENT TRIGGER %I ON %s WHEN TAG IN (%s) EXECUTE FUNCTION objcached._ddl_watch()',
                                      v_spec.column1, v_spec.column2, v_spec.column3);
            EXECUTE pg_catalog.format('ALTER EVENT TRIGGER %I ENABLE ALWAYS', v_spec.column1);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'objcached install: event trigger % was not made (%): '
                          'ALTER TABLE ... ATTACH/DETACH PARTITION, INHERIT, NO INHERIT and DROP TABLE of a partition '
                          'will not invalidate the models whose rows they move', v_spec.column1, SQLERRM
                USING HINT = 'Run the install again as a superuser, or invalidate the model after such DDL '
                             '(docs/invalidation.md, "What the hook does not cover").';
        END;
    END LOOP;
END
$$;

UPDATE objcached.meta SET value = '2' WHERE key = 'schema_version';

-- ---------------------------------------------------------------------------------------------
-- Privileges. Nothing here is for PUBLIC: writers need no right at all (triggers run their
-- SECURITY DEFINER functions without an EXECUTE check), and the objcached role gets its rights by
-- name, as docs/invalidation.md shows:
--   GRANT USAGE ON SCHEMA objcached TO objcached;
--   GRANT EXECUTE ON FUNCTION objcached.claim(integer, integer), objcached.pending(),
--                             objcached.hooked(regclass), objcached.requeue(text[], text[], timestamptz),
--                             objcached.feed_poll(bigint, integer) TO objcached;
--   GRANT SELECT ON objcached.models, objcached.status TO objcached;
-- and the appenders (the WAL reader's role; every outbox consumer in trigger mode) also:
--   GRANT EXECUTE ON FUNCTION
--       objcached.feed_append(text[], text[], text[], boolean, timestamptz, timestamptz, text),
--       objcached.feed_heartbeat(timestamptz, text), objcached.feed_heartbeat_if_drained(text),
--       objcached.feed_prune(interval), objcached.wal_check(name), objcached.wal_tables() TO objcached;
-- and the WAL reader's role REPLICATION and GRANT pg_read_all_stats (its standbys read the holder's
-- reply_time in pg_stat_replication: docs/wal.md).
-- Only where PUBLIC has something: a REVOKE writes the catalog row even when it changes nothing,
-- and a function whose row changed is compiled again by every session that calls it next.
REVOKE ALL ON SCHEMA objcached FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA objcached FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA objcached FROM PUBLIC;
DO $$
DECLARE
    v_fn text;
BEGIN
    FOR v_fn IN
        SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'objcached'::regnamespace
           AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM pg_catalog.aclexplode(p.proacl) a WHERE a.grantee = 0))
    LOOP
        EXECUTE 'REVOKE ALL ON FUNCTION ' || v_fn || ' FROM PUBLIC';
    END LOOP;
END
$$;

COMMIT;
