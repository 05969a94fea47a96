#!/usr/bin/env node
// An OFP/1.1 agent in Node, written from docs/PROTOCOL.md: zeromq.js + @msgpack/msgpack.
//
// It serves <prefix>echo (answers the payload), <prefix>fail (fails with the payload as
// the error) and <prefix>sleep (sleeps `payload` seconds; CANCEL stops it). The prefix
// is $ORCHFLOW_KIND_PREFIX, "node." by default; the conformance kit sets "conformance.".
"use strict";

const os = require("os");
const path = require("path");
const zmq = require("zeromq");
const { encode, decode } = require("@msgpack/msgpack");

const HOME = process.env.ORCHFLOW_HOME || path.join(os.homedir(), ".orchflow");
const ENDPOINT = process.env.ORCHFLOW_BACKEND || `ipc://${HOME}/run/backend`;
const PREFIX = process.env.ORCHFLOW_KIND_PREFIX || "node.";
const NAME = process.env.ORCHFLOW_AGENT_NAME || `node-${process.pid}`;
const CAPACITY = 4;
const INTERVAL = 1000; // ms between heartbeats (section 5.2)
const LIVENESS = 3;    // silent intervals before the broker counts as gone
const MAX_BODY = 16 * 1024 * 1024;

const SIG = Buffer.from("OFA1");
const C = { CANCEL: 0x02, READY: 0x21, PROGRESS: 0x22, DONE: 0x23, FAILED: 0x24, TASK: 0x31,
            HEARTBEAT: 0x40, DISCONNECT: 0x41, ERROR: 0x7f };

const sleep = (ms, signal) => new Promise((resolve, reject) => {
  const timer = setTimeout(resolve, ms);
  signal?.addEventListener("abort", () => { clearTimeout(timer); reject(new Error("cancelled")); });
});

const handlers = {
  echo: async (payload) => payload,
  fail: async (payload) => { throw new Error(payload == null ? "failed on purpose" : String(payload)); },
  sleep: async (payload, signal) => { await sleep(Number(payload) * 1000, signal); return payload; },
};

const running = new Map(); // task id -> AbortController
let sock, sendChain = Promise.resolve(), lastSent = 0, lastHeard = Date.now(), draining = false;

// zeromq.js allows one send in flight per socket: chain them.
function send(command, body) {
  const frames = [SIG, Buffer.from([command]), body === undefined ? Buffer.alloc(0) : Buffer.from(encode(body))];
  const target = sock;
  lastSent = Date.now();
  sendChain = sendChain.then(() => target.send(frames)).catch(() => {}); // a closed socket: we reconnect
  return sendChain;
}

function ready() {
  send(C.READY, { name: NAME, kinds: Object.keys(handlers).map((k) => PREFIX + k),
                  capacity: draining ? 0 : CAPACITY, running: [...running.keys()] });
}

async function run(task) {
  const controller = new AbortController();
  running.set(task.id, controller);
  const handler = handlers[task.kind.slice(PREFIX.length)];
  try {
    if (!handler) throw new Error(`no handler for kind ${task.kind}`);
    const result = await handler(task.payload, controller.signal);
    if (encode(result).length > MAX_BODY - 1024) throw new Error("too-large: result over the broker's limit");
    if (running.delete(task.id)) send(C.DONE, [{ id: task.id, result }]);
  } catch (err) {
    // A cancelled task is answered too: that returns its credit (section 5.4).
    if (running.delete(task.id)) send(C.FAILED, [{ id: task.id, error: controller.signal.aborted ? "cancelled" : err.message }]);
  }
}

function onMessage(frames) {
  lastHeard = Date.now(); // any message is a sign of life (section 5.2)
  if (frames.length !== 3 || !frames[0].equals(SIG) || frames[1].length !== 1) {
    return console.error(`ignored a malformed message of ${frames.length} frames`);
  }
  let data = null;
  try {
    data = frames[2].length ? decode(frames[2]) : null;
  } catch (err) {
    return console.error(`ignored a body that is not msgpack: ${err.message}`);
  }
  const command = frames[1][0];
  if (command === C.TASK && Array.isArray(data)) {
    for (const task of data) {
      if (typeof task?.id === "string" && typeof task.kind === "string") run(task);
      else console.error("ignored a TASK entry without id and kind");
    }
  } else if (command === C.CANCEL && Array.isArray(data?.ids)) {
    for (const id of data.ids) running.get(id)?.abort();
  } else if (command === C.DISCONNECT) {
    ready(); // the broker restarted and does not know us
  } else if (command === C.ERROR) {
    console.error(`broker: ${data?.code}: ${data?.message}`);
  }
}

async function connect() {
  sock = new zmq.Dealer({ linger: 0, receiveTimeout: INTERVAL / 4 });
  sock.connect(ENDPOINT);
  lastHeard = Date.now();
  ready();
}

async function main() {
  let backoff = INTERVAL;
  await connect();
  for (;;) {
    try {
      onMessage(await sock.receive());
      backoff = INTERVAL;
    } catch (err) {
      if (err.code !== "EAGAIN") throw err; // EAGAIN: the receive timed out, time to look at the clock
    }
    const now = Date.now();
    if (draining && running.size === 0) {
      await send(C.DISCONNECT);
      sock.close();
      process.exit(0);
    }
    if (now - lastSent >= INTERVAL) send(C.HEARTBEAT, { running: [...running.keys()] });
    if (now - lastHeard > INTERVAL * LIVENESS) { // the broker is gone: reconnect with backoff
      console.error(`broker silent for ${now - lastHeard} ms; reconnecting in ${backoff} ms`);
      sock.close();
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 5000);
      await connect();
    }
  }
}

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => { draining = true; ready(); }); // capacity 0, finish, DISCONNECT
}
main().catch((err) => { console.error(err); process.exit(1); });
