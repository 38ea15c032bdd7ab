// Entry point of the CodeCollab page: builds the shared document, the connection, the editor
// and the header, and wires them together. The session id comes from <body data-session-id>.

import * as awarenessProtocol from 'y-protocols/awareness'
import * as Y from 'yjs'

import { createEditor } from './editor.js'
import { cleanName, colorFor, isSafeColor, MAX_NAME_LENGTH, rememberName, storedName, tabClientId } from './identity.js'
import { DEFAULT_LANGUAGE_ID, LANGUAGES, languageById } from './languages.js'
import { showNotice } from './notices.js'
import { renderPresence } from './presence.js'
import { SocketIOProvider } from './provider.js'
import { bindCopyLink, createSessionPath, downloadText } from './session.js'
import { bindThemeToggle, isDark } from './theme.js'

const STATUS_TEXT = {
  connecting: 'Connecting…',
  connected: 'Connected',
  reconnecting: 'Reconnecting…',
  unsent: 'Offline, unsent edits',
  rejected: 'Edits not saved',
}

const STATUS_DETAIL = {
  connecting: 'Loading the document from the server.',
  connected: 'Live: your edits are sent as you type and saved by the server.',
  reconnecting: 'The connection dropped. Your edits are kept and sent when it is back.',
  unsent: 'Some of your edits are not on the server yet. They are sent when the connection is back; keep this tab open.',
  rejected: 'The server rejected an edit. Download the file to keep your copy, then reload.',
}

// Notice text for an edit the server rejected. Later edits could depend on text the
// server never stored, so the editor turns read-only and the user keeps a copy by downloading.
const REJECTED_TEXT = {
  doc_too_large: 'This edit would make the document larger than the server allows, so it was not saved.',
}
const REJECTED_ADVICE = 'The editor is now read-only: download the file to keep your copy, then reload to return to the saved version.'

function byId(id) {
  return document.getElementById(id)
}

/** Replaces remote awareness values that could break rendering with safe ones, in place. */
function sanitizeRemoteUsers(awareness) {
  awareness.on('change', ({ added, updated }) => {
    for (const clientID of added.concat(updated)) {
      if (clientID === awareness.clientID) continue
      const state = awareness.getStates().get(clientID)
      if (!state) continue
      const user = state.user && typeof state.user === 'object' ? state.user : {}
      state.user = {
        name: cleanName(user.name) || 'Anonymous',
        color: isSafeColor(user.color) ? user.color : '#64748b',
      }
    }
  })
}

function start() {
  const sessionId = document.body.dataset.sessionId
  const clientId = tabClientId()
  let name = storedName()

  const doc = new Y.Doc()
  const ytext = doc.getText('content')
  const meta = doc.getMap('meta')
  const awareness = new awarenessProtocol.Awareness(doc)
  sanitizeRemoteUsers(awareness)
  awareness.setLocalStateField('user', { name, color: colorFor(clientId) })

  // Tracks only edits made through this editor, so undo never reverts a peer's work.
  const undoManager = new Y.UndoManager(ytext)
  const provider = new SocketIOProvider({
    doc,
    awareness,
    auth: () => ({ session: sessionId, clientId, name }),
  })
  const editor = createEditor({
    parent: byId('editor'),
    ytext,
    awareness,
    undoManager,
    dark: isDark(),
    maxMessageBytes: () => provider.maxMessageBytes,
    onTooLarge(bytes, limit) {
      const size = (value) => `${(value / (1024 * 1024)).toFixed(1)} MB`
      showNotice({
        message: `This change is ${size(bytes)}, more than the ${size(limit)} the server accepts at once, so it was not applied.`,
        kind: 'error',
        id: 'change-too-large',
        timeout: 10000,
      })
    },
  })
  window.codecollab = { doc, provider, editor, awareness } // for debugging and the browser tests

  bindStatus(provider, editor)
  bindLanguage(meta, editor, doc)
  bindName({
    initial: name,
    onChange(next) {
      name = next
      rememberName(next)
      // The server takes the name for presence from this awareness state.
      awareness.setLocalStateField('user', { ...awareness.getLocalState().user, name: next })
    },
  })
  bindToolbar({ undoManager, editor, ytext, meta, sessionId })

  // The server takes the avatar colour from the awareness state too, so avatar and cursor match.
  provider.on('presence', (payload) => renderPresence(payload ?? {}, clientId))
  byId('name-swatch').style.backgroundColor = colorFor(clientId)

  provider.on('server-error', ({ code, message }) => {
    // A rejected edit also arrives as an ack, whose banner then replaces this toast.
    const id = code === 'doc_too_large' ? 'edit-rejected' : `error-${code ?? 'unknown'}`
    showNotice({ message: message || 'The server reported an error.', kind: 'error', id, timeout: 10000 })
  })
  provider.on('rejected', ({ code, message }) => {
    editor.setEditable(false)
    const reason = REJECTED_TEXT[code] || `The server did not save your edit: ${message}`
    showNotice({
      message: `${reason} ${REJECTED_ADVICE}`,
      kind: 'error',
      id: 'edit-rejected',
      timeout: null,
      action: { label: 'Reload', run: () => location.reload() },
    })
  })

  window.addEventListener('beforeunload', (event) => {
    if (provider.state === 'unsent' || provider.pending.size > 0) event.preventDefault()
  })
}

