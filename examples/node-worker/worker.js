#!/usr/bin/env node
// A worker for autogen-http-runtime written in Node.js, with no AutoGen code at all: it speaks
// the wire protocol autogen-http/1 (docs/protocol.md) over one WebSocket, using only the `ws`
// package. It serves one agent type:
//
//   - `send` with a "Text" message ({"content": string}) answers "node heard: <content>";
//   - an event on topic type TOPIC is counted and answered by publishing a "Text" event on
//     topic type REPLY_TOPIC, with the same source;
//   - agent_metadata, agent_save_state and agent_load_state work per agent key.
//
// Usage: node worker.js [--token TOKEN] [--header 'Name: value']... [--ca FILE] [HOST_URL]
//   HOST_URL  default http://127.0.0.1:9000 (also env AUTOGEN_HOST); https:// connects with TLS
//   --token   sent as `Authorization: Bearer TOKEN` (env AUTOGEN_HTTP_TOKEN, which, unlike a
//             command-line argument, other users cannot read in the process list)
//   --header  an extra handshake header, repeatable (env AUTOGEN_HTTP_HEADERS: a JSON object)
//   --ca      a PEM file of the CA that signed the host's certificate, trusted instead of
//             Node's own CA store (env AUTOGEN_HTTP_CA)
// Env:   AGENT_TYPE (node-echo), TOPIC (node-news), REPLY_TOPIC (node-replies)
//
// It writes one JSON object per line to stdout: {"ready": ...} once registered, then
// {"event": ...} for each event received. SIGINT or SIGTERM makes it say `bye` and exit 0.
// A host that refuses the handshake (HTTP 401 or 403: no token, a wrong one, or no rule for
// this identity) makes it say so on stderr and exit 1.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const { parseArgs } = require('node:util');
const WebSocket = require('ws');

const PROTOCOL = 'autogen-http/1';

function usage(message) {
  process.stderr.write(`${message}\nusage: node worker.js [--token TOKEN] [--header 'Name: value']... [--ca FILE] [HOST_URL]\n`);
  process.exit(2);
}

let options;
try {
  options = parseArgs({
    allowPositionals: true,
    options: {
      token: { type: 'string' },
      header: { type: 'string', multiple: true },
      ca: { type: 'string' },
    },
  });
} catch (error) {
  usage(error.message);
}
const hostUrl = options.positionals[0] || process.env.AUTOGEN_HOST || 'http://127.0.0.1:9000';

// The handshake's headers: those of AUTOGEN_HTTP_HEADERS, then each --header, then the token.
const headers = {};
if (process.env.AUTOGEN_HTTP_HEADERS) {
  let fromEnv;
  try {
    fromEnv = JSON.parse(process.env.AUTOGEN_HTTP_HEADERS);
  } catch (error) {
    usage(`AUTOGEN_HTTP_HEADERS is not JSON: ${error.message}`);
  }
  if (fromEnv === null || typeof fromEnv !== 'object' || Array.isArray(fromEnv)) {
    usage('AUTOGEN_HTTP_HEADERS must be a JSON object of header names and values');
  }
  Object.assign(headers, fromEnv);
}
for (const header of options.values.header || []) {
  const colon = header.indexOf(':');
  if (colon < 1) usage(`--header wants 'Name: value', not '${header}'`);
  headers[header.slice(0, colon).trim()] = header.slice(colon + 1).trim();
}
const token = options.values.token || process.env.AUTOGEN_HTTP_TOKEN;
if (token) headers.Authorization = `Bearer ${token}`;
const caFile = options.values.ca || process.env.AUTOGEN_HTTP_CA;
const AGENT_TYPE = process.env.AGENT_TYPE || 'node-echo';
const TOPIC = process.env.TOPIC || 'node-news';
const REPLY_TOPIC = process.env.REPLY_TOPIC || 'node-replies';
const JSON_TYPE = 'application/json';

// Error codes from docs/protocol.md.
const METHOD_NOT_FOUND = -32601;
const INVALID_PARAMS = -32602;
const AGENT_NOT_FOUND = -32001;
const REMOTE_ERROR = -32003;

// The agents this worker serves, by key: created on first use, as AutoGen does.
const agents = new Map();
function agent(key) {
  if (!agents.has(key)) agents.set(key, { calls: 0, events: 0 });
  return agents.get(key);
}

function say(record) {
  process.stdout.write(JSON.stringify(record) + '\n');
}

// Turn http(s)://host:port[/prefix] into ws(s)://host:port[/prefix]/v1/worker.
const url = hostUrl.replace(/^http/, 'ws').replace(/\/+$/, '') + '/v1/worker';
const socketOptions = { perMessageDeflate: false, headers };
if (caFile) {
  if (!url.startsWith('wss:')) usage('--ca needs an https:// host address');
  socketOptions.ca = fs.readFileSync(caFile);
}
const socket = new WebSocket(url, socketOptions);

let nextId = 1;
const waiting = new Map(); // our request id -> {resolve, reject}

function send(frame) {
  socket.send(JSON.stringify(frame));
}

// A request to the host; resolves with `result`, rejects with the `error` object.
function call(method, params) {
  const id = nextId++;
  send({ jsonrpc: '2.0', id, method, params });
  return new Promise((resolve, reject) => waiting.set(id, { resolve, reject }));
}

function textPayload(content) {
  return { data_type: 'Text', data_content_type: JSON_TYPE, data: { content } };
}

