// Concurrent editors on HTTP long-polling and on WebSocket, with the socket.io-client that
// browsers run, for test_transport_polling.py.
//
// Usage: NODE_PATH=codecollab/frontend/node_modules node mixed_transports.cjs '<json options>'
//   {"url": "http://127.0.0.1:3000", "session": "...", "polling": 3, "websocket": 2,
//    "edits": 40, "intervalMs": 5}
//
// Every client connects to one session with only its transport, syncs, then makes `edits`
// inserts at random positions and sends an awareness update after each. Each insert is a
// token unique to its client and number. The script then waits for every client to hold every
// token and prints one JSON line with, per client: its transport, its final text, the Yjs
// structs it received out of order or twice, and the awareness clock it last saw of every
// other client, in the order the server relayed them.

const { io } = require('socket.io-client')
const msgpackParser = require('socket.io-msgpack-parser')
const Y = require('yjs')
const syncProtocol = require('y-protocols/sync')
const awarenessProtocol = require('y-protocols/awareness')
const encoding = require('lib0/encoding')
const decoding = require('lib0/decoding')

const options = JSON.parse(process.argv[2])
const SYNC_TIMEOUT_MS = 20_000
const CONVERGE_TIMEOUT_MS = 30_000

// socket.io-msgpack-parser sends a Buffer as MessagePack `bin`, but any other Uint8Array in
// Node.js as an extension type holding its whole ArrayBuffer, which the server rejects.
function asBuffer (bytes) {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}

class Editor {
  constructor (index, transport) {
    this.index = index
    this.transport = transport
    this.doc = new Y.Doc()
    this.text = this.doc.getText('content')
    this.awareness = new awarenessProtocol.Awareness(this.doc)
    // Next expected clock of every remote Yjs client id, from the relayed updates alone.
    this.nextClock = new Map()
    this.outOfOrder = []
    this.duplicates = []
    // Awareness clocks relayed by the server, per remote Yjs client id, in arrival order.
    this.awarenessClocks = new Map()
    this.synced = new Promise((resolve) => { this.resolveSynced = resolve })
    this.errors = []
  }

