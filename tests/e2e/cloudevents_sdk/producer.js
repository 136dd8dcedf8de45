// SPDX-License-Identifier: MIT
// A producer written with the CloudEvents SDK: one event in HTTP binary mode to msm's
// publish endpoint. Prints one JSON line: the event's own id and msm's answer.
//
//   node producer.js <publish url>
"use strict";

const { CloudEvent, emitterFor, httpTransport, Mode } = require("cloudevents");

async function main() {
  const url = process.argv[2];
  const ce = new CloudEvent({
    source: "/shop",
    type: "com.shop.order.created",
    subject: "o-1",
    dataschema: "https://shop.example/schemas/order.json",
    partitionkey: "pk-1",
    datacontenttype: "application/json",
    data: { order: 1 },
  });
  const emit = emitterFor(httpTransport(url), { mode: Mode.BINARY });
  const res = await emit(ce);
  let answer = null;
  try {
    answer = JSON.parse(res.body);
  } catch (e) {
    answer = { unparsed: String(res.body) };
  }
  console.log(JSON.stringify({ sourceid: ce.id, answer }));
  process.exit(answer && typeof answer.id === "string" ? 0 : 1);
}

main().catch((e) => {
  console.error("FAIL", e && e.stack ? e.stack : e);
  process.exit(1);
});
