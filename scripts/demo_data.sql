-- A small, realistic forum for scripts/demo.sh: 10,000 users, 20,000 threads
-- and 100,000 posts (130,000 rows), generated in SQL, deterministic
-- (setseed) so every run shows the same objects.

SELECT setseed(0.42);

CREATE TABLE users (
    id            bigint PRIMARY KEY,
    username      text NOT NULL UNIQUE,
    display_name  text NOT NULL,
    email         text NOT NULL,
    bio           text,
    karma         integer NOT NULL DEFAULT 0,
    is_moderator  boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL,
    last_seen_at  timestamptz
);

CREATE TABLE threads (
    id            bigint PRIMARY KEY,
    forum         text NOT NULL,
    author_id     bigint NOT NULL REFERENCES users (id),
    title         text NOT NULL,
    tags          text[] NOT NULL DEFAULT '{}',
    is_locked     boolean NOT NULL DEFAULT false,
    reply_count   integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL,
    last_post_at  timestamptz
);

CREATE TABLE posts (
    id            bigint PRIMARY KEY,
    thread_id     bigint NOT NULL REFERENCES threads (id),
    author_id     bigint NOT NULL REFERENCES users (id),
    body          text NOT NULL,
    score         integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL,
    edited_at     timestamptz
);

-- Helpers used while generating, dropped at the end.
CREATE FUNCTION pick(a text[]) RETURNS text LANGUAGE sql VOLATILE
    AS $$ SELECT a[1 + floor(random() * array_length(a, 1))::int] $$;

CREATE FUNCTION words(n int) RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT string_agg(pick(ARRAY[
        'the','a','this','that','my','your','it','is','was','works','fails','again',
        'build','cache','query','index','server','client','memory','latency','config',
        'release','update','kernel','driver','bike','coffee','garden','camera','lens',
        'recipe','bread','sourdough','tomato','compost','keyboard','monitor','battery',
        'firmware','router','backup','disk','thread','lock','timeout','retry','fast',
        'slow','really','probably','never','always','maybe','after','before','with',
        'without','because','but','and','or','so','then','still','just','only','also',
        'I','we','you','they','think','tried','found','fixed','broke','measured',
        'recommend','prefer','love','hate','need','want','café','naïve','über','🙂'
    ]), ' ')
    FROM generate_series(1, greatest(n, 1))
$$;

CREATE FUNCTION sentence(n int) RETURNS text LANGUAGE sql VOLATILE
    AS $$ SELECT initcap(left(w, 1)) || substr(w, 2) || pick(ARRAY['.', '.', '.', '?', '!'])
          FROM words(n) AS w $$;

INSERT INTO users (id, username, display_name, email, bio, karma, is_moderator,
                   created_at, last_seen_at)
SELECT i,
       lower(f) || '_' || lower(l) || i,
       f || ' ' || l,
       lower(f) || '.' || lower(l) || i || '@' || pick(ARRAY['example.com','mail.test',
                                                              'forum.example','post.test']),
       CASE WHEN random() < 0.3 THEN NULL ELSE sentence(5 + (random() * 15)::int) END,
       (random() * random() * 5000)::int,
       random() < 0.01,
       c,
       c + random() * (timestamptz '2025-01-01 00:00:00+00' - c)
FROM (
    SELECT i,
           pick(ARRAY['Ada','Alan','Grace','Linus','Ken','Dennis','Barbara','Margaret',
                      'Edsger','Donald','Frances','John','Sophie','Radia','Zoë','José',
                      'Björn','Aiko','Chen','Priya','Olu','Fatima','Mateo','Ingrid']) AS f,
           pick(ARRAY['Lovelace','Turing','Hopper','Torvalds','Thompson','Ritchie','Liskov',
                      'Hamilton','Dijkstra','Knuth','Allen','McCarthy','Wilson','Perlman',
                      'Müller','García','Nakamura','Wang','Patel','Okafor','Haddad','Rossi',
                      'Andersen','Kowalski']) AS l,
           timestamptz '2015-01-01 00:00:00+00' + random() * interval '3000 days' AS c
    FROM generate_series(1, 10000) AS i
) AS u;

INSERT INTO threads (id, forum, author_id, title, tags, is_locked, created_at)
SELECT i,
       pick(ARRAY['general','help','show-and-tell','hardware','cooking','cycling',
                  'photography','gardening','off-topic']),
       1 + floor(random() * 10000)::bigint,
       sentence(3 + (random() * 8)::int),
       CASE WHEN random() < 0.5 THEN '{}'::text[]
            ELSE ARRAY[pick(ARRAY['question','solved','guide','bug','idea','review']),
                       pick(ARRAY['beginner','advanced','meta','news'])] END,
       random() < 0.02,
       timestamptz '2016-01-01 00:00:00+00' + random() * interval '3200 days'
FROM generate_series(1, 20000) AS i;

-- Posts 1..20000 open threads 1..20000; the 80,000 replies favour popular
-- threads (random()^2 skews towards low thread ids).
WITH r AS MATERIALIZED (
    SELECT i,
           CASE WHEN i <= 20000 THEN i
                ELSE 1 + floor(power(random(), 2) * 20000)::bigint END AS thread_id
    FROM generate_series(1, 100000) AS i
)
INSERT INTO posts (id, thread_id, author_id, body, score, created_at, edited_at)
SELECT p.id, p.thread_id, p.author_id, p.body, p.score, p.created_at,
       CASE WHEN random() < 0.1 THEN p.created_at + random() * interval '2 days' END
FROM (
    SELECT r.i AS id,
           t.id AS thread_id,
           CASE WHEN r.i <= 20000 THEN t.author_id
                ELSE 1 + floor(random() * 10000)::bigint END AS author_id,
           CASE WHEN random() < 0.15
                THEN '> ' || sentence(4 + (random() * 8)::int) || E'\n\n' ELSE '' END
             || sentence(6 + (random() * 20)::int)
             || CASE WHEN random() < 0.5
                     THEN ' ' || sentence(4 + (random() * 15)::int) ELSE '' END AS body,
           (random() * random() * 200)::int - 10 AS score,
           t.created_at + CASE WHEN r.i <= 20000 THEN interval '0'
                               ELSE random() * interval '60 days' END AS created_at
    FROM r JOIN threads AS t ON t.id = r.thread_id
    ORDER BY r.i
) AS p;

UPDATE threads AS t
SET reply_count = s.n - 1, last_post_at = s.last
FROM (SELECT thread_id, count(*) AS n, max(created_at) AS last
      FROM posts GROUP BY thread_id) AS s
WHERE s.thread_id = t.id;

CREATE INDEX posts_thread_id_created_at ON posts (thread_id, created_at);
CREATE INDEX threads_forum_last_post_at ON threads (forum, last_post_at DESC);

DROP FUNCTION sentence(int);
DROP FUNCTION words(int);
DROP FUNCTION pick(text[]);

ANALYZE;
