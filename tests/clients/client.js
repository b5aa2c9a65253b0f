// One job (tests/clients/README.md) with memjs (binary) or memcached (text).
//
//     node client.js memjs|memcached < job.json
'use strict';
const fs = require('fs');

const job = JSON.parse(fs.readFileSync(0, 'utf8'));
const b64 = (v) => (v === null || v === undefined ? null : Buffer.from(v).toString('base64'));

// memjs 1.3.2 has no multi-get: gets issued together are pipelined on its
// one connection (a GET each, told apart by opaque), as apps do it.
function memjs() {
  const { Client } = require('memjs');
  const c = Client.create(job.addr, { retries: 1, timeout: 6, conntimeout: 2 });
  const get = async (k) => (await c.get(k)).value;
  return {
    getMulti: async (keys) => {
      const vals = await Promise.all(keys.map(get));
      return Object.fromEntries(keys.map((k, i) => [k, vals[i]]));
    },
    get,
    set: (k, v) => c.set(k, v, {}),
    del: (k) => c.delete(k),
    close: () => c.close(),
  };
}

// memcached 2.2.2: getMulti is one `get k1 k2 ...`. Values come back as
// utf-8 strings.
function memcached() {
  const Memcached = require('memcached');
  const c = new Memcached(job.addr, { retries: 0, timeout: 6000, poolSize: 1 });
  const p = (f) => new Promise((res, rej) => f((err, v) => (err ? rej(err) : res(v))));
  return {
    getMulti: (keys) => p((cb) => c.getMulti(keys, cb)),
    get: (k) => p((cb) => c.get(k, cb)),
    set: (k, v) => p((cb) => c.set(k, v.toString('utf8'), 0, cb)),
    del: (k) => p((cb) => c.del(k, cb)),
    close: () => c.end(),
  };
}

async function main() {
  const c = process.argv[2] === 'memjs' ? memjs() : memcached();
  if ('get_one' in job) {
    const one = b64(await c.get(job.get_one));
    c.close();
    // after a failed get, memcached 2.2.2 keeps a timer that holds the process
    process.stdout.write(JSON.stringify({ one }) + '\n', () => process.exit(0));
    return;
  }
  const found = await c.getMulti(job.get);
  const out = { get: {} };
  for (const k of job.get) out.get[k] = b64(found[k]);
  if (!('push_key' in job)) {
    c.close();
    process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0));
    return;
  }
  out.push = !!(await c.set(job.push_key, Buffer.from(job.push_value, 'base64')));
  out.after_push = b64(await c.get(job.push_key));
  out.tombstone = !!(await c.del(job.tombstone));
  out.after_tombstone = b64(await c.get(job.tombstone));
  process.stdout.write(JSON.stringify(out) + '\n');
  c.close();
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(3);
});
