// SPDX-License-Identifier: MIT
// The npm Confluent Schema Registry client (@kafkajs/confluent-schema-registry), which we did
// not write, against msm-frontend's registry: register an AVRO schema, read it back by id,
// register it again (same id), the subject's latest id, encode and decode a record, and a
// second compatible version. One line per step; exit 0 only when every step passed.
//
//   node registry_client.js http://127.0.0.1:PORT SUBJECT
'use strict';

const assert = require('node:assert/strict');
const http = require('node:http');
const avro = require('avsc');
const { SchemaRegistry, SchemaType } = require('@kafkajs/confluent-schema-registry');

const [host, subject] = process.argv.slice(2);
if (!host || !subject) {
  console.error('usage: node registry_client.js REGISTRY_URL SUBJECT');
  process.exit(2);
}

const orderV1 = {
  type: 'record',
  name: 'Order',
  namespace: 'msm.test',
  fields: [
    { name: 'id', type: 'long' },
    { name: 'customer', type: 'string' },
    { name: 'amount', type: 'double' },
    { name: 'paid', type: 'boolean' },
    { name: 'tags', type: { type: 'array', items: 'string' } },
  ],
};
// BACKWARD compatible with v1: a new field with a default.
const orderV2 = {
  ...orderV1,
  fields: [...orderV1.fields, { name: 'note', type: 'string', default: '' }],
};
const record = { id: 42, customer: 'c-0001', amount: 12.5, paid: true, tags: ['a', 'b'] };

// The client reports msm's {"error":{...}} bodies as "[object Object]": keep the raw answer
// of the last failed request so a failure says what the server said. (The client's own
// middlewares only see its error, not the answer, so the tap is on node's http.request.)
let lastFailure = '';
const httpRequest = http.request;
http.request = function tapFailures(...args) {
  const req = httpRequest.apply(this, args);
  req.on('response', (res) => {
    if (res.statusCode < 400) return;
    let body = '';
    res.on('data', (chunk) => {
      if (body.length < 600) body += chunk;
    });
    res.on('end', () => {
      lastFailure = `${req.method} ${req.path} -> HTTP ${res.statusCode} ${body}`;
    });
  });
  return req;
};

// A fresh client per role, so reads go to the server rather than the writer's cache.
const client = () =>
  new SchemaRegistry({ host, retry: { retries: 0 } });
const writer = client();

let failed = 0;
async function step(name, fn) {
  lastFailure = '';
  try {
    const detail = await fn();
    console.log(`ok   ${name}${detail === undefined ? '' : ': ' + detail}`);
    return true;
  } catch (err) {
    failed++;
    console.log(`FAIL ${name}: ${err && err.name ? err.name + ': ' : ''}${err && err.message}`);
    if (err && err.status) console.log(`     HTTP ${err.status} from ${err.url}`);
    if (lastFailure) console.log(`     server answered: ${lastFailure}`);
    return false;
  }
}

async function main() {
  console.log(`Confluent Schema Registry client against ${host}, subject ${subject}`);
  let id;
  const registered = await step('register an AVRO schema', async () => {
    ({ id } = await writer.register(
      { type: SchemaType.AVRO, schema: JSON.stringify(orderV1) }, { subject }));
    assert.ok(Number.isInteger(id) && id > 0, `id must be a positive integer, got ${id}`);
    return `id ${id}`;
  });
  if (!registered) return;

  await step('read it back by id (GET /schemas/ids/{id})', async () => {
    const fetched = await client().getSchema(id);
    assert.ok(fetched.equals(avro.Type.forSchema(orderV1)),
      `schema ${id} differs: ${JSON.stringify(fetched.schema())}`);
    return fetched.name;
  });
  await step('register the same schema again -> same id', async () => {
    const again = await client().register(
      { type: SchemaType.AVRO, schema: JSON.stringify(orderV1) }, { subject });
    assert.equal(again.id, id);
    return `id ${again.id}`;
  });
  await step('getLatestSchemaId(subject)', async () => {
    const latest = await client().getLatestSchemaId(subject);
    assert.equal(latest, id);
    return `id ${latest}`;
  });
  await step('encode a record, decode it with a fresh client', async () => {
    const buf = await writer.encode(id, record);
    assert.equal(buf[0], 0, 'magic byte');
    assert.equal(buf.readInt32BE(1), id, 'schema id in the wire format');
    const decoded = await client().decode(buf);
    assert.deepEqual({ ...decoded }, record);
    return `${buf.length} bytes`;
  });
  await step('a compatible second version gets a new id and becomes the latest', async () => {
    const v2 = await client().register(
      { type: SchemaType.AVRO, schema: JSON.stringify(orderV2) }, { subject });
    assert.notEqual(v2.id, id);
    assert.equal(await client().getLatestSchemaId(subject), v2.id);
    return `id ${v2.id}`;
  });
}

main().then(
  () => process.exit(failed === 0 ? 0 : 1),
  (err) => {
    console.log(`FAIL unexpected: ${err && err.stack}`);
    process.exit(1);
  });
