// Load clients of the editor benchmark: N Yjs documents connected to one session of either
// CodeCollab (Socket.IO, docs/protocol.md) or @y/websocket-server (plain y-websocket
// protocol). Both kinds of client run the same Yjs logic, so only the server differs.
//
// Usage: node load.mjs '<json options>'; prints JSON result lines on stdout.
//   {"server": "codecollab" | "peer", "url": "http://127.0.0.1:3000", "session": "...",
//    "mode": "typist" | "peers" | "idle" | "newcomer", "clients": 100, "firstIndex": 0,
//    "seconds": 10, "rate": 20, "holdSeconds": 5, "documentBytes": 1048576, "newcomers": 5}
//
// typist:   one client syncs and prints {"ready": true}. On the stdin line `go` it appends
//           `rate` characters per second for `seconds` and prints the send time of each.
// peers:    `clients` clients sync and print {"ready": true}, then record the receipt time
//           of every character. On the stdin line `report <hash>` they wait until every
//           client's text has that hash (60 s at most), then print the receipt times and a
//           hash of each client's text, for the convergence check.
// idle:     every client syncs, prints {"ready": true}, and stays connected `holdSeconds`.
// newcomer: one client writes a document of `documentBytes`, then `newcomers` fresh clients
//           connect one after another and each records connect-to-synced time.
//
// Times are milliseconds of CLOCK_MONOTONIC (process.hrtime), which every process on the
// machine shares, so a send time in the typist's process and a receipt time in a peers process
// can be subtracted. Each received update gets two timestamps:
// - arrival: the WebSocket `message` event of its frame, the same point for both kinds of
//   client, before any protocol decoding;
// - event: when the client library hands it over. For y-websocket that is the same `message`
//   event; socket.io-client first decodes the Engine.IO and Socket.IO packets, then emits the
//   event on the next process.nextTick.
// The Yjs work runs later (setImmediate), after every message that arrived in the same
// event-loop turn has its timestamps, so neither figure includes the backlog of one Node.js
// process applying updates for many clients.

import { createHash } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { createInterface } from 'node:readline'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import { io } from 'socket.io-client'
import msgpackParser from 'socket.io-msgpack-parser'
import WebSocket from 'ws'
import * as syncProtocol from 'y-protocols/sync'
import * as Y from 'yjs'

const options = JSON.parse(process.argv[2])
const SYNC_TIMEOUT_MS = 120_000
const CONVERGE_TIMEOUT_MS = 60_000

/** Milliseconds of CLOCK_MONOTONIC, comparable between processes of this machine. */
const monotonicMs = () => Number(process.hrtime.bigint()) / 1e6

// Received messages wait here until the next setImmediate, so that every message of one
// event-loop turn is timestamped before any of them is decoded and applied.
const inbox = []
function deliverLater (deliver) {
  if (inbox.length === 0) setImmediate(drainInbox)
  inbox.push(deliver)
}
function drainInbox () {
  const batch = inbox.splice(0)
  for (const deliver of batch) deliver()
}

/** A Yjs document kept in sync with the server; `synced` resolves on the server's step 2. */
class Client {
  constructor () {
    this.doc = new Y.Doc()
    this.text = this.doc.getText('content')
    this.synced = new Promise((resolve) => { this._resolveSynced = resolve })
    this.doc.on('update', (update, origin) => {
      if (origin !== this) this.sendUpdate(update)
    })
    // Set by startRecording: arrivals[k] and events[k] are the two receipt times of the k-th
    // appended character.
    this.arrivals = null
    this.events = null
    // Why the server closed the connection, if it did before close() was called.
    this.lostReason = null
    this.closing = false
  }

  startRecording () {
    this.base = this.text.length
    this.arrivals = []
    this.events = []
  }

  /** Applies a received sync message later, stamped with its frame's arrival and event times. */
  receive (data, arrivedAt, eventAt, reply) {
    deliverLater(() => {
      const answer = this.handleSync(decoding.createDecoder(data))
      if (answer) reply(answer)
      if (this.arrivals === null) return
      for (let k = this.arrivals.length; k < this.text.length - this.base; k++) {
        this.arrivals.push(arrivedAt)
        this.events.push(eventAt)
      }
    })
  }