// Answer a routed request from the host (it carries the host's own id).
function answer(request) {
  const { id, method, params = {} } = request;
  const recipient = params.recipient;
  const reply = (result) => send({ jsonrpc: '2.0', id, result });
  const fail = (code, message, data) =>
    send({ jsonrpc: '2.0', id, error: data === undefined ? { code, message } : { code, message, data } });

  if (!recipient || typeof recipient.key !== 'string') {
    return fail(INVALID_PARAMS, "'recipient' is required.");
  }
  if (recipient.type !== AGENT_TYPE) {
    return fail(AGENT_NOT_FOUND, `This worker does not serve agent type '${recipient.type}'.`);
  }
  const state = agent(recipient.key);
  switch (method) {
    case 'send': {
      const payload = params.payload || {};
      if (payload.data_type !== 'Text' || !payload.data || typeof payload.data.content !== 'string') {
        // -32003 is "the handler raised": its data says what, as the Python worker's does.
        const message = `cannot handle ${payload.data_type}`;
        return fail(REMOTE_ERROR, `TypeError: ${message}`, { type: 'TypeError', message, traceback: '' });
      }
      state.calls += 1;
      return reply({ payload: textPayload(`node heard: ${payload.data.content}`) });
    }
    case 'agent_metadata':
      return reply({
        metadata: { type: AGENT_TYPE, key: recipient.key, description: 'A Node.js agent that echoes text.' },
      });
    case 'agent_save_state':
      return reply({ state: { calls: state.calls, events: state.events } });
    case 'agent_load_state': {
      const saved = params.state || {};
      state.calls = Number(saved.calls) || 0;
      state.events = Number(saved.events) || 0;
      return reply({});
    }
    default:
      return fail(METHOD_NOT_FOUND, `Method '${method}' not found.`);
  }
}

// An event the host delivers: `agrecipient` says which of our agents it is for.
function receive(event) {
  const key = (event.agrecipient || '').split('/').slice(1).join('/');
  agent(key).events += 1;
  say({ event: { id: event.id, topic: event.type, source: event.source, recipient: event.agrecipient, data: event.data } });
  if (event.type !== TOPIC || !event.data || typeof event.data.content !== 'string') return;
  // Answer by publishing; the host sends it to whoever subscribes to REPLY_TOPIC.
  send({
    specversion: '1.0',
    id: crypto.randomUUID(),
    source: event.source,
    type: REPLY_TOPIC,
    agmsgtype: 'Text',
    agsender: `${AGENT_TYPE}/${key}`,
    datacontenttype: JSON_TYPE,
    data: { content: `node saw: ${event.data.content}` },
  });
}

socket.on('message', (data, isBinary) => {
  if (isBinary) return;
  let frame;
  try {
    frame = JSON.parse(data.toString('utf8'));
  } catch (error) {
    process.stderr.write(`not JSON from the host: ${error.message}\n`);
    return;
  }
  if ('specversion' in frame) return receive(frame);
  if ('method' in frame) {
    if ('id' in frame) return answer(frame);
    return; // `cancel`: every answer here is immediate, so there is nothing to stop
  }
  const pending = waiting.get(frame.id);
  if (pending === undefined) return;
  waiting.delete(frame.id);
  if ('error' in frame) pending.reject(frame.error);
  else pending.resolve(frame.result);
});

socket.on('open', async () => {
  try {
    const hello = await call('hello', { protocol: PROTOCOL, name: 'node-worker', instance: crypto.randomUUID() });
    await call('register_agent_type', { type: AGENT_TYPE });
    await call('add_subscription', {
      subscription: { id: `${AGENT_TYPE}:${TOPIC}`, kind: 'type', agent_type: AGENT_TYPE, topic: TOPIC },
    });
    say({ ready: { worker_id: hello.worker_id, agent_type: AGENT_TYPE, topic: TOPIC } });
  } catch (error) {
    process.stderr.write(`set-up failed: ${JSON.stringify(error)}\n`);
    process.exit(1);
  }
});

let stopping = false;
socket.on('close', (code, reason) => {
  if (stopping) process.exit(0);
  process.stderr.write(`connection closed: ${code} ${reason}\n`);
  process.exit(1);
});
// The host answered the handshake with an HTTP status instead of switching to WebSocket.
socket.on('unexpected-response', (request, response) => {
  let body = '';
  response.setEncoding('utf8');
  response.on('data', (chunk) => (body += chunk));
  response.on('end', () => {
    const why = { 401: 'no token, or a wrong one', 403: 'the token is valid but this identity may not connect' };
    process.stderr.write(
      `the host refused the connection: HTTP ${response.statusCode}` +
        `${why[response.statusCode] ? ` (${why[response.statusCode]})` : ''}: ${body}\n`,
    );
    process.exit(1);
  });
});
socket.on('error', (error) => {
  process.stderr.write(`connection error: ${error.message}\n`);
  process.exit(1);
});

async function stop() {
  if (stopping) return;
  stopping = true;
  if (socket.readyState !== WebSocket.OPEN) process.exit(0);
  // `bye` first, so the host frees our agent type at once; give up on it after 5 s.
  const timer = setTimeout(() => socket.terminate(), 5000);
  try {
    await call('bye', {});
  } catch (error) {
    process.stderr.write(`bye failed: ${JSON.stringify(error)}\n`);
  } finally {
    clearTimeout(timer);
    socket.close(1000, 'worker stopping');
  }
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
