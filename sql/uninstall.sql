-- Removes the objcached invalidation hook: the triggers from every table that has them, then the
-- schema with the outbox. Safe to run again, and on a database that never had it.
--
--   psql -v ON_ERROR_STOP=1 -f sql/uninstall.sql
--
-- Invalidations still in the outbox are dropped with it: let the consumers drain it first
-- (SELECT * FROM objcached.pending() shows 0 rows) if the caches must stay exact.

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
         WHERE pn.nspname = 'objcached' AND NOT t.tgisinternal
         ORDER BY 2, 1
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', v_trigger.tgname, v_trigger.rel);
    END LOOP;
END
$$;

DROP SCHEMA IF EXISTS objcached CASCADE;

COMMIT;
