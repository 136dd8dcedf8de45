// SPDX-License-Identifier: MIT
// A lambda written with the CloudEvents SDK: every push is parsed with HTTP.toEvent (binary
// mode, or a structured batch) and each event printed as one JSON line; a batch is answered
// with every event ok. GET answers 200 (readiness).
//
//   node receiver.js <port>
"use strict";

const http = require("http");
const { HTTP } = require("cloudevents");

const port = Number(process.argv[2]);

function line(path, mode, ev) {
  return JSON.stringify({
    path,
    mode,
    id: ev.id,
    source: ev.source,
    type: ev.type,
    subject: ev.subject,
    dataschema: ev.dataschema,
    partitionkey: ev.partitionkey,
    msmsourceid: ev.msmsourceid,
    data: ev.data,
  });
}

http
  .createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      if (req.method !== "POST") {
        res.writeHead(200);
        res.end("ok");
        return;
      }
      const body = Buffer.concat(chunks).toString("utf-8");
      let parsed;
      try {
        parsed = HTTP.toEvent({ headers: req.headers, body });
      } catch (e) {
        console.log(JSON.stringify({ path: req.url, error: String(e && e.message ? e.message : e) }));
        res.writeHead(400);
        res.end();
        return;
      }
      const batch = Array.isArray(parsed);
      const events = batch ? parsed : [parsed];
      for (const ev of events) console.log(line(req.url, batch ? "batch" : "binary", ev));
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(batch ? JSON.stringify({ results: events.map((e) => ({ id: e.id, status: "ok" })) }) : "");
    });
  })
  .listen(port, "127.0.0.1");