  connect () {
    this.socket = io(options.url, {
      transports: [this.transport],
      parser: msgpackParser,
      reconnection: false,
      forceNew: true,
      auth: { session: options.session, clientId: `mixed-${this.index}`, name: `mixed ${this.index}` }
    })
    this.socket.on('connect', () => this.socket.emit('sync', asBuffer(this.step1())))
    this.socket.on('sync', (data) => this.receiveSync(new Uint8Array(data)))
    this.socket.on('awareness', (data) => this.receiveAwareness(new Uint8Array(data)))
    this.socket.on('error', (payload) => this.errors.push(payload))
    this.socket.on('connect_error', (error) => this.errors.push(`connect_error: ${error.message}`))
    this.socket.on('disconnect', (reason) => {
      if (!this.closing) this.errors.push(`disconnect: ${reason}`)
    })
    this.doc.on('update', (update, origin) => {
      if (origin !== this) this.socket.emit('sync', asBuffer(this.updateMessage(update)))
    })
    return this.synced
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

  receiveSync (message) {
    const decoder = decoding.createDecoder(message)
    const type = decoding.peekVarUint(decoder)
    if (type === syncProtocol.messageYjsUpdate) {
      const copy = decoding.createDecoder(message)
      decoding.readVarUint(copy)
      this.checkOrder(decoding.readVarUint8Array(copy))
    } else if (type === syncProtocol.messageYjsSyncStep2) {
      // The initial state: later updates continue from these clocks.
      const copy = decoding.createDecoder(message)
      decoding.readVarUint(copy)
      this.recordClocks(decoding.readVarUint8Array(copy))
    }
    const encoder = encoding.createEncoder()
    const handled = syncProtocol.readSyncMessage(decoder, encoder, this.doc, this)
    if (encoding.length(encoder) > 0) this.socket.emit('sync', asBuffer(encoding.toUint8Array(encoder)))
    if (handled === syncProtocol.messageYjsSyncStep2) this.resolveSynced()
  }

  recordClocks (update) {
    for (const struct of Y.decodeUpdate(update).structs) {
      const end = struct.id.clock + struct.length
      if (end > (this.nextClock.get(struct.id.client) || 0)) this.nextClock.set(struct.id.client, end)
    }
  }

  // A relayed update must start where the previous update of the same Yjs client ended.
  checkOrder (update) {
    const structs = Y.decodeUpdate(update).structs
    if (structs.length === 0) return
    const client = structs[0].id.client
    const first = structs[0].id.clock
    const expected = this.nextClock.get(client) || 0
    if (first > expected) this.outOfOrder.push({ client, expected, got: first })
    if (first < expected) this.duplicates.push({ client, expected, got: first })
    this.recordClocks(update)
  }

  receiveAwareness (message) {
    const decoder = decoding.createDecoder(message)
    const count = decoding.readVarUint(decoder)
    for (let i = 0; i < count; i++) {
      const client = decoding.readVarUint(decoder)
      const clock = decoding.readVarUint(decoder)
      decoding.readVarString(decoder)
      if (!this.awarenessClocks.has(client)) this.awarenessClocks.set(client, [])
      this.awarenessClocks.get(client).push(clock)
    }
  }

  edit (number) {
    const token = `<${this.index}.${number}>`
    const text = this.text.toString()
    // Insert between tokens only, so that every token stays readable in the final text.
    const boundaries = [0]
    for (let i = 0; i < text.length; i++) if (text[i] === '>') boundaries.push(i + 1)
    const position = boundaries[Math.floor(Math.random() * boundaries.length)]
    this.text.insert(position, token)
    this.awareness.setLocalStateField('user', { name: `mixed ${this.index}`, edits: number + 1 })
    const update = awarenessProtocol.encodeAwarenessUpdate(this.awareness, [this.doc.clientID])
    this.socket.emit('awareness', asBuffer(update))
    this.sentAwarenessClock = this.awareness.meta.get(this.doc.clientID).clock
  }

  hasAll (tokens) {
    const text = this.text.toString()
    return tokens.every((token) => text.includes(token))
  }

  report () {
    const lastAwareness = {}
    const awarenessOutOfOrder = []
    for (const [client, clocks] of this.awarenessClocks) {
      lastAwareness[client] = clocks[clocks.length - 1]
      for (let i = 1; i < clocks.length; i++) {
        if (clocks[i] <= clocks[i - 1]) awarenessOutOfOrder.push({ client, clocks: clocks.slice(i - 1, i + 1) })
      }
    }
    return {
      index: this.index,
      transport: this.transport,
      clientId: this.doc.clientID,
      awarenessClock: this.sentAwarenessClock,
      text: this.text.toString(),
      outOfOrder: this.outOfOrder,
      duplicates: this.duplicates,
      lastAwareness,
      awarenessOutOfOrder,
      errors: this.errors.map((error) => typeof error === "string" ? error : JSON.stringify(error))
    }
  }

  close () {
    this.closing = true
    this.socket.close()
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function withTimeout (promise, ms, message) {
  let timer
  const timeout = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

async function editMany (editor) {
  for (let number = 0; number < options.edits; number++) {
    editor.edit(number)
    await sleep(Math.random() * 2 * options.intervalMs)
  }
}

async function main () {
  const editors = []
  for (let i = 0; i < options.polling; i++) editors.push(new Editor(editors.length, 'polling'))
  for (let i = 0; i < options.websocket; i++) editors.push(new Editor(editors.length, 'websocket'))
  await withTimeout(Promise.all(editors.map((editor) => editor.connect())), SYNC_TIMEOUT_MS,
    'clients did not sync')

  await Promise.all(editors.map(editMany))

  const tokens = []
  for (const editor of editors) {
    for (let number = 0; number < options.edits; number++) tokens.push(`<${editor.index}.${number}>`)
  }
  const deadline = Date.now() + CONVERGE_TIMEOUT_MS
  while (Date.now() < deadline && !editors.every((editor) => editor.hasAll(tokens))) {
    await sleep(50)
  }
  // Awareness is relayed after its edit, so give the last ones a moment to arrive.
  await sleep(300)
  console.log(JSON.stringify({ clients: editors.map((editor) => editor.report()) }))
  for (const editor of editors) editor.close()
}

main().then(() => process.exit(0), (error) => {
  console.error(error.message)
  process.exit(1)
})