function bindStatus(provider, editor) {
  const status = byId('status')
  const text = byId('status-text')
  provider.on('status', ({ state }) => {
    status.dataset.state = state
    status.title = STATUS_DETAIL[state]
    text.textContent = STATUS_TEXT[state]
    // The people list is the server's; it may be out of date while the connection is down.
    const online = provider.socket.connected && provider.synced
    byId('avatars').classList.toggle('opacity-40', !online)
  })
  provider.socket.on('connect_error', () => {
    if (!provider.everSynced) byId('loading-text').textContent = 'Cannot reach the server. Retrying…'
  })
  provider.on('synced', (first) => {
    if (!first) return
    editor.setEditable(true)
    byId('loading').remove()
    byId('editor').dataset.ready = 'true'
    byId('language').disabled = false
  })
}

function bindLanguage(meta, editor, doc) {
  const select = byId('language')
  for (const language of LANGUAGES) select.add(new Option(language.label, language.id))

  const apply = () => {
    const language = languageById(meta.get('language'))
    select.value = language.id
    editor.setLanguage(language).catch((error) => {
      console.error('codecollab: loading the grammar failed', error)
      showNotice({ message: `Could not load ${language.label} highlighting. Reload the page to retry.`, kind: 'error', id: 'language' })
    })
  }
  select.value = DEFAULT_LANGUAGE_ID
  meta.observe((event) => {
    if (event.keysChanged.has('language')) apply()
  })
  apply()

  select.addEventListener('change', () => {
    doc.transact(() => meta.set('language', select.value), 'language-select')
  })
}

function bindName({ initial, onChange }) {
  const input = byId('display-name')
  input.maxLength = MAX_NAME_LENGTH
  input.value = initial
  let current = initial
  const commit = () => {
    const next = cleanName(input.value)
    if (!next) {
      input.value = current
      return
    }
    input.value = next
    if (next !== current) {
      current = next
      onChange(next)
    }
  }
  input.addEventListener('change', commit)
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') input.blur()
    if (event.key === 'Escape') {
      input.value = current
      input.blur()
    }
  })
}

function bindToolbar({ undoManager, editor, ytext, meta, sessionId }) {
  const undo = byId('undo')
  const redo = byId('redo')
  const syncHistoryButtons = () => {
    undo.disabled = !undoManager.canUndo()
    redo.disabled = !undoManager.canRedo()
  }
  for (const event of ['stack-item-added', 'stack-item-popped', 'stack-cleared']) undoManager.on(event, syncHistoryButtons)
  syncHistoryButtons()
  undo.addEventListener('click', () => {
    undoManager.undo()
    editor.view.focus()
  })
  redo.addEventListener('click', () => {
    undoManager.redo()
    editor.view.focus()
  })

  bindCopyLink(byId('copy-link'))

  byId('download').addEventListener('click', () => {
    const language = languageById(meta.get('language'))
    downloadText(ytext.toString(), `${sessionId}.${language.extension}`, language.mime)
  })

  const newSession = byId('new-session')
  newSession.addEventListener('click', async () => {
    newSession.disabled = true
    try {
      location.assign(await createSessionPath())
    } catch (error) {
      newSession.disabled = false
      showNotice({ message: error.message, kind: 'error', id: 'new-session' })
    }
  })

  bindThemeToggle(byId('theme-toggle'), (dark) => editor.setDark(dark))
}

start()
