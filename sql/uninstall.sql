-- Removes the objcached invalidation hook: the triggers from every table that has them, the schema
-- with the outbox and the feed, publication objcached and, if it belongs to this database and no one
-- is reading it, replication slot objcached. Safe to run again, and on a database that never had it.
--
--   psql -v ON_ERROR_STOP=1 -f sql/uninstall.sql
--
-- The hook's cache entries stay in memcached until their ttl, also those of rows written after this:
-- install.sql starts the generations of a new install above them (docs/invalidation.md).
--
-- Invalidations still in the outbox are dropped with it: let the consumers drain it first
-- (SELECT * FROM objcached.pending() shows 0 rows) if the caches must stay exact. Stop the WAL reader
-- first too: a slot that is being read cannot be dropped, and a slot left behind keeps the server
-- from removing WAL for as long as it exists.

BEGIN;

SET LOCAL search_path = pg_catalog, pg_temp;
SET LOCAL client_min_messages = warning;

DO $$ BEGIN PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('objcached.install')); END $$;

-- Every trigger that calls a function of the schema, whether or not objcached.models still lists
-- its table (a partition attached since, a model row deleted by hand).
DO $$
DECLARE
    v_trigger record;
BEGIN
    FOR v_trigger IN
        SELECT t.tgname, pg_catalog.format('%I.%I', n.nspname, c.relname) AS rel
          FROM pg_catalog.pg_trigger t
          JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
          JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
          JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE pn.nspname = 'objcached' AND NOT t.tgisinternal AND c.relnamespace <> p.pronamespace
         ORDER BY 2, 1
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', v_trigger.tgname, v_trigger.rel);
    END LOOP;
END
$$;

-- The tables of wal-mode models are published in it; once it is gone, their writes are plain
-- writes again (PostgreSQL no longer asks them for a replica identity).
DROP PUBLICATION IF EXISTS objcached;

-- Also drops the event triggers objcached_ddl_end and objcached_sql_drop (they depend on
-- objcached._ddl_watch()), whoever owns them: a superuser made them.
DROP SCHEMA IF EXISTS objcached CASCADE;

-- Last, because dropping a slot cannot be rolled back. Only this database's slot: one of that name in
-- another database belongs to objcached's install there.
DO $$
DECLARE
    v_slot record;
BEGIN
    SELECT s.database, s.active, s.active_pid, s.slot_type INTO v_slot
      FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = 'objcached';
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_slot.database IS DISTINCT FROM pg_catalog.current_database() THEN
        RAISE WARNING 'objcached uninstall: replication slot objcached belongs to database %, not to %: left alone',
            COALESCE(v_slot.database::text, '(none: a physical slot)'), pg_catalog.current_database();
        RETURN;
    END IF;
    IF v_slot.active THEN
        RAISE WARNING 'objcached uninstall: replication slot objcached is active (read by process %), so it was NOT dropped. '
                      'As long as it exists, PostgreSQL keeps every WAL segment it has not confirmed: the disk fills up.',
            v_slot.active_pid
            USING HINT = 'Stop the objcached WAL reader, then run SELECT pg_drop_replication_slot(''objcached'') '
                         'as a role with the REPLICATION attribute.';
        RETURN;
    END IF;
    BEGIN
        PERFORM pg_catalog.pg_drop_replication_slot('objcached');
    EXCEPTION WHEN insufficient_privilege OR object_in_use THEN
        RAISE WARNING 'objcached uninstall: replication slot objcached could not be dropped (%). '
                      'As long as it exists, PostgreSQL keeps every WAL segment it has not confirmed: the disk fills up.',
            SQLERRM
            USING HINT = 'Run SELECT pg_drop_replication_slot(''objcached'') as a superuser or a role with the '
                         'REPLICATION attribute.';
    END;
END
$$;

COMMIT;
