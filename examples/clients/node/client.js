#!/usr/bin/env node
// An OFP/1.1 client in Node: submit tasks, match each reply to its request by `req`,
// and wait for their RESULTs.  Usage: node client.js KIND PAYLOAD_JSON [COUNT]
//   e.g. node client.js sys.echo '{"hello": "world"}' 3
"use strict";

const os = require("os");
const path = require("path");
const zmq = require("zeromq");
const { encode, decode } = require("@msgpack/msgpack");

const HOME = process.env.ORCHFLOW_HOME || path.join(os.homedir(), ".orchflow");
const ENDPOINT = process.env.ORCHFLOW_FRONTEND || `ipc://${HOME}/run/frontend`;
const SIG = Buffer.from("OFC1");
const C = { SUBMIT: 0x01, STATUS: 0x03, ACCEPTED: 0x11, RESULT: 0x12, STATUS_REPLY: 0x13, ERROR: 0x7f };

class OfpClient {
  constructor(endpoint) {
    this.sock = new zmq.Dealer({ linger: 0 });
    this.sock.connect(endpoint);
    this.nextReq = 1;
    this.waiting = new Map();   // req -> {resolve, reject}: replies, matched by req (section 4.4)
    this.results = new Map();   // task id -> {resolve}: RESULTs, matched by task id
    this.early = new Map();     // RESULTs that came before anyone asked
    this.reading = this.read();
  }

  request(command, body) {
    const req = this.nextReq++;
    return new Promise((resolve, reject) => {
      this.waiting.set(req, { resolve, reject });
      this.sock.send([SIG, Buffer.from([command]), Buffer.from(encode({ ...body, req }))]);
    });
  }

  submit(tasks) { return this.request(C.SUBMIT, { tasks }).then((reply) => reply.ids); }
  status(ids = []) { return this.request(C.STATUS, { ids }); }

  result(id) {
    if (this.early.has(id)) return Promise.resolve(this.early.get(id));
    return new Promise((resolve) => this.results.set(id, { resolve }));
  }

  async read() {
    for await (const [, cmd, body] of this.sock) {
      const data = body.length ? decode(body) : null;
      if (cmd[0] === C.RESULT) {
        for (const outcome of data) {
          const waiter = this.results.get(outcome.id);
          if (waiter) { this.results.delete(outcome.id); waiter.resolve(outcome); }
          else this.early.set(outcome.id, outcome);
        }
        continue;
      }
      const waiter = this.waiting.get(data?.req);
      if (!waiter) continue;  // a reply to a request without req: this client sends none
      this.waiting.delete(data.req);
      if (cmd[0] === C.ERROR) waiter.reject(new Error(`${data.code}: ${data.message}`));
      else waiter.resolve(data);
    }
  }

  close() { this.sock.close(); }
}

async function main() {
  const [kind = "sys.echo", payload = "null", count = "1"] = process.argv.slice(2);
  const client = new OfpClient(ENDPOINT);
  const tasks = Array.from({ length: Number(count) }, () => ({ kind, payload: JSON.parse(payload) }));
  const ids = await client.submit(tasks);
  const outcomes = await Promise.all(ids.map((id) => client.result(id)));
  const status = await client.status(ids);
  for (const o of outcomes) {
    console.log(JSON.stringify({ id: o.id, state: o.state, result: o.result, error: o.error }));
  }
  console.error(`broker speaks OFP/${status.protocol}; ${status.agents.length} agents`);
  client.close();
  process.exit(outcomes.every((o) => o.state === "done") ? 0 : 1);
}

main().catch((err) => { console.error(err.message); process.exit(2); });
