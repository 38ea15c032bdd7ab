// Session-level actions of the toolbar: new session, copy link, download.

import { showNotice } from './notices.js'

/** Returns the path of a new session, whose unguessable id the server creates. */
export async function createSessionPath() {
  let response
  try {
    response = await fetch('/api/sessions', { method: 'POST', headers: { Accept: 'application/json' } })
  } catch {
    throw new Error('Could not reach the server to create a session. Check the connection and try again.')
  }

  const body = await response.json().catch(() => ({}))
  if (!response.ok) {
    throw new Error(body.error || `Creating a session failed with HTTP ${response.status}. Try again.`)
  }
  if (typeof body.url === 'string' && body.url.startsWith('/s/')) return body.url
  throw new Error('The server response contains no session URL. Try again.')
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
