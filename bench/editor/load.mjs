// Load clients of the editor benchmark: N Yjs documents connected to one session of either
// CodeCollab (Socket.IO, docs/protocol.md) or @y/websocket-server (plain y-websocket
// protocol). Both kinds of client run the same Yjs logic, so only the server differs.
//
// Usage: node load.mjs '<json options>'; prints one JSON result line on stdout.
//   {"server": "codecollab" | "peer", "url": "http://127.0.0.1:3000", "session": "...",
//    "mode": "typing" | "idle" | "newcomer", "clients": 100, "seconds": 10, "rate": 20,
//    "holdSeconds": 5, "documentBytes": 1048576, "newcomers": 5}
//
// typing:   every client syncs, then client 0 appends `rate` characters per second for
//           `seconds`; each other client records when each character arrives.
// idle:     every client syncs, prints {"ready": true}, and stays connected `holdSeconds`.
// newcomer: one client writes a document of `documentBytes`, then `newcomers` fresh clients
//           connect one after another and each records connect-to-synced time.

import { performance } from 'node:perf_hooks'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import { io } from 'socket.io-client'
import WebSocket from 'ws'
import * as syncProtocol from 'y-protocols/sync'
import * as Y from 'yjs'

const options = JSON.parse(process.argv[2])
const SYNC_TIMEOUT_MS = 120_000

/** A Yjs document kept in sync with the server; `synced` resolves on the server's step 2. */
class Client {
  constructor () {
    this.doc = new Y.Doc()
    this.text = this.doc.getText('content')
    this.synced = new Promise((resolve) => { this._resolveSynced = resolve })
    this.doc.on('update', (update, origin) => {
      if (origin !== this) this.sendUpdate(update)
    })
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

/** A CodeCollab client: the sync message is the whole `sync` event payload. */
class CodeCollabClient extends Client {
  connect (url, session, index) {
    this.socket = io(url, {
      transports: ['websocket'],
      reconnection: false,
      forceNew: true,
      auth: { session, clientId: `bench-${process.pid}-${index}`, name: `bench ${index}` }
    })
    this.socket.on('sync', (data) => {
      const reply = this.handleSync(decoding.createDecoder(new Uint8Array(data)))
      if (reply) this.socket.emit('sync', reply)
    })
    this.socket.on('connect', () => this.socket.emit('sync', this.step1()))
    this.socket.on('connect_error', (error) => fail(`connect_error: ${error.message}`))
    return this.synced
  }

  sendUpdate (update) {
    this.socket.emit('sync', this.updateMessage(update))
  }

  close () { this.socket.close() }
}

/** A y-websocket client: every message starts with varUint(0) for sync. */
class PeerClient extends Client {
  connect (url, session) {
    this.ws = new WebSocket(`${url.replace('http', 'ws')}/${session}`)
    this.ws.binaryType = 'arraybuffer'
    this.ws.on('open', () => this.ws.send(withSyncPrefix(this.step1())))
    this.ws.on('message', (data) => {
      const decoder = decoding.createDecoder(new Uint8Array(data))
      if (decoding.readVarUint(decoder) !== 0) return // awareness
      const reply = this.handleSync(decoder)
      if (reply) this.ws.send(withSyncPrefix(reply))
    })
    this.ws.on('error', (error) => fail(`websocket error: ${error.message}`))
    return this.synced
  }

  sendUpdate (update) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(withSyncPrefix(this.updateMessage(update)))
  }

  close () { this.ws.close() }
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

async function typing () {
  const { clients, connectMs } = await connectAll(options.clients)
  const [typist, ...peers] = clients
  await sleep(500)

  const sentAt = []
  const latencies = []
  const base = typist.text.length
  for (const peer of peers) {
    let seen = peer.text.length - base
    peer.doc.on('update', () => {
      const now = performance.now()
      const length = peer.text.length - base
      for (; seen < length; seen++) latencies.push(now - sentAt[seen])
    })
  }

  const total = Math.round(options.seconds * options.rate)
  const interval = 1000 / options.rate
  const start = performance.now()
  for (let k = 0; k < total; k++) {
    const due = start + k * interval
    const wait = due - performance.now()
    if (wait > 0) await sleep(wait)
    sentAt.push(performance.now())
    typist.text.insert(typist.text.length, String.fromCharCode(97 + (k % 26)))
  }
  await sleep(2000)

  const expected = total * peers.length
  latencies.sort((a, b) => a - b)
  report({
    connectMs,
    sent: total,
    delivered: latencies.length,
    missing: expected - latencies.length,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    max: latencies.at(-1) ?? null
  })
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

const modes = { typing, idle, newcomer }
modes[options.mode]().then(() => process.exit(0), (error) => fail(error.stack || String(error)))
