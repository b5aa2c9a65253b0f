-- Test schema for objcached's integration tests: one table per key type,
-- small deterministic data. conftest.py loads it into a fresh cluster.
--
--   users     bigint key   200 rows (1..200) + -42 and 9223372036854775807
--   counters  integer key   50 rows (1..50)  + -7 and 2147483647
--   docs      uuid key      20 rows, ids md5('doc-N')::uuid
--   pages     text key      20 rows, UTF-8 and punctuation in slugs
--
-- The values exercise JSON escaping (quotes, backslashes, newlines, tabs,
-- non-ASCII), NULLs, fractional timestamps, doubles and jsonb.

CREATE TABLE users (
    id         bigint PRIMARY KEY,
    name       text NOT NULL,
    email      text NOT NULL,
    created_at timestamptz NOT NULL,
    score      double precision NOT NULL,
    note       text NULL,
    secret     text NOT NULL DEFAULT 'not in the configured columns'
);

INSERT INTO users (id, name, email, created_at, score, note)
SELECT i,
       'user ' || i,
       'user' || i || '@example.com',
       timestamptz '2024-01-01 00:00:00+00' + i * interval '1 hour 1 minute 1.25 seconds',
       i / 7.0::double precision,
       CASE WHEN i % 3 = 0 THEN NULL ELSE 'note ' || i END
FROM generate_series(1, 200) AS i;

-- Values that need escaping in JSON, and non-ASCII text.
UPDATE users SET name = 'O''Brien "Bob" \ back/slash', note = E'line1\nline2\ttab' WHERE id = 13;
UPDATE users SET name = 'Zoë Ångström 日本 🎉', email = 'zoe@exämple.com' WHERE id = 14;
UPDATE users SET note = '' WHERE id = 16;

INSERT INTO users (id, name, email, created_at, score, note) VALUES
    (-42, 'negative', 'neg@example.com', '1999-12-31 23:59:59.999999+00', -0.5, 'below zero'),
    (9223372036854775807, 'max bigint', 'max@example.com', '2038-01-19 03:14:08+00', 1e300, NULL);

CREATE TABLE counters (
    id integer PRIMARY KEY,
    n  int NOT NULL
);

INSERT INTO counters (id, n) SELECT i, i * i FROM generate_series(1, 50) AS i;
INSERT INTO counters (id, n) VALUES (-7, -49), (2147483647, 0);

CREATE TABLE docs (
    id    uuid PRIMARY KEY,
    title text NOT NULL,
    body  jsonb
);

INSERT INTO docs (id, title, body)
SELECT md5('doc-' || i)::uuid,
       'doc ' || i,
       CASE WHEN i = 20 THEN NULL
            ELSE jsonb_build_object('n', i, 'tags', jsonb_build_array('a', 'b'),
                                    'nested', jsonb_build_object('ok', i % 2 = 0))
       END
FROM generate_series(1, 20) AS i;

CREATE TABLE pages (
    slug  text PRIMARY KEY,
    title text NOT NULL
);

INSERT INTO pages (slug, title) VALUES
    ('home', 'Home'),
    ('about', 'About us'),
    ('café', 'Le café'),
    ('a.b-c_d', 'Punctuation'),
    ('naïve-résumé', 'Accents'),
    ('日本語', 'Japanese'),
    ('emoji-🎉', 'Party'),
    ('UPPER', 'Upper case'),
    ('upper', 'Lower case'),
    ('x:y', 'Colon in the id'),
    ('100%', 'Percent'),
    ('q"uote', 'A double quote'),
    ('back\slash', 'A backslash'),
    ('tilde~and+plus', 'Tilde and plus'),
    ('007', 'Not a number'),
    ('Straße', 'German'),
    ('Ωmega', 'Greek'),
    ('a', 'One letter'),
    ('long-' || repeat('x', 200), 'A long slug'),
    ('end', 'The end');

ANALYZE;