  textHash () {
    return createHash('sha256').update(this.text.toString()).digest('hex')
  }

  /** Applies one sync message and returns the reply to send, if any. */
  handleSync (decoder) {
    const encoder = encoding.createEncoder()
    const type = syncProtocol.readSyncMessage(decoder, encoder, this.doc, this)
    if (type === syncProtocol.messageYjsSyncStep2) this._resolveSynced()
    return encoding.length(encoder) > 0 ? encoding.toUint8Array(encoder) : null
  }

  step1 () {
    const encoder = encoding.createEncoder()
    syncProtocol.writeSyncStep1(encoder, this.doc)
    return encoding.toUint8Array(encoder)
  }

  updateMessage (update) {
    const encoder = encoding.createEncoder()
    syncProtocol.writeUpdate(encoder, update)
    return encoding.toUint8Array(encoder)
  }
}

/**
 * Returns a Buffer view of `bytes`. socket.io-msgpack-parser sends a Buffer as MessagePack `bin`,
 * but any other Uint8Array in Node.js as an extension type holding its whole ArrayBuffer.
 */
function asBuffer (bytes) {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}

/** A CodeCollab client: the sync message is the whole `sync` event payload. */
class CodeCollabClient extends Client {
  connect (url, session, index) {
    this.socket = io(url, {
      transports: ['websocket'],
      parser: msgpackParser,
      reconnection: false,
      forceNew: true,
      auth: { session, clientId: `bench-${process.pid}-${index}`, name: `bench ${index}` }
    })
    // With the MessagePack parser every Socket.IO packet is one binary frame, and Engine.IO's
    // pings are text frames. This listener runs before engine.io-client's own, and the `sync`
    // event follows on the next process.nextTick, so frameAt is the arrival of its frame.
    this.frameAt = null
    this.socket.io.on('open', () => {
      this.socket.io.engine.transport.ws.prependListener('message', (_data, isBinary) => {
        if (isBinary) this.frameAt = monotonicMs()
      })
    })
    this.socket.on('sync', (data) => {
      const eventAt = monotonicMs()
      const arrivedAt = this.frameAt ?? eventAt
      this.receive(new Uint8Array(data), arrivedAt, eventAt, (reply) => this.socket.emit('sync', asBuffer(reply)))
    })
    this.socket.on('connect', () => this.socket.emit('sync', asBuffer(this.step1())))
    this.socket.on('connect_error', (error) => fail(`connect_error: ${error.message}`))
    this.socket.on('disconnect', (reason) => { if (!this.closing) this.lostReason = reason })
    return this.synced
  }

  sendUpdate (update) {
    this.socket.emit('sync', asBuffer(this.updateMessage(update)))
  }

  close () {
    this.closing = true
    this.socket.close()
  }
}

/** A y-websocket client: every message starts with varUint(0) for sync. */
class PeerClient extends Client {
  connect (url, session) {
    this.ws = new WebSocket(`${url.replace('http', 'ws')}/${session}`)
    this.ws.binaryType = 'arraybuffer'
    this.ws.on('open', () => this.ws.send(withSyncPrefix(this.step1())))
    this.ws.on('message', (data) => {
      const receivedAt = monotonicMs()
      const message = new Uint8Array(data)
      if (message[0] !== 0) return // awareness; the sync prefix varUint(0) is one byte
      this.receive(message.subarray(1), receivedAt, receivedAt, (reply) => this.ws.send(withSyncPrefix(reply)))
    })
    this.ws.on('error', (error) => fail(`websocket error: ${error.message}`))
    this.ws.on('close', (code) => { if (!this.closing) this.lostReason = `close code ${code}` })
    return this.synced
  }

  sendUpdate (update) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(withSyncPrefix(this.updateMessage(update)))
  }

  close () {
    this.closing = true
    this.ws.close()
  }
}

function withSyncPrefix (message) {
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, 0)
  encoding.writeUint8Array(encoder, message)
  return encoding.toUint8Array(encoder)
}

function fail (message) {
  console.error(message)
  process.exit(1)
}

function newClient () {
  return options.server === 'codecollab' ? new CodeCollabClient() : new PeerClient()
}

