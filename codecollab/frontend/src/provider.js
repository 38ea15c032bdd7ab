// Yjs provider that speaks the CodeCollab wire protocol over Socket.IO.
//
// Every `sync` and `awareness` payload is a y-protocols message in Yjs v1 encoding, sent as one
// binary Socket.IO argument. Packets are MessagePack (socket.io-msgpack-parser), so each event
// is one binary WebSocket frame. The provider sends its sync step 1 on every (re)connect, replies to
// the server's step 1 with a step 2, and counts as synced once the server's step 2 has arrived.
// Each message that carries document content (step 2 or update) is sent with an ack callback,
// and edits stay "unsent" until the server acknowledges them with `{ok: true}`.

import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import { ObservableV2 } from 'lib0/observable'
import { io } from 'socket.io-client'
import msgpackParser from 'socket.io-msgpack-parser'
import * as awarenessProtocol from 'y-protocols/awareness'
import * as syncProtocol from 'y-protocols/sync'

// Delay before reconnecting after the server closed the connection or refused it, in ms.
const SERVER_CLOSE_RETRY_MS = 3000

/** Returns the bytes of a binary Socket.IO argument, which arrives as an ArrayBuffer. */
function toBytes(data) {
  if (data instanceof Uint8Array) return data
  if (data instanceof ArrayBuffer) return new Uint8Array(data)
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
  throw new TypeError(`expected binary data, got ${typeof data}`)
}

/**
 * Returns the ArrayBuffer to send for `bytes`. The MessagePack encoder sends an ArrayBuffer as
 * `bin`; a typed array it would send as a map of its indexes.
 */
function toWire(bytes) {
  const { buffer, byteOffset, byteLength } = bytes
  if (byteOffset === 0 && byteLength === buffer.byteLength) return buffer
  return buffer.slice(byteOffset, byteOffset + byteLength)
}

/**
 * Connection state, as the header shows it:
 * - `connecting`: the first connection has not synced yet;
 * - `connected`: synced, and every local edit is acknowledged or in flight;
 * - `reconnecting`: the connection is down or resyncing, with no local edit waiting;
 * - `unsent`: local edits are not acknowledged and the connection is down or resyncing;
 * - `rejected`: the server refused to store a local edit, so the local text differs from the
 *   saved one until the page reloads.
 *
 * Events: `status` ({state, synced}), `synced` (no argument, once per connection),
 * `presence` (the server's presence payload), `server-error` ({code, message}),
 * `rejected` ({code, message}) when the server refuses to store an edit.
 */
export class SocketIOProvider extends ObservableV2 {
  /**
   * @param {object} options
   * @param {import('yjs').Doc} options.doc document to keep in sync
   * @param {awarenessProtocol.Awareness} options.awareness local and remote cursor states
   * @param {() => object} options.auth returns the Socket.IO `auth` payload; it is called on
   *   every (re)connect, so a reconnect sends the current display name
   * @param {string} [options.url] server URL; the page's own origin when omitted
   */
  constructor({ doc, awareness, auth, url }) {
    super()
    this.doc = doc
    this.awareness = awareness
    /** Whether the server's step 2 arrived on the current connection. */
    this.synced = false
    /** Whether any connection has synced since the page loaded. */
    this.everSynced = false
    /** Unacknowledged content messages on the current connection, by sequence number. */
    this.pending = new Set()
    /** Whether local edits were made offline or lost with a connection and not resent yet. */
    this.unsent = false
    /** Whether the server refused to store a local edit; only a reload recovers from that. */
    this.rejected = false
    this._sequence = 0
    this._generation = 0
    this._retryTimer = null

    this.socket = io(url, {
      auth: (callback) => callback(auth()),
      // WebSocket first: long polling only where a proxy blocks the upgrade.
      transports: ['websocket', 'polling'],
      // socket.io-client 4.8 tries only the first transport unless this option is set, so
      // without it a page behind a proxy that blocks WebSocket never connects.
      tryAllTransports: true,
      parser: msgpackParser,
    })

    this._onDocUpdate = (update, origin) => {
      if (origin === this) return
      this._markLocalEdit()
      if (!this.socket.connected) return
      const encoder = encoding.createEncoder()
      syncProtocol.writeUpdate(encoder, update)
      this._sendContent(encoding.toUint8Array(encoder), false)
    }
    this._onAwarenessUpdate = ({ added, updated, removed }, origin) => {
      if (origin === this || !this.socket.connected) return
      const changed = added.concat(updated, removed).filter((id) => id === doc.clientID)
      if (changed.length === 0) return
      this.socket.emit('awareness', toWire(awarenessProtocol.encodeAwarenessUpdate(awareness, changed)))
    }
    this._onPageHide = () => {
      awarenessProtocol.removeAwarenessStates(awareness, [doc.clientID], 'pagehide')
      if (this.socket.connected) {
        this.socket.emit('awareness', toWire(awarenessProtocol.encodeAwarenessUpdate(awareness, [doc.clientID])))
      }
    }

    doc.on('update', this._onDocUpdate)
    awareness.on('update', this._onAwarenessUpdate)
    window.addEventListener('pagehide', this._onPageHide)

    this.socket.on('connect', () => this._onConnect())
    this.socket.on('disconnect', (reason) => this._onDisconnect(reason))
    this.socket.on('connect_error', (error) => this._onConnectError(error))
    this.socket.on('sync', (data) => this._onSync(data))
    this.socket.on('awareness', (data) => {
      awarenessProtocol.applyAwarenessUpdate(awareness, toBytes(data), this)
    })
    this.socket.on('presence', (payload) => this.emit('presence', [payload]))
    this.socket.on('error', (payload) => this.emit('server-error', [payload ?? {}]))
  }

