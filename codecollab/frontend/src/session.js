// Session-level actions of the toolbar: new session, copy link, download.

import { randomId } from './identity.js'
import { showNotice } from './notices.js'

/** Length of a client-generated session id: 22 characters of 6 bits are 132 random bits. */
const SESSION_ID_LENGTH = 22

/**
 * Returns the path of a new session. The server creates the id through `POST /api/sessions`
 * when it offers that route. On 404 or 405 the id is generated here with crypto.getRandomValues.
 */
export async function createSessionPath() {
  let response
  try {
    response = await fetch('/api/sessions', { method: 'POST', headers: { Accept: 'application/json' } })
  } catch {
    throw new Error('Could not reach the server to create a session. Check the connection and try again.')
  }
  if (response.status === 404 || response.status === 405) return `/s/${randomId(SESSION_ID_LENGTH)}`

  const body = await response.json().catch(() => ({}))
  if (!response.ok) {
    throw new Error(body.error || `Creating a session failed with HTTP ${response.status}. Try again.`)
  }
  if (typeof body.url === 'string' && body.url.startsWith('/')) return body.url
  if (typeof body.id === 'string' && /^[A-Za-z0-9_-]+$/.test(body.id)) return `/s/${body.id}`
  throw new Error('The server response contains no session id. Try again.')
}

/** Copies text to the clipboard, also on plain-HTTP pages where navigator.clipboard is absent. */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text)
    return
  }
  const field = document.createElement('textarea')
  field.value = text
  field.setAttribute('readonly', '')
  field.style.position = 'fixed'
  field.style.opacity = '0'
  document.body.append(field)
  field.select()
  const copied = document.execCommand('copy')
  field.remove()
  if (!copied) throw new Error('The browser blocked clipboard access.')
}

/** Wires the copy-link button; the link is the page address without query or fragment. */
export function bindCopyLink(button) {
  button.addEventListener('click', async () => {
    const link = `${location.origin}${location.pathname}`
    try {
      await copyText(link)
      showNotice({ message: 'Link copied. Anyone with it can edit this session.', id: 'copy-link', timeout: 3000 })
    } catch {
      showNotice({ message: `Copy failed. Share this address: ${link}`, kind: 'error', id: 'copy-link', timeout: null })
    }
  })
}

/** Saves `text` as a file through a temporary object URL. */
export function downloadText(text, filename, mime) {
  const url = URL.createObjectURL(new Blob([text], { type: `${mime};charset=utf-8` }))
  const link = document.createElement('a')
  link.href = url
  link.download = filename
  document.body.append(link)
  link.click()
  link.remove()
  setTimeout(() => URL.revokeObjectURL(url), 1000)
}