async function connectAll (count, firstIndex = 0) {
  const clients = []
  const started = performance.now()
  // Connect in batches so the server's accept queue is not the thing being measured.
  for (let i = 0; i < count; i += 50) {
    const batch = []
    for (let j = i; j < Math.min(i + 50, count); j++) {
      const client = newClient()
      clients.push(client)
      batch.push(client.connect(options.url, options.session, firstIndex + j))
    }
    await withTimeout(Promise.all(batch), SYNC_TIMEOUT_MS, 'clients did not sync')
  }
  return { clients, connectMs: performance.now() - started }
}

function withTimeout (promise, ms, message) {
  let timer
  const timeout = new Promise((_resolve, reject) => { timer = setTimeout(() => reject(new Error(message)), ms) })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function percentile (sorted, p) {
  if (sorted.length === 0) return null
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]
}

/** Resolves with the argument of the next stdin line whose first word is `word`. */
function nextCommand (word) {
  return new Promise((resolve) => {
    lines.on('line', function listener (line) {
      const [first, argument = ''] = line.trim().split(' ', 2)
      if (first !== word) return
      lines.off('line', listener)
      resolve(argument)
    })
  })
}

async function typist () {
  const { clients: [client], connectMs } = await connectAll(1)
  report({ ready: true, connectMs })
  await nextCommand('go')

  const sent = []
  const total = Math.round(options.seconds * options.rate)
  const interval = 1000 / options.rate
  const start = performance.now()
  for (let k = 0; k < total; k++) {
    const due = start + k * interval
    const wait = due - performance.now()
    if (wait > 0) await sleep(wait)
    sent.push(monotonicMs())
    client.text.insert(client.text.length, String.fromCharCode(97 + (k % 26)))
  }
  report({ sent, text: client.textHash(), disconnected: client.lostReason })
  await nextCommand('close')
  client.close()
}

async function peers () {
  const { clients, connectMs } = await connectAll(options.clients, options.firstIndex)
  for (const client of clients) client.startRecording()
  report({ ready: true, connectMs })
  // `report <hash>`: wait up to CONVERGE_TIMEOUT_MS for every connected client's text to hash
  // to <hash>, so that late edits are still checked for loss and duplication.
  const expected = await nextCommand('report')
  const deadline = performance.now() + CONVERGE_TIMEOUT_MS
  const behind = () => clients.some((client) => client.lostReason === null && client.textHash() !== expected)
  while (behind() && performance.now() < deadline) {
    await sleep(100)
  }
  report({
    arrivals: clients.map((client) => client.arrivals),
    events: clients.map((client) => client.events),
    texts: clients.map((client) => client.textHash()),
    lost: clients.map((client) => client.lostReason)
  })
  await nextCommand('close')
  for (const client of clients) client.close()
}

async function idle () {
  const { clients, connectMs } = await connectAll(options.clients)
  report({ ready: true, connectMs })
  await sleep(options.holdSeconds * 1000)
  for (const client of clients) client.close()
}

async function newcomer () {
  const { clients: [writer] } = await connectAll(1)
  const line = 'x'.repeat(79) + '\n'
  writer.text.insert(writer.text.length, line.repeat(Math.ceil(options.documentBytes / line.length)))
  await sleep(3000) // the server applies and stores the 1 MB update

  const times = []
  for (let i = 0; i < options.newcomers; i++) {
    const client = newClient()
    const started = performance.now()
    await withTimeout(client.connect(options.url, options.session, 1000 + i), SYNC_TIMEOUT_MS, 'newcomer did not sync')
    times.push(performance.now() - started)
    if (client.text.length < options.documentBytes) fail(`newcomer got ${client.text.length} characters`)
    client.close()
  }
  times.sort((a, b) => a - b)
  report({ documentCharacters: writer.text.length, runs: times, median: percentile(times, 50), max: times.at(-1) })
  writer.close()
}

function report (result) {
  process.stdout.write(JSON.stringify(result) + '\n')
}

const lines = createInterface({ input: process.stdin })
const modes = { typist, peers, idle, newcomer }
modes[options.mode]().then(() => process.exit(0), (error) => fail(error.stack || String(error)))
