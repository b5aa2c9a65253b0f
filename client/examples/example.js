// Fetch users from objcached with memjs (npm: memjs), which speaks memcached's
// binary protocol.
//
//     node example.js [ADDRESS]     ADDRESS: 127.0.0.1:11311 (default); memjs
//                                   connects over TCP only
'use strict';
const memjs = require('memjs');

async function main() {
  const addr = process.argv[2] || '127.0.0.1:11311';
  const client = memjs.Client.create(addr, { retries: 1, timeout: 6 });
  const keys = ['User:1', 'User:2', 'User:999999'];
  // memjs has no multi-get: gets issued together go out together on its one
  // connection, and objcached serves such a run of gets as one request.
  const replies = await Promise.all(keys.map((key) => client.get(key)));
  keys.forEach((key, i) => {
    const { value } = replies[i]; // a Buffer, or null: not found
    if (value === null) {
      console.log(`${key}: not found`);
      return;
    }
    const user = JSON.parse(value.toString('utf8'));
    console.log(`${key} = ${user.name} <${user.email}>`);
  });
  client.close();
}

main().catch((e) => {
  console.error(`get: ${e.message}`);
  process.exit(3);
});
