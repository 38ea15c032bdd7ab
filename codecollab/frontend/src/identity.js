// Identity of this tab: a per-tab client id, a remembered display name and a colour.

const CLIENT_ID_KEY = 'codecollab.clientId'
const NAME_KEY = 'codecollab.name'

/** Maximum length of a display name the UI sends, in UTF-16 code units. */
export const MAX_NAME_LENGTH = 40

/** Cursor and avatar colours; each has enough contrast for white text on it. */
export const PALETTE = ['#2563eb', '#db2777', '#059669', '#d97706', '#7c3aed', '#dc2626', '#0891b2', '#65a30d', '#c026d3', '#ea580c']

const ADJECTIVES = ['Brave', 'Calm', 'Clever', 'Eager', 'Gentle', 'Happy', 'Keen', 'Lucky', 'Quick', 'Witty']
const ANIMALS = ['Badger', 'Falcon', 'Fox', 'Heron', 'Lynx', 'Otter', 'Panda', 'Puffin', 'Seal', 'Wren']

/** Returns `length` URL-safe random characters (A-Z, a-z, 0-9, - and _), 6 bits each. */
export function randomId(length) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
  const bytes = crypto.getRandomValues(new Uint8Array(length))
  return Array.from(bytes, (byte) => alphabet[byte & 63]).join('')
}

function readStorage(storage, key) {
  try {
    return storage.getItem(key)
  } catch {
    return null // Storage is disabled, for example in some private windows.
  }
}

function writeStorage(storage, key, value) {
  try {
    storage.setItem(key, value)
  } catch {
    // The value then lives only as long as the page.
  }
}

/**
 * Returns this tab's client id. It survives reloads of the tab (sessionStorage), so the server
 * counts a reloaded tab as the same person, and differs between tabs.
 */
export function tabClientId() {
  let id = readStorage(sessionStorage, CLIENT_ID_KEY)
  if (!id || !/^[A-Za-z0-9_-]{16,64}$/.test(id)) {
    id = randomId(22)
    writeStorage(sessionStorage, CLIENT_ID_KEY, id)
  }
  return id
}

/** Trims a display name and cuts it to MAX_NAME_LENGTH; returns '' for a blank one. */
export function cleanName(name) {
  return String(name ?? '').replace(/\s+/g, ' ').trim().slice(0, MAX_NAME_LENGTH)
}

/** Returns the remembered display name, or a new random one that is then remembered. */
export function storedName() {
  const name = cleanName(readStorage(localStorage, NAME_KEY))
  if (name) return name
  const pick = (words) => words[crypto.getRandomValues(new Uint8Array(1))[0] % words.length]
  const generated = `${pick(ADJECTIVES)} ${pick(ANIMALS)}`
  writeStorage(localStorage, NAME_KEY, generated)
  return generated
}

/** Remembers a display name for later visits. */
export function rememberName(name) {
  writeStorage(localStorage, NAME_KEY, name)
}

/** Returns a palette colour derived from the client id, so a tab keeps its colour on reload. */
export function colorFor(clientId) {
  let hash = 0
  for (const char of clientId) hash = (hash * 31 + char.charCodeAt(0)) >>> 0
  return PALETTE[hash % PALETTE.length]
}

/** Returns whether a colour is a plain #rrggbb value, the only form rendered from peers. */
export function isSafeColor(color) {
  return typeof color === 'string' && /^#[0-9a-fA-F]{6}$/.test(color)
}

/** Returns up to two initials of a name for its avatar. */
export function initials(name) {
  const words = cleanName(name).split(' ').filter(Boolean)
  if (words.length === 0) return '?'
  const letters = words.length === 1 ? [...words[0]].slice(0, 2) : [[...words[0]][0], [...words[words.length - 1]][0]]
  return letters.join('').toUpperCase()
}