  /** Returns the state the header shows; see the class comment. */
  get state() {
    if (!this.everSynced) return 'connecting'
    if (this.rejected) return 'rejected'
    if (this.socket.connected && this.synced) return 'connected'
    return this.unsent || this.pending.size > 0 ? 'unsent' : 'reconnecting'
  }

  /**
   * Returns the largest message the server accepts, in bytes, from the Engine.IO handshake
   * (`maxPayload`), or null before the first handshake.
   * NOTE: engine.io-client 6 keeps this value in the private field `_maxPayload`.
   */
  get maxMessageBytes() {
    const limit = this.socket.io.engine?._maxPayload
    return Number.isFinite(limit) && limit > 0 ? limit : null
  }

  /** Closes the connection and detaches from the document and awareness. */
  destroy() {
    clearTimeout(this._retryTimer)
    this.doc.off('update', this._onDocUpdate)
    this.awareness.off('update', this._onAwarenessUpdate)
    window.removeEventListener('pagehide', this._onPageHide)
    this.socket.disconnect()
    super.destroy()
  }

  _onConnect() {
    this._generation += 1
    this.synced = false
    this.pending.clear()

    const encoder = encoding.createEncoder()
    syncProtocol.writeSyncStep1(encoder, this.doc)
    this.socket.emit('sync', toWire(encoding.toUint8Array(encoder)))

    if (this.awareness.getLocalState() !== null) {
      const update = awarenessProtocol.encodeAwarenessUpdate(this.awareness, [this.doc.clientID])
      this.socket.emit('awareness', toWire(update))
    }
    this._emitStatus()
  }

  _onDisconnect(reason) {
    this.synced = false
    if (this.pending.size > 0) this.unsent = true
    this.pending.clear()

    // Remote cursors are stale until the server resends them after the reconnect.
    const remote = [...this.awareness.getStates().keys()].filter((id) => id !== this.doc.clientID)
    awarenessProtocol.removeAwarenessStates(this.awareness, remote, this)

    // Socket.IO does not reconnect by itself after a server-side disconnect.
    if (reason === 'io server disconnect') this._scheduleRetry()
    this._emitStatus()
  }

  _onConnectError(error) {
    // `socket.active` is false when the server rejected the handshake, and then Socket.IO
    // gives up, so the retry is ours. A network failure keeps it true and Socket.IO retries.
    if (!this.socket.active) {
      const code = error?.data?.code || 'connect_rejected'
      const message = error?.message || 'The server rejected the connection.'
      this.emit('server-error', [{ code, message }])
      const retryAfterMs = Number(error?.data?.retry_after) * 1000 || 0
      this._scheduleRetry(Math.max(SERVER_CLOSE_RETRY_MS, retryAfterMs))
    }
    this._emitStatus()
  }

  _scheduleRetry(delayMs = SERVER_CLOSE_RETRY_MS) {
    clearTimeout(this._retryTimer)
    this._retryTimer = setTimeout(() => {
      if (!this.socket.connected) this.socket.connect()
    }, delayMs)
  }

  _onSync(data) {
    const decoder = decoding.createDecoder(toBytes(data))
    const messageType = decoding.readVarUint(decoder)

    switch (messageType) {
      case syncProtocol.messageYjsSyncStep1: {
        // The reply carries every local edit the server lacks, offline edits included.
        const encoder = encoding.createEncoder()
        syncProtocol.writeSyncStep2(encoder, this.doc, decoding.readVarUint8Array(decoder))
        this._sendContent(encoding.toUint8Array(encoder), true)
        break
      }
      case syncProtocol.messageYjsSyncStep2:
        syncProtocol.readSyncStep2(decoder, this.doc, this)
        this._markSynced()
        break
      case syncProtocol.messageYjsUpdate:
        syncProtocol.readUpdate(decoder, this.doc, this)
        break
      default:
        console.warn(`codecollab: ignored sync message of unknown type ${messageType}`)
    }
  }

  _markSynced() {
    if (this.synced) return
    this.synced = true
    const first = !this.everSynced
    this.everSynced = true
    this.emit('synced', [first])
    this._emitStatus()
  }

  _markLocalEdit() {
    if (!this.socket.connected) {
      this.unsent = true
      this._emitStatus()
    }
  }

  /**
   * Sends a step 2 or update and tracks it until the server's ack.
   * A `resend` (the step 2 after a reconnect) clears the unsent flag once acknowledged.
   */
  _sendContent(message, resend) {
    const sequence = ++this._sequence
    const generation = this._generation
    this.pending.add(sequence)
    this._emitStatus()

    this.socket.emit('sync', toWire(message), (reply) => {
      if (generation !== this._generation) return
      this.pending.delete(sequence)
      if (reply && reply.ok) {
        if (resend && !this.rejected) this.unsent = false
      } else {
        this.unsent = true
        this.rejected = true
        this.emit('rejected', [{ code: reply?.error, message: reply?.message || 'The server did not store the edit.' }])
      }
      this._emitStatus()
    })
  }

  _emitStatus() {
    this.emit('status', [{ state: this.state, synced: this.synced }])
  }
}
